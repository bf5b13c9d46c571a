"""Pure grid maths: levels, rounding to market rules, auto-price bounds, the initial plan, funds, profit.

No I/O. Every amount is a ``Decimal``; results are rounded to the market's ``tickSize`` (prices) and
``stepSize`` (quantities) by ``Decimal`` arithmetic alone.

Semantics (docs/architecture.md "The grid"):
- ``grid_num`` levels from ``lower`` to ``upper`` inclusive: equal steps (arithmetic) or equal ratios
  (geometric), each rounded to the nearest tick. Two levels that round to the same price are an error.
- Auto-price bounds are ``price * (1 - range)`` rounded up and ``price * (1 + range)`` rounded down, so
  the grid stays inside the asked range.
- At start the level nearest the price stays empty (the lower one on an exact tie); every level below
  gets a buy, every level above a sell. The N levels form N - 1 adjacent pairs, and each pair holds
  exactly one order: a buy at its lower level or a sell at its upper level.
- A round trip's profit: sell proceeds - buy cost - both fees, a fee charged in the base asset valued
  at its fill price. For planning, both fills are at their level prices and pay the maker fee.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from enum import Enum
from typing import Sequence

from gridbot.core.errors import InputError
from gridbot.core.models import MarketRules, Order, Side

ZERO = Decimal(0)


class GridMode(Enum):
    ARITHMETIC = "arithmetic"
    GEOMETRIC = "geometric"


class GridError(InputError):
    """A grid that cannot be built as asked; the message says what to change."""


def to_step(value: Decimal, step: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    """``value`` rounded to a multiple of ``step`` (tick or step size), written with step's decimals."""
    n = (value / step).to_integral_value(rounding)
    return (n * step).quantize(step)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def raw_level(lower: Decimal, upper: Decimal, n: int, mode: GridMode, j: int) -> Decimal:
    """Level ``j`` of the ladder through ``lower`` (j = 0) and ``upper`` (j = n - 1), unrounded, with 40
    significant digits; ``j`` may lie outside 0..n-1 (a trailing grid's levels beyond its first range)."""
    with localcontext() as ctx:
        ctx.prec = 40
        if j == 0:
            return lower
        if j == n - 1:
            return upper
        if mode is GridMode.ARITHMETIC:
            return lower + (upper - lower) / (n - 1) * j
        return lower * ((upper / lower).ln() / (n - 1) * j).exp()


def raw_levels(lower: Decimal, upper: Decimal, n: int, mode: GridMode) -> list[Decimal]:
    """Unrounded levels, computed with 40 significant digits."""
    if n < 2:
        raise GridError("grid_num must be at least 2")
    return [raw_level(lower, upper, n, mode, i) for i in range(n)]


def grid_levels(lower: Decimal, upper: Decimal, n: int, mode: GridMode, tick: Decimal) -> tuple[Decimal, ...]:
    """The level prices, rounded to ``tick``. Raises GridError when two levels collide."""
    if lower <= 0:
        raise GridError(f"grid_lower must be above 0 (got {lower})")
    if lower >= upper:
        raise GridError(f"grid_lower {lower} must be below grid_upper {upper}")
    levels = tuple(to_step(p, tick) for p in raw_levels(lower, upper, n, mode))
    for a, b in zip(levels, levels[1:]):
        if a >= b:
            most = max_levels(lower, upper, mode, tick)
            raise GridError(
                f"grid_num {n} is too many for {lower}..{upper} with tickSize {tick}: levels collide at "
                f"{a}; use at most {most} levels or widen the range")
    return levels


def max_levels(lower: Decimal, upper: Decimal, mode: GridMode, tick: Decimal) -> int:
    """The largest grid_num whose levels do not collide after rounding (for error messages)."""
    hi = int((upper - lower) / tick) + 1
    lo = 2
    # Collisions are monotone in n for both modes, so bisect.
    while lo < hi:
        mid = (lo + hi + 1) // 2
        levels = [to_step(p, tick) for p in raw_levels(lower, upper, mid, mode)]
        if all(a < b for a, b in zip(levels, levels[1:])):
            lo = mid
        else:
            hi = mid - 1
    return lo


def auto_bounds(price: Decimal, price_range: Decimal, tick: Decimal) -> tuple[Decimal, Decimal]:
    """``price * (1 -/+ range)``, rounded inward to the tick."""
    lower = to_step(price * (1 - price_range), tick, ROUND_CEILING)
    upper = to_step(price * (1 + price_range), tick, ROUND_FLOOR)
    return lower, upper


def nearest_level(levels: Sequence[Decimal], price: Decimal) -> int:
    """Index of the level nearest ``price``; the lower one on a tie."""
    best = 0
    for i, p in enumerate(levels):
        if abs(p - price) < abs(levels[best] - price):
            best = i
    return best


def round_quantity(quantity: Decimal, rules: MarketRules) -> Decimal:
    """``quantity`` rounded down to the step size (never more than asked)."""
    return to_step(quantity, rules.step_size, ROUND_DOWN)


@dataclass(frozen=True)
class PlannedOrder:
    level: int
    side: Side
    price: Decimal
    quantity: Decimal

    @property
    def notional(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True)
class GridSpec:
    """A grid ready to trade: the market, its rounded levels, the rounded quantity."""
    symbol: str
    base: str
    quote: str
    levels: tuple[Decimal, ...]
    quantity: Decimal
    mode: GridMode
    post_only: bool = True

    def pair_level(self, pair: int, side: Side) -> int:
        """Pair k spans levels k and k+1: its buy rests at k, its sell at k+1."""
        return pair if side is Side.BID else pair + 1


@dataclass(frozen=True)
class Ladder:
    """The endless ladder a grid's levels are cut from: the first range's ``lower`` (level 0) and
    ``upper`` (level n - 1), continued by the same step (arithmetic) or ratio (geometric), each level
    rounded to ``tick``. A trailing grid is the window of n levels starting at its ``offset``."""
    lower: Decimal
    upper: Decimal
    n: int
    mode: GridMode
    tick: Decimal

    def price(self, j: int) -> Decimal:
        return to_step(raw_level(self.lower, self.upper, self.n, self.mode, j), self.tick)

    def window(self, offset: int) -> tuple[Decimal, ...]:
        return tuple(self.price(offset + i) for i in range(self.n))

    def usable(self, offset: int, min_price: Decimal) -> bool:
        """Can the grid stand at ``offset``: every level positive, at least ``min_price``, all distinct."""
        levels = self.window(offset)
        return levels[0] >= max(min_price, self.tick) and all(a < b for a, b in zip(levels, levels[1:]))

    def to_json(self) -> dict:
        return {"lower": f"{self.lower:f}", "upper": f"{self.upper:f}", "n": self.n, "mode": self.mode.value,
                "tick": f"{self.tick:f}"}

    @classmethod
    def from_json(cls, d: dict) -> "Ladder":
        return cls(Decimal(d["lower"]), Decimal(d["upper"]), int(d["n"]), GridMode(d["mode"]), Decimal(d["tick"]))


def initial_sides(n_levels: int, empty: int) -> list[Side]:
    """The side each of the n-1 pairs starts with, given the empty level."""
    return [Side.BID if k < empty else Side.ASK for k in range(n_levels - 1)]


def initial_plan(grid: GridSpec, price: Decimal) -> tuple[int, list[PlannedOrder]]:
    """(empty level, the N-1 orders) for a grid started at ``price``."""
    empty = nearest_level(grid.levels, price)
    orders = []
    for k, side in enumerate(initial_sides(len(grid.levels), empty)):
        level = grid.pair_level(k, side)
        orders.append(PlannedOrder(level, side, grid.levels[level], grid.quantity))
    return empty, orders


def match_open_orders(grid: GridSpec, orders: Sequence[Order]) -> tuple[dict[int, Order], list[Order]]:
    """The open orders a new grid takes over (``--adopt``), by pair: an order at one of the grid's level
    prices on a side that level's pair can hold there (a buy at level k for pair k, a sell at level k+1
    for pair k), with exactly the grid's quantity, nothing executed yet, and a clientId (so it can be
    looked up); of two for one pair, the older. Returns (pair -> order, the orders left alone)."""
    index = {price: i for i, price in enumerate(grid.levels)}
    taken: dict[int, Order] = {}
    left: list[Order] = []
    for o in sorted(orders, key=lambda x: x.created_at_ms):
        level = index.get(o.price) if o.price is not None else None
        pair = None if level is None else (level if o.side is Side.BID else level - 1)
        if (pair is None or not 0 <= pair < len(grid.levels) - 1 or pair in taken or o.client_id is None
                or o.quantity != grid.quantity or o.executed_quantity != 0 or o.symbol != grid.symbol):
            left.append(o)
        else:
            taken[pair] = o
    return taken, left


def funds_needed(grid: GridSpec, plan: Sequence[PlannedOrder]) -> dict[str, Decimal]:
    """What the initial orders lock: quote for the buys, base for the sells."""
    quote = sum((o.notional for o in plan if o.side is Side.BID), ZERO)
    base = sum((o.quantity for o in plan if o.side is Side.ASK), ZERO)
    return {grid.quote: quote, grid.base: base}


def shortfall(need_base: Decimal, free_base: Decimal, rules: MarketRules, taker_fee: Decimal = Decimal(0)) -> Decimal:
    """What the entry purchase buys: the base missing, grossed up for the taker fee that Backpack charges
    in the base bought (``taker_fee`` a fraction), up to the step, at least the minimum order quantity
    (0: nothing is missing)."""
    short = need_base - free_base
    if short <= 0:
        return Decimal(0)
    gross = short / (1 - taker_fee)
    qty = (gross / rules.step_size).to_integral_value(ROUND_CEILING) * rules.step_size
    return max(qty, rules.min_quantity)


def round_trip_profit(buy_price: Decimal, sell_price: Decimal, quantity: Decimal,
                      maker_fee: Decimal) -> Decimal:
    """Net quote profit of buying at ``buy_price`` and selling at ``sell_price`` as maker."""
    buy_fee = quantity * maker_fee * buy_price      # charged in base, valued at the buy price
    sell_fee = sell_price * quantity * maker_fee    # charged in quote
    return (sell_price - buy_price) * quantity - buy_fee - sell_fee


def pair_profits(grid: GridSpec, maker_fee: Decimal) -> list[Decimal]:
    return [round_trip_profit(a, b, grid.quantity, maker_fee) for a, b in zip(grid.levels, grid.levels[1:])]


@dataclass(frozen=True)
class GridSummary:
    """The numbers a user reads before risking money."""
    step_min: Decimal
    step_max: Decimal
    step_pct_min: Decimal
    step_pct_max: Decimal
    profit_min: Decimal
    profit_max: Decimal


def summarize(grid: GridSpec, maker_fee: Decimal) -> GridSummary:
    steps = [b - a for a, b in zip(grid.levels, grid.levels[1:])]
    pcts = [(b - a) / a * 100 for a, b in zip(grid.levels, grid.levels[1:])]
    profits = pair_profits(grid, maker_fee)
    q = Decimal("0.0001")
    return GridSummary(min(steps), max(steps), min(pcts).quantize(q), max(pcts).quantize(q),
                       min(profits), max(profits))


def build_grid(rules: MarketRules, *, mode: GridMode, grid_num: int, quantity: Decimal,
               post_only: bool, lower: Decimal | None, upper: Decimal | None, auto_price: bool,
               price_range: Decimal | None, price: Decimal | None) -> tuple[GridSpec, list[str]]:
    """A GridSpec that fits the market's rules, plus notes worth a warning; GridError otherwise."""
    notes: list[str] = []
    tick = rules.tick_size
    if auto_price:
        if price is None or price_range is None:
            raise GridError("auto_price needs the current price and price_range")
        lower, upper = auto_bounds(price, price_range, tick)
    else:
        if lower is None or upper is None:
            raise GridError("set grid_lower and grid_upper, or set auto_price to true")
        for name, value in (("grid_lower", lower), ("grid_upper", upper)):
            if not is_multiple(value, tick):
                down, up = to_step(value, tick, ROUND_FLOOR), to_step(value, tick, ROUND_CEILING)
                raise GridError(f"{name} {value} is off {rules.symbol}'s price tick {tick}: "
                                f"use {down} or {up}")
    if lower < rules.min_price:
        raise GridError(f"grid_lower {lower} is below {rules.symbol}'s minimum price {rules.min_price}")
    if rules.max_price is not None and upper > rules.max_price:
        raise GridError(f"grid_upper {upper} is above {rules.symbol}'s maximum price {rules.max_price}")
    qty = round_quantity(quantity, rules)
    if qty < rules.min_quantity:
        raise GridError(f"quantity {quantity} is below {rules.symbol}'s minimum order quantity "
                        f"{rules.min_quantity}: raise it to at least {rules.min_quantity}")
    if rules.max_quantity is not None and qty > rules.max_quantity:
        raise GridError(f"quantity {quantity} is above {rules.symbol}'s maximum order quantity "
                        f"{rules.max_quantity}")
    if qty != quantity:
        notes.append(f"quantity {quantity} rounded down to {qty} ({rules.symbol} stepSize {rules.step_size})")
    levels = grid_levels(lower, upper, grid_num, mode, tick)
    return GridSpec(rules.symbol, rules.base, rules.quote, levels, qty, mode, post_only), notes


@dataclass(frozen=True)
class Sizing:
    """An investment in quote, spent on a grid at ``price``: one base ``quantity`` per level."""
    investment: Decimal
    price: Decimal
    quantity: Decimal
    quote_for_buys: Decimal           # what the buys below the price lock
    base_for_sells: Decimal           # what the sells above it lock
    reserve: Decimal                  # base for the buys' fees (charged in base) over one round trip per pair
    value: Decimal                    # all of it at ``price``
    left_over: Decimal                # investment - value: not used


def size_for_investment(levels: Sequence[Decimal], price: Decimal, investment: Decimal, maker_fee: Decimal,
                        rules: MarketRules) -> Sizing:
    """The largest quantity (down to the step) whose grid fits ``investment``: the quote the buys lock, plus
    the base the sells lock and a fee reserve in base (one round trip per pair: each buy pays its fee in
    base) valued at ``price``. GridError when even the market's minimum quantity does not fit."""
    empty = nearest_level(levels, price)
    buys = sum(levels[:empty], ZERO)
    sells = len(levels) - 1 - empty
    trips = len(levels) - 1
    per_unit = buys + (sells + maker_fee * trips) * price
    qty = round_quantity(investment / per_unit, rules)
    if qty < rules.min_quantity:
        least = (rules.min_quantity * per_unit).quantize(Decimal("0.01"), ROUND_CEILING)
        raise GridError(f"trading.investment {investment} is too small for this grid: {rules.symbol}'s minimum order "
                        f"quantity {rules.min_quantity} needs at least {least} {rules.quote} at the price {price} "
                        f"(raise the investment or lower grid_num)")
    if rules.max_quantity is not None and qty > rules.max_quantity:
        qty = rules.max_quantity
    reserve = qty * maker_fee * trips
    value = qty * buys + (qty * sells + reserve) * price
    return Sizing(investment, price, qty, qty * buys, qty * sells, reserve, value, investment - value)
