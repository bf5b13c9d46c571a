"""Tier 3: restarts. The bot as a process, killed with SIGKILL or stopped, and started again: it resumes
its grid from the state file, settles what happened while it was down, and never duplicates an order."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from simulator import SimControl, running_simulator
from tests.e2e import (PYTHON, ROOT, assert_counter_orders, ledger_totals, open_orders_of, orders_of,
                       write_config)
from tests.helpers import start_process, wait_until

D = Decimal
BOT = os.path.join(ROOT, "grid_bot.py")
GRID = [D(x) for x in range(140, 160, 2)]


def spawn(path, cwd, *extra):
    return start_process([PYTHON, BOT, "--config", path, *extra], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stop(proc, sig=signal.SIGTERM, timeout=60):
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    finally:
        proc.stderr.close()


def status_json(path, cwd):
    r = subprocess.run([PYTHON, BOT, "status", "--json", "--config", path], cwd=cwd, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def log_of(tmp_path):
    return (tmp_path / "grid_bot.log").read_text()


def markers(tmp_path) -> int:
    """How many times the bot has got to work on its grid (resumed it, or laid a new one out)."""
    log = tmp_path / "grid_bot.log"
    if not log.exists():
        return 0
    text = log.read_text()
    return text.count("resuming grid 1 from") + text.count("placing the initial grid")


def n_open(control, key):
    return len(open_orders_of(control.state(), key))


def test_kill9_then_restart_resumes_the_grid_and_counters_a_fill_made_while_down(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = spawn(path, tmp_path)
    wait_until(lambda: n_open(control, key) == 9, timeout=20, message="the grid")
    stop(p, signal.SIGKILL)
    control.set_price("147.50")                        # the buy at 148 fills while the bot is dead
    p = spawn(path, tmp_path)
    wait_until(lambda: any(o["side"] == "Ask" and D(o["price"]) == 150
                           for o in open_orders_of(control.state(), key)), timeout=20,
               message="the counter-order for the fill made while down")
    # "Nothing placed twice" holds only once every lookup the resume started has run: wait for the
    # bot's next REST checks after the counter-order, then count.
    checks = status_json(path, tmp_path)["grid"]["last_checkpoint_ms"]
    wait_until(lambda: (status_json(path, tmp_path)["grid"]["last_checkpoint_ms"] or 0) > (checks or 0),
               timeout=20, message="a REST check after the counter-order")
    assert n_open(control, key) == 9
    assert len(orders_of(control.state(), key)) == 10  # 9 initial + 1 counter: nothing placed twice
    log = log_of(tmp_path)
    assert "resuming grid 1 from" in log and "1 fill(s) while stopped" in log
    assert stop(p) == 0
    assert n_open(control, key) == 0
    st = status_json(path, tmp_path)
    assert st["grid"]["status"] == "stopped" and st["stats"]["fills"] == 1


def test_other_parameters_are_refused_and_reset_cancels_the_old_grid(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = spawn(path, tmp_path)
    wait_until(lambda: n_open(control, key) == 9, timeout=20, message="the grid")
    stop(p, signal.SIGKILL)
    control.set_price("147.50")                        # the old grid's buy at 148 fills while it is down
    secret = json.loads(open(path).read())["api"]["api_secret"]
    path2, _ = write_config(tmp_path, quiet_sim, secret=secret, grid_num=8)  # same file, other grid
    r = subprocess.run([PYTHON, BOT, "--config", path2], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "holds a running grid with other parameters" in r.stderr and "--reset" in r.stderr
    assert n_open(control, key) == 8                   # the old grid is untouched (but for its fill)
    old_ids = {o["id"] for o in orders_of(control.state(), key)}
    p = spawn(path2, tmp_path, "--reset")

    def new_grid_in_place():
        st = control.state()  # one snapshot judges both conditions
        now_open = open_orders_of(st, key)
        return st if not [o for o in now_open if o["id"] in old_ids] and len(now_open) == 7 else None

    st = wait_until(new_grid_in_place, timeout=30, message="the old grid cancelled and the new one placed")
    old_prices = {D(x) for x in GRID}
    assert all(o["status"] in ("Cancelled", "Filled") for o in orders_of(st, key) if o["id"] in old_ids)
    assert {D(o["price"]) for o in open_orders_of(st, key)} - old_prices  # new levels
    reset_log = log_of(tmp_path).split("--reset: cancelling the orders of grid 1", 1)[1]
    # The old grid's fill is accounted, but no counter-order is announced for a grid being cancelled.
    assert "fill: Bid 0.50 @ 148.00" in reset_log.split("placing the initial grid")[0]
    assert "counter-order" not in reset_log.split("placing the initial grid")[0]
    assert stop(p) == 0


def test_on_exit_keep_leaves_the_grid_and_the_next_start_resumes_it(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, on_exit="keep")
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = spawn(path, tmp_path)
    wait_until(lambda: n_open(control, key) == 9, timeout=20, message="the grid")
    assert stop(p) == 0
    assert n_open(control, key) == 9
    assert status_json(path, tmp_path)["grid"]["status"] == "running"
    p = spawn(path, tmp_path)
    wait_until(lambda: "reconciled: 9 of our orders on the book" in log_of(tmp_path), timeout=20,
               message="the resumed grid to reconcile")
    control.set_price("152.50")                        # the sell at 152 fills: a buy at 150 follows
    wait_until(lambda: n_open(control, key) == 9 and len(orders_of(control.state(), key)) == 10,
               timeout=20, message="one counter-order")
    checks = status_json(path, tmp_path)["grid"]["last_checkpoint_ms"]
    wait_until(lambda: (status_json(path, tmp_path)["grid"]["last_checkpoint_ms"] or 0) > (checks or 0),
               timeout=20, message="a REST check after it")
    assert len(orders_of(control.state(), key)) == 10  # and still no duplicate after the next check
    assert stop(p) == 0 and n_open(control, key) == 9  # kept again


def test_status_works_while_the_bot_runs(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = spawn(path, tmp_path)
    try:
        wait_until(lambda: n_open(control, key) == 9, timeout=20, message="the grid")
        st = wait_until(lambda: (lambda s: s if s["stats"]["open_buys"] == 5 and s["grid"]["last_checkpoint"]
                                 else None)(status_json(path, tmp_path)), timeout=20,
                        message="the saved state to show the grid and a first REST check")
        assert st["grid"]["status"] == "running"
        assert [row["side"] for row in st["levels"]] == ["Bid"] * 5 + [None] + ["Ask"] * 4
        text = subprocess.run([PYTHON, BOT, "status", "--config", path], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30).stdout
        assert text.startswith("grid 1 (running) SOL_USDC arithmetic, 10 levels 140.00..158.00")
        assert "round trips 0" in text and "  150.00" in text
    finally:
        assert stop(p) == 0


# ------------------------------------------------------------------------------ the proof
FAULTS = [
    None,
    {"kind": "drop_response", "method": "POST", "path": "/api/v1/order"},
    {"kind": "drop_response", "method": "POST", "path": "/api/v1/orders"},
    {"kind": "http_status", "method": "GET", "path": "/api/v1/orders", "status": 503, "count": 2},
    {"kind": "http_status", "method": "POST", "path": "/api/v1/order", "status": 500},
    {"kind": "http_status", "method": "GET", "path": "/wapi/v1/history/fills", "status": 429, "retry_after": 1},
    {"kind": "delay", "method": "GET", "path": "/api/v1/orders", "seconds": 0.4},
]


def caught_up(path, cwd, after_ms, price):
    """The bot's saved state once it has checked the exchange after ``after_ms``, has settled every
    unknown outcome and has placed every order that can rest at ``price``: each pair still waiting
    has its level taken by another pair's order, or would cross the price."""
    def can_wait(p, taken):
        level_price = GRID[p["level"]]
        crosses = level_price > price if p["side"] == "Bid" else level_price < price
        return p["level"] in taken or crosses

    def check():
        st = status_json(path, cwd)
        if (st["grid"]["last_checkpoint_ms"] or 0) <= after_ms + 1000:
            return None
        if any(row["state"] in ("intended", "unknown") for row in st["levels"]):
            return None  # an answer was lost: its level is held until the lookup settles it
        taken = {row["level"] for row in st["levels"] if row["side"] is not None}
        return st if all(can_wait(p, taken) for p in st["pairs"] if p["waiting"]) else None
    return wait_until(check, timeout=60, message="the bot to catch up with the market")


def settle(control, key, path, cwd):
    """Stop the market and bring the grid to where every pair's order rests. When the price outruns
    the bot, two counter-orders can want one level and the later one waits for it; a sweep below the
    grid and one above it fill what blocks them, and the price then parks on the top level."""
    control.pause_feed(True)
    for price in (GRID[0] - 2, GRID[-1] + 2, GRID[-1]):
        control.set_price(price)
        caught_up(path, cwd, control.state()["time_us"] // 1000, price)
    wait_until(lambda: n_open(control, key) == len(GRID) - 1, timeout=60,
               message="every pair to have its order on the book")


def check_never_two_at_a_level(orders):
    by_level = defaultdict(list)
    for o in orders:
        by_level[D(o["price"])].append((o["createdAtUs"], o["closedAtUs"] or float("inf"), o["id"]))
    for price, spans in by_level.items():
        spans.sort()
        for (s1, e1, a), (s2, e2, b) in zip(spans, spans[1:]):
            assert s2 >= e1, f"orders {a} and {b} were open together at {price}"


def check_books(tmp_path, path, control, key):
    st = control.state()
    ours = orders_of(st, key)
    check_never_two_at_a_level(ours)
    assert_counter_orders(ours, GRID)
    expect = ledger_totals(st, ours, GRID, "SOL")
    got = status_json(path, tmp_path)["stats"]
    assert got["round_trips"] == expect["round_trips"]
    assert D(got["grid_profit"]) == expect["grid_profit"]
    assert {k: D(v) for k, v in got["fees"].items()} == expect["fees"]
    assert D(got["position"]) == expect["position"]
    assert open_orders_of(st, key) == []
    return expect


@pytest.mark.slow
def test_thirty_kill9s_at_random_moments_never_duplicate_or_lose_an_order(tmp_path):
    rng = random.Random(20261125)
    with running_simulator(feed="random", seed=11, tick_seconds=0.1, volatility=0.006, reversion=0.03,
                           price=D("149.5"), ticker_interval=0.2) as sim:
        path, signer = write_config(tmp_path, sim)
        control, key = SimControl(sim.rest_url), signer.api_key
        kills = late = 0
        while kills < 30:
            fault = rng.choice(FAULTS)
            if fault is not None:
                control.fault(**fault)
            started = markers(tmp_path)
            p = spawn(path, tmp_path)
            # The moment of death is the point of the test: about a third die at a random moment of
            # start-up, the rest at a random moment once the bot has resumed (or laid out) its grid.
            if rng.random() < 0.35:
                time.sleep(rng.uniform(0.05, 1.0))
            else:
                wait_until(lambda: markers(tmp_path) > started, timeout=60, message="the bot at work")
                time.sleep(rng.uniform(0, 1.5))
                late += 1
            stop(p, signal.SIGKILL)
            kills += 1
        control.clear_faults()
        p = spawn(path, tmp_path)
        settle(control, key, path, tmp_path)
        assert stop(p) == 0
        expect = check_books(tmp_path, path, control, key)
        st = control.state()
        log = log_of(tmp_path)
    assert log.count("resuming grid 1 from") >= late - 1   # every run killed late had resumed the grid
    assert not re.findall(r"^\S+ \S+ ERROR .*", log, re.M)  # nothing went wrong that the bot noticed
    assert len(st["fills"]) >= 10 and expect["round_trips"] >= 3, "the market should have traded"


@pytest.mark.slow
def test_restarts_with_on_exit_keep_never_duplicate_or_lose_an_order(tmp_path):
    rng = random.Random(7)
    with running_simulator(feed="random", seed=12, tick_seconds=0.1, volatility=0.006, reversion=0.03,
                           price=D("149.5"), ticker_interval=0.2) as sim:
        path, signer = write_config(tmp_path, sim, on_exit="keep")
        secret = json.loads(open(path).read())["api"]["api_secret"]
        control, key = SimControl(sim.rest_url), signer.api_key
        for _ in range(10):
            fault = rng.choice(FAULTS)
            if fault is not None:
                control.fault(**fault)
            started = markers(tmp_path)
            p = spawn(path, tmp_path)
            wait_until(lambda: markers(tmp_path) > started, timeout=60, message="the bot at work")
            time.sleep(rng.uniform(0, 2.0))
            assert stop(p) == 0                          # a graceful stop that keeps the grid
            assert status_json(path, tmp_path)["grid"]["status"] == "running"
        control.clear_faults()
        write_config(tmp_path, sim, secret=secret, on_exit="cancel")   # the last stop cancels
        p = spawn(path, tmp_path)
        settle(control, key, path, tmp_path)
        assert stop(p) == 0
        expect = check_books(tmp_path, path, control, key)
    log = log_of(tmp_path)
    assert log.count("resuming grid 1 from") == 10
    assert not re.findall(r"^\S+ \S+ ERROR .*", log, re.M)
    assert expect["round_trips"] >= 1


def test_a_state_rolled_back_by_a_power_cut_reuses_no_clientid_and_orphans_nothing(tmp_path, quiet_sim):
    """The state file (db and WAL) is copied after the first batch; two fills and their counter-orders
    happen (a round trip); kill -9; the old copy is put back, as a power cut that rolled back committed
    transactions would leave it. The restarted bot takes its forgotten orders back, never reuses a
    clientId, never puts two orders at one level, counts the round trip, and cancels everything at a stop."""
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    state = tmp_path / "grid_state.db"
    p = spawn(path, tmp_path)
    wait_until(lambda: n_open(control, key) == 9, timeout=20, message="the grid")
    wait_until(lambda: (lambda st: st["open_buys"] + st["open_sells"])(status_json(path, tmp_path)["stats"]) == 9,
               timeout=20, message="the first batch saved as open")
    saved = {s: (tmp_path / f"grid_state.db{s}").read_bytes() for s in ("", "-wal")
             if (tmp_path / f"grid_state.db{s}").exists()}
    control.set_price("147.50")                        # the buy at 148 fills: a sell at 150 goes out
    wait_until(lambda: any(o["side"] == "Ask" and D(o["price"]) == 150 for o in open_orders_of(control.state(), key)),
               timeout=20, message="the counter sell at 150")
    control.set_price("150.50")                        # it fills: a round trip, and a buy at 148 again
    wait_until(lambda: any(o["side"] == "Bid" and D(o["price"]) == 148 for o in open_orders_of(control.state(), key)),
               timeout=20, message="the counter buy at 148")
    stop(p, signal.SIGKILL)
    for name in ("grid_state.db", "grid_state.db-wal", "grid_state.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    for suffix, data in saved.items():
        (tmp_path / f"grid_state.db{suffix}").write_bytes(data)
    assert state.exists()
    before = {o["id"] for o in orders_of(control.state(), key)}
    p = spawn(path, tmp_path)
    wait_until(lambda: "reconciled:" in log_of(tmp_path).split("resuming grid 1 from")[-1], timeout=30,
               message="the resumed grid reconciled")
    wait_until(lambda: status_json(path, tmp_path)["stats"]["round_trips"] == 1, timeout=30,
               message="the round trip the rolled-back state had lost")
    ours = orders_of(control.state(), key)
    cids = [o["clientId"] for o in ours]
    assert len(cids) == len(set(cids))                 # no clientId used twice
    book = open_orders_of(control.state(), key)
    levels = [D(o["price"]) for o in book]
    assert len(levels) == len(set(levels)) == 9        # one order per level, the grid whole
    assert not [o for o in ours if o["id"] not in before]   # the forgotten orders taken back, none placed again
    resumed = log_of(tmp_path).split("resuming grid 1 from")[-1]
    assert "is ours but not in the saved state" in resumed and "0 foreign order(s)" in resumed
    assert stop(p) == 0
    assert n_open(control, key) == 0                   # nothing forgotten on the book after a stop
    st = status_json(path, tmp_path)
    assert st["stats"]["round_trips"] == 1 and st["stats"]["fills"] == 2
