"""``grid_bot.py plan``: what a grid will do with the user's money, before any order goes out.

Pure: it is given the grid (built by ``grid_calculator`` exactly as the bot builds it), the price, the
balances if known and the saved grid if one is running, and returns a report (plain data, decimals as
strings) that ``print_plan`` prints and ``--json`` dumps. The what-if figures (the price ending at the
bottom or the top of the range) come from the backtester, which runs the bot's own ``OrderManager``
on the simulator's matching engine: the same code that trades.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from backtest import run_backtest
from grid_calculator import GridSpec, funds_needed, initial_plan, summarize
from models import Side
from simulator.feeds import Candle
from simulator.markets import MarketSpec

ZERO = Decimal(0)


def s(d: Decimal | None) -> str | None:
    return None if d is None else f"{d:f}"


def walk(price: Decimal, targets: list[Decimal]) -> list[Candle]:
    """One single-price candle per point: the price walking from ``price`` through ``targets``."""
    t0 = datetime(2000, 1, 1, tzinfo=timezone.utc)
    out = []
    for i, p in enumerate([price, *targets]):
        start = (t0 + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
        out.append(Candle(start, p, p, p, p))
    return out


def scenario(grid: GridSpec, spec: MarketSpec, price: Decimal, maker_fee: Decimal, edge: str) -> dict[str, Any]:
    """The price walks level by level from ``price`` through the bottom (or the top) of the range and
    stops just beyond it: every buy (or sell) on the way has filled. Inventory and its value there."""
    tick = spec.tick_size
    if edge == "bottom":
        end = grid.levels[0]
        targets = [p - tick for p in reversed(grid.levels) if p - tick < price]
    else:
        end = grid.levels[-1]
        targets = [p + tick for p in grid.levels if p + tick > price]
    r = run_backtest(grid, spec, walk(price, targets), maker_fee)
    base0, quote0 = r.start_funds.get(grid.base, ZERO), r.start_funds.get(grid.quote, ZERO)
    value = r.final_base * end + r.final_quote
    hold = base0 * end + quote0
    return {"price": s(end), "base": s(r.final_base), "quote": s(r.final_quote), "value": s(value),
            "change": s(value - r.start_equity), "vs_holding": s(value - hold), "fills": r.fills}


def saved_diff(saved_params: dict, saved_levels: list[dict], params: dict, planned: dict[Decimal, str]) -> dict:
    """A running saved grid against what this config would place: changed parameters, and each price
    where the saved grid's live order and this plan's order differ."""
    changed = {k: {"saved": saved_params.get(k), "config": params.get(k)}
               for k in sorted(set(saved_params) | set(params)) if saved_params.get(k) != params.get(k)}
    have = {row["price"]: row["side"] for row in saved_levels if row["side"] is not None}
    prices = sorted(set(have) | set(planned) | {row["price"] for row in saved_levels})
    rows = [{"price": s(p), "saved": have.get(p), "config": planned.get(p)}
            for p in prices if have.get(p) != planned.get(p)]
    return {"same_parameters": not changed, "changed": changed, "open_orders": len(have), "levels": rows}


def plan_report(grid: GridSpec, spec: MarketSpec, *, price: Decimal, price_source: str, maker_fee: Decimal,
                auto_price: bool, balances: dict[str, tuple[Decimal, Decimal]] | None,
                balances_source: str | None, saved: dict | None = None) -> dict[str, Any]:
    """Everything ``plan`` shows. ``saved``: {"id", "status", "params", "levels" (level_view rows),
    "params_now"} of the running grid in the state file, or None."""
    empty, plan = initial_plan(grid, price)
    need = funds_needed(grid, plan)
    summary = summarize(grid, maker_fee)
    warnings = []
    if summary.profit_min <= 0:
        warnings.append(f"the narrowest step ({summary.step_pct_min}%) does not cover two maker fees of "
                        f"{(maker_fee * 100).normalize():f}%: a round trip there loses money; widen the range or lower grid_num")
    by_level = {o.level: o for o in plan}
    levels = []
    for i, p in enumerate(grid.levels):
        o = by_level.get(i)
        levels.append({"level": i, "price": s(p), "side": o.side.value if o else None,
                       "quantity": s(o.quantity) if o else None, "notional": s(o.notional) if o else None})
    funds: dict[str, Any] = {}
    for asset in (grid.quote, grid.base):
        row: dict[str, Any] = {"needed": s(need.get(asset, ZERO)), "available": None, "missing": None}
        if balances is not None:
            have = balances.get(asset, (ZERO, ZERO))[0]
            row["available"] = s(have)
            row["missing"] = s(max(ZERO, need.get(asset, ZERO) - have))
            if need.get(asset, ZERO) > have:
                warnings.append(f"not enough {asset}: the grid needs {need[asset]:f}, {have:f} available")
        funds[asset] = row
    report: dict[str, Any] = {
        "symbol": grid.symbol, "base": grid.base, "quote": grid.quote, "mode": grid.mode.value,
        "auto_price": auto_price, "post_only": grid.post_only,
        "price": s(price), "price_source": price_source,
        "lower": s(grid.levels[0]), "upper": s(grid.levels[-1]), "quantity": s(grid.quantity),
        "empty_level": empty, "levels": levels,
        "buys": sum(1 for o in plan if o.side is Side.BID), "sells": sum(1 for o in plan if o.side is Side.ASK),
        "step": {"min": s(summary.step_min), "max": s(summary.step_max),
                 "pct_min": s(summary.step_pct_min), "pct_max": s(summary.step_pct_max)},
        "maker_fee": s(maker_fee),
        "profit_per_round_trip": {"min": s(summary.profit_min), "max": s(summary.profit_max)},
        # A buy pays its maker fee in the base asset it receives, while its counter-sell sells the full
        # quantity: each round trip uses this much spare base on the account.
        "base_fee_per_round_trip": s(grid.quantity * maker_fee),
        "funds": funds, "balances_source": balances_source,
        "if_price_ends": {edge: scenario(grid, spec, price, maker_fee, edge) for edge in ("bottom", "top")},
        "saved_grid": None,
        "warnings": warnings,
    }
    if saved is not None:
        planned = {o.price: o.side.value for o in plan}
        report["saved_grid"] = {"id": saved["id"], "status": saved["status"],
                                **saved_diff(saved["params"], saved["levels"], saved["params_now"], planned)}
    return report


def _amount(text: str | None, places: int = 8, at_least: int = 0) -> str:
    """A decimal string for reading: at most ``places`` decimals, trailing zeros dropped down to
    ``at_least`` decimals."""
    if text is None:
        return "-"
    d = Decimal(text).quantize(Decimal(1).scaleb(-places)).normalize()
    if -d.as_tuple().exponent < at_least:
        d = d.quantize(Decimal(1).scaleb(-at_least))
    return f"{d:f}"


def print_plan(r: dict[str, Any]) -> None:
    base, quote = r["base"], r["quote"]
    how = "auto-price" if r["auto_price"] else "fixed"
    print(f"plan: {r['symbol']} {r['mode']} grid ({how}), {len(r['levels'])} levels {r['lower']}..{r['upper']}, "
          f"{r['quantity']} {base} per order{'' if r['post_only'] else ', not post-only'}")
    print(f"price {r['price']} ({r['price_source']}); the level nearest it ({r['empty_level']}) stays empty: "
          f"{r['buys']} buys below, {r['sells']} sells above")
    print()
    print(f"level  side  {'price':>14}  {'quantity':>12}  {'notional':>14}")
    for row in reversed(r["levels"]):
        side = {"Bid": "buy", "Ask": "sell"}.get(row["side"], "-")
        print(f"{row['level']:>5}  {side:<4}  {row['price']:>14}  {row['quantity'] or '':>12}  "
              f"{_amount(row['notional'], 6, 2) if row['notional'] else '(empty)':>14}")
    print()
    st, pr = r["step"], r["profit_per_round_trip"]
    step = st["min"] if st["min"] == st["max"] else f"{st['min']}..{st['max']}"
    pct = f"{st['pct_min']}%" if st["pct_min"] == st["pct_max"] else f"{st['pct_min']}%..{st['pct_max']}%"
    profit = _amount(pr["min"]) if pr["min"] == pr["max"] else f"{_amount(pr['min'])}..{_amount(pr['max'])}"
    print(f"step {step} {quote} ({pct}); net profit per round trip {profit} {quote} after two maker fees "
          f"of {_amount(str(Decimal(r['maker_fee']) * 100))}%")
    print()
    print("funds" + ("" if r["balances_source"] else " (balances not checked: no API keys set; "
                                                    "--paper shows paper balances)"))
    for asset, row in r["funds"].items():
        line = f"  {asset:<6} needs {_amount(row['needed'])}"
        if row["available"] is not None:
            ok = "ok" if Decimal(row["missing"]) == 0 else f"MISSING {_amount(row['missing'])}"
            line += f", {_amount(row['available'])} available ({r['balances_source']}): {ok}"
        print(line)
    print(f"  and spare {base} for fees: buys pay theirs in {base}, so each round trip uses "
          f"{_amount(r['base_fee_per_round_trip'])} {base} beyond what the grid locks")
    print()
    for edge, word in (("bottom", "falls through the bottom"), ("top", "rises through the top")):
        e = r["if_price_ends"][edge]
        print(f"if the price {word} ({e['price']}): {_amount(e['base'])} {base} + {_amount(e['quote'], 6, 2)} {quote}"
              f" = {_amount(e['value'], 2)} {quote} ({_signed(e['change'])} against now, "
              f"{_signed(e['vs_holding'])} against holding the same funds)")
    sg = r["saved_grid"]
    if sg is not None:
        print()
        if sg["same_parameters"]:
            print(f"saved grid {sg['id']} ({sg['status']}) has these parameters: a start resumes it as it "
                  f"stands" + (", not as this fresh plan; where they differ:" if sg["levels"] else ""))
        else:
            changes = ", ".join(f"{k} {v['saved']} -> {v['config']}" for k, v in sg["changed"].items())
            print(f"saved grid {sg['id']} ({sg['status']}) differs: {changes}; starting this config needs "
                  f"--reset, which cancels its {sg['open_orders']} open order(s)")
        for row in sg["levels"]:
            print(f"  {row['price']:>14}  saved {row['saved'] or '-':<4} -> this config {row['config'] or '-'}")
    for w in r["warnings"]:
        print(f"WARNING: {w}")


def _signed(text: str) -> str:
    d = Decimal(text).quantize(Decimal("0.01"))
    return f"{'+' if d >= 0 else ''}{d:f}"
