"""Paper mode on live prices. The "real" exchange is a second simulator with a random feed, standing in
for Backpack; the bot runs as its own process with ``--paper --live-prices``, talking only to its
in-process paper simulator, which follows the real one's public trades."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from backpack_api import generate_keypair
from simulator import SimControl, running_simulator
from simulator.server import SimConfig
from tests.helpers import start_process, wait_until

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
BOT = str(ROOT / "grid_bot.py")


@pytest.fixture
def real():
    """The stand-in for Backpack: SOL_USDC wandering around 149.5, a trade every 0.1 s."""
    with running_simulator(SimConfig(feed="random", seed=5, price=D("149.5"), tick_seconds=0.1,
                                     volatility=0.0015, reversion=0.05, ticker_interval=0.5)) as s:
        yield s


def write_config(tmp_path, real, stale_after=30, **trading):
    api_key, secret = generate_keypair()   # real-looking keys in the file: they must never be used
    t = {"symbol": "SOL_USDC", "grid_lower": "146", "grid_upper": "153", "grid_num": 8, "quantity": "0.5",
         "interval": 1, "on_exit": "keep", **trading}
    cfg = {"api": {"base_url": real.rest_url, "ws_url": real.ws_url, "api_key": api_key, "api_secret": secret},
           "trading": t, "log": {"file": str(tmp_path / "grid_bot.log"), "console": False},
           "paper": {"balances": {"USDC": "5000", "SOL": "20"}, "stale_after": stale_after}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def start_bot(path):
    return start_process([sys.executable, BOT, "--paper", "--live-prices", "--config", path], cwd=str(ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_bot(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    proc.communicate()


def paper_control(tmp_path, runs=1):
    """The paper simulator's control API, from the URL the bot logs at start (the ``runs``-th start)."""
    def url():
        log = tmp_path / "grid_bot.paper.log"
        found = re.findall(r"a simulated exchange at (http://127\.0\.0\.1:\d+) follows", log.read_text()) \
            if log.exists() else []
        return found[runs - 1] if len(found) >= runs else None
    return SimControl(wait_until(url, timeout=30, message="the paper simulator's URL in the log"))


def our_fills(state):
    return [f for f in state["fills"]]


def test_paper_fills_follow_the_real_trades_and_the_account_is_never_touched(tmp_path, real):
    real_control = SimControl(real.rest_url)
    path = write_config(tmp_path, real)
    proc = start_bot(path)
    try:
        paper = paper_control(tmp_path)
        wait_until(lambda: len(paper.state()["fills"]) >= 4, timeout=60, message="four paper fills")
        # The real public stream drops for 2 s: the feed reconnects and replays the trades it missed.
        real_control.fault(kind="ws_drop", seconds=2)
        wait_until(lambda: paper.state()["feed"]["connects"] >= 2 and paper.state()["feed"]["gap_filled"] > 0,
                   timeout=30, message="a reconnect and a gap-fill")
        state = paper.state()
        real_streams = real_control.state()["ws"]["streams"]
    finally:
        stop_bot(proc)
    real_trades = {t["id"]: t for t in real.exchange.markets["SOL_USDC"].trades}
    # Every paper fill was caused by a real trade that printed strictly through its price, and the
    # fills one trade caused add up to no more than it traded.
    cause = None
    per_trade: dict[int, D] = {}
    fills = 0
    for e in state["journal"]:
        if e["type"] == "price":
            cause = e.get("cause")
        elif e["type"] == "fill":
            fills += 1
            assert cause is not None, "a paper fill without a real trade behind it"
            trade = real_trades[cause]
            if e["side"] == "Bid":
                assert D(trade["price"]) < D(e["price"])
            else:
                assert D(trade["price"]) > D(e["price"])
            per_trade[cause] = per_trade.get(cause, D(0)) + D(e["quantity"])
            assert per_trade[cause] <= D(trade["quantity"])
    assert fills >= 4
    # Not one signed request and not one private subscription reached the "real" exchange.
    signed = [e for e in real.exchange.journal if e["type"] == "request" and e.get("account")]
    assert signed == [] and not [s for s in real_streams if s.startswith("account.")]
    assert real.exchange.accounts == {}


def test_a_restart_resumes_the_paper_grid_on_live_prices(tmp_path, real):
    path = write_config(tmp_path, real)
    proc = start_bot(path)
    try:
        paper = paper_control(tmp_path)
        wait_until(lambda: len(paper.state()["fills"]) >= 2, timeout=60, message="two paper fills")
        before = paper.state()
    finally:
        stop_bot(proc)                       # on_exit keep: the paper orders stay on the paper book
    open_before = {o["clientId"] for o in before["orders"] if o["status"] in ("New", "PartiallyFilled")}
    assert (tmp_path / "grid_state.paper.sim.json").exists()
    proc = start_bot(path)
    try:
        paper = paper_control(tmp_path, runs=2)
        log = tmp_path / "grid_bot.paper.log"
        wait_until(lambda: "resuming grid 1" in log.read_text(), timeout=30, message="the grid resumed")
        after = paper.state()
        open_after = {o["clientId"] for o in after["orders"] if o["status"] in ("New", "PartiallyFilled")}
        assert open_before <= {o["clientId"] for o in after["orders"]}   # the same paper orders, not new ones
        assert open_after
        assert len(after["fills"]) >= len(before["fills"])
    finally:
        stop_bot(proc)
    status = subprocess.run([sys.executable, BOT, "status", "--paper", "--json", "--config", path], cwd=str(ROOT),
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["grid"]["id"] == 1 and report["grid"]["status"] == "running"   # kept, to resume again


def test_a_stale_feed_says_so_and_fills_nothing_until_prices_are_back(tmp_path, real):
    real_control = SimControl(real.rest_url)
    path = write_config(tmp_path, real, stale_after=1.5)
    proc = start_bot(path)
    log = tmp_path / "grid_bot.paper.log"
    try:
        paper = paper_control(tmp_path)
        wait_until(lambda: paper.state()["feed"]["trades"] > 0, timeout=30, message="live trades")
        real_control.fault(kind="ws_silent", seconds=4)         # nothing at all from the real stream
        wait_until(lambda: "live prices stale" in log.read_text(), timeout=30, message="the stale warning")
        stale = paper.state()
        assert stale["feed"]["stale"] is True
        # Stale: no trade arrives, so the paper market stands still (its last move is older than the warning).
        moves = [e for e in stale["journal"] if e["type"] == "price"]
        assert stale["time_us"] - moves[-1]["t"] >= 1_000_000
        wait_until(lambda: "live prices are back" in log.read_text(), timeout=30, message="prices back")
        # Back: the trades the silence hid are replayed from REST, in order, before new ones.
        assert paper.state()["feed"]["gap_filled"] > 0
    finally:
        stop_bot(proc)


def test_plan_on_live_prices_uses_the_real_market_and_paper_balances(tmp_path, real):
    path = write_config(tmp_path, real)
    out = subprocess.run([sys.executable, BOT, "plan", "--paper", "--live-prices", "--json", "--config", path],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["price_source"] == f"paper mode on live prices: the last price on {real.rest_url}"
    assert abs(D(report["price"]) - D("149.5")) < D(5)      # the stand-in's wandering price, not a default
    assert report["balances_source"] == "paper"
    assert not [e for e in real.exchange.journal if e["type"] == "request" and e.get("account")]
    noflag = subprocess.run([sys.executable, BOT, "plan", "--live-prices", "--config", path], cwd=str(ROOT),
                            capture_output=True, text=True, timeout=60)
    assert noflag.returncode == 2 and noflag.stderr.strip() == "grid_bot: --live-prices is for paper mode: add --paper"


def test_kill9_and_restart_on_live_prices_never_counts_a_fill_twice(tmp_path, real):
    """Every paper fill is saved with the simulated account before the bot can learn of it, so after a
    kill -9 at any moment the restarted bot's fills are exactly the paper exchange's."""
    path = write_config(tmp_path, real)
    for run in (1, 2, 3):
        proc = start_bot(path)
        try:
            paper = paper_control(tmp_path, runs=run)
            target = 2 * run
            wait_until(lambda: len(paper.state()["fills"]) >= target, timeout=90, message=f"{target} paper fills")
        finally:
            proc.send_signal(signal.SIGKILL)             # mid-flight, wherever it is
            proc.wait(timeout=30)
            proc.communicate()
    proc = start_bot(path)
    try:
        paper = paper_control(tmp_path, runs=4)
        log = tmp_path / "grid_bot.paper.log"
        wait_until(lambda: log.read_text().count("reconciled:") >= 3, timeout=60, message="the last resume settled")
        st = paper.state()
    finally:
        stop_bot(proc)
    status = json.loads(subprocess.run([sys.executable, BOT, "status", "--paper", "--json", "--config", path],
                                       cwd=str(ROOT), capture_output=True, text=True, timeout=60).stdout)
    assert status["stats"]["fills"] >= len(st["fills"]) > 0
    saved = json.loads((tmp_path / "grid_state.paper.sim.json").read_text())
    assert status["stats"]["fills"] == len(saved["fills"])     # the bot's count is the paper exchange's
    trade_ids = [f["trade_id"] for f in saved["fills"]]
    assert len(trade_ids) == len(set(trade_ids))


def test_a_perps_grid_on_live_prices_trades_the_paper_perp_market_following_the_real_mark(tmp_path):
    """``--paper --live-prices`` on SOL_USDC_PERP: the paper market is built from the real one's rules (its
    margin functions too), its fills follow the real trades, its mark is the real mark, and the grid's
    position is the paper exchange's."""
    import requests
    with running_simulator(SimConfig(feed="random", symbol="SOL_USDC_PERP", seed=7, price=D("150"),
                                     tick_seconds=0.1, volatility=0.002, reversion=0.05,
                                     ticker_interval=0.5)) as real:
        path = write_config(tmp_path, real, symbol="SOL_USDC_PERP", grid_lower="146", grid_upper="154",
                            grid_num=9, quantity=None, investment="300", leverage="3", direction="neutral",
                            maker_fee="0.0002", taker_fee="0.0005")
        cfg = json.loads(Path(path).read_text())
        cfg["paper"] = {"balances": {"USDC": "300"}}
        Path(path).write_text(json.dumps(cfg))
        plan = subprocess.run([sys.executable, BOT, "plan", "--paper", "--live-prices", "--json", "--config", path],
                              cwd=str(ROOT), capture_output=True, text=True, timeout=60)
        assert plan.returncode == 0, plan.stderr
        p = json.loads(plan.stdout)
        assert p["symbol"] == "SOL_USDC_PERP" and D(p["available"]) == D(300) and "live prices" in p["price"]["source"]
        proc = start_bot(path)
        try:
            paper = paper_control(tmp_path)
            wait_until(lambda: len(paper.state()["fills"]) >= 3, timeout=90, message="three paper fills")

            # The real mark set 1 % above its index: the paper market's mark follows the real one, not its
            # own trades.
            requests.post(real.rest_url + "/_sim/perp", json={"symbol": "SOL_USDC_PERP", "premium": "0.01"},
                          timeout=10).raise_for_status()

            def premium():
                m = requests.get(paper.base + "/api/v1/markPrices", params={"symbol": "SOL_USDC_PERP"},
                                 timeout=5).json()[0]
                return D(m["markPrice"]) / D(m["indexPrice"]) - 1
            wait_until(lambda: premium() > D("0.009"), timeout=30, message="the real premium on the paper mark")
            state = paper.state()
        finally:
            stop_bot(proc)
        assert real.exchange.accounts == {}                         # nothing signed reached the real exchange
    fills = [f for f in state["fills"] if f["symbol"] == "SOL_USDC_PERP"]
    assert fills and all(f["feeSymbol"] == "USDC" for f in fills)
    log = (tmp_path / "grid_bot.paper.log").read_text()
    assert "placing the initial neutral perps grid" in log and "Traceback" not in log
