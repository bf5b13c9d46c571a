"""The simulator's WebSocket server: Backpack's streams over ``websockets``' sans-I/O protocol.

The ``websockets`` library's ``ServerProtocol`` does the RFC 6455 work (the handshake, framing,
fragmentation, masking, UTF-8, the close handshake) and never touches a socket: the simulator owns
every socket and decides, frame by frame, whether to send, to drop the connection, or to stay silent
(the faults). Frames leave from the thread that makes them, under the connection's lock, so events
reach a client in the order the engine made them.

Protocol (docs/exchange.md §9): ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...]}``; data in
``{"stream", "data"}`` envelopes; private ``account.*`` streams need the four-string ``signature``
array; an invalid stream gets ``{"id": null, "error": {"code": 4006, "message": "Invalid stream"}}``.
The server pings every ``ping_interval`` seconds; a connection with no pong for ``pong_timeout``
seconds gets a Close frame (1011, as the ``websockets`` library closes on a keepalive timeout;
Backpack's code is undocumented) and is dropped.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from typing import Any, Callable, Iterator

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from . import signing
from .faults import FaultBoard
from .markets import KLINE_SECONDS

log = logging.getLogger("simulator.ws")

_STREAM = re.compile(
    r"^(?:(?P<pub>ticker|bookTicker|trade|depth|depth\.200ms|depth\.600ms|depth\.1000ms|markPrice|openInterest)"
    r"\.(?P<sym>[A-Z0-9_]+)"
    r"|kline\.(?P<iv>[0-9a-z]+)\.(?P<ksym>[A-Z0-9_]+)"
    r"|(?P<acct>account\.orderUpdate|account\.positionUpdate)(?:\.(?P<asym>[A-Z0-9_]+))?)$")
PING_TIMEOUT_CLOSE = (1011, "keepalive ping timeout")


class Connection:
    """One client: its socket and its ``ServerProtocol``, used only under ``self._lock``."""

    # A client that stops reading is dropped once a write has waited this long for room in its socket.
    SEND_TIMEOUT = 2.0

    def __init__(self, sock: socket.socket, hub: "Hub") -> None:
        self.sock = sock
        self.hub = hub
        self.alive = True
        self.last_pong = time.monotonic()
        self.protocol = ServerProtocol()  # no extensions: frames go out exactly as sent
        self._lock = threading.Lock()
        self.deferred: list[bytes] | None = None   # text frames held back by ws_late_subscribe
        self._fragments: list[bytes] = []
        # SO_SNDTIMEO bounds a blocking write without giving the socket a timeout (its reader blocks
        # on purpose).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(self.SEND_TIMEOUT), 0))

    # -- outbound (callers may hold the hub's lock: nothing here takes it)
    def _flush(self) -> None:
        """Write what the protocol has queued; the library's end-of-stream marker closes our side."""
        chunks = self.protocol.data_to_send()
        data = b"".join(chunks)
        try:
            if data:
                self.sock.sendall(data)
            if chunks and chunks[-1] == b"":
                self._cut()
        except OSError:
            self._cut()

    def send_texts(self, payloads: list[bytes]) -> None:
        """Send text messages now, from the caller's thread: an event leaves the moment the engine
        makes it, with no hand-off to another thread (one would wait for the interpreter lock)."""
        if not self.alive or self.hub.is_silent():
            return
        with self._lock:
            if self.protocol.state is not State.OPEN:
                return
            for p in payloads:
                self.protocol.send_text(p)
            self._flush()

    def send_json(self, obj: Any) -> None:
        self.send_texts([json.dumps(obj, separators=(",", ":")).encode()])

    def ping(self) -> None:
        if not self.alive or self.hub.is_silent():
            return
        with self._lock:
            if self.protocol.state is State.OPEN:
                self.protocol.send_ping(b"")
                self._flush()

    def close(self, code: int, reason: str) -> None:
        """A Close frame, then the TCP connection goes (the server does not wait for the answer)."""
        with self._lock:
            if self.alive and self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self._flush()
        self.kill()

    def _cut(self) -> None:
        """Stop the connection: its reader thread then ends it and forgets it."""
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def kill(self) -> None:
        """Drop the TCP connection without a close handshake."""
        if not self.alive:
            return
        self._cut()
        self.hub.forget(self)

    # -- inbound
    def handshake(self) -> bool:
        """Read the HTTP upgrade and answer it: 101, or 503 while the server refuses, or the library's
        400 for a request that is not a WebSocket upgrade."""
        while True:
            data = self.sock.recv(65536)
            with self._lock:
                if not data:
                    self.protocol.receive_eof()
                else:
                    self.protocol.receive_data(data)
                events = self.protocol.events_received()
                if events and isinstance(events[0], Request):
                    if time.monotonic() < self.hub.refuse_until:
                        response = self.protocol.reject(503, "Service Unavailable\n")
                    else:
                        response = self.protocol.accept(events[0])
                    self.protocol.send_response(response)
                    self._flush()
                    return response.status_code == 101
                if not data or self.protocol.handshake_exc is not None:
                    self._flush()
                    return False

    def serve(self) -> None:
        """Read frames until the client goes: text to the hub, pongs to the watchdog. The library
        answers pings and a client's Close itself."""
        while self.alive:
            data = self.sock.recv(65536)
            with self._lock:
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                events = self.protocol.events_received()
                if self.hub.is_silent():
                    self.protocol.data_to_send()  # silence: not even a pong leaves
                else:
                    self._flush()
            for frame in events:
                self._on_frame(frame)
            if not data or self.protocol.state is State.CLOSED:
                return

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self.last_pong = time.monotonic()
        elif frame.opcode in (Opcode.TEXT, Opcode.CONT) and (frame.opcode is Opcode.CONT or not self._fragments):
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                text, self._fragments = b"".join(self._fragments), []
                self.hub.handle_text(self, text)


class Hub:
    """Subscriptions and fan-out; the engine's EventSink."""

    def __init__(self, known_symbols: set[str], clock_ms: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._defer_lock = threading.RLock()
        self._batch: dict[Connection, list[bytes]] | None = None
        self.connections: set[Connection] = set()
        # stream -> {connection: account or None}
        self.subscribers: dict[str, dict[Connection, str | None]] = {}
        self.subscribed_ms: dict[str, int] = {}  # when each stream was first subscribed (the kline pusher)
        self.known_symbols = known_symbols
        self.clock_ms = clock_ms
        self.silent_until = 0.0
        self.refuse_until = 0.0
        self.messages_sent = 0
        self.faults: FaultBoard | None = None  # set by the Simulator: WebSocket message faults
        self._held: dict[str, tuple[str, Any, str | None, float]] = {}  # ws_reorder's held messages
        # The account's open positions, sent on a subscription to account.positionUpdate (perp_engine.py).
        self.position_snapshot: Callable[[str, str | None], list[dict]] | None = None

    def is_silent(self) -> bool:
        return time.monotonic() < self.silent_until

    def add(self, conn: Connection) -> None:
        with self._lock:
            self.connections.add(conn)

    def forget(self, conn: Connection) -> None:
        with self._lock:
            self.connections.discard(conn)
            for subs in self.subscribers.values():
                subs.pop(conn, None)

    def wants(self, stream: str) -> bool:
        """Whether anybody listens to ``stream`` (a depth stream also feeds its timed variants)."""
        if self.subscribers.get(stream):
            return True
        if stream.startswith("depth."):
            sym = stream[len("depth."):]
            return any(self.subscribers.get(f"depth.{s}.{sym}") for s in ("200ms", "600ms", "1000ms"))
        return False

    def streams(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [s for s, subs in self.subscribers.items() if subs and s.startswith(prefix)]

    def _publish(self, stream: str, data: dict, account: str | None = None) -> None:
        subs = self.subscribers.get(stream)
        if not subs:
            return
        messages = self._misbehave(stream, data, account) if self.faults is not None else None
        if messages is None:
            self._deliver(subs, stream, data, account)
            return
        for s_, d_, a_ in messages:  # all to this stream's subscribers, a foreign stream's frame too
            self._deliver(subs, s_, d_, a_)

    def _deliver(self, subs: dict, stream: str, data: Any, account: str | None) -> None:
        text: bytes | None = None
        for conn, acct in list(subs.items()):
            if account is not None and acct != account:
                continue
            if text is None:
                text = data if isinstance(data, bytes) else json.dumps({"stream": stream, "data": data},
                                                                       separators=(",", ":")).encode()
            if self._batch is not None:
                self._batch.setdefault(conn, []).append(text)
            else:
                conn.send_texts([text])
            self.messages_sent += 1

    def _misbehave(self, stream: str, data: dict, account: str | None) -> list[tuple[str, Any, str | None]] | None:
        """The messages a WebSocket fault turns this one into, or None when no fault applies."""
        faults = self.faults
        assert faults is not None
        held = self._held.pop(stream, None)
        if faults.take_ws("ws_reorder", stream) is not None:
            self._held[stream] = (stream, data, account, time.monotonic())
            return [] if held is None else [held[:3]]
        out: list[tuple[str, Any, str | None]] = [(stream, data, account)]
        if faults.take_ws("ws_duplicate", stream) is not None:
            out.append((stream, data, account))
        elif faults.take_ws("ws_malformed", stream) is not None:
            whole = json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()
            out = [(stream, whole[:len(whole) // 2], account)]
        elif faults.take_ws("ws_foreign", stream) is not None:
            sym = data.get("s") if isinstance(data, dict) else None
            other = next((s for s in sorted(self.known_symbols) if s != sym and s not in stream), None)
            if other is not None:
                foreign_stream = stream.replace(sym, other) if sym and sym in stream else f"{stream}.{other}"
                foreign = dict(data, s=other) if sym else data
                out.insert(0, (foreign_stream, foreign, account))
        if held is not None:
            out.append(held[:3])  # the held message goes after the one that overtook it
        return out

    def release_held(self, older_than: float = 1.0) -> None:
        """Send messages a ``ws_reorder`` fault held when nothing overtook them within ``older_than`` s."""
        now = time.monotonic()
        with self._lock:
            for stream, item in list(self._held.items()):
                if now - item[3] >= older_than:
                    del self._held[stream]
                    subs = self.subscribers.get(stream)
                    if subs:
                        self._deliver(subs, *item[:3])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Frames published meanwhile leave together, one write per connection, in order: the events
        of one matching pass reach a client back to back."""
        with self._lock:
            self._batch = {}
        try:
            yield
        finally:
            with self._lock:
                held, self._batch = self._batch or {}, None
            for conn, texts in held.items():
                conn.send_texts(texts)

    def public_event(self, stream: str, data: dict) -> None:
        with self._lock:
            self._publish(stream, data)
            if stream.startswith("depth."):
                sym = stream[len("depth."):]
                for speed in ("200ms", "600ms", "1000ms"):
                    self._publish(f"depth.{speed}.{sym}", data)

    def order_event(self, account: str, symbol: str, data: dict) -> None:
        with self._lock:
            self._publish("account.orderUpdate", data, account)
            self._publish(f"account.orderUpdate.{symbol}", data, account)

    def position_event(self, account: str, symbol: str, data: dict) -> None:
        with self._lock:
            self._publish("account.positionUpdate", data, account)
            self._publish(f"account.positionUpdate.{symbol}", data, account)

    def drop_all(self) -> int:
        with self._lock:
            conns = list(self.connections)
        for c in conns:
            c.kill()
        return len(conns)

    def ping_all(self, pong_timeout: float) -> None:
        now = time.monotonic()
        with self._lock:
            conns = list(self.connections)
        for c in conns:
            if now - c.last_pong > pong_timeout:
                log.info("closing a WebSocket connection with no pong for %.0f s", now - c.last_pong)
                c.close(*PING_TIMEOUT_CLOSE)
            else:
                c.ping()

    # -- subscription handling
    def handle_text(self, conn: Connection, text: bytes) -> None:
        """A client's text frame, in the order the connection sent them. The ``ws_late_subscribe`` fault
        holds a SUBSCRIBE (and every text frame after it) back for its seconds, while the reader goes on
        answering pings: a server that lags in registering subscriptions, not in reading."""
        with self._defer_lock:
            if conn.deferred is not None:
                conn.deferred.append(text)
                return
            late = None
            if self.faults is not None and b"SUBSCRIBE" in text:
                late = self.faults.take_ws("ws_late_subscribe", "")
            if late is not None:
                conn.deferred = [text]
                threading.Timer(late.seconds, self._release_deferred, (conn,)).start()
                return
        self._handle_text_now(conn, text)

    def _release_deferred(self, conn: Connection) -> None:
        with self._defer_lock:
            pending, conn.deferred = conn.deferred or [], None
            for text in pending:                  # in order, before any frame read after them
                self._handle_text_now(conn, text)

    def _handle_text_now(self, conn: Connection, text: bytes) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            conn.send_json({"id": None, "error": {"code": 4000, "message": "Invalid message"}})
            return
        if not isinstance(msg, dict):
            conn.send_json({"id": None, "error": {"code": 4000, "message": "Invalid message"}})
            return
        method = msg.get("method")
        params = msg.get("params")
        mid = msg.get("id")
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            conn.send_json({"id": mid, "error": {"code": 4000, "message": "Invalid method"}})
            return
        if method == "UNSUBSCRIBE":
            # The docs' UNSUBSCRIBE has no signature; ccxt signs it. Both are accepted.
            with self._lock:
                for p in params:
                    if isinstance(p, str) and p in self.subscribers:
                        self.subscribers[p].pop(conn, None)
            return
        account: str | None = None
        if any(isinstance(p, str) and p.startswith("account.") for p in params):
            account = self._check_signature(msg.get("signature"))
            if account is None:
                conn.send_json({"id": mid, "error": {"code": 4006, "message": "Invalid signature"}})
                return
        for p in params:
            if not isinstance(p, str) or not self.valid_stream(p):
                conn.send_json({"id": mid, "error": {"code": 4006, "message": "Invalid stream"}})
                continue
            with self._lock:
                self.subscribers.setdefault(p, {})[conn] = account if p.startswith("account.") else None
                self.subscribed_ms.setdefault(p, self.clock_ms())
            if p.startswith("account.positionUpdate") and account is not None and self.position_snapshot is not None:
                # The open positions, one message each and without ``e``, as Backpack sends on subscription.
                for data in self.position_snapshot(account, p[len("account.positionUpdate."):] or None):
                    conn.send_json({"stream": p, "data": data})

    def valid_stream(self, name: str) -> bool:
        m = _STREAM.match(name)
        if not m:
            return False
        if m.group("pub"):
            return m.group("sym") in self.known_symbols
        if m.group("iv"):
            return m.group("iv") in KLINE_SECONDS and m.group("ksym") in self.known_symbols
        sym = m.group("asym")
        return sym is None or sym in self.known_symbols

    def _check_signature(self, sig: Any) -> str | None:
        """The account of a valid ``[key, signature, timestamp, window]`` array, else None."""
        if not (isinstance(sig, list) and len(sig) == 4 and all(isinstance(x, str) for x in sig)):
            return None
        key, signature, ts, window = sig
        try:
            ts_ms, win = int(ts), int(window)
            if win <= 0 or win > signing.MAX_WINDOW_MS:
                return None
            signing.check_time(ts_ms, win, self.clock_ms())
            message = signing.signing_string("subscribe", [], None, ts_ms, win)
            signing.verify(key, signature, message)
        except (ValueError, signing.AuthFailure):
            return None
        return key


class _Handler(socketserver.BaseRequestHandler):
    server: "WsServer"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hub = self.server.hub
        conn = Connection(sock, hub)
        try:
            if not conn.handshake():
                return
            hub.add(conn)
            conn.serve()
        except OSError:
            pass
        finally:
            conn.alive = False
            hub.forget(conn)
            try:
                sock.close()
            except OSError:
                pass


class WsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], hub: Hub) -> None:
        super().__init__(addr, _Handler)
        self.hub = hub
