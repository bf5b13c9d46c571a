"""``grid_bot.py suggest``: grid parameters chosen by walk-forward (analysis/suggest.py) over the config's
market, printed as a table with the in-sample and held-out figures side by side, as JSON, as a plot of the
held-out equity, and written as a config that ``plan`` and ``run`` accept.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from decimal import Decimal
from typing import Any

from gridbot.commands.backtest import backtest_market, load_candles, load_funding, progress_bar
from gridbot.commands.common import public_client, read_config
from gridbot.core.errors import EXIT_OK, InputError
from gridbot.ops.config import check_flag, read_json

ZERO = Decimal(0)
SPOT_CANDIDATES = 200      # the default --candidates on spot (the sweep engine)
PERP_CANDIDATES = 24       # on perps (each candidate runs on the perps backtest, the exact engine)


def cmd_suggest(args: argparse.Namespace) -> int:
    from gridbot.analysis.suggest import InSample, instantiate, instantiate_perp, rank, rules_to_try, walk_forward

    cfg = read_config(args.config, need_keys=False)
    t = cfg.trading
    for flag, key in (("--investment", "investment"), ("--quantity", "quantity")):
        if getattr(args, key) is not None:
            check_flag(flag, key, getattr(args, key))
    investment = Decimal(args.investment) if args.investment else None
    quantity = Decimal(args.quantity) if args.quantity else None
    if investment is None and quantity is None:
        investment, quantity = t.investment, (t.quantity if t.investment is None else None)
    t = replace(t, investment=investment, quantity=quantity)
    count = args.candidates if args.candidates is not None else (PERP_CANDIDATES if t.is_perp else SPOT_CANDIDATES)
    if args.folds < 6:
        raise InputError(f"--folds {args.folds}: walk-forward needs at least 6 folds")
    client = public_client(cfg)
    rules, note = backtest_market(cfg, client, offline_ok=args.klines is not None)
    if note:
        print(f"grid_bot: {note}", file=sys.stderr)
    candles = load_candles(cfg, client, args.klines, "1m", args.days, None)
    funding = load_funding(cfg, client, candles, args.klines, None) if t.is_perp else []
    to_try = rules_to_try(count, perp=t.is_perp)
    try:
        folds = walk_forward(candles, rules, to_try, folds=args.folds, maker_fee=t.maker_fee, investment=investment,
                             quantity=quantity, progress=progress_bar("walking forward", "folds"), risk=cfg.risk,
                             perp=t if t.is_perp else None, funding=funding)
    except ValueError as e:
        raise InputError(str(e)) from None
    ranked = rank(folds)
    if not ranked:
        raise InputError("no candidate grid has a step of at least three maker fees on this market's recent prices: "
                         "lower trading.maker_fee if yours is lower, or suggest over more days")
    best = next((r for r in ranked if not r.flagged), ranked[0])
    latest = InSample(candles[-(len(candles) // (args.folds + 1)):])
    if t.is_perp:
        made = instantiate_perp(best.rule, latest, rules, t, cfg.risk, price=candles[-1].close)
        grid = made[0].grid if made is not None else None
    else:
        grid = instantiate(best.rule, latest, rules, maker_fee=t.maker_fee, price=candles[-1].close,
                           investment=investment, quantity=quantity)
    report = build_report(args, cfg, folds, ranked, best, grid, investment, quantity, len(candles), count)
    if args.write:
        write_config(args.config, args.write, report["recommended"]["config"])
    if args.plot:
        plot(args.plot, folds, ranked[:3], rules, candles, t, cfg.risk, funding)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=False))
    else:
        print_report(report)
        if args.write:
            print(f"config written to {args.write}: python grid_bot.py plan --config {args.write}")
    return EXIT_OK


def build_report(args: argparse.Namespace, cfg: Any, folds: list, ranked: list, best: Any, grid: Any,
                 investment: Decimal | None, quantity: Decimal | None, candles: int, count: int) -> dict[str, Any]:
    t = cfg.trading
    top = ranked[:args.top]
    recommended: dict[str, Any] = {"rule": best.rule.describe(), "flagged": best.flagged}
    if grid is not None:
        trading = {"grid_lower": f"{grid.levels[0]:f}", "grid_upper": f"{grid.levels[-1]:f}",
                   "grid_num": len(grid.levels), "grid_mode": grid.mode.value, "auto_price": False}
        trading.update({"investment": f"{investment:f}", "quantity": None} if investment is not None else
                       {"quantity": f"{grid.quantity:f}", "investment": None})
        if best.rule.direction is not None:
            trading.update({"direction": best.rule.direction, "leverage": f"{best.rule.leverage:f}"})
        recommended.update({"levels": [f"{x:f}" for x in grid.levels], "quantity": f"{grid.quantity:f}",
                            "config": trading})
    return {
        "symbol": t.symbol, "candles": candles, "candidates_tried": count, "folds": [
            {"in_sample": {"from": f.in_start, "to": f.in_end}, "held_out": {"from": f.out_start, "to": f.out_end},
             "candidates": [{"rule": r.rule.describe(), "in_sample": f.inside[r.rule].to_json(),
                             "held_out": f.held_out[r.rule].to_json()} for r in top]} for f in folds],
        "ranking": [{"rank": i + 1, "rule": r.rule.describe(), "in_sample": r.inside.to_json(),
                     "held_out": r.held_out.to_json(), "flagged": r.flagged} for i, r in enumerate(top)],
        "recommended": recommended,
        "why": why(best, len(folds)),
        "min_step": "three maker fees (two to pay a round trip, one as a margin)",
    }


def why(best: Any, folds: int) -> str:
    h, i = best.held_out, best.inside
    return (f"{best.rule.describe()}: the best held-out return against holding ({pct(h.vs_hold)} over {folds} "
            f"windows it was not chosen on; {pct(i.vs_hold)} in-sample), worst drawdown {share(h.drawdown)}, "
            f"{h.round_trips} round trips, in range {share(h.in_range)} of the time"
            + ("; note: it did less than half as well out of sample, so every candidate looks fitted to its "
               "window" if best.flagged else ""))


def pct(d: Decimal) -> str:
    """A return, signed."""
    return f"{'+' if d > 0 else ''}{share(d)}"


def share(d: Decimal) -> str:
    """A share (a drawdown, the time in range)."""
    return f"{(d * 100).quantize(Decimal('0.01'))}%"


def print_report(r: dict[str, Any]) -> None:
    print(f"suggest: {r['symbol']}, {len(r['folds'])} walk-forward folds "
          f"({r['folds'][0]['in_sample']['from']} .. {r['folds'][-1]['held_out']['to']}); steps of at least "
          f"{r['min_step']}")
    head = f"{'#':>3}  {'candidate':<42}  {'in-sample':>10}  {'held-out':>10}  {'max dd':>8}  {'trips':>6}  " \
           f"{'in range':>8}  flag"
    print(head)
    for row in r["ranking"]:
        i, h = row["in_sample"], row["held_out"]
        print(f"{row['rank']:>3}  {row['rule']:<42}  {pct(Decimal(i['vs_hold'])):>10}  {pct(Decimal(h['vs_hold'])):>10}  "
              f"{share(Decimal(h['max_drawdown'])):>8}  {h['round_trips']:>6}  {share(Decimal(h['in_range'])):>8}  "
              + ("fitted: held-out < half in-sample" if row["flagged"] else ""))
    print("(returns against holding the starting funds, summed over the folds; held-out: on the window after the "
          "one each grid was drawn from)")
    rec = r["recommended"]
    if "levels" in rec:
        print(f"recommended: {rec['levels'][0]}..{rec['levels'][-1]}, {len(rec['levels'])} levels "
              f"{rec['config']['grid_mode']}, {rec['quantity']} per order (drawn on the latest window)")
    print(f"why: {r['why']}")


def write_config(source: str, target: str, trading: dict[str, Any]) -> None:
    """The config with the recommended grid's trading keys: complete, accepted by plan and run unchanged."""
    data = read_json(source)
    data.setdefault("trading", {}).update(trading)
    for key in ("price_range",):
        data["trading"].pop(key, None)
    try:
        with open(target, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror}") from None
    read_config(target, need_keys=False)     # what plan and run will read: checked now


def plot(path: str, folds: list, top: list, rules: Any, candles: list, t: Any, risk: Any, funding: list) -> None:
    """The held-out equity of the top candidates against holding, window after window, on a date axis (a perps
    grid's replayed on the perps backtest, drawn again from its fold's in-sample window)."""
    from gridbot.analysis.plots import require_matplotlib
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from gridbot.analysis.backtest import run_backtest
    from gridbot.analysis.perp_backtest import PerpBacktest
    from gridbot.analysis.suggest import InSample, instantiate_perp
    from gridbot.marketdata.history import _parse_start
    by_start = {c.start: i for i, c in enumerate(candles)}
    fig, ax = plt.subplots(figsize=(11, 5))
    for r in top:
        xs: list = []
        ys: list = []
        hold_x: list = []
        hold_y: list = []
        offset = ZERO
        for f in folds:
            grid = f.grids.get(r.rule)
            if grid is None:
                continue
            window = candles[by_start[f.out_start]:by_start[f.out_end] + 1]
            if t.is_perp:
                inside = InSample(candles[by_start[f.in_start]:by_start[f.in_end] + 1])
                made = instantiate_perp(r.rule, inside, rules, t, risk, price=inside.candles[-1].close)
                assert made is not None     # it was drawn the same way in its fold
                res = PerpBacktest(made[0], rules, made[1], replace(risk, trigger_price=None), funding,
                                   keep_series=True).run(window)
            else:
                res = run_backtest(grid, rules, window, t.maker_fee, keep_series=True)
            base = res.start_equity
            for start, eq in zip(res.series["start"], res.series["equity"]):
                xs.append(_parse_start(start))
                ys.append(float(offset + (eq - base) / base))
            if r is top[0]:
                for start, close in zip(res.series["start"], res.series["close"]):
                    hold_x.append(_parse_start(start))
                    hold_y.append(float(offset + (res.start_funds.get(grid.base, ZERO) * close
                                                  + res.start_funds.get(grid.quote, ZERO) - base) / base))
            offset += (res.final_equity - base) / base
        ax.plot(xs, ys, label=r.rule.describe())
        if r is top[0]:
            ax.plot(hold_x, hold_y, label="holding the first's starting funds", linestyle="--", color="grey")
    ax.set_title("held-out return of the top candidates, window after window (walk-forward)")
    ax.set_ylabel("return on the starting funds")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise InputError(f"cannot write the plot {path}: {e.strerror}") from None
    finally:
        plt.close(fig)
    print(f"grid_bot: plot written to {path}", file=sys.stderr)
