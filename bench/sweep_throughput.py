"""The sweep engine's throughput against the exact engine, side by side in one run.

    python bench/sweep_throughput.py [--candidates 1000] [--levels 50] [--candles 525600] [--exact-candles 50000]

A year of one-minute candles (a seeded random walk on SOL_USDC's tick) and ``--candidates`` grids of
``--levels`` levels (ranges, modes and quantities drawn around the price, every one on the fast path). The
sweep engine (gridbot/analysis/sweep.py, compiled with numba, both cores) runs them all; the exact engine
(``backtest.run_backtest``, the bot's own OrderManager) runs three of them over the first
``--exact-candles`` candles. Prints both rates in candidate-candles per second, their ratio (goal: at least
50x), the sweep's wall time (goal: at most 60 s for 1,000 x 50 levels x 525,600 candles; the first run also
compiles the kernel, cached for later runs) and the process's peak memory (goal: under 2 GiB). It checks
too that the three exact results equal the sweep's on the same candles.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grid_calculator import GridMode, build_grid  # noqa: E402
from gridbot.analysis.backtest import run_backtest  # noqa: E402
from gridbot.analysis.sweep import Candidate, Path, sweep  # noqa: E402
from gridbot.marketdata.candles import Candle  # noqa: E402
from gridbot.paper import builtin_rules  # noqa: E402

D = Decimal


def candles(n: int, seed: int = 7) -> list[Candle]:
    """A random walk in ticks around 150 (SOL_USDC), one candle a minute."""
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    p = 15000
    out = []
    for i in range(n):
        o = p
        moves = [p + rng.randint(-12, 12) for _ in range(3)]
        c = max(9000, min(21000, moves[-1] + (15000 - moves[-1]) // 2000))
        hi, lo = max(o, c, *moves), min(o, c, *moves)
        out.append(Candle((t0 + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"), D(o) / 100, D(hi) / 100,
                          D(lo) / 100, D(c) / 100))
        p = c
    return out


def grids(rules, n: int, levels: int, seed: int = 11) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        half = D(rng.randint(500, 3000)) / 100               # 5 .. 30 around 150
        g, _ = build_grid(rules, mode=GridMode("geometric" if i % 2 else "arithmetic"), grid_num=levels,
                          quantity=D(rng.randint(1, 100)) / 100, post_only=True, lower=D(150) - half,
                          upper=D(150) + half, auto_price=False, price_range=None, price=None)
        out.append(g)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=1000)
    ap.add_argument("--levels", type=int, default=50)
    ap.add_argument("--candles", type=int, default=525_600)
    ap.add_argument("--exact-candles", type=int, default=50_000)
    args = ap.parse_args()
    rules = builtin_rules("SOL_USDC")
    fee = D("0.0008")
    cs = candles(args.candles)
    gs = grids(rules, args.candidates, args.levels)
    cands = [Candidate(g.levels, g.quantity, fee) for g in gs]
    t = time.perf_counter()
    path = Path.of(cs, rules.tick_size)
    prep = time.perf_counter() - t
    fell_back = []

    def exact(c):
        fell_back.append(c)
        return run_backtest(gs[cands.index(c)], rules, cs, fee)
    t = time.perf_counter()
    fast = sweep(cands, rules, cs, exact=exact, path=path)
    wall = time.perf_counter() - t
    assert not fell_back, f"{len(fell_back)} candidate(s) left the fast path"
    head = cs[:args.exact_candles]
    t = time.perf_counter()
    exact_results = [run_backtest(g, rules, head, fee) for g in gs[:3]]
    exact_s = time.perf_counter() - t
    same = sweep(cands[:3], rules, head, exact=lambda c: None)
    assert [r.summary() for r in same] == [r.summary() for r in exact_results], "the engines disagree"
    fast_rate = args.candidates * args.candles / (wall + prep)
    exact_rate = 3 * len(head) / exact_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"{args.candidates} grids x {args.levels} levels x {args.candles} one-minute candles, "
          f"{sum(r.fills for r in fast)} fills in all")
    print(f"sweep engine: {wall:.1f} s (+ {prep:.1f} s reading the candles): {fast_rate:,.0f} candidate-candles/s "
          f"(goal: at most 60 s)")
    print(f"exact engine: 3 grids x {len(head)} candles in {exact_s:.1f} s: {exact_rate:,.0f} candidate-candles/s; "
          f"its results equal the sweep's")
    print(f"ratio: {fast_rate / exact_rate:.0f}x the exact engine (goal: at least 50x); peak memory {peak:.2f} GiB "
          f"(goal: under 2 GiB)")


if __name__ == "__main__":
    main()
