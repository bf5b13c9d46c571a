"""``grid_bot.py plan``: what a grid will do with the user's money, before any order goes out.

Pure: it is given the grid (built by ``grid_calculator`` exactly as the bot builds it), the price, the
balances if known and the saved grid if one is running, and returns a report (plain data, decimals as
strings) that ``print_plan`` prints and ``--json`` dumps. The what-if figures (the price ending at the
bottom or the top of the range) come from the backtester, which runs the bot's own ``OrderManager``
on the backtester's exchange (``book.py``): the same code that trades.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from dataclasses import replace

from gridbot.analysis.backtest import run_backtest
from gridbot.core.errors import InputError
from grid_calculator import GridSpec, Ladder, funds_needed, initial_plan, shortfall, size_for_investment, summarize
from gridbot.core.risk import RiskConfig, buy_ceiling, exit_notes, trail_needs
from gridbot.core.models import MarketRules, Side
from gridbot.marketdata.candles import Candle

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


def scenario(grid: GridSpec, rules: MarketRules, price: Decimal, maker_fee: Decimal, edge: str) -> dict[str, Any]:
    """The price walks level by level from ``price`` through the bottom (or the top) of the range and
    stops just beyond it: every buy (or sell) on the way has filled. Inventory and its value there."""
    tick = rules.tick_size
    if edge == "bottom":
        end = grid.levels[0]
        targets = [p - tick for p in reversed(grid.levels) if p - tick < price]
    else:
        end = grid.levels[-1]
        targets = [p + tick for p in grid.levels if p + tick > price]
    r = run_backtest(grid, rules, walk(price, targets), maker_fee)
    base0, quote0 = r.start_funds.get(grid.base, ZERO), r.start_funds.get(grid.quote, ZERO)
    value = r.final_base * end + r.final_quote
    hold = base0 * end + quote0
    return {"price": s(end), "base": s(r.final_base), "quote": s(r.final_quote), "value": s(value),
            "change": s(value - r.start_equity), "vs_holding": s(value - hold), "fills": r.fills}


def exit_scenario(grid: GridSpec, rules: MarketRules, price: Decimal, maker_fee: Decimal, cfg: RiskConfig,
                  target: Decimal) -> dict[str, Any]:
    """The price walks level by level from ``price`` to ``target`` (a stop-loss or take-profit price): what
    fires there, and what the grid holds and is worth with ``keep`` and with ``sell_base``."""
    tick = rules.tick_size
    if target < price:
        targets = [p - tick for p in reversed(grid.levels) if target < p - tick < price] + [target]
    else:
        targets = [p + tick for p in grid.levels if price < p + tick < target] + [target]
    out: dict[str, Any] = {"price": s(target)}
    for on_stop in ("keep", "sell_base"):
        r = run_backtest(grid, rules, walk(price, targets), maker_fee,
                         risk=replace(cfg, on_stop=on_stop, stop_delay=0.0, trigger_price=None))
        at = r.exit["price"] if r.exit else target
        value = r.final_base * at + r.final_quote
        out[on_stop] = {"fired": r.exit["reason"] if r.exit else None, "at": s(at), "base": s(r.final_base),
                        "quote": s(r.final_quote), "value": s(value), "change": s(value - r.start_equity),
                        "not_sold": s(r.exit["not_sold"]) if r.exit else None}
    return out


def exits_report(grid: GridSpec, rules: MarketRules, price: Decimal, maker_fee: Decimal, cfg: RiskConfig,
                 warnings: list[str]) -> dict[str, Any]:
    """Each configured exit: the trigger, the stop-loss and take-profit (walked on the backtest engine),
    the return limits, the range policy and the trailing limits; warnings for an exit that can never
    fire or fires at once."""
    ladder = Ladder(grid.levels[0], grid.levels[-1], len(grid.levels), grid.mode, rules.tick_size)
    try:
        warnings.extend(exit_notes(cfg, grid.levels, price, ladder))
    except InputError as e:
        warnings.append(f"{e} (run refuses to start like this)")
    _, plan = initial_plan(grid, price)
    funds = funds_needed(grid, plan)
    start_value = funds[grid.base] * price + funds[grid.quote]
    up, down, extra_quote = trail_needs(cfg, ladder, grid.quantity)
    report: dict[str, Any] = {
        "trigger_price": s(cfg.trigger_price), "on_stop": cfg.on_stop, "stop_delay": cfg.stop_delay,
        "max_slippage": s(cfg.max_slippage), "out_of_range": cfg.out_of_range,
        "stop_loss": None, "take_profit": None,
        "stop_loss_return": None if cfg.stop_loss_return is None else {
            "return": s(cfg.stop_loss_return), "value": s(start_value * (1 + cfg.stop_loss_return))},
        "take_profit_return": None if cfg.take_profit_return is None else {
            "return": s(cfg.take_profit_return), "value": s(start_value * (1 + cfg.take_profit_return))},
        "start_value": s(start_value),
        "trail": None if cfg.out_of_range != "trail" else {
            "up_limit": s(cfg.trail_up_limit), "down_limit": s(cfg.trail_down_limit), "moves_up": up,
            "moves_down": down, "extra_quote_up": s(extra_quote),
            "highest": s(ladder.window(up)[-1]) if up else None, "lowest": s(ladder.window(-down)[0]) if down else None},
    }
    if cfg.stop_loss_price is not None and cfg.stop_loss_price < price:
        report["stop_loss"] = exit_scenario(grid, rules, price, maker_fee, cfg, cfg.stop_loss_price)
    if cfg.take_profit_price is not None and cfg.take_profit_price > price:
        report["take_profit"] = exit_scenario(grid, rules, price, maker_fee, cfg, cfg.take_profit_price)
    if up == 0 and down == 0 and cfg.out_of_range == "trail":
        warnings.append("risk.out_of_range is trail but neither limit lets the grid move a single step")
    return report


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


def plan_report(grid: GridSpec, rules: MarketRules, *, price: Decimal, price_source: str, maker_fee: Decimal,
                auto_price: bool, balances: dict[str, tuple[Decimal, Decimal]] | None,
                balances_source: str | None, saved: dict | None = None,
                risk: RiskConfig | None = None, investment: Decimal | None = None,
                entry: str = "none", taker_fee: Decimal = ZERO) -> dict[str, Any]:
    """Everything ``plan`` shows. ``saved``: {"id", "status", "params", "levels" (level_view rows),
    "params_now"} of the running grid in the state file, or None."""
    risk = risk or RiskConfig()
    warnings: list[str] = []
    exits = exits_report(grid, rules, price, maker_fee, risk, warnings)
    now = price
    if risk.trigger_price is not None:
        price = risk.trigger_price   # the grid is laid out when the price crosses its trigger
    empty, plan = initial_plan(grid, price)
    need = funds_needed(grid, plan)
    summary = summarize(grid, maker_fee)
    if summary.profit_min <= 0:
        warnings.append(f"the narrowest step ({summary.step_pct_min}%) does not cover two maker fees of "
                        f"{(maker_fee * 100).normalize():f}%: a round trip there loses money; widen the range or lower "
                        f"grid_num")
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
            if need.get(asset, ZERO) > have and not (asset == grid.base and entry == "buy"):
                warnings.append(f"not enough {asset}: the grid needs {need[asset]:f}, {have:f} available")
        funds[asset] = row
    report: dict[str, Any] = {
        "symbol": grid.symbol, "base": grid.base, "quote": grid.quote, "mode": grid.mode.value,
        "auto_price": auto_price, "post_only": grid.post_only,
        "price": s(price), "price_source": price_source, "price_now": s(now), "exits": exits,
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
        "if_price_ends": {edge: scenario(grid, rules, price, maker_fee, edge) for edge in ("bottom", "top")},
        "saved_grid": None,
        "warnings": warnings,
        "investment": None,
    }
    reserve = ZERO
    if investment is not None:
        sz = size_for_investment(grid.levels, price, investment, maker_fee, rules)
        reserve = sz.reserve
        report["investment"] = {"investment": s(sz.investment), "quantity": s(sz.quantity),
                                "quote_for_buys": s(sz.quote_for_buys), "base_for_sells": s(sz.base_for_sells),
                                "reserve": s(sz.reserve), "value": s(sz.value), "left_over": s(sz.left_over)}
    if entry == "buy":
        free = balances.get(grid.base, (ZERO, ZERO))[0] if balances is not None else None
        want = need.get(grid.base, ZERO) + reserve
        buys = None if free is None else shortfall(want, free, rules, taker_fee)
        at_most = buy_ceiling(price, risk.max_slippage, rules.tick_size)
        report["entry"] = {"needs": s(want), "free": s(free), "buys": s(buys), "at_most": s(at_most),
                           "costs_at_most": s(None if buys is None else buys * at_most)}
        if buys and balances is not None:
            quote_free = balances.get(grid.quote, (ZERO, ZERO))[0]
            if quote_free < need.get(grid.quote, ZERO) + buys * at_most:
                warnings.append(f"not enough {grid.quote} for the buys ({need.get(grid.quote, ZERO):f}) and the entry "
                                f"purchase (up to {buys * at_most:f}): {quote_free:f} available")
    else:
        report["entry"] = None
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
    if r["exits"]["trigger_price"] is not None:
        print(f"the grid waits for the price ({r['price_now']}, {r['price_source']}) to cross the trigger price "
              f"{r['price']}: nothing is placed until then; laid out there, the level nearest it ({r['empty_level']}) "
              f"stays empty: {r['buys']} buys below, {r['sells']} sells above")
    else:
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
            if asset == base and r["entry"] is not None and Decimal(row["missing"]):
                ok = f"{_amount(row['missing'])} short: the entry purchase buys it"
            line += f", {_amount(row['available'])} available ({r['balances_source']}): {ok}"
        print(line)
    print(f"  and spare {base} for fees: buys pay theirs in {base}, so each round trip uses "
          f"{_amount(r['base_fee_per_round_trip'])} {base} beyond what the grid locks")
    iv = r["investment"]
    if iv is not None:
        print(f"investment {_amount(iv['investment'])} {quote}: {iv['quantity']} {base} per order; the buys lock "
              f"{_amount(iv['quote_for_buys'], 6, 2)} {quote}, the sells {_amount(iv['base_for_sells'])} {base} and a fee "
              f"reserve of {_amount(iv['reserve'])} {base}: {_amount(iv['value'], 6, 2)} {quote} at {r['price']}; "
              f"left over {_amount(iv['left_over'], 6, 2)} {quote}")
    en = r["entry"]
    if en is not None:
        buys = ("" if en["buys"] is None else
                f"; the account has {_amount(en['free'])} free: it buys {_amount(en['buys'])} {base} for at most "
                f"{_amount(en['costs_at_most'], 6, 2)} {quote}" if Decimal(en["buys"])
                else f"; the account has {_amount(en['free'])} free: nothing to buy")
        print(f"entry purchase: the grid needs {_amount(en['needs'])} {base} (sells and fee reserve){buys}, with IOC "
              f"orders at most {en['at_most']} (max_slippage), before anything is placed")
    print()
    for edge, word in (("bottom", "falls through the bottom"), ("top", "rises through the top")):
        e = r["if_price_ends"][edge]
        print(f"if the price {word} ({e['price']}): {_amount(e['base'])} {base} + {_amount(e['quote'], 6, 2)} {quote}"
              f" = {_amount(e['value'], 2)} {quote} ({_signed(e['change'])} against now, "
              f"{_signed(e['vs_holding'])} against holding the same funds)")
    print_exits(r["exits"], base, quote)
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


def print_exits(e: dict[str, Any], base: str, quote: str) -> None:
    lines = []
    for key, word in (("stop_loss", "stop-loss"), ("take_profit", "take-profit")):
        sc = e[key]
        if sc is None:
            continue
        for on_stop in ("keep", "sell_base"):
            x = sc[on_stop]
            what = "kept" if on_stop == "keep" else "after selling the base"
            fired = f"the {x['fired']} fires at {x['at']}" if x["fired"] else f"nothing fires by {sc['price']}"
            unsold = f", {_amount(x['not_sold'])} {base} not sold" if x["not_sold"] not in (None, "0") else ""
            lines.append(f"  {word} at {sc['price']}, on_stop {on_stop}: {fired}; {what}: {_amount(x['base'])} {base} + "
                         f"{_amount(x['quote'], 6, 2)} {quote} = {_amount(x['value'], 2)} {quote} "
                         f"({_signed(x['change'])} against now){unsold}")
    for key, word in (("stop_loss_return", "stop-loss"), ("take_profit_return", "take-profit")):
        x = e[key]
        if x is not None:
            lines.append(f"  {word} at a total return of {Decimal(x['return']):%}: when the grid's funds "
                         f"({_amount(e['start_value'], 2)} {quote} at the start) are worth {_amount(x['value'], 2)} {quote}")
    if e["out_of_range"] == "stop":
        lines.append("  out of range: the grid stops once the price leaves its range")
    t = e["trail"]
    if t is not None:
        up = (f"up to {t['up_limit']}: {t['moves_up']} move(s), the top level at most {t['highest']}, up to "
              f"{_amount(t['extra_quote_up'], 6, 2)} {quote} more for the buys it moves up"
              if t["up_limit"] is not None else "not up")
        down = (f"down to {t['down_limit']}: {t['moves_down']} move(s), the bottom level at least {t['lowest']}"
                if t["down_limit"] is not None else "not down")
        lines.append(f"  trailing: {up}; {down} (maker-only, one step at a time)")
    if not lines:
        return
    delay = f", each after holding {e['stop_delay']:g} s" if e["stop_delay"] else ""
    print()
    print(f"exits (max_slippage {_amount(e['max_slippage'])}{delay}):")
    for line in lines:
        print(line)


def _signed(text: str) -> str:
    d = Decimal(text).quantize(Decimal("0.01"))
    return f"{'+' if d >= 0 else ''}{d:f}"
