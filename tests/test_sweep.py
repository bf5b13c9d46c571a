"""The sweep engine (gridbot/analysis/sweep.py) against the exact engine (``backtest.run_backtest``, the bot's own
OrderManager on the book): on random price paths and random grids, property-based (hypothesis), every figure
of every result equal, byte for byte in the summary; and what leaves the fast path (a price off the tick, an
order that fills from outside the price band) still comes out right, through the exact engine."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_calculator import GridError, GridMode, build_grid
from gridbot.analysis.backtest import run_backtest
from gridbot.analysis.sweep import Candidate, Path, sweep
from gridbot.marketdata.candles import Candle
from gridbot.paper import builtin_rules

D = Decimal
RULES = {s: builtin_rules(s) for s in ("SOL_USDC", "BTC_USDC")}
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def candles_of(ticks: list[int], tick: Decimal, per: int = 4) -> list[Candle]:
    """Candles of ``per`` consecutive points each (open, the points between, close), one a minute."""
    out = []
    for i in range(0, len(ticks) - per + 1, per):
        pts = ticks[i:i + per]
        out.append(Candle((T0 + timedelta(minutes=len(out))).strftime("%Y-%m-%d %H:%M:%S"), pts[0] * tick,
                          max(pts) * tick, min(pts) * tick, pts[-1] * tick))
    return out


def both(grid, rules, candles, fee, reserve=D(0)):
    """The sweep's result and the exact engine's, and whether the sweep had to use the exact engine."""
    used = []

    def exact(c):
        used.append(c)
        return run_backtest(grid, rules, candles, fee, reserve=reserve)
    fast = sweep([Candidate(grid.levels, grid.quantity, fee, reserve)], rules, candles, exact=exact)[0]
    return fast, run_backtest(grid, rules, candles, fee, reserve=reserve), bool(used)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbol=st.sampled_from(["SOL_USDC", "BTC_USDC"]),
       steps=st.lists(st.integers(-60, 60), min_size=8, max_size=240),
       lower=st.integers(1, 4000), upper=st.integers(1, 4000), grid_num=st.integers(2, 40),
       qty=st.integers(1, 500), fee=st.sampled_from(["0", "0.0002", "0.0008", "0.001", "0.00095"]),
       mode=st.sampled_from(["arithmetic", "geometric"]), per=st.integers(1, 5), reserve=st.integers(0, 3))
def test_the_sweep_engine_agrees_with_the_exact_engine(symbol, steps, lower, upper, grid_num, qty, fee, mode, per,
                                                       reserve):
    rules = RULES[symbol]
    mid = 15000 if symbol == "SOL_USDC" else 950000          # in ticks: 150.00, 95000.0
    ticks, p = [], mid
    for s in steps:
        p = max(mid // 2, p + s * (1 if symbol == "SOL_USDC" else 30))
        ticks.append(p)
    candles = candles_of([mid, *ticks], rules.tick_size, per)
    if not candles:
        return
    scale = 1 if symbol == "SOL_USDC" else 30
    try:
        grid, _ = build_grid(rules, mode=GridMode(mode), grid_num=grid_num, quantity=qty * rules.step_size,
                             post_only=True, lower=(mid - lower * scale) * rules.tick_size,
                             upper=(mid + upper * scale) * rules.tick_size, auto_price=False, price_range=None,
                             price=None)
    except GridError:
        return
    fast, exact, _ = both(grid, rules, candles, D(fee), reserve * grid.quantity)
    assert fast.summary() == exact.summary()


def test_most_random_grids_take_the_fast_path_and_a_gap_through_the_band_does_not():
    rules = RULES["SOL_USDC"]
    grid, _ = build_grid(rules, mode=GridMode("arithmetic"), grid_num=20, quantity=D("0.5"), post_only=True,
                         lower=D(100), upper=D(200), auto_price=False, price_range=None, price=None)
    calm = candles_of([15000, 15300, 14600, 15400, 14500, 15000], rules.tick_size, 2)
    fast, exact, fell_back = both(grid, rules, calm, D("0.001"))
    assert not fell_back and fast.summary() == exact.summary() and fast.round_trips >= 1
    # From 150 straight to 110 and back: the buys below 112.5 (150 x 0.75) were out of the band before
    # the jump, the exact engine kept them waiting, so the sweep hands this grid to it.
    gap = candles_of([15000, 15000, 11000, 11000, 15000, 15000], rules.tick_size, 2)
    fast, exact, fell_back = both(grid, rules, gap, D("0.001"))
    assert fell_back and fast.summary() == exact.summary()


def test_a_price_off_the_tick_goes_to_the_exact_engine():
    rules = RULES["SOL_USDC"]
    assert Path.of([Candle("2025-01-01 00:00:00", D("150.005"), D("150.01"), D("150"), D("150.01"))],
                   rules.tick_size) is None


def test_backtest_sweep_runs_on_the_sweep_engine_with_the_exact_engines_results(tmp_path):
    """``backtest --sweep`` over the example candles equals each setting backtested alone (the exact engine)."""
    import json
    import subprocess
    import sys
    from pathlib import Path as FsPath
    root = FsPath(__file__).resolve().parent.parent
    klines = str(root / "docs" / "example_klines.csv")

    def run(*args):
        r = subprocess.run([sys.executable, "grid_bot.py", "backtest", "--json", "--klines", klines, "--config",
                            str(root / "docs" / "example_config.json"), *args], cwd=str(root), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    rows = run("--sweep", "grid_num=5,12,30", "--sweep", "grid_lower=140,145")
    assert len(rows) == 6
    for row in rows:
        s = row.pop("settings")
        alone = run("--grid-num", str(s["grid_num"]), "--grid-lower", s["grid_lower"])
        alone.pop("grid")
        assert row == alone, s
