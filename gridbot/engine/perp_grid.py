"""A perps grid before its first order, shared by ``run`` and ``plan``: its levels and the quantity its
investment carries at its leverage, its worst case at each end of the range, what it refuses, and which of
its orders are reduce-only (docs/perps.md).

- **neutral** starts flat: the buys below the price open or extend a long, the sells above a short; no
  order is reduce-only (a sell may open a short).
- **long** first buys the position its sells above will close (the opening, a capped IOC campaign), then
  its buys below add to it. Every sell is reduce-only: the sells resting always add up to the position.
- **short** mirrors long: every buy is reduce-only.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from grid_calculator import GridError, GridMode, GridSpec, build_grid, nearest_level
from gridbot.core.errors import InputError
from gridbot.core.models import MarketRules, Side
from gridbot.core.perp_risk import EndState, collateral_for, end_states, quantity_for
from gridbot.ops.reports import fmt_amount

ZERO = Decimal(0)


def reduce_side(direction: str) -> Side | None:
    """The side whose every order only closes exposure: a long's sells, a short's buys (neutral: none)."""
    return {"long": Side.ASK, "short": Side.BID}.get(direction)


def placed_levels(levels: tuple[Decimal, ...], price: Decimal) -> list[Decimal]:
    """The levels that hold an order when the grid is laid out at ``price``: all but the empty one."""
    empty = nearest_level(levels, price)
    return [lv for i, lv in enumerate(levels) if i != empty]


def opening_position(levels: tuple[Decimal, ...], price: Decimal, quantity: Decimal, direction: str) -> Decimal:
    """The position a grid laid out at ``price`` opens first (signed): a long the sells above, a short the
    buys below; neutral none."""
    placed = placed_levels(levels, price)
    if direction == "long":
        return quantity * sum(1 for lv in placed if lv > price)
    if direction == "short":
        return -quantity * sum(1 for lv in placed if lv < price)
    return ZERO


@dataclass(frozen=True)
class PerpGrid:
    grid: GridSpec
    notes: list[str]
    bottom: EndState
    top: EndState
    opening: Decimal          # signed: the position opened first
    refused: list[str]        # why this grid must not run (empty: it may)
    collateral: Decimal       # trading.investment, or with trading.quantity what the grid needs (collateral_for)


def perp_grid(rules: MarketRules, t: Any, risk: Any, price: Decimal) -> PerpGrid:
    """The perps grid a config asks for at ``price`` (the mark): its levels, the quantity per level that its
    investment carries at its leverage (``perp_risk.quantity_for``; with ``trading.quantity`` instead, the
    collateral that quantity needs, ``collateral_for``), its worst case at each end and the reasons it is
    refused: liquidated inside its range or within ``risk.liquidation_buffer`` of it."""
    fns = rules.margin
    if fns is None:
        raise InputError(f"{t.symbol} is not a perpetual future on this exchange (its market has no margin functions)")

    def build(quantity: Decimal) -> tuple[GridSpec, list[str]]:
        return build_grid(rules, mode=GridMode(t.grid_mode), grid_num=t.grid_num, quantity=quantity,
                          post_only=t.post_only, lower=t.grid_lower, upper=t.grid_upper, auto_price=t.auto_price,
                          price_range=t.price_range, price=price)
    try:
        if t.investment is None:
            grid, notes = build(t.quantity)
            collateral = collateral_for(placed_levels(grid.levels, price), price, t.direction, grid.quantity,
                                        t.leverage, fns, t.taker_fee, t.maker_fee)
        else:
            probe = build(rules.min_quantity)[0]
            q = quantity_for(placed_levels(probe.levels, price), price, t.direction, t.investment, t.leverage,
                             rules.step_size, fns, t.taker_fee, t.maker_fee)
            if q < rules.min_quantity:
                raise InputError(f"trading.investment {t.investment} at leverage {t.leverage} gives each level {q} "
                                 f"{rules.base}, below the market's minimum {rules.min_quantity}: invest more, use "
                                 f"more leverage, or fewer levels")
            grid, notes = build(q)
            collateral = t.investment
    except GridError as e:
        raise InputError(str(e)) from None
    q = grid.quantity
    placed = placed_levels(grid.levels, price)
    bottom, top = end_states(placed, price, q, t.direction, collateral, fns, leverage=t.leverage,
                             maker_fee=t.maker_fee, taker_fee=t.taker_fee)
    refused = []
    for s in (bottom, top):
        d = s.distance()
        if s.liquidation_price is not None and d is not None and d < risk.liquidation_buffer:
            where = "inside the range" if d < 0 else f"only {d:.1%} beyond it"
            kind = "long" if s.position > 0 else "short"
            refused.append(f"at the {s.end} ({s.price}) the grid is {kind} {fmt_amount(abs(s.position))} {rules.base} "
                           f"(entry {s.entry.quantize(rules.tick_size)}) and is liquidated at "
                           f"{shown_liquidation(s, rules.tick_size)}, {where} (risk.liquidation_buffer "
                           f"{risk.liquidation_buffer:.0%}): invest more, use less leverage, or narrow the range")
    return PerpGrid(grid, notes, bottom, top, opening_position(grid.levels, price, q, t.direction), refused,
                    collateral)


def shown_liquidation(s: EndState, tick: Decimal) -> Decimal | None:
    """The liquidation price to the tick, rounded toward the range (the side that warns earlier)."""
    return None if s.liquidation_price is None else to_tick_toward(s.liquidation_price, s.position, tick)


def to_tick_toward(price: Decimal, position: Decimal, tick: Decimal) -> Decimal:
    """A liquidation price to the tick, toward where the position still stands (a long's up, a short's down)."""
    return price.quantize(tick, ROUND_CEILING if position > 0 else ROUND_FLOOR)


def margin_stop_fraction(grid: GridSpec, start_price: Decimal, t: Any, rules: MarketRules,
                         collateral: Decimal) -> Decimal | None:
    """The margin fraction at which a perps grid stops and closes when ``risk.stop_margin_fraction`` is not
    set: halfway between the maintenance fraction and the margin fraction of the grid's worst case at the
    nearer end of its range (so the grid never stops inside its range, and stops well before the exchange
    liquidates it); the lower of the two ends. None when neither end holds a position."""
    fns = rules.margin
    assert fns is not None
    bottom, top = end_states(placed_levels(grid.levels, start_price), start_price, grid.quantity, t.direction,
                             collateral, fns, leverage=t.leverage, maker_fee=t.maker_fee, taker_fee=t.taker_fee)
    out = []
    for s in (bottom, top):
        if s.position:
            equity = collateral - s.fees + s.position * (s.price - s.entry)
            out.append((equity / s.notional + fns.mmf(s.notional)) / 2)
    return min(out) if out else None
