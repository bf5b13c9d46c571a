"""Notifications: the outbox, the watches, and the real bot (a subprocess) notifying a real HTTP
receiver on 127.0.0.1 through Apprise's json:// URLs, with a heartbeat."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from gridbot.ops.config import ConfigError, load_config
from gridbot.core.events import FillApplied, OrderRefused, RoundTripCompleted
from gridbot.core.models import Side
from gridbot.ops.notify import Digest, ErrorWatch, Message, NotifyConfig, Outbox
from simulator import SimControl
from tests.e2e import open_orders_of, write_config
from tests.helpers import start_process, wait_until
from tests.receiver import Receiver

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
BOT = str(ROOT / "grid_bot.py")
SECRET_PATH = "/ping/abc123secretuuid"


class Sent:
    """A stand-in for the notifier's queue in the pure tests: it records what would be sent."""

    def __init__(self, events=("start", "stop", "digest", "error", "daily")) -> None:
        self.cfg = NotifyConfig(events=tuple(events), digest_interval=60, error_after=30, daily_hour=8)
        self.sent: list[tuple[str, str, str]] = []

    def send(self, kind, title, body):
        if kind in self.cfg.events:
            self.sent.append((kind, title, body))


# ------------------------------------------------------------------------------ pure parts
def test_a_full_outbox_drops_the_oldest_message_that_is_not_an_error():
    box = Outbox(size=3)
    for m in (Message("error", "e1", ""), Message("digest", "d1", ""), Message("digest", "d2", "")):
        box.put(m)
    box.put(Message("error", "e2", ""))
    assert [m.title for m in box.items] == ["e1", "d2", "e2"] and box.dropped == 1
    box.put(Message("error", "e3", ""))
    box.put(Message("error", "e4", ""))      # only errors left: the oldest goes
    assert [m.title for m in box.items] == ["e2", "e3", "e4"]


def test_an_error_is_told_once_after_error_after_and_once_when_it_clears():
    sent = Sent()
    watch = ErrorWatch(sent, error_after=30)
    for now in (0, 10, 29):
        watch.update("exchange", True, now, "Backpack unreachable", "keep calm")
    assert sent.sent == []
    watch.update("exchange", True, 31, "Backpack unreachable", "keep calm")
    watch.update("exchange", True, 90, "Backpack unreachable", "keep calm")
    assert [s[1] for s in sent.sent] == ["Backpack unreachable"] and "31 s" in sent.sent[0][2]
    watch.update("exchange", False, 100, "Backpack unreachable", "keep calm")
    watch.update("exchange", False, 101, "Backpack unreachable", "keep calm")
    assert [s[1] for s in sent.sent] == ["Backpack unreachable", "recovered: Backpack unreachable"]
    watch.update("stream", True, 200, "WebSocket down", "")   # a short outage is never told
    watch.update("stream", False, 210, "WebSocket down", "")
    assert len(sent.sent) == 2


def _fill(i):
    return FillApplied(i, str(i), i, 1, Side.BID, D("148"), D("0.5"), D("0.0004"), "SOL", D("0.5"), D("0.5"), 0)


def test_the_digest_says_what_happened_and_nothing_when_nothing_did():
    sent = Sent()
    wall = [1_700_000_000.0]                 # 2023-11-14 22:13 UTC: today's 08:00 summary has passed
    digest = Digest(sent, sent.cfg, "USDC", now=0, wall=lambda: wall[0])
    digest.tick(61, lambda: "stats")
    assert sent.sent == []                    # nothing happened: no digest
    for i in range(3):
        digest.on_event(_fill(i))
    digest.on_event(RoundTripCompleted(1, 4, D("0.8808")))
    digest.tick(100, lambda: "stats")
    assert sent.sent == []                    # not due yet
    digest.tick(122, lambda: "stats line")
    (kind, title, body), = sent.sent
    assert kind == "digest" and "3 fill(s), 1 round trip(s), profit 0.8808 USDC" in body and "stats line" in body
    wall[0] += 10 * 3600                      # the next morning, 08:13 UTC
    digest.tick(130, lambda: "daily stats")
    digest.tick(131, lambda: "daily stats")
    assert [s[0] for s in sent.sent] == ["digest", "daily"] and sent.sent[1][2] == "daily stats"


def test_a_refusal_for_funds_is_not_told_per_refusal_and_round_trips_are_off_by_default():
    sent = Sent()
    digest = Digest(sent, sent.cfg, "USDC", now=0, wall=lambda: 1_700_000_000.0)
    digest.on_event(RoundTripCompleted(1, 4, D("0.88")))
    for _ in range(5):
        digest.on_event(OrderRefused(7, 4, Side.ASK, D("150"), D("0.5"), "INSUFFICIENT_FUNDS", "Insufficient funds",
                                     1000))
    assert sent.sent == []      # the ErrorWatch tells a level held back for funds, once it lasts


def test_a_level_held_back_for_funds_is_told_once_after_error_after_and_once_when_it_recovers():
    sent = Sent()
    watch = ErrorWatch(sent, error_after=30)
    what = "orders held back: the free balance does not cover them"
    for t in range(0, 120, 5):            # refused again and again, with backoff, for two minutes
        watch.update("funds", True, float(t), what, "Add funds.")
    assert [(k, t) for k, t, _ in sent.sent] == [("error", what)]
    watch.update("funds", False, 125.0, what, "Add funds.")
    watch.update("funds", False, 130.0, what, "Add funds.")
    assert [t for _, t, _ in sent.sent] == [what, f"recovered: {what}"]


@pytest.mark.parametrize("url, fail", [
    ("https://hc-ping.com/0f4e-uuid", "https://hc-ping.com/0f4e-uuid/fail"),
    ("https://hc-ping.com/0f4e-uuid/", "https://hc-ping.com/0f4e-uuid/fail"),
    ("https://hc-ping.com/ping/KEY/my-slug?create=1", "https://hc-ping.com/ping/KEY/my-slug/fail?create=1"),
    ("https://kuma.example/api/push/TOKEN?status=up&msg=OK&ping=",
     "https://kuma.example/api/push/TOKEN?status=down&msg=OK&ping="),
])
def test_the_heartbeat_failure_form_of_healthchecks_and_uptime_kuma(url, fail):
    assert NotifyConfig(heartbeat_url=url).fail_url() == fail


def test_heartbeat_fail_url_overrides_the_failure_form_and_is_a_secret():
    cfg = NotifyConfig(heartbeat_url="https://kuma.example/api/push/TOKEN123?status=up",
                       heartbeat_fail_url="https://kuma.example/api/push/TOKEN123?status=down&msg=grid%20unhealthy")
    assert cfg.fail_url() == "https://kuma.example/api/push/TOKEN123?status=down&msg=grid%20unhealthy"
    assert "TOKEN123" in cfg.secrets() and cfg.heartbeat_fail_url in cfg.secrets()


# ------------------------------------------------------------------------------ config
def _config(tmp_path, sim, notify, **kw):
    path, signer = write_config(tmp_path, sim, **kw)
    data = json.loads(Path(path).read_text())
    data["notify"] = notify
    Path(path).write_text(json.dumps(data))
    return path, signer


def test_a_bad_notify_url_is_named_by_its_place_never_shown(tmp_path, quiet_sim):
    path, _ = _config(tmp_path, quiet_sim, {"urls": ["tgram://123:SECRETTOKEN/1", "not a url SECRET2"]})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "notify.urls[1]" in str(e.value) and "SECRET" not in str(e.value)
    path, _ = _config(tmp_path, quiet_sim, {"heartbeat_url": "ftp://hc/SECRET3"})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "notify.heartbeat_url" in str(e.value) and "SECRET" not in str(e.value)
    path, _ = _config(tmp_path, quiet_sim, {"events": ["start", "fills"]})
    with pytest.raises(ConfigError, match='notify.events: "fills" is not one of start, stop'):
        load_config(path)


def test_the_environment_supplies_the_urls_and_errors_name_it(tmp_path, quiet_sim):
    path, _ = _config(tmp_path, quiet_sim, {})
    cfg = load_config(path, env={"GRID_BOT_NOTIFY_URLS": "json://127.0.0.1:9/a  json://127.0.0.1:9/b",
                                 "GRID_BOT_HEARTBEAT_URL": "https://hc-ping.com/uuid-1234"})
    assert cfg.notify.urls == ("json://127.0.0.1:9/a", "json://127.0.0.1:9/b")
    assert cfg.notify.urls_from == "GRID_BOT_NOTIFY_URLS" and cfg.notify.heartbeat_url.endswith("uuid-1234")
    with pytest.raises(ConfigError, match=r"^GRID_BOT_NOTIFY_URLS\[0\]"):
        load_config(path, env={"GRID_BOT_NOTIFY_URLS": "SECRETonly"})


# ------------------------------------------------------------------------------ the real bot
def run_bot(path, *args):
    return start_process([sys.executable, BOT, *args, "--config", path], cwd=str(ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_bot(proc, timeout=60):
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=timeout)
    proc.communicate()
    return code


def ask_at_150(control, signer):
    return [o for o in open_orders_of(control.state(), signer.api_key) if o["side"] == "Ask" and D(o["price"]) == 150]


def digested(rx):
    total = [0, 0]
    for m in rx.messages():
        found = re.search(r"(\d+) fill\(s\), (\d+) round trip", m["message"]) if m["title"].endswith("digest") else None
        if found:
            total[0] += int(found[1])
            total[1] += int(found[2])
    return tuple(total)


def titles(rx):
    return [m["title"] for m in rx.messages()]


def test_a_scripted_run_notifies_start_digest_error_and_stop_with_a_heartbeat(tmp_path, quiet_sim):
    control = SimControl(quiet_sim.rest_url)
    with Receiver() as rx:
        path, signer = _config(tmp_path, quiet_sim, {
            "urls": [rx.url("/notify/SECRETHOOK123")], "digest_interval": 2, "error_after": 2,
            "heartbeat_url": rx.http_url(SECRET_PATH), "heartbeat_interval": 0.5 + 0.5})
        proc = run_bot(path)
        try:
            wait_until(lambda: "config (SOL_USDC grid): started" in titles(rx), timeout=30, message="the start message")
            start = next(m for m in rx.messages() if m["title"].endswith("started"))
            assert "New grid SOL_USDC: 10 levels 140-158 USDC, 0.5 SOL each" in start["message"]
            wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
            wait_until(lambda: len([g for g in rx.gets() if g.path == SECRET_PATH]) >= 2, timeout=30,
                       message="heartbeats while healthy")
            assert [g.path for g in rx.gets()] == [SECRET_PATH] * len(rx.gets())   # no failure ping at the start
            control.set_price("147.50")                         # a fill, a counter-order
            wait_until(lambda: ask_at_150(control, signer), timeout=30, message="the counter-order")
            control.set_price("150.50")                         # a round trip
            # The digests (one every 2 s, only when something happened) add up to what happened.
            wait_until(lambda: digested(rx) == (2, 1), timeout=30, message="digests of two fills and a round trip")
            assert not any("round trip 1" in t or "fill" in t for t in titles(rx))   # nothing per fill
            # The exchange refuses the bot's checks for a while: an error, the heartbeat's /fail form.
            control.fault(kind="http_status", path="/api/v1/orders", status=503, duration=12)
            wait_until(lambda: any("Backpack unreachable" in t for t in titles(rx)), timeout=40,
                       message="the error")
            wait_until(lambda: any(g.path == SECRET_PATH + "/fail" for g in rx.gets()), timeout=20,
                       message="the heartbeat's /fail")
            wait_until(lambda: "config (SOL_USDC grid): recovered: Backpack unreachable or refusing" in titles(rx),
                       timeout=60, message="the recovery")
        finally:
            assert stop_bot(proc) == 0
        stop = next(m for m in rx.messages() if m["title"].endswith("stopped"))
        assert "Stopped: SIGTERM received" in stop["message"] and "round trips 1" in stop["message"]
    log = (tmp_path / "grid_bot.log").read_text()
    assert "DEBUG" in log                                        # the log ran at DEBUG
    # a fill is told before the counter-order it causes
    assert 0 <= log.index("fill: Bid 0.50 @ 148.00") < log.index("placing Ask 0.50 @ 150.00")
    for secret in ("SECRETHOOK123", "abc123secretuuid", rx.url("/notify/SECRETHOOK123")):
        assert secret not in log


@pytest.mark.parametrize("mode", ["hang", "error"])
def test_a_receiver_that_hangs_or_fails_changes_nothing_in_the_grid(tmp_path, quiet_sim, mode):
    control = SimControl(quiet_sim.rest_url)
    with Receiver(mode) as rx, Receiver() as checker:
        path, signer = _config(tmp_path, quiet_sim, {"urls": [rx.url()], "events": list(
            ("start", "stop", "round_trip", "digest", "error")), "digest_interval": 1,
            "heartbeat_url": checker.http_url(), "heartbeat_interval": 1})
        proc = run_bot(path)
        try:
            wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
            wait_until(lambda: rx.received, timeout=30, message="the start message to be tried")
            control.set_price("147.50")
            started = time.monotonic()
            wait_until(lambda: ask_at_150(control, signer), timeout=10,
                       message="the counter-order, as fast as without notifications")
            assert time.monotonic() - started < 5
            control.set_price("150.50")
            wait_until(lambda: [o for o in open_orders_of(control.state(), signer.api_key)
                                if o["side"] == "Bid" and D(o["price"]) == 148], timeout=10,
                       message="the next counter-order")
            # The heartbeat keeps its schedule while the notifications wait on the receiver.
            beats = len(checker.gets())
            wait_until(lambda: len(checker.gets()) >= beats + 2, timeout=10, message="two more heartbeats")
        finally:
            t0 = time.monotonic()
            assert stop_bot(proc) == 0
            assert time.monotonic() - t0 < 30    # undelivered notifications are given up on, not waited for
    assert open_orders_of(control.state(), signer.api_key) == []


def test_notify_test_reports_each_url_with_the_cause_of_each_failure(tmp_path, quiet_sim):
    with Receiver() as dead_soon:
        dead = dead_soon.url("/SECRETDEAD")                       # nothing listens there any more
    with Receiver() as live, Receiver("error") as failing:
        urls = [live.url("/SECRETLIVE"), dead, failing.url("/SECRETFAIL"), "json://no-such-host.invalid/SECRETDNS"]
        path, _ = _config(tmp_path, quiet_sim, {"urls": urls})
        proc = run_bot(path, "notify-test")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert out.splitlines() == ["URL 1 (json): delivered",
                                    "URL 2 (json): NOT delivered: connection refused (nothing listens at that address)",
                                    "URL 3 (json): NOT delivered: the service answered HTTP 500 Internal Server Error",
                                    "URL 4 (json): NOT delivered: its host name does not resolve (DNS)"]
        assert live.messages()[0]["title"] == "config (SOL_USDC grid): test message"
        assert "SECRET" not in out + err


def test_a_dead_url_beside_a_live_one_delays_nothing_and_the_last_message_is_accounted_for(tmp_path, quiet_sim):
    """Each URL is delivered on its own: a URL that never answers holds back no message to the other,
    the stop message included, and the log says which URL got the last message and why the other did not."""
    control = SimControl(quiet_sim.rest_url)
    with Receiver("hang") as dead, Receiver() as live:
        path, signer = _config(tmp_path, quiet_sim, {"urls": [dead.url("/SECRETDEAD"), live.url("/SECRETLIVE")]})
        proc = run_bot(path)
        try:
            wait_until(lambda: "config (SOL_USDC grid): started" in titles(live), timeout=30, message="the start")
            first_try = wait_until(lambda: dead.received, timeout=10, message="the dead URL's first try")[0].at
            arrived = next(r.at for r in live.received if r.body["title"].endswith("started"))
            # Side by side: the live URL had it while the dead one still hung on its first attempt (which
            # lasts Apprise's 4 s read timeout; one after the other, the live URL would wait at least that).
            assert arrived - first_try < 3.0
            wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
        finally:
            assert stop_bot(proc) == 0
        assert titles(live)[-1] == "config (SOL_USDC grid): stopped"
    log = (tmp_path / "grid_bot.log").read_text()
    assert "the last notification (stop) was delivered to URL 2 (json)" in log
    assert re.search(r"the last notifications to URL 1 \(json\) were not delivered within 10 s "
                     r"\((no answer in time|still trying)\): given up", log)
    assert "SECRET" not in log


def test_a_refused_start_is_an_error_message(tmp_path, quiet_sim):
    with Receiver() as rx:
        path, _ = _config(tmp_path, quiet_sim, {"urls": [rx.url()]}, quantity="5000")   # far beyond the balances
        proc = run_bot(path)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2
        (msg,) = rx.messages()
        assert msg["title"] == "config (SOL_USDC grid): refused to start" and "not enough" in msg["message"].lower()


def test_an_exit_is_told_with_its_reason_then_the_stop(tmp_path, quiet_sim):
    control = SimControl(quiet_sim.rest_url)
    with Receiver() as rx:
        path, signer = _config(tmp_path, quiet_sim, {"urls": [rx.url("/notify/x")]}, risk={"stop_loss_price": "139"})
        proc = run_bot(path)
        try:
            wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
            control.set_price("138.5")
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                stop_bot(proc)
            proc.communicate()
        wait_until(lambda: any(t.endswith("stopped") for t in titles(rx)), timeout=20, message="the stop message")
        exit_msg = next(m for m in rx.messages() if m["title"].endswith("exit"))
        assert "stop-loss price: the price 138.50 is at or below the stop-loss price 139" in exit_msg["message"]
        stop = next(m for m in rx.messages() if m["title"].endswith("stopped"))
        assert "Stopped: stop-loss price" in stop["message"]
        assert titles(rx).index(exit_msg["title"]) < titles(rx).index(stop["title"])
    log = (tmp_path / "grid_bot.log").read_text()
    assert log.count("all of this grid's orders are cancelled") == 1      # said by the exit, not again at the stop


def test_orders_held_back_for_funds_are_told_once_after_error_after_and_once_when_they_recover(tmp_path, quiet_sim):
    control = SimControl(quiet_sim.rest_url)
    with Receiver() as rx:
        path, signer = _config(tmp_path, quiet_sim, {"urls": [rx.url("/notify/x")], "error_after": 2})
        # No spare SOL: the four sells lock all 2 SOL, so the counter-sell of a buy's fill is not covered
        # (the buy brings 0.5 SOL less its fee in SOL).
        control.set_balance(signer.api_key, "SOL", "2")
        proc = run_bot(path)
        try:
            wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=30)
            control.set_price("147.50")
            held = "config (SOL_USDC grid): orders held back: the free balance does not cover them"
            wait_until(lambda: held in titles(rx), timeout=30, message="the held-back alert")
            log = tmp_path / "grid_bot.log"
            # Refused again and again (5 s, then 10 s apart): one alert, however many refusals.
            wait_until(lambda: log.read_text().count("INSUFFICIENT_FUNDS") + log.read_text().count("does not cover")
                       >= 3, timeout=40, message="three refusals")
            assert titles(rx).count(held) == 1
            control.set_balance(signer.api_key, "SOL", "1")           # funds back: placed, recovered
            wait_until(lambda: f"config (SOL_USDC grid): recovered: {held[len('config (SOL_USDC grid): '):]}" in titles(rx),
                       timeout=60, message="the recovered message")
            assert ask_at_150(control, signer)
        finally:
            assert stop_bot(proc) == 0
    assert titles(rx).count(held) == 1


def test_no_failure_ping_during_a_normal_start_and_restart(tmp_path, quiet_sim):
    """A start in progress is not a failure: the first ping comes once the grid is placed (or resumed and
    reconciled), so a checker never pages on a start, a restart or a deploy."""
    with Receiver() as checker:
        path, signer = _config(tmp_path, quiet_sim, {"heartbeat_url": checker.http_url(SECRET_PATH),
                                                     "heartbeat_interval": 1}, on_exit="keep")
        for run in (1, 2):
            proc = run_bot(path)
            try:
                before = len(checker.gets())
                wait_until(lambda: len(checker.gets()) >= before + 2, timeout=30, message=f"pings of run {run}")
            finally:
                assert stop_bot(proc) == 0
        assert {g.path for g in checker.gets()} == {SECRET_PATH}


def test_the_secret_filter_masks_a_web_urls_token_but_never_its_host():
    """A heartbeat on the paper simulator's host must not turn every URL of that host into ``http://***``."""
    cfg = NotifyConfig(urls=("tgram://123456789:SECRETTOKEN/98765",
                             "json://127.0.0.1:8080/hooks/SECRETHOOK?key=SECRETKEY"),
                       heartbeat_url="http://127.0.0.1:8080/ping/abc123secretuuid")
    secrets = cfg.secrets()
    for s in ("SECRETTOKEN", "123456789", "SECRETHOOK", "SECRETKEY", "abc123secretuuid"):
        assert s in secrets
    assert "127.0.0.1" not in secrets and "hooks" not in secrets
