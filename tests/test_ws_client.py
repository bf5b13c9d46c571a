"""The WebSocket thread against the simulator's server: events, reconnects, and a prompt stop."""
from __future__ import annotations

import json
import queue
from decimal import Decimal

from backpack_api import generate_keypair, Signer
from simulator import SimControl
from tests.helpers import new_signer, order_body, signed_request, wait_until
from websocket_client import MarketStream, OrderEvent, StreamDown, StreamUp, TickerEvent


def drain(q):
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_ticker_and_order_events_then_a_prompt_stop(sim):
    signer = new_signer()
    q: queue.Queue = queue.Queue()
    s = MarketStream(sim.ws_url, "SOL_USDC", q, signer=signer, private=True, ping_interval=20, stale_after=5)
    s.start()
    try:
        wait_until(lambda: len(sim.hub.streams()) == 2, message="both subscriptions")
        signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140.00", client_id=9))
        events = []
        wait_until(lambda: events.extend(drain(q)) or any(isinstance(e, OrderEvent) for e in events),
                   message="the order event")
        assert isinstance(events[0], StreamUp) and events[0].reconnect is False
        order = next(e for e in events if isinstance(e, OrderEvent)).update
        assert order.event == "orderAccepted" and order.client_id == 9 and order.price == Decimal("140.00")
        wait_until(lambda: any(isinstance(e, TickerEvent) for e in events + drain(q)), message="a ticker")
    finally:
        s.stop(timeout=5)  # (the bot-level stop test in test_order_stream.py reproduces the old hang)
    assert not s._thread.is_alive() and not s._watchdog.is_alive()


def test_a_dropped_connection_reconnects_and_subscribes_again(sim):
    q: queue.Queue = queue.Queue()
    s = MarketStream(sim.ws_url, "SOL_USDC", q, backoff_base=0.1, stale_after=5)
    s.start()
    try:
        wait_until(lambda: s.up, message="the first connection")
        SimControl(sim.rest_url).fault(kind="ws_drop")
        events = []
        wait_until(lambda: events.extend(drain(q)) or any(isinstance(e, StreamUp) and e.reconnect for e in events),
                   timeout=15, message="the reconnect")
        kinds = [type(e).__name__ for e in events if isinstance(e, (StreamUp, StreamDown))]
        assert kinds[-2:] == ["StreamDown", "StreamUp"]
        wait_until(lambda: "ticker.SOL_USDC" in sim.hub.streams(), message="the ticker subscription again")
    finally:
        s.stop(timeout=5)
    assert not s._thread.is_alive()


def test_a_private_stream_needs_a_signer():
    try:
        MarketStream("ws://127.0.0.1:1", "SOL_USDC", queue.Queue(), private=True)
    except ValueError as e:
        assert "signer" in str(e)
    else:
        raise AssertionError("expected ValueError")
    s = MarketStream("ws://127.0.0.1:1", "SOL_USDC", queue.Queue(), private=True, signer=Signer(generate_keypair()[1]))
    assert s.private_streams == ["account.orderUpdate.SOL_USDC"]   # with a signer: the private stream


def test_a_ticker_frame_of_another_market_is_never_taken_for_ours():
    q: queue.Queue = queue.Queue()
    s = MarketStream("ws://127.0.0.1:1", "SOL_USDC", q)
    frame = {"e": "ticker", "E": 1_700_000_000_000_000, "s": "BTC_USDC", "o": "1", "c": "95000.1", "h": "1",
             "l": "1", "v": "1", "V": "1", "n": 1}
    s._on_message(None, json.dumps({"stream": "ticker.BTC_USDC", "data": frame}))
    s._on_message(None, json.dumps({"stream": "ticker.SOL_USDC", "data": frame}))   # mislabelled
    assert drain(q) == []
    s._on_message(None, json.dumps({"stream": "ticker.SOL_USDC", "data": {**frame, "s": "SOL_USDC", "c": "149.5"}}))
    (ev,) = drain(q)
    assert isinstance(ev, TickerEvent) and ev.price == Decimal("149.5")


def test_a_stop_while_the_first_connection_is_being_made_ends_the_thread(sim):
    """stop() right after start(): the close may land before the library's loop begins (which resets
    the flag a close sets); the stream must still end at once, every time."""
    for _ in range(20):
        s = MarketStream(sim.ws_url, "SOL_USDC", queue.Queue(), stale_after=5)
        s.start()
        s.stop(timeout=3)
        assert not s._thread.is_alive()
