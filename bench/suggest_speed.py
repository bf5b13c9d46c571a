"""``suggest`` end to end: 90 days of one-minute candles (a seeded random walk on SOL_USDC, written as the
klines file a cache would be), 500 candidates, 6 folds, timed as a user runs it (a fresh process).

    python bench/suggest_speed.py [--days 90] [--candidates 500] [--folds 6]

Goal: at most 30 s on this 2-core machine. Prints the time, and that two runs print the same bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep_throughput import candles  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--folds", type=int, default=6)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="suggest-bench-")
    klines = os.path.join(folder, "klines_SOL_USDC_1m.csv")
    with open(klines, "w") as fh:
        fh.write("start,open,high,low,close\n")
        for c in candles(args.days * 1440):
            fh.write(f"{c.start},{c.open},{c.high},{c.low},{c.close}\n")
    with open(os.path.join(ROOT, "docs", "example_config.json")) as fh:
        cfg = json.load(fh)
    cfg["trading"]["maker_fee"] = "0.0008"
    config = os.path.join(folder, "config.json")
    with open(config, "w") as fh:
        json.dump(cfg, fh)
    cmd = [sys.executable, os.path.join(ROOT, "grid_bot.py"), "suggest", "--config", config, "--klines", klines,
           "--candidates", str(args.candidates), "--folds", str(args.folds), "--json"]
    subprocess.run(cmd, capture_output=True, check=True)   # compiles the kernel once (numba caches it)
    t = time.perf_counter()
    first = subprocess.run(cmd, capture_output=True, check=True).stdout
    wall = time.perf_counter() - t
    second = subprocess.run(cmd, capture_output=True, check=True).stdout
    report = json.loads(first)
    print(f"suggest: {args.days} days of one-minute candles ({args.days * 1440}), {args.candidates} candidates, "
          f"{args.folds} folds: {wall:.1f} s (goal: at most 30 s); recommended {report['recommended']['rule']}")
    print(f"two runs print the same bytes: {first == second}")


if __name__ == "__main__":
    main()
