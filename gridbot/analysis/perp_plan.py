"""``plan`` for a perps grid: what it would place, how its investment is sized with its leverage, and, before
the first order, its worst case at each end of the range (gridbot/core/perp_risk.py): the position, the
margin it needs and the price at which it would be liquidated. A grid liquidated inside its range, or
within ``risk.liquidation_buffer`` of it, is refused, by ``plan`` as by ``run``.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from gridbot.core.models import MarketRules, Side
from gridbot.core.perp_risk import EndState, MarginFunctions, funding_per_day
from gridbot.engine.perp_grid import perp_grid, placed_levels, reduce_side, shown_liquidation
from gridbot.ops.config import Config
from gridbot.ops.reports import fmt_amount

ZERO = Decimal(0)


def _s(x: Decimal | None) -> str | None:
    return None if x is None else f"{x:f}"


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
    """``available``: the account's equity available for a new grid (None: not known, no keys). The grid is
    the one ``run`` lays out at the mark (engine/perp_grid.py)."""
    t = cfg.trading
    pg = perp_grid(rules, t, cfg.risk, mark)
    fns, grid, q = rules.margin, pg.grid, pg.grid.quantity
    assert fns is not None and t.leverage is not None
    placed = placed_levels(grid.levels, mark)
    buys = [lv for lv in placed if lv < mark]
    sells = [lv for lv in placed if lv > mark]
    ro = reduce_side(t.direction)
    orders = [{"price": _s(lv), "side": "Bid" if lv < mark else "Ask", "quantity": _s(q),
               "reduce_only": ro is not None and (Side.BID if lv < mark else Side.ASK) is ro}
              for lv in placed]
    start_margin = _start_margin(fns, t.leverage, mark, pg.opening, q * len(buys), q * len(sells), t.direction)
    refused = list(pg.refused)
    if available is not None and available < pg.collateral:
        refused.append(f"the account has {fmt_amount(available)} {rules.quote} available, less than "
                       + (f"trading.investment {t.investment}" if t.investment is not None else
                          f"the {pg.collateral} this grid of trading.quantity {t.quantity} needs"))
    buffer = cfg.risk.liquidation_buffer
    bottom, top = pg.bottom, pg.top
    return {
        "symbol": t.symbol, "direction": t.direction, "leverage": _s(t.leverage), "investment": _s(pg.collateral),
        "sized_by": "investment" if t.investment is not None else "quantity",
        "base": rules.base, "quote": rules.quote, "mode": grid.mode.value, "levels": [_s(x) for x in grid.levels],
        "quantity": _s(q), "price": {"mark": _s(mark), "index": _s(index), "source": price_source},
        "funding_rate": _s(funding_rate), "opening_position": _s(pg.opening), "orders": orders,
        "start_margin": _s(_usdc(start_margin)),
        "bottom": _end(bottom, buffer, rules.tick_size), "top": _end(top, buffer, rules.tick_size),
        "funding_per_day": {"start": _s(_usdc(funding_per_day(pg.opening, mark, funding_rate))),
                            "bottom": _s(_usdc(funding_per_day(bottom.position, bottom.price, funding_rate))),
                            "top": _s(_usdc(funding_per_day(top.position, top.price, funding_rate)))},
        "available": _s(available), "liquidation_buffer": _s(buffer), "refused": refused,
    }


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
    print(f"  {'investment (collateral)' if r['sized_by'] == 'investment' else 'collateral needed'} "
          f"{r['investment']} {q} at leverage {r['leverage']}: " + ("sized so that it carries" if r["sized_by"] ==
          "investment" else "what carries") + " the initial margin of every order anywhere in the range (the "
          "exchange refuses none)")
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
