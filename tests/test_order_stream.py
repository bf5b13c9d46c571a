"""Tier 3: fills from the private order stream are acted on at once; REST stays the safety net."""
from __future__ import annotations

import logging
from decimal import Decimal

from simulator import SimControl
from tests.e2e import BotThread, open_orders_of, write_config
from tests.helpers import wait_until

D = Decimal


def counter_at_150(control, key):
    return [o for o in open_orders_of(control.state(), key) if o["side"] == "Ask" and D(o["price"]) == 150]


def start(tmp_path, sim, **trading):
    path, signer = write_config(tmp_path, sim, **trading)
    # The first orders wait for the stream (however slow a busy machine makes its start), so their events
    # verify it.
    b = BotThread(path, stream_wait=60).__enter__()
    control = SimControl(sim.rest_url)
    try:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9 and b.bot.stream_verified,
                   timeout=60, message="the grid and a live order stream")
    except BaseException:
        b.__exit__(None, None, None)        # the bot this test started ends with it, whatever happens
        raise
    return b, control, signer.api_key


def test_a_fill_is_countered_from_the_stream_without_a_rest_check(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    # The first REST check comes 60 s after the start, then every 300 s: none in this test.
    b, control, key = start(tmp_path, quiet_sim, interval=60)
    try:
        polls = b.bot.polls
        assert b.bot.check_interval() == 300
        control.set_price("147.50")
        wait_until(lambda: counter_at_150(control, key), timeout=10, message="the counter-order")
        assert b.bot.polls == polls                      # no REST check happened in between
        # A reconnect makes the bot read fill history, where the same fill is: it counts it once.
        control.fault(kind="ws_drop")
        wait_until(lambda: any(r.getMessage().startswith("gap-fill after") for r in caplog.records),
                   timeout=20, message="the gap-fill after the reconnect")
        gap = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gap-fill after")]
        assert "0 fill(s) the stream missed" in gap[0]
    finally:
        result = b.stop()
    assert result.stats.fills == 1 and len(control.state()["fills"]) == 1


def test_a_fill_missed_while_the_stream_was_silent_is_found_by_the_gap_fill(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start(tmp_path, quiet_sim, interval=60)
    try:
        control.fault(kind="ws_silent", seconds=2.5)       # the fill event below is lost
        control.set_price("147.50")
        wait_until(lambda: counter_at_150(control, key), timeout=30, message="the counter-order")
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("gap-fill after") and "1 fill(s) the stream missed" in m for m in messages)
        assert any("WebSocket silent" in m for m in messages)
        assert b.bot.om.ledger.fill_count == 1
    finally:
        b.stop()


def test_rest_checks_every_interval_while_the_stream_is_down(tmp_path, quiet_sim):
    b, control, key = start(tmp_path, quiet_sim, interval=1)
    try:
        assert b.bot.check_interval() == 5
        control.fault(kind="ws_drop", seconds=5)
        wait_until(lambda: not b.bot.stream_up, message="the stream to drop")
        wait_until(lambda: b.bot.check_interval() == 1, message="REST checks every interval")
        control.set_price("147.50")
        wait_until(lambda: counter_at_150(control, key), timeout=15, message="a REST-driven counter-order")
        assert b.bot.stream.opens == 1
    finally:
        b.stop()


def test_stopping_ends_the_websocket_thread_at_once(tmp_path, quiet_sim):
    b, control, key = start(tmp_path, quiet_sim)
    b.stop()
    # stop() joins the thread for at most 5 s, and the library's read loop only wakes by itself every
    # 10 s: a thread still alive here is a stop that failed to wake it (it used to take 5-10 s).
    assert not b.bot.stream._thread.is_alive()


def test_the_stream_is_up_only_once_its_subscriptions_are_registered_not_at_a_pong(tmp_path, quiet_sim, caplog):
    """The server answers the ping the client sends after its SUBSCRIBE frames at once, but registers the
    subscriptions 2 s later (the protocol layer answers pings while it reads). Were the pong taken as the
    proof, the first orders would go out before the order stream is registered and their events would be
    lost (the stream never verified, fills waiting for the REST check). The first ticker is the proof."""
    caplog.set_level(logging.INFO, logger="grid_bot")
    control = SimControl(quiet_sim.rest_url)
    control.fault(kind="ws_late_subscribe", seconds=2)
    b, control, key = start(tmp_path, quiet_sim, interval=60)
    try:
        assert b.bot.stream_verified                          # the orderAccepted events of the first orders came
        control.set_price("147.50")
        wait_until(lambda: counter_at_150(control, key), timeout=10, message="the counter-order, from the stream")
        assert b.bot.polls == 0                               # no REST check was needed
    finally:
        b.stop()
