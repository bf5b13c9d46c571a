"""Tier 3: the bot as users run it (a process): signals, bad input, logs, keygen, paper mode."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from decimal import Decimal

import pytest

from backpack_api import Signer, generate_keypair
from simulator import SimControl
from tests.e2e import PYTHON, ROOT, BotThread, open_orders_of, write_config
from tests.helpers import order_body, signed_request, start_process, wait_until

D = Decimal
BOT = os.path.join(ROOT, "grid_bot.py")


def run_bot(args, cwd, timeout=60):
    return subprocess.run([PYTHON, BOT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def spawn(args, cwd):
    return start_process([PYTHON, BOT, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigterm_cancels_our_orders_and_leaves_a_foreign_one(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim)
    control = SimControl(quiet_sim.rest_url)
    foreign = signed_request(quiet_sim.rest_url, signer, "POST", "/api/v1/order",
                             body=order_body("141.00", "1", client_id=4242)).json()
    proc = spawn(["--config", path], tmp_path)
    try:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 10, timeout=20,
                   message="the grid next to the foreign order")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    left = open_orders_of(control.state(), signer.api_key)
    assert [o["id"] for o in left] == [foreign["id"]]
    log = (tmp_path / "grid_bot.log").read_text()
    assert "stopping: SIGTERM received" in log and "all of this grid's orders are cancelled" in log
    assert "final stats" in log
    assert "Traceback" not in err


def test_no_secret_in_a_debug_log(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, log={"level": "DEBUG"}, duration=3)
    secret = json.loads(open(path).read())["api"]["api_secret"]
    r = run_bot(["--config", path], tmp_path)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "grid_bot.log").read_text()
    assert "-> POST /api/v1/orders" in log  # requests are logged at DEBUG...
    for text in (log, r.stdout, r.stderr):
        assert secret not in text           # ...the secret never
        assert "X-Signature" not in text


def test_second_ctrl_c_during_shutdown_exits_at_once_with_a_warning(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim)
    control = SimControl(quiet_sim.rest_url)
    proc = spawn(["--config", path], tmp_path)
    try:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=20,
                   message="the grid")
        control.fault(kind="delay", method="DELETE", path="/api/v1/order", seconds=20, count=100)
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: "stopping: SIGINT received" in (tmp_path / "grid_bot.log").read_text(), timeout=30,
                   message="shutdown to start")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
        assert time.monotonic() - started < 15
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    log = (tmp_path / "grid_bot.log").read_text()
    assert "forced exit:" in log and "may still be open" in log


@pytest.mark.parametrize("change,message", [
    (dict(grid_num=1), "trading.grid_num must be at least 2 (got 1)"),
    (dict(grid_num="10"), "trading.grid_num must be a whole number (got \"10\")"),
    (dict(grid_lower="160"), "trading.grid_lower (160) must be below trading.grid_upper (158)"),
    (dict(quantity="0"), "trading.quantity must be greater than 0 (got 0)"),
    (dict(quantity="-1"), "trading.quantity must be greater than 0 (got -1)"),
    (dict(auto_price=True, price_range="1.5"), "trading.price_range must be between 0 and 1"),
    (dict(auto_price=True), "trading.price_range is needed when auto_price is true"),
    (dict(grid_nmu=10), "unknown key trading.grid_nmu; did you mean trading.grid_num?"),
    (dict(use_websocket="yes"), "trading.use_websocket must be true or false (got \"yes\")"),
    (dict(interval=0.5), "trading.interval must be a number of seconds from 1 to 3,600 (got 0.5)"),
    (dict(interval=0), "trading.interval must be a number of seconds from 1 to 3,600 (got 0)"),
    (dict(symbol="sol-usdc"), "trading.symbol must look like BASE_QUOTE"),
    (dict(api={"api_key": "YOUR_API_KEY"}), "api.api_key is not set: put your Backpack key in config.json or "
                                            "BACKPACK_API_KEY, or try --paper"),
    (dict(api={"api_secret": "not-base64!"}), "api.api_secret is not valid base64"),
    (dict(api={"api_secret": "QUJD"}), "api.api_secret decodes to 3 bytes, expected 32"),
    (dict(api={"api_key": Signer(generate_keypair()[1]).api_key}), "api.api_key is not the public key of "
                                                                   "api.api_secret"),
    (dict(api={"base_url": "api.backpack.exchange"}), "api.base_url must look like https://api.backpack.exchange"),
])
def test_bad_config_is_one_line_exit_2_and_nothing_sent(tmp_path, quiet_sim, change, message):
    api = change.pop("api", None)
    path, signer = write_config(tmp_path, quiet_sim, api=api, **change)
    r = run_bot(["--config", path], tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    journal = SimControl(quiet_sim.rest_url).state()["journal"]
    # The exchange never heard from the bot (the one ping is the test harness's readiness check).
    assert [e["path"] for e in journal if e["type"] == "request"] == ["/api/v1/ping"]


def test_missing_and_broken_config_files(tmp_path):
    r = run_bot(["--config", str(tmp_path / "nope.json")], tmp_path)
    assert r.returncode == 2 and "config file not found" in r.stderr and "give --config" in r.stderr
    # --paper from another folder: where it looked, and no "try --paper" to a user who gave it
    r = run_bot(["--paper"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"config file not found: config.json in {tmp_path}, the current folder" in r.stderr
    assert "try --paper" not in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"trading": {"symbol": "SOL_USDC",}}')
    r = run_bot(["--config", str(bad)], tmp_path)
    assert r.returncode == 2 and "is not valid JSON" in r.stderr and "line 1" in r.stderr


@pytest.mark.parametrize("change,message", [
    (dict(symbol="SOL_USCD"), "unknown symbol SOL_USCD on http://127.0.0.1:"),
    (dict(grid_lower="140.005"), "grid_lower 140.005 is off SOL_USDC's price tick 0.01: use 140.00 or 140.01"),
    (dict(quantity="0.001"), "quantity 0.001 is below SOL_USDC's minimum order quantity 0.01"),
    (dict(grid_lower="150.00", grid_upper="150.10", grid_num=20), "grid_num 20 is too many for 150.00..150.10 "
                                                                   "with tickSize 0.01"),
])
def test_input_the_market_refuses_is_exit_2_and_nothing_placed(tmp_path, quiet_sim, change, message):
    path, signer = write_config(tmp_path, quiet_sim, **change)
    r = run_bot(["--config", path], tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # console logging is off: just the reason
    if "unknown symbol" in message:
        assert "did you mean SOL_USDC?" in r.stderr
    assert SimControl(quiet_sim.rest_url).state()["orders"] == []


def test_short_balance_says_what_is_missing_and_places_nothing(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim)
    control = SimControl(quiet_sim.rest_url)
    control.set_balance(signer.api_key, "USDC", "100")
    control.set_balance(signer.api_key, "SOL", "1")
    r = run_bot(["--config", path], tmp_path)
    assert r.returncode == 2
    # buys at 140..148 x 0.5 need 360 USDC; sells at 152..158 x 0.5 need 2 SOL
    assert ("not enough balance for this grid: missing 260 USDC (needs 360, 100 available) and "
            "1 SOL (needs 2, 1 available)") in r.stderr
    assert control.state()["orders"] == []


def test_environment_overrides_the_keys_in_the_file(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, api={"api_key": "YOUR_API_KEY",
                                                          "api_secret": "YOUR_API_SECRET"}, duration=2)
    api_key, secret = generate_keypair()
    env = {**os.environ, "BACKPACK_API_KEY": api_key, "BACKPACK_API_SECRET": secret}
    r = subprocess.run([PYTHON, BOT, "--config", path], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert api_key in SimControl(quiet_sim.rest_url).state()["accounts"]


def test_duration_ends_the_run_like_a_signal(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, duration=2)
    b = BotThread(path).__enter__()
    b.thread.join(timeout=30)
    assert not b.thread.is_alive()
    assert b.result.error is None and b.result.reason == "duration of 2 s reached"
    assert open_orders_of(SimControl(quiet_sim.rest_url).state(), signer.api_key) == []


def test_keygen_prints_a_matching_pair(tmp_path):
    r = run_bot(["keygen"], tmp_path)
    lines = dict(line.split("=", 1) for line in r.stdout.strip().splitlines())
    assert Signer(lines["BACKPACK_API_SECRET"]).api_key == lines["BACKPACK_API_KEY"]
    j = json.loads(run_bot(["keygen", "--json"], tmp_path).stdout)
    assert Signer(j["api_secret"]).api_key == j["api_key"] != lines["BACKPACK_API_KEY"]


def test_paper_mode_with_the_shipped_config_trades_without_keys(tmp_path):
    shutil.copy(os.path.join(ROOT, "config.json"), tmp_path / "config.json")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["trading"].update(duration=25, interval=2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = run_bot(["--paper", "--seed", "7"], tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stderr  # the console log
    assert "PAPER MODE" in out and "placing the initial grid" in out
    assert "counter-order" in out and "fill:" in out
    assert "final stats" in out and "all of this grid's orders are cancelled" in out
    assert (tmp_path / "grid_bot.paper.log").exists() and not (tmp_path / "grid_bot.log").exists()


def test_status_after_a_kill9_in_paper_mode_says_interrupted_not_running(tmp_path):
    shutil.copy(os.path.join(ROOT, "config.json"), tmp_path / "config.json")
    p = start_process([PYTHON, os.path.join(ROOT, "grid_bot.py"), "--paper", "--seed", "7"], cwd=tmp_path,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "grid_bot.paper.log"
        wait_until(lambda: log.exists() and "placing the initial grid" in log.read_text(), timeout=60,
                   message="the paper grid")
        wait_until(lambda: run_bot(["status", "--paper"], tmp_path).stdout.startswith("grid 1 (running)"),
                   timeout=30, message="status while it runs")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    r = run_bot(["status", "--paper"], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("grid 1 (interrupted) ")
    assert "interrupted: the paper bot is not running" in r.stdout
    st = json.loads(run_bot(["status", "--paper", "--json"], tmp_path).stdout)
    assert st["state"] == "interrupted" and st["grid"]["status"] == "running"   # saved as running, truly interrupted


def test_a_second_paper_grid_in_a_folder_keeps_its_own_fills(tmp_path):
    """Each random-walk paper run is a new simulated exchange: its ids never repeat an earlier run's, and
    its fills are its grid's, so report shows what status counts, run after run."""
    shutil.copy(os.path.join(ROOT, "config.json"), tmp_path / "config.json")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["trading"].update(duration=12, interval=1)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for seed in ("7", "7"):                              # the same walk twice: the same trades, new ids
        assert run_bot(["--paper", "--seed", seed], tmp_path, timeout=120).returncode == 0
        status = json.loads(run_bot(["status", "--paper", "--json"], tmp_path).stdout)
        report = json.loads(run_bot(["report", "--paper", "--json"], tmp_path).stdout)
        assert status["stats"]["fills"] > 0
        assert len(report["fills"]) == status["stats"]["fills"]
    assert status["grid"]["id"] == 2


def test_version_names_the_release_and_the_state_schema_and_the_changelog_has_it(tmp_path):
    from gridbot import __version__
    from gridbot.engine.state_store import SCHEMA_VERSION
    r = run_bot(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"grid_bot {__version__} (state schema {SCHEMA_VERSION})"
    changelog = open(os.path.join(ROOT, "CHANGELOG.md")).read()
    assert f"## {__version__}" in changelog and f"schema {SCHEMA_VERSION}" in changelog

