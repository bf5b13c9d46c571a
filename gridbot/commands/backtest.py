"""The ``backtest`` command: the configured grid over a klines file or fetched history, sweeps, plots.

The engine is ``backtest.py`` (the bot's own ``OrderManager`` on the simulator's matching engine); this
module reads the arguments, gets the market's rules and the candles, and prints the result.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from typing import Any, Callable

from backpack_api import BackpackClient, TransientError, wall_clock_ms
from gridbot.commands.common import public_client, read_config
from gridbot.ops.config import Config, check_flag
from gridbot.core.models import MarketRules
from gridbot.core.errors import EXIT_OK, FatalError, InputError
from grid_calculator import Ladder
from gridbot.core.risk import exit_notes
from gridbot.engine.grid_setup import make_grid, market_rules

BACKTEST_FLAGS = ("grid_lower", "grid_upper", "grid_num", "quantity", "investment", "price_range", "maker_fee",
                  "grid_mode", "auto_price")


def progress_bar(label: str, unit: str = "requests") -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}", end=end,
              file=sys.stderr, flush=True)
    return show


def backtest_market(cfg: Config, client: BackpackClient, offline_ok: bool) -> tuple[MarketRules, str | None]:
    """The market's rules for the backtest: the exchange's, or, reading a file with the exchange out of
    reach, the simulator's built-in rules for the symbol (with a note)."""
    from gridbot.paper import builtin_rules

    try:
        return market_rules(client, cfg.trading.symbol, cfg.api.base_url), None
    except FatalError as e:
        builtin = builtin_rules(cfg.trading.symbol) if offline_ok else None
        if builtin is None:
            raise
        return builtin, (f"{e}; using the built-in rules of {builtin.symbol} (tick {builtin.tick_size}, "
                         f"step {builtin.step_size}, min quantity {builtin.min_quantity})")


def load_candles(cfg: Config, client: BackpackClient, klines: str | None, interval: str, days: float,
                 cache: str | None) -> list[Any]:
    """The candles of a backtest or of ``suggest``: a klines file, or ``days`` of the exchange's public
    candles fetched (paced, with a progress bar) into the cache beside the config (extended, never refetched)."""
    from gridbot.marketdata.candles import KLINE_SECONDS, FeedError, read_klines_csv
    from gridbot.marketdata.history import cached_history
    symbol = cfg.trading.symbol
    try:
        if klines:
            return list(read_klines_csv(klines))
        iv = KLINE_SECONDS[interval]
        # Up to the start of the candle still forming: every candle before it has closed, so the cache never
        # records a range that lacks one.
        now = int(wall_clock_ms() // 1000) // iv * iv
        start = now - int(days * 86400) // iv * iv
        cache = cache or os.path.join(os.path.dirname(cfg.path), f"klines_{symbol}_{interval}.csv")
        try:
            candles = cached_history(cache, lambda a, b: client.klines(symbol, interval, a, b), iv, start, now,
                                     progress=progress_bar(f"fetching {symbol} {interval} klines"))
        except TransientError as e:
            raise FatalError(f"cannot fetch klines from {cfg.api.base_url}: {e}") from None
        except OSError as e:
            raise InputError(f"cannot write the klines cache {cache}: {e.strerror} (use --cache)") from None
        print(f"grid_bot: {len(candles)} candles cached in {cache}", file=sys.stderr)
        return candles
    except FeedError as e:
        raise InputError(str(e)) from None


def load_funding(cfg: Config, client: BackpackClient, candles: list[Any], klines: str | None,
                 cache: str | None) -> list[tuple[int, Decimal]]:
    """A perps backtest's funding rates (interval end in ms, rate): the klines file's ``funding_rate`` column,
    or the exchange's funding-rate history over the candles' time, cached beside the klines."""
    from gridbot.marketdata.candles import FeedError, read_funding_column
    from gridbot.marketdata.history import _parse_start, cached_funding

    def ms(start: str) -> int:
        return int(_parse_start(start).timestamp() * 1000)
    symbol = cfg.trading.symbol
    if klines:
        try:
            funding = [(ms(start), rate) for start, rate in read_funding_column(klines)]
        except FeedError as e:
            raise InputError(str(e)) from None
        if not funding:
            print(f"grid_bot: {klines} has no funding_rate column: no funding is paid", file=sys.stderr)
        return funding
    path = os.path.join(os.path.dirname(cache or cfg.path) or ".", f"funding_{symbol}.csv")
    last = ms(candles[-1].start) + 1 + (ms(candles[-1].start) - ms(candles[0].start)) // max(1, len(candles) - 1)
    try:
        funding = cached_funding(path, lambda limit, offset: client.funding_rates(symbol, limit, offset),
                                 ms(candles[0].start), last)
    except TransientError as e:
        raise FatalError(f"cannot fetch funding rates from {cfg.api.base_url}: {e}") from None
    except OSError as e:
        raise InputError(f"cannot write the funding cache {path}: {e.strerror}") from None
    print(f"grid_bot: {len(funding)} funding rates cached in {path}", file=sys.stderr)
    return funding


def perp_runs(args: argparse.Namespace, cfg: Config, client: BackpackClient, rules: MarketRules, candles: list[Any],
              combos: list[dict[str, Any]], configs: list[Config]) -> list[tuple[dict[str, Any], Any, Any]]:
    """A perps grid's backtests (analysis/perp_backtest.py) with the funding of the candles' time: the klines
    file's ``funding_rate`` column, or the exchange's funding-rate history, cached beside the klines."""
    from gridbot.analysis.perp_backtest import PerpBacktest
    from gridbot.engine.perp_grid import perp_grid

    funding = load_funding(cfg, client, candles, args.klines, args.cache)
    runs = []
    for c, run_cfg in zip(combos, configs):
        pg = perp_grid(rules, run_cfg.trading, run_cfg.risk, candles[0].open)
        for line in pg.refused:
            print(f"grid_bot: warning: run would refuse this grid: {line}", file=sys.stderr)
        runs.append((c, pg.grid, PerpBacktest(pg, rules, run_cfg.trading, run_cfg.risk, funding,
                                              keep_series=bool(args.plot)).run(candles)))
    return runs


def spot_runs(specs: list[tuple[Any, Config, Any, Any, Decimal]], rules: MarketRules, candles: list[Any], *,
              plot: bool) -> list[tuple[Any, Any, Any]]:
    """Spot backtests: a sweep's plain grids on the sweep engine (analysis/sweep.py, the exact engine's
    results), the rest (exits, trailing, a trigger, a plot's series) on the exact engine."""
    from gridbot.analysis.backtest import run_backtest
    from gridbot.analysis.sweep import Candidate, sweep

    def exact(i: int) -> Any:
        _, run_cfg, grid, recentre, reserve = specs[i]
        return run_backtest(grid, rules, candles, run_cfg.trading.maker_fee, keep_series=plot, risk=run_cfg.risk,
                            reserve=reserve, recentre=recentre)

    def plain(run_cfg: Config) -> bool:
        r = run_cfg.risk
        return (not plot and r.trigger_price is None and r.stop_loss_price is None and r.take_profit_price is None
                and r.stop_loss_return is None and r.take_profit_return is None and r.out_of_range == "wait")
    fast = [i for i, s in enumerate(specs) if len(specs) > 1 and plain(s[1])]
    results: dict[int, Any] = {}
    if fast:
        cands = [Candidate(specs[i][2].levels, specs[i][2].quantity, specs[i][1].trading.maker_fee, specs[i][4])
                 for i in fast]
        by_cand = dict(zip(cands, fast))
        results = dict(zip(fast, sweep(cands, rules, candles, exact=lambda cand: exact(by_cand[cand]),
                                       progress=progress_bar("sweeping", "grids") if len(fast) >= 50 else None)))
    return [(s[0], s[2], results[i] if i in results else exact(i)) for i, s in enumerate(specs)]


def cmd_backtest(args: argparse.Namespace) -> int:
    from gridbot.analysis.backtest import format_result, picture
    from gridbot.analysis.sweep_table import format_sweep, iter_pairs, sweep_order, sweep_settings
    from gridbot.analysis.plots import draw, require_matplotlib
    from gridbot.marketdata.candles import KLINE_SECONDS

    overrides: dict[str, Any] = {k: getattr(args, k) for k in BACKTEST_FLAGS if getattr(args, k) is not None}
    if isinstance(overrides.get("grid_num"), str) and overrides["grid_num"].isdigit():
        overrides["grid_num"] = int(overrides["grid_num"])
    for key, value in overrides.items():
        check_flag(f"--{key.replace('_', '-')}", key, value)  # a bad flag is named as the flag
    try:
        if args.interval not in KLINE_SECONDS:
            raise ValueError(f"--interval {args.interval}: use one of {', '.join(KLINE_SECONDS)}")
        combos = sweep_settings(iter_pairs(args.sweep)) if args.sweep else [{}]
        if args.plot and len(combos) > 1:
            raise ValueError("--plot draws one backtest: leave out --sweep, or pick the settings to plot")
    except ValueError as e:
        raise InputError(str(e)) from None
    if args.plot:
        require_matplotlib()
    from gridbot.analysis.sweep_table import RISK_SWEEP_KEYS

    def trading_of(c: dict[str, Any]) -> dict[str, Any]:
        t = {**overrides, **{k: v for k, v in c.items() if k not in RISK_SWEEP_KEYS}}
        # A quantity or an investment given here replaces the config's other one.
        for key, other in (("quantity", "investment"), ("investment", "quantity")):
            if key in t:
                t.setdefault(other, None)
        return t

    configs = [read_config(args.config, need_keys=False, trading=trading_of(c),
                           risk={k: v for k, v in c.items() if k in RISK_SWEEP_KEYS}) for c in combos]
    cfg, t = configs[0], configs[0].trading
    client = public_client(cfg)
    rules, note = backtest_market(cfg, client, offline_ok=args.klines is not None)
    if note:
        print(f"grid_bot: {note}", file=sys.stderr)
    candles = load_candles(cfg, client, args.klines, args.interval, args.days, args.cache)
    if not candles:
        raise InputError("no candles to backtest: the file or the time range is empty")
    runs = []
    if t.is_perp:
        runs = perp_runs(args, cfg, client, rules, candles, combos, configs)
    specs = []
    for c, run_cfg in ([] if t.is_perp else zip(combos, configs)):
        t_ = run_cfg.trading
        trigger = run_cfg.risk.trigger_price
        # As run: an investment is sized at the trigger price, and auto_price centres the grid on the price
        # at which the trigger is crossed.
        grid, _ = make_grid(rules, t_, candles[0].open, size_at=trigger)
        recentre = ((lambda p, t_=t_: make_grid(rules, t_, p, size_at=trigger)[0].levels)
                    if t_.auto_price and trigger is not None else None)
        ladder = Ladder(grid.levels[0], grid.levels[-1], len(grid.levels), grid.mode, rules.tick_size)
        for note in exit_notes(run_cfg.risk, grid.levels, candles[0].open, ladder):
            print(f"grid_bot: warning: {note}", file=sys.stderr)
        reserve = grid.quantity * t_.maker_fee * (len(grid.levels) - 1) if t_.investment is not None else Decimal(0)
        specs.append((c, run_cfg, grid, recentre, reserve))
    if specs:
        runs = spot_runs(specs, rules, candles, plot=bool(args.plot))
    if args.sweep:
        if args.json:
            print(json.dumps([{"settings": c, **r.summary()} for c, _, r in
                              sorted(runs, key=lambda x: sweep_order(x[2]))], indent=2))
        else:
            print("\n".join(format_sweep([(c, r) for c, _, r in runs], rules.quote)))
        return EXIT_OK
    _, grid, result = runs[0]
    if args.json:
        print(json.dumps({**result.summary(), "grid": {"symbol": grid.symbol, "mode": grid.mode.value,
                                                       "levels": [f"{x:f}" for x in result.levels],
                                                       "quantity": f"{grid.quantity:f}"}}, indent=2))
    else:
        print("\n".join(format_result(result, grid, t.maker_fee)))
    if args.plot:
        try:
            draw(picture(result, grid), args.plot)
        except OSError as e:
            raise InputError(f"cannot write the plot {args.plot}: {e.strerror}") from None
        print(f"grid_bot: plot written to {args.plot}", file=sys.stderr)
    return EXIT_OK
