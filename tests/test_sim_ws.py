"""The simulator's WebSocket server over real sockets: streams, private signing, pings, faults."""
from __future__ import annotations

import json
import re
import socket
from decimal import Decimal

import pytest
import websocket

from backpack_api import wall_clock_ms
from simulator import running_simulator
from tests.helpers import new_signer, order_body, signed_request, wait_until


def connect(sim, timeout=5.0):
    return websocket.create_connection(sim.ws_url, timeout=timeout)


def subscribe(ws, *streams, signer=None, ts=None):
    msg = {"method": "SUBSCRIBE", "params": list(streams)}
    if signer is not None:
        msg["signature"] = signer.ws_signature(ts or wall_clock_ms())
    ws.send(json.dumps(msg))


def next_message(ws, stream=None, timeout=5.0):
    """The next data message (of ``stream`` if given), skipping others."""
    ws.settimeout(timeout)
    while True:
        msg = json.loads(ws.recv())
        if stream is None or msg.get("stream") == stream:
            return msg


def test_ticker_stream_envelope_and_types(sim, control):
    ws = connect(sim)
    subscribe(ws, "ticker.SOL_USDC")
    control.set_price("150.55")
    msg = next_message(ws, "ticker.SOL_USDC")
    d = msg["data"]
    assert set(msg) == {"stream", "data"}
    assert d["e"] == "ticker" and d["s"] == "SOL_USDC" and isinstance(d["n"], int)
    assert isinstance(d["E"], int) and d["E"] > 10**15  # microseconds
    assert all(isinstance(d[k], str) for k in "ochlvV")
    wait_until(lambda: next_message(ws, "ticker.SOL_USDC")["data"]["c"] == "150.55")
    ws.close()


@pytest.mark.parametrize("stream", ["ticker.DOGE_USDC", "nonsense", "kline.2m.SOL_USDC", "SOL_USDC@ticker"])
def test_invalid_stream_gets_4006(sim, stream):
    ws = connect(sim)
    subscribe(ws, stream)
    assert json.loads(ws.recv()) == {"id": None, "error": {"code": 4006, "message": "Invalid stream"}}
    ws.close()


def test_private_stream_needs_a_valid_signature(sim):
    ws = connect(sim)
    subscribe(ws, "account.orderUpdate.SOL_USDC")
    assert json.loads(ws.recv())["error"]["message"] == "Invalid signature"
    subscribe(ws, "account.orderUpdate.SOL_USDC", signer=new_signer(), ts=wall_clock_ms() - 10_000)
    assert json.loads(ws.recv())["error"]["message"] == "Invalid signature"
    ws.close()


def test_order_events_carry_every_field_letter(sim, control):
    signer, other = new_signer(), new_signer()
    ws = connect(sim)
    subscribe(ws, "account.orderUpdate.SOL_USDC", signer=signer)
    ws_all = connect(sim)
    subscribe(ws_all, "account.orderUpdate", signer=signer)
    wait_until(lambda: len(sim.hub.streams("account.")) == 2)
    signed_request(sim.rest_url, other, "POST", "/api/v1/order", body=order_body("148.00"))
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                   body=order_body("149.00", "1", client_id=77))
    acc = next_message(ws)["data"]
    assert acc["e"] == "orderAccepted" and acc["c"] == 77 and acc["o"] == "LIMIT"
    assert acc["X"] == "New" and acc["t"] is None and acc["p"] == "149.00" and acc["q"] == "1"
    assert isinstance(acc["i"], str) and acc["f"] == "GTC" and acc["V"] == "RejectTaker"
    assert acc["z"] == "0" and acc["Z"] == "0" and acc["O"] == "USER" and acc["y"] is True
    assert isinstance(acc["E"], int) and isinstance(acc["T"], int)
    control.set_price("148.50", liquidity="0.4")
    part = next_message(ws)["data"]
    assert part["e"] == "orderFill" and part["X"] == "PartiallyFilled"
    assert (part["l"], part["L"], part["z"], part["m"], part["N"]) == ("0.40", "149.00", "0.40", True, "SOL")
    assert part["n"] == "0.00032" and isinstance(part["t"], int) and part["Z"] == "59.6000"
    control.set_price("148.40")
    full = next_message(ws)["data"]
    assert full["X"] == "Filled" and full["l"] == "0.60" and full["z"] == "1.00" and full["t"] == part["t"] + 1
    # The account-wide stream saw the same three events; the other account's order is never shown.
    seen = [next_message(ws_all)["data"]["e"] for _ in range(3)]
    assert seen == ["orderAccepted", "orderFill", "orderFill"]
    o = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140.00")).json()
    signed_request(sim.rest_url, signer, "DELETE", "/api/v1/order",
                   body={"symbol": "SOL_USDC", "orderId": o["id"]})
    assert [next_message(ws)["data"]["e"] for _ in range(2)] == ["orderAccepted", "orderCancelled"]
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                   body=order_body("140.00", post_only=False, timeInForce="IOC"))
    events = [next_message(ws)["data"] for _ in range(2)]
    assert events[1]["e"] == "orderExpired" and events[1]["R"] == "ImmediateOrCancel"
    ws.close()
    ws_all.close()


def test_book_ticker_depth_trade_and_kline_streams(sim, control):
    signer = new_signer()
    ws = connect(sim)
    subscribe(ws, "bookTicker.SOL_USDC", "depth.SOL_USDC", "trade.SOL_USDC", "kline.1s.SOL_USDC")
    wait_until(lambda: len(sim.hub.streams()) == 4)
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", "3"))
    depth = next_message(ws, "depth.SOL_USDC")["data"]
    assert ["149.00", "3"] in depth["b"] and isinstance(depth["U"], int) and depth["u"] >= depth["U"]
    bt = next_message(ws, "bookTicker.SOL_USDC")["data"]
    assert bt["b"] == "149.99" and bt["a"] == "150.01"
    control.set_price("148.00")
    # The trade, the book's change and the candle come in whatever order the pushers run: take each first.
    seen: dict[str, dict] = {}
    wanted = ("trade.SOL_USDC", "depth.SOL_USDC", "kline.1s.SOL_USDC")
    while not all(w in seen for w in wanted):
        msg = next_message(ws)
        seen.setdefault(msg.get("stream"), msg["data"])
    trade, depth2, k = (seen[w] for w in wanted)
    assert trade["p"] == "149.00" and trade["q"] == "3" and isinstance(trade["t"], int)
    assert depth2["U"] > depth["u"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", k["t"]) and isinstance(k["X"], bool)
    ws.close()


def test_unsubscribe_stops_the_stream(sim):
    ws = connect(sim)
    subscribe(ws, "ticker.SOL_USDC")
    next_message(ws, "ticker.SOL_USDC")
    ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["ticker.SOL_USDC"]}))
    wait_until(lambda: not sim.hub.streams("ticker."))
    ws.close()


def test_server_pings_then_sends_close_to_a_client_without_pongs():
    """A raw client that reads and never answers: the frames it gets are pings, then Close 1011."""
    from websockets.client import ClientProtocol
    from websockets.frames import Opcode
    from websockets.uri import parse_uri
    with running_simulator(feed="none", ping_interval=0.1, pong_timeout=0.5) as s:
        client = ClientProtocol(parse_uri(s.ws_url))
        client.send_request(client.connect())
        host, port = s.ws_url[len("ws://"):].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"".join(client.data_to_send()))  # the upgrade; never a pong after it
            events = []
            while True:
                data = sock.recv(65536)
                if not data:
                    client.receive_eof()
                    break
                client.receive_data(data)
                events += client.events_received()
        frames = [e for e in events if hasattr(e, "opcode")]
        assert frames[0].opcode is Opcode.PING and frames[-1].opcode is Opcode.CLOSE
        assert (client.close_code, client.close_reason) == (1011, "keepalive ping timeout")
        wait_until(lambda: not s.hub.connections, timeout=10, message="server to forget the client")


def test_ws_drop_fault_closes_connections_and_refuses_for_a_while(sim, control):
    ws = connect(sim)
    subscribe(ws, "ticker.SOL_USDC")
    next_message(ws, "ticker.SOL_USDC")
    control.fault(kind="ws_drop", seconds=30)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        for _ in range(100):
            ws.recv()
    with pytest.raises(websocket.WebSocketBadStatusException):
        connect(sim)
    sim.hub.refuse_until = 0  # end the refusal early instead of waiting 30 s
    ws2 = connect(sim)
    subscribe(ws2, "ticker.SOL_USDC")
    assert next_message(ws2, "ticker.SOL_USDC")["data"]["e"] == "ticker"
    ws2.close()


def test_ws_silent_fault_sends_nothing_then_resumes(sim, control):
    ws = connect(sim)
    subscribe(ws, "ticker.SOL_USDC")
    next_message(ws, "ticker.SOL_USDC")
    control.fault(kind="ws_silent", seconds=1.0)
    # Drain what was queued before the fault, then nothing may arrive while silent.
    ws.settimeout(0.05)
    try:
        while True:
            ws.recv()
    except websocket.WebSocketTimeoutException:
        pass
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    assert next_message(ws, "ticker.SOL_USDC", timeout=5)["data"]["e"] == "ticker"
    ws.close()


def test_handshake_needs_upgrade_headers(sim):
    host, port = sim.ws_url[len("ws://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 426 Upgrade Required")  # RFC 6455 §4.2.2


def test_depth_updates_stay_exact_for_a_late_subscriber(sim, control):
    """Book updates are not computed while nobody listens; a later subscriber who takes the REST
    snapshot and applies the updates after it still gets the exchange's book."""
    import requests
    signer = new_signer()
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", "2"))
    control.set_price("150.20")
    snap = requests.get(sim.rest_url + "/api/v1/depth", params={"symbol": "SOL_USDC", "limit": 1000}).json()
    book = {"a": {p: q for p, q in snap["asks"]}, "b": {p: q for p, q in snap["bids"]}}
    ws = connect(sim)
    subscribe(ws, "depth.SOL_USDC")
    wait_until(lambda: sim.hub.wants("depth.SOL_USDC"))
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("148.50", "1"))
    control.set_price("150.10")
    for _ in range(2):
        d = next_message(ws, "depth.SOL_USDC")["data"]
        assert d["U"] > int(snap["lastUpdateId"])
        for side in ("a", "b"):
            for p, q in d[side]:
                if Decimal(q) == 0:
                    book[side].pop(p, None)
                else:
                    book[side][p] = q
    now = requests.get(sim.rest_url + "/api/v1/depth", params={"symbol": "SOL_USDC", "limit": 1000}).json()
    norm = lambda levels: {Decimal(p): Decimal(q) for p, q in levels}  # noqa: E731
    assert norm(book["a"].items()) == norm(now["asks"]) and norm(book["b"].items()) == norm(now["bids"])
    ws.close()


def _order_events(sim, control, fault, n_orders, n_frames):
    """Subscribe to the private stream, inject ``fault``, place ``n_orders`` and read ``n_frames``
    raw frames (text, not parsed)."""
    signer = new_signer()
    ws = connect(sim)
    subscribe(ws, "account.orderUpdate.SOL_USDC", signer=signer)
    wait_until(lambda: sim.hub.streams("account."))
    control.fault(**fault)
    for i in range(n_orders):
        signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body(f"14{i}.00", client_id=i))
    ws.settimeout(5)
    try:
        return [ws.recv() for _ in range(n_frames)]
    finally:
        ws.close()


def test_ws_duplicate_sends_an_event_twice(sim, control):
    frames = _order_events(sim, control, {"kind": "ws_duplicate", "stream": "account."}, 2, 3)
    events = [json.loads(f)["data"]["c"] for f in frames]
    assert events == [0, 0, 1]


def test_ws_reorder_delivers_an_event_after_the_next(sim, control):
    frames = _order_events(sim, control, {"kind": "ws_reorder", "stream": "account."}, 2, 2)
    assert [json.loads(f)["data"]["c"] for f in frames] == [1, 0]


def test_ws_reorder_releases_a_held_event_when_nothing_overtakes_it(sim, control):
    frames = _order_events(sim, control, {"kind": "ws_reorder", "stream": "account."}, 1, 1)
    assert json.loads(frames[0])["data"]["c"] == 0


def test_ws_malformed_sends_half_an_event(sim, control):
    frames = _order_events(sim, control, {"kind": "ws_malformed", "stream": "account."}, 2, 2)
    with pytest.raises(ValueError):
        json.loads(frames[0])
    assert json.loads(frames[1])["data"]["c"] == 1


def test_ws_foreign_sends_a_frame_of_another_stream_first(sim, control):
    frames = _order_events(sim, control, {"kind": "ws_foreign", "stream": "account."}, 1, 2)
    foreign, own = (json.loads(f) for f in frames)
    assert foreign["stream"] == "account.orderUpdate.BTC_USDC" and foreign["data"]["s"] == "BTC_USDC"
    assert own["stream"] == "account.orderUpdate.SOL_USDC" and own["data"]["i"] == foreign["data"]["i"]
