"""Backtest throughput: a year of synthetic one-minute candles through a 50-level grid.

    python bench/backtest_throughput.py [--candles 525600] [--seed 1]

Writes a klines CSV of ``--candles`` one-minute candles (a seeded random walk around 150, Backpack's
field names), then measures in one run: parsing it alone (the backtester's own reader), and the whole
backtest (parsing included) of a 50-level arithmetic grid over 120..180 on SOL_USDC. Prints candles
per second for both and their ratio. Goal: the whole backtest within 3x the parse time.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gridbot.analysis.backtest import run_backtest  # noqa: E402
from gridbot.paper import rules_from_spec  # noqa: E402
from grid_calculator import GridMode, GridSpec, grid_levels  # noqa: E402
from gridbot.marketdata.candles import read_klines_csv  # noqa: E402
from simulator.markets import DEFAULT_MARKETS  # noqa: E402


def write_candles(path: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    t = datetime(2025, 1, 1, tzinfo=timezone.utc)
    x = math.log(150.0)
    with open(path, "w") as fh:
        fh.write("start,open,high,low,close,end,volume,quoteVolume,trades\n")
        price = round(math.exp(x), 2)
        for _ in range(n):
            o = price
            x += 0.0008 * rng.gauss(0, 1) + 0.0005 * (math.log(150.0) - x)
            c = round(math.exp(x), 2)
            h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.0004))), 2)
            lo = round(min(o, c) * (1 - abs(rng.gauss(0, 0.0004))), 2)
            start = t.strftime("%Y-%m-%d %H:%M:%S")
            t += timedelta(minutes=1)
            fh.write(f"{start},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{t.strftime('%Y-%m-%d %H:%M:%S')},10,1500,5\n")
            price = c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candles", type=int, default=525_600)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="gridbench-"), "klines.csv")
    write_candles(path, args.candles, args.seed)
    spec = next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC")
    grid = GridSpec("SOL_USDC", "SOL", "USDC", grid_levels(Decimal(120), Decimal(180), 50, GridMode.ARITHMETIC,
                                                           spec.tick_size), Decimal("0.1"), GridMode.ARITHMETIC)
    t0 = time.perf_counter()
    parsed = list(read_klines_csv(path))
    parse_s = time.perf_counter() - t0
    del parsed
    t0 = time.perf_counter()
    result = run_backtest(grid, rules_from_spec(spec), list(read_klines_csv(path)), Decimal("0.0008"))
    total_s = time.perf_counter() - t0
    n = args.candles
    print(f"{n} one-minute candles, 50-level grid 120..180, {result.fills} fills, {result.round_trips} round trips")
    print(f"parse only:             {parse_s:6.2f} s  {n / parse_s:10.0f} candles/s")
    print(f"backtest (with parse):  {total_s:6.2f} s  {n / total_s:10.0f} candles/s")
    print(f"ratio backtest/parse:   {total_s / parse_s:6.2f}  (goal <= 3: {'met' if total_s / parse_s <= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
