"""A newcomer's first hour: grids that cannot trade are caught before they start, in run and in plan."""
from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from simulator import SimControl
from tests.e2e import open_orders_of, write_config

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
BOT = str(ROOT / "grid_bot.py")


def bot(*args, timeout=60):
    return subprocess.run([sys.executable, BOT, *args], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=timeout)


def test_a_grid_wholly_outside_the_price_band_is_refused_by_run_and_plan(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, grid_lower="200", grid_upper="220", grid_num=8)
    for args in (["plan", "--config", path], ["--config", path]):
        out = bot(*args)
        assert out.returncode == 2
        assert out.stderr.strip() == (
            "grid_bot: no order of this grid can be placed now: every level (200.00..220.00) lies outside the "
            "exchange's price band (0.75x..1.25x the last price 149.50: 112.13..186.87); set trading.grid_lower "
            "and trading.grid_upper around the price")
    assert open_orders_of(SimControl(quiet_sim.rest_url).state(), signer.api_key) == []


def test_plan_names_the_levels_that_must_wait_and_a_price_outside_the_range(tmp_path, quiet_sim):
    path, _ = write_config(tmp_path, quiet_sim, grid_lower="100", grid_upper="200", grid_num=11)
    warnings = json.loads(bot("plan", "--json", "--config", path).stdout)["warnings"]
    assert ("4 of the grid's 10 orders (100.00, 110.00, 190.00, 200.00) lie outside the exchange's price band "
            "(0.75x..1.25x the last price 149.50: 112.13..186.87): they wait until the price comes near enough") in warnings
    path, _ = write_config(tmp_path, quiet_sim, grid_lower="155", grid_upper="170", grid_num=6)
    warnings = json.loads(bot("plan", "--json", "--config", path).stdout)["warnings"]
    assert ("the price 149.50 is below the grid (155.00..170.00): it starts with sells only and needs SOL for all "
            "of them, and trades only once the price rises into the range") in warnings
    path, _ = write_config(tmp_path, quiet_sim, grid_lower="20", grid_upper="30", grid_num=6)
    out = bot("plan", "--json", "--config", path)
    assert out.returncode == 2     # 20..30 is outside the band as well as far below the price
    path, _ = write_config(tmp_path, quiet_sim, grid_lower="120", grid_upper="140", grid_num=6)
    warnings = json.loads(bot("plan", "--json", "--config", path).stdout)["warnings"]
    assert any(w.startswith("the price 149.50 is above the grid (120.00..140.00): it starts with buys only")
               for w in warnings)
    path, _ = write_config(tmp_path, quiet_sim, grid_lower="149.40", grid_upper="149.60", grid_num=3)
    warnings = json.loads(bot("plan", "--json", "--config", path).stdout)["warnings"]
    assert any(w.startswith("the range 149.40..149.60 is only 0.13% of the price 149.50 wide: a typo?")
               for w in warnings), warnings


def start_bot(path, *args):
    from tests.helpers import start_process
    return start_process([sys.executable, BOT, *args, "--config", path], cwd=str(ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def status(path, *args):
    out = bot("status", "--json", "--config", path, *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_status_tells_the_truth_running_stopped_and_interrupted(tmp_path, quiet_sim):
    import signal
    from tests.helpers import wait_until
    control = SimControl(quiet_sim.rest_url)
    path, signer = write_config(tmp_path, quiet_sim)
    proc = start_bot(path)
    try:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
        r = wait_until(lambda: (lambda s: s if s["grid"]["last_checkpoint"] else None)(status(path)), timeout=15,
                       message="a first checkpoint within seconds of the start")
        assert r["bot_running"] and r["situation"] == "running: the bot is working on this grid now"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.communicate()
    r = status(path)
    assert r["situation"].startswith("stopped ") and "its orders were cancelled" in r["situation"]
    assert not any(p["waiting"] for p in r["pairs"]) and not r["bot_running"]
    text = bot("status", "--config", path).stdout
    assert "waiting" not in text
    # A forced exit leaves the orders open: status says so, and where.
    proc = start_bot(path)
    wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
    proc.kill()
    proc.wait(timeout=30)
    proc.communicate()
    assert status(path)["situation"] == ("not running: 9 order(s) may still be open on the exchange (on_exit keep, "
                                         "a forced exit or a crash); the next start settles and resumes them, "
                                         "--reset cancels them")
    # A paper run killed: its simulator died with it, nothing is open anywhere.
    proc = start_bot(path, "--paper")
    wait_until(lambda: (tmp_path / "grid_bot.paper.log").exists()
               and "placing the initial grid" in (tmp_path / "grid_bot.paper.log").read_text(), timeout=30)
    proc.kill()
    proc.wait(timeout=30)
    proc.communicate()
    assert status(path, "--paper")["situation"].startswith("interrupted: the paper bot is not running and its "
                                                           "simulated exchange ended with it")


def test_a_level_that_waits_long_is_logged_once_with_its_real_reason(tmp_path, quiet_sim):
    import signal
    from tests.helpers import wait_until
    path, signer = write_config(tmp_path, quiet_sim, grid_lower="100", grid_upper="200", grid_num=11)
    proc = start_bot(path)
    log = tmp_path / "grid_bot.log"
    try:
        wait_until(lambda: log.exists() and "has waited" in log.read_text(), timeout=30,
                   message="the waiting level's warning")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.communicate()
    lines = [ln for ln in log.read_text().splitlines() if "has waited" in ln]
    assert any("level 0 (Bid @ 100.00) has waited" in ln and "it lies below the exchange's price band (at least "
               "0.75x the last price 149.5" in ln and "until the price falls to 133.33" in ln for ln in lines)
    assert len([ln for ln in lines if "level 0 (" in ln]) == 1       # once


def test_errors_name_where_the_bad_value_came_from(tmp_path, quiet_sim):
    import base64
    import os
    from backpack_api import generate_keypair
    path, _ = write_config(tmp_path, quiet_sim)
    key, _ = generate_keypair()
    short = base64.b64encode(b"x" * 31).decode()
    env = {**os.environ, "BACKPACK_API_KEY": key, "BACKPACK_API_SECRET": short}
    out = subprocess.run([sys.executable, BOT, "--config", path], cwd=str(ROOT), capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == (
        "grid_bot: BACKPACK_API_SECRET decodes to 31 bytes, expected 32 (an ED25519 key): copy it again from "
        "Backpack's API key page")
    klines = str(ROOT / "docs" / "example_klines.csv")
    out = bot("backtest", "--config", path, "--klines", klines, "--sweep", "grid_num=10,abc")
    assert out.returncode == 2 and out.stderr.strip() == 'grid_bot: --sweep grid_num must be a whole number (got "abc")'
    out = bot("backtest", "--config", path, "--klines", klines, "--quantity", "-1")
    assert out.returncode == 2 and out.stderr.strip() == "grid_bot: --quantity must be greater than 0 (got -1)"
    bad = tmp_path / "broken.json"
    bad.write_text('{"trading": {"symbol": "SOL_USDC",}}')
    out = bot("plan", "--config", str(bad))
    assert out.returncode == 2 and out.stderr.strip() == (
        f"grid_bot: {bad} is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 35")


def test_numbers_as_a_trader_reads_them():
    from gridbot.core.accounting import Stats
    from grid_calculator import GridMode, GridSpec, grid_levels
    from gridbot.ops.reports import fmt_amount, format_stats
    grid = GridSpec("SOL_USDC", "SOL", "USDC", grid_levels(D(140), D(158), 10, GridMode.ARITHMETIC, D("0.01")),
                    D("0.5"), GridMode.ARITHMETIC)
    st = Stats(price=D("149.5"), open_bids=1, open_asks=2, round_trips=0, grid_profit=D(0),
               fees={"SOL": D("0.000100000")}, position=D(0), quote_flow=D(0), floating_pnl=D("-0.00000000001"),
               fills=1, waiting=0)
    line = format_stats(st, grid, 60)
    assert "price 149.50 |" in line                      # at the market's tick
    assert "open 1 buy / 2 sells" in line                # plural forms right
    assert "floating PnL 0 USDC" in line and "-0" not in line
    assert "fees 0.0001 SOL" in line                     # no padding
    assert fmt_amount(D("-0.000")) == "0" and fmt_amount(D("1377.965750000000000000000000")) == "1377.96575"


def test_the_top_level_help_shows_paper_mode():
    out = bot("--help")
    assert out.returncode == 0 and "python grid_bot.py --paper " in out.stdout and "--live-prices" in out.stdout


def test_the_pacer_keeps_a_share_of_the_minute_budget():
    from backpack_api import Pacer
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s
    pacer = Pacer(3, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()                  # a burst up to the budget goes at once
    assert slept == []
    now[0] = 10.0
    pacer.wait()                      # the fourth in the same minute waits for the first to leave it
    assert slept == [50.0] and now[0] == 60.0
    pacer.wait()
    pacer.wait()                      # the 2nd and 3rd (sent at 0 s) left the window at 60 s too
    assert len(slept) == 1


def test_two_grids_on_one_account_touch_only_their_own_orders(tmp_path, quiet_sim):
    import signal
    from backpack_api import generate_keypair
    from tests.helpers import wait_until
    control = SimControl(quiet_sim.rest_url)
    _, secret = generate_keypair()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path_a, signer = write_config(tmp_path / "a", quiet_sim, secret=secret, api={"requests_per_minute": 900})
    path_b, _ = write_config(tmp_path / "b", quiet_sim, secret=secret, api={"requests_per_minute": 900},
                             grid_lower="160", grid_upper="178")
    a, b = start_bot(path_a), start_bot(path_b)
    try:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 18, timeout=30,
                   message="both grids on the book")
        b_orders = {o["id"] for o in open_orders_of(control.state(), signer.api_key) if D(o["price"]) >= 160}
        assert len(b_orders) == 9
        control.set_price("147.50")                       # A's buy at 148 fills; A sells at 150
        wait_until(lambda: [o for o in open_orders_of(control.state(), signer.api_key)
                            if o["side"] == "Ask" and D(o["price"]) == 150], timeout=30, message="A's counter-order")
        a.send_signal(signal.SIGTERM)                     # A stops: it cancels its own orders only
        assert a.wait(timeout=60) == 0
        a.communicate()
        left = {o["id"] for o in open_orders_of(control.state(), signer.api_key)}
        assert left == b_orders                           # B's nine, untouched
        control.set_price("162.50")                       # and B still trades: its sell at 162 fills
        wait_until(lambda: [o for o in open_orders_of(control.state(), signer.api_key)
                            if o["side"] == "Bid" and D(o["price"]) == 160], timeout=30, message="B's counter-order")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                assert p.wait(timeout=60) == 0
                p.communicate()
    assert open_orders_of(control.state(), signer.api_key) == []


def test_a_forced_exit_in_paper_mode_says_nothing_stays_open(tmp_path, quiet_sim):
    import re
    import signal
    from tests.helpers import wait_until
    path, _ = write_config(tmp_path, quiet_sim)
    proc = start_bot(path, "--paper")
    log = tmp_path / "grid_bot.paper.log"
    try:
        url = wait_until(lambda: log.exists() and re.search(r"a simulated exchange at (http://[\d.:]+)", log.read_text()),
                         timeout=30, message="the paper simulator's URL")[1]
        wait_until(lambda: "placing the initial grid" in log.read_text(), timeout=30)
        SimControl(url).fault(kind="delay", method="DELETE", path="/api/v1/order", seconds=20, count=100)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "stopping: SIGINT received" in log.read_text(), message="shutdown to start")
        proc.send_signal(signal.SIGINT)
        # What this test is about is the message; how fast a forced exit is, test_bot_cli measures (the
        # paper simulator here shares the process, and so its CPU on a busy machine).
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    text = log.read_text()
    assert "forced exit: the paper simulator ends with this process, so nothing stays open anywhere" in text
    assert "cancel them on Backpack" not in text
