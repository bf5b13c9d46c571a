"""``suggest`` (analysis/suggest.py, commands/suggest.py): walk-forward that never lets a fold's choice see its
held-out candles, the fitted candidates flagged and left out of the top, the same output twice, and a written
config that ``plan`` and ``run`` take unchanged."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from gridbot.analysis.suggest import Figures, Fold, InSample, Rule, rank, rules_to_try, walk_forward, windows
from gridbot.marketdata.candles import Candle
from gridbot.paper import builtin_rules

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
RULES = builtin_rules("SOL_USDC")
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def walk(n: int, seed: int, drift: int = 0, start: int = 15000, wide: int = 15) -> list[Candle]:
    """A seeded random walk in ticks (SOL_USDC), one candle a minute, ``drift`` ticks a candle."""
    rng = random.Random(seed)
    p, out = start, []
    for i in range(n):
        o = p
        pts = [p + rng.randint(-wide, wide) + drift for _ in range(3)]
        c = max(5000, pts[-1])
        out.append(Candle((T0 + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"), D(o) / 100,
                          D(max(o, c, *pts)) / 100, D(max(1, min(o, c, *pts))) / 100, D(c) / 100))
        p = c
    return out


def test_no_fold_sees_its_held_out_window_on_a_path_whose_regime_changes():
    """The second half trends hard where the first oscillates. Replacing every held-out window (with another
    regime) changes no fold's in-sample figures and no grid a fold drew: each was drawn and judged on its own
    in-sample candles only; the held-out figures, which are judged on those windows, do change."""
    calm = walk(1400, seed=1)
    trend = walk(1400, seed=2, drift=3, start=int(calm[-1].close * 100))
    candles = calm + [replace(c, start=(T0 + timedelta(minutes=1400 + i)).strftime("%Y-%m-%d %H:%M:%S"))
                      for i, c in enumerate(trend)]
    to_try = rules_to_try(40)
    kw = dict(folds=6, maker_fee=D("0.0008"), investment=D(1000), quantity=None)
    folds = walk_forward(candles, RULES, to_try, **kw)
    size = len(candles) // 7
    assert [f.in_start for f in folds] == [candles[i * size].start for i in range(6)]
    assert [f.out_start for f in folds] == [candles[(i + 1) * size].start for i in range(6)]
    assert all(f.in_end < f.out_start for f in folds)                      # in-sample ends before held-out
    for k in range(6):
        # fold k's held-out window replaced by another path; every candle before it kept
        other = walk(size, seed=100 + k, drift=-4, start=int(candles[(k + 1) * size].open * 100))
        changed = list(candles)
        changed[(k + 1) * size:(k + 2) * size] = [replace(c, start=candles[(k + 1) * size + i].start)
                                                  for i, c in enumerate(other)]
        again = walk_forward(changed[:(k + 2) * size] + candles[(k + 2) * size:], RULES, to_try, **kw)[k]
        assert again.inside == folds[k].inside                              # the in-sample figures
        assert again.grids == folds[k].grids                                # and what it chose to run
        assert again.held_out != folds[k].held_out                          # judged on the new window


def test_in_sample_holds_only_its_window():
    window = walk(100, seed=3)
    s = InSample(window)
    assert s.candles == tuple(window) and not hasattr(s, "held_out")
    assert windows(walk(70, seed=4), 6)[0][0][-1].start < windows(walk(70, seed=4), 6)[0][1][0].start


def test_a_candidate_that_does_worse_out_of_sample_than_half_its_in_sample_is_flagged_and_left_out_of_the_top():
    a, b = Rule("quantile", 10, 20, "arithmetic"), Rule("atr", 8, 12, "geometric")

    def fig(r):
        return Figures(D(r), D(r), D("0.01"), 5, D("0.9"))
    folds = [Fold("a", "b", "c", "d", inside={a: fig("0.10"), b: fig("0.01")},
                  held_out={a: fig("0.04"), b: fig("0.01")}) for _ in range(6)]
    ranked = rank(folds)
    # a: held-out 0.24 over six folds, far above b's 0.06, but under half its in-sample 0.60: flagged, second
    assert [(r.rule, r.flagged) for r in ranked] == [(b, False), (a, True)]


def suggest(*args, cwd):
    r = subprocess.run([sys.executable, str(ROOT / "grid_bot.py"), "suggest", *args], cwd=str(cwd),
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return r.stdout


def klines_file(tmp_path, candles) -> str:
    path = tmp_path / "k.csv"
    path.write_text("start,open,high,low,close\n" + "".join(
        f"{c.start},{c.open},{c.high},{c.low},{c.close}\n" for c in candles))
    return str(path)


def test_suggest_is_deterministic_and_writes_a_config_plan_and_run_take(tmp_path):
    cfg = json.loads((ROOT / "docs" / "example_config.json").read_text())
    cfg["trading"]["duration"] = 3
    cfg.setdefault("log", {})["console"] = False
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg))
    k = klines_file(tmp_path, walk(2100, seed=9))
    out1 = suggest("--config", str(config), "--klines", k, "--json", "--candidates", "60", cwd=tmp_path)
    out2 = suggest("--config", str(config), "--klines", k, "--json", "--candidates", "60", cwd=tmp_path)
    assert out1 == out2                                                     # byte for byte
    r = json.loads(out1)
    assert len(r["folds"]) == 6 and all(f["in_sample"]["to"] < f["held_out"]["from"] for f in r["folds"])
    assert r["ranking"] and all("in_sample" in x and "held_out" in x for x in r["ranking"])
    text = suggest("--config", str(config), "--klines", k, "--candidates", "60", "--write", "new.json", cwd=tmp_path)
    assert "recommended:" in text and "why:" in text and "config written to new.json" in text
    new = json.loads((tmp_path / "new.json").read_text())
    rec = r["recommended"]["config"]
    assert {k: new["trading"][k] for k in rec} == rec
    plan = subprocess.run([sys.executable, str(ROOT / "grid_bot.py"), "plan", "--paper", "--json", "--config",
                           "new.json"], cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert [D(x["price"]) for x in json.loads(plan.stdout)["levels"]] == [D(x) for x in r["recommended"]["levels"]]
    run = subprocess.run([sys.executable, str(ROOT / "grid_bot.py"), "run", "--paper", "--config", "new.json"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_suggest_plots_the_top_candidates_held_out_returns(tmp_path):
    config = tmp_path / "config.json"
    config.write_text((ROOT / "docs" / "example_config.json").read_text())
    k = klines_file(tmp_path, walk(1400, seed=12))
    suggest("--config", str(config), "--klines", k, "--candidates", "20", "--plot", "wf.png", cwd=tmp_path)
    assert (tmp_path / "wf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggest_judges_candidates_with_the_configs_exits(tmp_path):
    """A stop-loss by return in the config: the candidates stop when it fires (on the exact engine), so they
    complete fewer round trips than the same candidates without it."""
    k = klines_file(tmp_path, walk(1400, seed=13, drift=-1))
    cfg = json.loads((ROOT / "docs" / "example_config.json").read_text())
    (tmp_path / "plain.json").write_text(json.dumps(cfg))
    cfg["risk"] = {"stop_loss_return": "-0.002"}
    (tmp_path / "stops.json").write_text(json.dumps(cfg))
    plain = json.loads(suggest("--config", "plain.json", "--klines", k, "--candidates", "10", "--json", cwd=tmp_path))
    stops = json.loads(suggest("--config", "stops.json", "--klines", k, "--candidates", "10", "--json", cwd=tmp_path))
    assert plain["folds"][0]["held_out"] == stops["folds"][0]["held_out"]          # the same windows
    trips = {x["rule"]: x["held_out"]["round_trips"] for x in stops["ranking"]}
    before = {x["rule"]: x["held_out"]["round_trips"] for x in plain["ranking"]}
    both = [r for r in trips if r in before]
    assert both and all(trips[r] <= before[r] for r in both)                      # a stopped grid trades no more
    assert any(trips[r] < before[r] for r in both)                                # and the stop did fire


def test_suggest_on_perps_tries_directions_and_leverages_counts_funding_and_proposes_nothing_refused(tmp_path):
    cfg = json.loads((ROOT / "docs" / "example_config.json").read_text())
    t = cfg["trading"]
    t.pop("quantity", None)
    t.update({"symbol": "SOL_USDC_PERP", "investment": "300", "maker_fee": "0.0002", "taker_fee": "0.0005",
              "duration": 3})
    cfg.setdefault("log", {})["console"] = False
    (tmp_path / "perp.json").write_text(json.dumps(cfg))
    candles = walk(1050, seed=21, wide=80)

    def with_funding(name, rate):
        path = tmp_path / name
        path.write_text("start,open,high,low,close,funding_rate\n" + "".join(
            f"{c.start},{c.open},{c.high},{c.low},{c.close},{rate if i % 60 == 59 else ''}\n"
            for i, c in enumerate(candles)))
        return str(path)
    args = ("--config", "perp.json", "--candidates", "6", "--json")
    calm = json.loads(suggest(*args, "--klines", with_funding("k0.csv", "0"), cwd=tmp_path))
    paid = json.loads(suggest(*args, "--klines", with_funding("k1.csv", "0.002"), cwd=tmp_path))
    rules = [x["rule"] for x in calm["ranking"]]
    assert rules and all(" at 2x" in r for r in rules)
    assert {d for d in ("neutral", "long", "short") if any(f", {d} at" in r for r in rules)} == {"neutral", "long",
                                                                                                 "short"}
    # A positive rate makes longs pay and shorts receive: the same candidates, other held-out figures.
    by = {x["rule"]: D(x["held_out"]["vs_hold"]) for x in paid["ranking"]}
    assert any(by[r] != D(x["held_out"]["vs_hold"]) for x in calm["ranking"] for r in [x["rule"]] if r in by)
    suggest("--config", "perp.json", "--candidates", "6", "--klines", with_funding("k0.csv", "0"), "--write",
            "new.json", cwd=tmp_path)
    new = json.loads((tmp_path / "new.json").read_text())["trading"]
    assert new["direction"] in ("neutral", "long", "short") and new["leverage"] == "2"
    plan = subprocess.run([sys.executable, str(ROOT / "grid_bot.py"), "plan", "--paper", "--config", "new.json"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0 and "REFUSED" not in plan.stdout, plan.stdout + plan.stderr
