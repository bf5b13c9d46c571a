"""``plan`` for a perps grid: what it would place, how its investment is sized with its leverage, and, before
the first order, its worst case at each end of the range (gridbot/core/perp_risk.py): the position, the
margin it needs and the price at which it would be liquidated. A grid liquidated inside its range, or
within ``risk.liquidation_buffer`` of it, is refused. A perps grid is planned only: ``run`` does not trade
it yet.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from grid_calculator import GridMode, GridSpec, build_grid
from gridbot.core.errors import InputError
from gridbot.core.models import MarketRules
from gridbot.core.perp_risk import EndState, MarginFunctions, end_states, funding_per_day, quantity_for
from gridbot.ops.config import Config
from gridbot.ops.reports import fmt_amount

ZERO = Decimal(0)


def _s(x: Decimal | None) -> str | None:
    return None if x is None else f"{x:f}"


def _build(rules: MarketRules, cfg: Config, quantity: Decimal, price: Decimal) -> GridSpec:
    t = cfg.trading
    return build_grid(rules, mode=GridMode(t.grid_mode), grid_num=t.grid_num, quantity=quantity,
                      post_only=t.post_only, lower=t.grid_lower, upper=t.grid_upper, auto_price=t.auto_price,
                      price_range=t.price_range, price=price)[0]


def _end(s: EndState, buffer: Decimal, tick: Decimal) -> dict[str, Any]:
    d = s.distance()
    return {"price": _s(s.price), "position": _s(s.position), "entry": _s(s.entry) if s.position else None,
            "notional": _s(s.notional), "fees": _s(_usdc(s.fees)), "initial_margin": _s(_usdc(s.initial_margin)),
            "maintenance_margin": _s(_usdc(s.maintenance_margin)),
            "liquidation_price": _s(shown_liquidation(s, tick)),
            "liquidation_distance": None if d is None else _s(d.quantize(Decimal("0.0001"))),
            "too_close": d is not None and d < buffer}


def perp_plan_report(cfg: Config, rules: MarketRules, *, mark: Decimal, index: Decimal | None,
                     funding_rate: Decimal, price_source: str, available: Decimal | None) -> dict[str, Any]:
    """``available``: the account's equity available for a new grid (None: not known, no keys)."""
    t = cfg.trading
    fns = rules.margin
    if fns is None or t.investment is None or t.leverage is None:
        raise InputError(f"{t.symbol} is not a perpetual future on this exchange (its market has no margin "
                         f"functions)")
    probe = _build(rules, cfg, rules.min_quantity, mark)
    q = quantity_for(probe.levels, mark, t.direction, t.investment, t.leverage, rules.step_size)
    if q < rules.min_quantity:
        raise InputError(f"trading.investment {t.investment} at leverage {t.leverage} gives each level {q} "
                         f"{rules.base}, below the market's minimum {rules.min_quantity}: invest more, use more "
                         f"leverage, or fewer levels")
    grid = _build(rules, cfg, q, mark)
    bottom, top = end_states(grid.levels, mark, q, t.direction, t.investment, fns, leverage=t.leverage,
                             maker_fee=t.maker_fee, taker_fee=t.taker_fee)
    buys = [lv for lv in grid.levels if lv < mark]
    sells = [lv for lv in grid.levels if lv > mark]
    opening = {"long": q * len(sells), "short": -q * len(buys)}.get(t.direction, ZERO)
    orders = [{"price": _s(lv), "side": "Bid" if lv < mark else "Ask", "quantity": _s(q),
               "reduce_only": (t.direction == "long" and lv > mark) or (t.direction == "short" and lv < mark)}
              for lv in grid.levels if lv != mark]
    start_margin = _start_margin(fns, t.leverage, mark, opening, q * len(buys), q * len(sells), t.direction)
    buffer = cfg.risk.liquidation_buffer
    refused = []
    for s in (bottom, top):
        d = s.distance()
        if s.liquidation_price is not None and d is not None and d < buffer:
            where = "inside the range" if d < 0 else f"only {d:.1%} beyond it"
            kind = "long" if s.position > 0 else "short"
            refused.append(f"at the {s.end} ({s.price}) the grid is {kind} {fmt_amount(abs(s.position))} {rules.base} "
                           f"(entry {s.entry.quantize(rules.tick_size)}) and is liquidated at "
                           f"{shown_liquidation(s, rules.tick_size)}, {where} (risk.liquidation_buffer {buffer:.0%}): "
                           f"invest more, use less leverage, or narrow the range")
    if available is not None and available < t.investment:
        refused.append(f"the account has {fmt_amount(available)} {rules.quote} available, less than "
                       f"trading.investment {t.investment}")
    return {
        "symbol": t.symbol, "direction": t.direction, "leverage": _s(t.leverage), "investment": _s(t.investment),
        "base": rules.base, "quote": rules.quote, "mode": grid.mode.value, "levels": [_s(x) for x in grid.levels],
        "quantity": _s(q), "price": {"mark": _s(mark), "index": _s(index), "source": price_source},
        "funding_rate": _s(funding_rate), "opening_position": _s(opening), "orders": orders,
        "start_margin": _s(_usdc(start_margin)),
        "bottom": _end(bottom, buffer, rules.tick_size), "top": _end(top, buffer, rules.tick_size),
        "funding_per_day": {"start": _s(_usdc(funding_per_day(opening, mark, funding_rate))),
                            "bottom": _s(_usdc(funding_per_day(bottom.position, bottom.price, funding_rate))),
                            "top": _s(_usdc(funding_per_day(top.position, top.price, funding_rate)))},
        "available": _s(available), "liquidation_buffer": _s(buffer), "refused": refused,
    }


def shown_liquidation(s: EndState, tick: Decimal) -> Decimal | None:
    """The liquidation price to the tick, rounded toward the range (the side that warns earlier)."""
    if s.liquidation_price is None:
        return None
    return s.liquidation_price.quantize(tick, ROUND_CEILING if s.position > 0 else ROUND_FLOOR)


def _usdc(x: Decimal) -> Decimal:
    out = x.quantize(Decimal("0.000001"))
    return out.normalize() if out else ZERO


def _start_margin(fns: MarginFunctions, leverage: Decimal, mark: Decimal, opening: Decimal, buy_qty: Decimal,
                  sell_qty: Decimal, direction: str) -> Decimal:
    """The initial margin the grid locks once its orders rest: its position (long or short: the opening) and
    the orders that add to it, the worse side, at the mark; reduce-only orders add none."""
    if direction == "long":
        exposure = opening + buy_qty
    elif direction == "short":
        exposure = -opening + sell_qty
    else:
        exposure = max(buy_qty, sell_qty)
    notional = exposure * mark
    return fns.imf(notional, leverage) * notional


def print_perp_plan(r: dict[str, Any]) -> None:
    q, b = r["quote"], r["base"]
    print(f"plan: {r['symbol']} perps grid, {r['direction']}, {len(r['levels'])} levels {r['levels'][0]}.."
          f"{r['levels'][-1]} {r['mode']}, {r['quantity']} {b} per level")
    p = r["price"]
    print(f"  mark {p['mark']}" + (f" (index {p['index']})" if p["index"] else "") + f", {p['source']}; funding "
          f"{r['funding_rate']} per hour")
    print(f"  investment (collateral) {r['investment']} {q} at leverage {r['leverage']}: the largest exposure, at the "
          f"worse end, is at most {Decimal(r['investment']) * Decimal(r['leverage']):f} {q}")
    if Decimal(r["opening_position"]):
        side = "buys" if Decimal(r["opening_position"]) > 0 else "sells"
        print(f"  opening: the grid first {side} {abs(Decimal(r['opening_position'])):f} {b} at the market "
              f"(capped IOC), which its {'sells above' if side == 'buys' else 'buys below'} close")
    print("  level  price           order")
    for i, o in reversed(list(enumerate(r["orders"]))):
        tag = " (reduce-only)" if o["reduce_only"] else ""
        print(f"  {i:>5}  {o['price']:<14}  {o['side']} {o['quantity']}{tag}")
    print(f"  margin once the orders rest: {fmt_amount(Decimal(r['start_margin']), 4)} {q} of the investment")
    for end in ("bottom", "top"):
        e = r[end]
        if not Decimal(e["position"]):
            print(f"  at the {end} ({e['price']}): flat")
            continue
        kind = "long" if Decimal(e["position"]) > 0 else "short"
        liq = (f"liquidated at {e['liquidation_price']} ({Decimal(e['liquidation_distance']):.1%} "
               f"{'below' if kind == 'long' else 'above'} it)" if e["liquidation_price"] else "never liquidated")
        print(f"  at the {end} ({e['price']}): {kind} {abs(Decimal(e['position'])):f} {b} at {Decimal(e['entry']):.4f}; "
              f"initial margin {fmt_amount(Decimal(e['initial_margin']), 4)} {q}, maintenance "
              f"{fmt_amount(Decimal(e['maintenance_margin']), 4)} {q}; {liq}")
    f = r["funding_per_day"]
    print(f"  funding per day at the current rate: start {f['start']}, bottom {f['bottom']}, top {f['top']} {q} "
          f"(negative: paid)")
    if r["available"] is not None:
        print(f"  account: {r['available']} {q} available")
    for line in r["refused"]:
        print(f"REFUSED: {line}")
    print("A perps grid is planned only: run does not trade it yet.")
