"""Tier 3: the bot through partial fills, rejections, HTTP errors, lost answers and WebSocket trouble."""
from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest

from gridbot.engine.loop import PriceSource
from gridbot.core.order_state import OrderState
from simulator import SimControl
from tests.e2e import (BotThread, assert_counter_orders, ledger_totals, open_orders_of, tagged,
                       write_config)
from tests.helpers import wait_until

D = Decimal
GRID = [D(x) for x in range(140, 160, 2)]


def open_at(control, key, price, side=None):
    return [o for o in open_orders_of(control.state(), key)
            if D(o["price"]) == D(price) and (side is None or o["side"] == side)]


def start_grid(tmp_path, sim, **trading):
    path, signer = write_config(tmp_path, sim, **trading)
    b = BotThread(path).__enter__()
    control = SimControl(sim.rest_url)
    wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=15,
               message="the initial grid")
    return b, control, signer.api_key


def test_partial_fills_wait_for_completion_and_a_cancelled_partial_is_accounted(tmp_path, quiet_sim):
    b, control, key = start_grid(tmp_path, quiet_sim, quantity="1")
    try:
        control.set_price("147.50", liquidity="0.4")          # the buy at 148 fills 0.4 of 1
        wait_until(lambda: b.bot.om.ledger.fill_count == 1, message="the partial fill")
        b.wait_polls(2)
        assert open_at(control, key, "150.00") == []          # no counter-order for a partial fill
        control.set_price("147.40", liquidity="0.6")          # now it completes
        wait_until(lambda: open_at(control, key, "150.00", "Ask"), message="the counter-order")
        control.set_price("145.50", liquidity="0.3")          # the buy at 146 fills 0.3, then we stop
        wait_until(lambda: b.bot.om.ledger.fill_count == 3, message="the second partial fill")
    finally:
        result = b.stop()
    st = control.state()
    ours = tagged(st, key, b.bot.tag)
    partial = [o for o in ours if D(o["price"]) == D(146)]
    assert [(o["status"], o["executedQuantity"]) for o in partial] == [("Cancelled", "0.30")]
    expect = ledger_totals(st, ours, GRID, "SOL")
    assert result.stats.position == expect["position"] == D("1.3") - D("1.3") * D("0.0008")  # maker fee in SOL
    assert result.stats.fees == expect["fees"] and result.stats.round_trips == 0
    assert open_orders_of(st, key) == []


def test_a_rejected_level_is_retried_and_the_rest_of_the_grid_stands(tmp_path, quiet_sim, caplog):
    control = SimControl(quiet_sim.rest_url)
    control.fault(kind="order_reject", side="Bid", price="144.00", count=1)
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        st = control.state()
        ours = tagged(st, key, b.bot.tag)
        at_144 = [o for o in ours if D(o["price"]) == D(144)]
        assert len(at_144) == 1
        others = [o for o in ours if D(o["price"]) != D(144)]
        assert all(o["createdAtUs"] < at_144[0]["createdAtUs"] for o in others)
        assert any("(level 2) rejected: INVALID_ORDER" in r.getMessage() for r in caplog.records)
    finally:
        b.stop()


def test_503_and_429_in_the_middle_of_a_run(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        control.fault(kind="http_status", method="GET", path="/api/v1/orders", status=503, count=2)
        control.fault(kind="http_status", method="POST", path="/api/v1/order", status=429, retry_after=1)
        control.set_price("147.50")                               # buy at 148 fills
        # The counter-order meets the 429: its outcome is unknown, so the bot looks it up by clientId
        # once its signature window has passed, finds nothing, and places it again.
        wait_until(lambda: open_at(control, key, "150.00", "Ask"), timeout=30, message="the counter-order")
        assert b.thread.is_alive()
        st = control.state()
        ours = tagged(st, key, b.bot.tag)
        assert len([o for o in ours if D(o["price"]) == D(150)]) == 1
        messages = [r.getMessage() for r in caplog.records]
        assert any("answered 503" in m for m in messages)
        assert any("outcome unknown" in m for m in messages)
        assert any("never reached the book" in m for m in messages)
    finally:
        result = b.stop()
    assert result.error is None


def test_an_accepted_order_whose_answer_never_arrives_is_found_not_duplicated(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        control.fault(kind="drop_response", method="POST", path="/api/v1/order")
        control.set_price("147.50")
        wait_until(lambda: open_at(control, key, "150.00", "Ask"), message="the counter-order")
        # The order is on the book although the bot never heard back: the bot must adopt it (from
        # the next snapshot or a lookup by clientId), not send it again.
        counter = next(o for o in b.bot.om.orders.values() if o.price == D(150) and o.side.value == "Ask")
        wait_until(lambda: counter.state is OrderState.OPEN, timeout=20, message="the bot to adopt it")
        b.wait_polls(2)
        ours = tagged(control.state(), key, b.bot.tag)
        assert len([o for o in ours if D(o["price"]) == D(150)]) == 1
        assert any("outcome unknown" in r.getMessage() for r in caplog.records)
    finally:
        b.stop()


def test_websocket_dropped_the_bot_trades_on_rest_and_resubscribes(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        wait_until(lambda: b.bot.last.source is PriceSource.STREAM, message="WebSocket prices")
        control.fault(kind="ws_drop", seconds=3)                 # connections refused for 3 s
        control.set_price("147.50")
        wait_until(lambda: open_at(control, key, "150.00", "Ask"), timeout=15,
                   message="a counter-order placed while the WebSocket is down")
        assert b.bot.stream.opens == 1                           # still down when it was placed
        wait_until(lambda: b.bot.stream.opens >= 2 and "ticker.SOL_USDC" in quiet_sim.hub.streams(),
                   timeout=30, message="resubscription")
        wait_until(lambda: b.bot.last.source is PriceSource.STREAM, message="WebSocket prices again")
        # The gap-fill is the first check after the reconnect: it may come a step after the prices.
        wait_until(lambda: any(r.getMessage().startswith("gap-fill after") for r in caplog.records),
                   message="the gap-fill")
        messages = [r.getMessage() for r in caplog.records]
        assert any("WebSocket down" in m for m in messages)
        assert any("using the REST price" in m for m in messages)
        assert any("filling the gap from open orders and fill history" in m for m in messages)
    finally:
        b.stop()


def test_websocket_silent_the_watchdog_reconnects(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        wait_until(lambda: b.bot.last.source is PriceSource.STREAM, message="WebSocket prices")
        control.fault(kind="ws_silent", seconds=2.5)
        wait_until(lambda: any("WebSocket silent" in r.getMessage() for r in caplog.records), timeout=10,
                   message="the watchdog to notice the silence")
        control.set_price("147.50")
        wait_until(lambda: open_at(control, key, "150.00", "Ask"), timeout=15, message="the counter-order")
        wait_until(lambda: b.bot.stream.opens >= 2 and b.bot.last.source is PriceSource.STREAM, timeout=30,
                   message="a fresh subscription with prices flowing")
    finally:
        b.stop()
    st = control.state()
    ours = tagged(st, key, b.bot.tag)
    assert_counter_orders(ours, GRID)


def test_an_order_answered_after_the_bot_gave_up_is_found_not_duplicated(tmp_path, quiet_sim):
    from backpack_api import BackpackClient, Signer
    path, signer = write_config(tmp_path, quiet_sim)
    secret = json.loads(open(path).read())["api"]["api_secret"]
    client = BackpackClient(quiet_sim.rest_url, Signer(secret), timeout=(2.0, 1.0))   # gives up after 1 s
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    with BotThread(path, client=client) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=15, message="the grid")
        control.fault(kind="late_answer", method="POST", path="/api/v1/order", seconds=2)
        control.set_price("147.50")                           # the counter-order is accepted, answered late
        counter = wait_until(lambda: next((o for o in b.bot.om.orders.values()
                                           if o.price == D(150) and o.side.value == "Ask"), None),
                             message="the counter-order decided")
        wait_until(lambda: counter.state is OrderState.OPEN, timeout=30, message="found by its clientId")
        b.wait_polls(1)
        assert len(open_at(control, key, "150.00", "Ask")) == 1  # never sent twice
        result = b.stop()
    assert result.error is None and not open_orders_of(control.state(), key)


def test_a_replayed_counter_order_leaves_one_order_and_exact_books(tmp_path, quiet_sim):
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        control.fault(kind="replay", method="POST", path="/api/v1/order")
        control.set_price("147.50")                           # the counter-order (a sell at 150) is replayed
        wait_until(lambda: [o for o in tagged(control.state(), key, b.bot.tag)
                            if D(o["price"]) == 150 and o["status"] == "Cancelled"],
                   timeout=30, message="the replayed twin cancelled")
        assert len(open_at(control, key, "150.00", "Ask")) == 1
        control.set_price("150.50")                           # the kept one fills: a round trip
        wait_until(lambda: b.bot.om.ledger.round_trips == 1, message="the round trip")
    finally:
        result = b.stop()
    st = control.state()
    ours = [o for o in tagged(st, key, b.bot.tag) if o["status"] != "Cancelled" or o["executedQuantity"] != "0"]
    expect = ledger_totals(st, ours, [D(x) for x in range(140, 160, 2)], "SOL")
    assert result.stats.round_trips == expect["round_trips"] == 1
    assert result.stats.grid_profit == expect["grid_profit"] and result.stats.position == expect["position"]


def _round_trip_and_check(b, control, key):
    """Fill the buy at 148, let the bot sell at 150, fill that: one round trip; then stop the bot and
    check that the simulator's books and the bot's agree and no level holds two orders."""
    control.set_price("147.50")
    wait_until(lambda: len(open_at(control, key, "150.00", "Ask")) == 1, timeout=30, message="the counter-order")
    control.set_price("150.50")
    wait_until(lambda: b.bot.om.ledger.round_trips == 1, timeout=30, message="the round trip")
    b.wait_polls(1)  # one REST check after it: whatever the faults hid is found by now
    st = control.state()
    mine = [o for o in open_orders_of(st, key)]
    assert len({(o["side"], o["price"]) for o in mine}) == len(mine)     # never two orders at one level
    result = b.stop()
    st = control.state()
    ours = tagged(st, key, b.bot.tag)
    expect = ledger_totals(st, ours, GRID, "SOL")
    assert result.stats.round_trips == expect["round_trips"] == 1
    assert result.stats.grid_profit == expect["grid_profit"] and result.stats.position == expect["position"]
    assert result.stats.fees == expect["fees"]
    assert open_orders_of(st, key) == []
    return result


@pytest.mark.parametrize("body", ["html", "truncated", "wrong_shape", "empty", "stall"])
def test_a_malformed_answer_to_a_counter_order_is_looked_up_not_resent(tmp_path, quiet_sim, caplog, body):
    caplog.set_level(logging.INFO, logger="grid_bot")
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        control.fault(kind="malformed", method="POST", path="/api/v1/order", body=body, seconds=1)
        _round_trip_and_check(b, control, key)
        assert any("outcome unknown" in r.getMessage() for r in caplog.records)
    finally:
        b.stop()


def test_malformed_answers_to_reads_change_nothing(tmp_path, quiet_sim):
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        for path, body in (("/api/v1/orders", "truncated"), ("/wapi/v1/history/fills", "html"),
                           ("/api/v1/capital", "wrong_shape"), ("/api/v1/ticker", "empty"),
                           ("/wapi/v1/history/orders", "stall")):
            control.fault(kind="malformed", method="GET", path=path, body=body, count=2, seconds=1)
        _round_trip_and_check(b, control, key)
    finally:
        b.stop()


@pytest.mark.parametrize("kind", ["ws_duplicate", "ws_reorder", "ws_malformed", "ws_foreign"])
def test_a_misbehaving_order_stream_loses_nothing_and_duplicates_nothing(tmp_path, quiet_sim, kind):
    b, control, key = start_grid(tmp_path, quiet_sim)
    try:
        wait_until(lambda: quiet_sim.hub.streams("account."), message="the private stream")
        control.fault(kind=kind, stream="account.", count=4)
        _round_trip_and_check(b, control, key)
    finally:
        b.stop()
