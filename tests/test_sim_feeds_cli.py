"""Price feeds and the standalone ``python -m simulator`` command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal

import pytest
import requests

from simulator import SimControl, running_simulator
from simulator.feeds import Candle, FeedError, RandomFeed, candle_path, read_klines_csv
from tests.helpers import new_signer, order_body, signed_request, start_process, wait_until

D = Decimal
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_candle_path_visits_the_nearer_extreme_first():
    assert candle_path(Candle("t", D(10), D(11), D(5), D(7))) == [D(10), D(11), D(5), D(7)]
    assert candle_path(Candle("t", D(10), D(15), D(9), D(12))) == [D(10), D(9), D(15), D(12)]
    assert candle_path(Candle("t", D(10), D(12), D(8), D(10))) == [D(10), D(8), D(12), D(10)]
    assert candle_path(Candle("t", D(10), D(10), D(10), D(10))) == [D(10)]


def test_random_feed_is_reproducible_for_a_seed():
    def walk(seed):
        f = RandomFeed(lambda *a: None, {"SOL_USDC": D(150)}, seed=seed, volatility=0.01, tick_seconds=1)
        return [f.next_prices()["SOL_USDC"] for _ in range(50)]
    assert walk(7) == walk(7) and walk(7) != walk(8)


def test_random_feed_moves_the_market_and_fills(tmp_path):
    # The walk is pulled back toward its start, so it keeps crossing a bid just below it.
    with running_simulator(feed="random", tick_seconds=0.02, volatility=0.01, seed=3, reversion=0.2) as s:
        signer = new_signer()

        def rest_a_bid():
            # The price may move past the bid between reading it and placing: a post-only bid that
            # would cross is refused, so place again from the new price until one rests.
            price = D(SimControl(s.rest_url).state()["markets"]["SOL_USDC"]["price"])
            r = signed_request(s.rest_url, signer, "POST", "/api/v1/order",
                               body=order_body(f"{price - D('0.5'):.2f}", "1"))
            return r.status_code == 200

        wait_until(rest_a_bid, timeout=30, message="a bid resting below the price")
        wait_until(lambda: SimControl(s.rest_url).state()["fills"], timeout=60,
                   message="the random walk to reach the bid")


def test_a_paused_feed_moves_no_price():
    with running_simulator(feed="random", tick_seconds=0.01, volatility=0.05, seed=4) as s:
        c = SimControl(s.rest_url)
        wait_until(lambda: c.state()["feed"]["ticks"] >= 3, message="the feed to tick")
        paused = c.pause_feed()["feed"]
        assert paused["paused"] is True
        since = c.state()["time_us"]
        wait_until(lambda: c.state()["feed"]["ticks"] >= paused["ticks"] + 5, message="five paused ticks")
        assert [e for e in c.state(journal_since_us=since)["journal"] if e["type"] == "price"] == []
        assert c.pause_feed(False)["feed"]["paused"] is False
        wait_until(lambda: [e for e in c.state(journal_since_us=since)["journal"] if e["type"] == "price"],
                   message="prices after resuming")


def write_csv(path, rows, header="start,open,high,low,close,end,volume,quoteVolume,trades"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_replay_feed_steps_along_each_candle(tmp_path):
    f = write_csv(tmp_path / "k.csv", [
        "2025-01-01 00:00:00,150,151,148,149,2025-01-01 00:01:00,1,1,1",
        "2025-01-01 00:01:00,149,152,149,151.5,2025-01-01 00:02:00,1,1,1"])
    with running_simulator(feed=f"replay:{f}", replay_speed=0) as s:
        c = SimControl(s.rest_url)
        signer = new_signer()
        assert c.state()["markets"]["SOL_USDC"]["price"] == "150.00"
        signed_request(s.rest_url, signer, "POST", "/api/v1/order", body=order_body("148.50", "1"))
        assert c.step_feed()["stepped"] == 1
        st = c.state()
        assert st["markets"]["SOL_USDC"]["price"] == "149.00"
        assert [(x["price"], x["quantity"]) for x in st["fills"]] == [("148.50", "1")]
        prices = [e["price"] for e in st["journal"] if e["type"] == "price"]
        assert prices == ["150.00", "151.00", "148.00", "149.00"]
        assert c.step_feed(5)["stepped"] == 1  # only one candle left
        assert c.state()["feed"]["position"] == 2


def test_replay_feed_steps_point_by_point(tmp_path):
    f = write_csv(tmp_path / "k.csv", [
        "2025-01-01 00:00:00,150,151,148,149,2025-01-01 00:01:00,1,1,1",
        "2025-01-01 00:01:00,149,149,149,149,2025-01-01 00:02:00,1,1,1",
        "2025-01-01 00:02:00,149,152,149,151.5,2025-01-01 00:03:00,1,1,1"])
    with running_simulator(feed=f"replay:{f}", replay_speed=0) as s:
        c = SimControl(s.rest_url)
        seen = []
        for _ in range(20):
            if c.step_points(1)["stepped"] == 0:
                break
            seen.append(c.state()["markets"]["SOL_USDC"]["price"])
        # The paths (nearer extreme first, repeats dropped within a candle): 150 151 148 149 | 149 |
        # 149 152 151.5.
        assert seen == ["150.00", "151.00", "148.00", "149.00", "149.00", "149.00", "152.00", "151.50"]
        assert c.state()["feed"]["position"] == 3
        assert c.step_points(1)["stepped"] == 0


def test_replay_step_finishes_the_candle_in_progress(tmp_path):
    f = write_csv(tmp_path / "k.csv", [
        "2025-01-01 00:00:00,150,151,148,149,2025-01-01 00:01:00,1,1,1",
        "2025-01-01 00:01:00,149,152,149,151.5,2025-01-01 00:02:00,1,1,1"])
    with running_simulator(feed=f"replay:{f}", replay_speed=0) as s:
        c = SimControl(s.rest_url)
        c.step_points(2)
        assert c.step_feed()["stepped"] == 1
        feed = c.state()["feed"]
        assert (feed["position"], feed["point"]) == (1, 0)
        assert c.state()["markets"]["SOL_USDC"]["price"] == "149.00"


@pytest.mark.parametrize("rows,header,error", [
    ([], "start,open,high,low", "missing column(s) close"),
    (["2025-01-01,150,abc,148,149"], "start,open,high,low,close", "not a candle row"),
    (["2025-01-01,150,149,148,151"], "start,open,high,low,close", "inconsistent candle"),
])
def test_bad_klines_files_are_named(tmp_path, rows, header, error):
    f = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(FeedError, match=error.replace("(", r"\(").replace(")", r"\)")):
        list(read_klines_csv(f))


def test_standalone_prints_its_urls_first_and_stops_on_sigterm():
    proc = start_process([sys.executable, "-m", "simulator", "--feed", "none", "--price", "123.45",
                             "--balance", "USDC=500", "--maker-fee", "0.001"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = json.loads(proc.stdout.readline())
        assert urls["rest"].startswith("http://127.0.0.1:") and urls["ws"].startswith("ws://127.0.0.1:")
        t = requests.get(urls["rest"] + "/api/v1/ticker", params={"symbol": "SOL_USDC"}, timeout=5).json()
        assert t["lastPrice"] == "123.45"
        cap = signed_request(urls["rest"], new_signer(), "GET", "/api/v1/capital").json()
        assert cap == {"USDC": {"available": "500", "locked": "0", "staked": "0"}}
        assert SimControl(urls["rest"]).state()["fees"]["maker"] == "0.001"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()


def test_standalone_rejects_a_bad_feed_with_a_message():
    r = subprocess.run([sys.executable, "-m", "simulator", "--feed", "replay:/nonexistent.csv"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "cannot read klines file /nonexistent.csv" in r.stderr
