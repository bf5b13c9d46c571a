"""The simulator's WebSocket server: RFC 6455 on plain sockets, Backpack's streams on top.

Why not a library: the simulator must misbehave on command (fall silent, drop every connection,
withhold pongs), which is simplest when it owns every frame.

Protocol (backpack_api.md §9): ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...]}``; data in
``{"stream", "data"}`` envelopes; private ``account.*`` streams need the four-string ``signature``
array; an invalid stream gets ``{"id": null, "error": {"code": 4006, "message": "Invalid stream"}}``.
The server pings every ``ping_interval`` seconds and closes a connection with no pong for
``pong_timeout`` seconds.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from typing import Any, Callable, Iterator

from . import signing
from .faults import FaultBoard
from .markets import KLINE_SECONDS

log = logging.getLogger("simulator.ws")

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_STREAM = re.compile(
    r"^(?:(?P<pub>ticker|bookTicker|trade|depth|depth\.200ms|depth\.600ms|depth\.1000ms)\.(?P<sym>[A-Z0-9_]+)"
    r"|kline\.(?P<iv>[0-9a-z]+)\.(?P<ksym>[A-Z0-9_]+)"
    r"|(?P<acct>account\.orderUpdate)(?:\.(?P<asym>[A-Z0-9_]+))?)$")


class ProtocolError(Exception):
    pass


def frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: FIN set, never masked."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class Connection:
    # A client that stops reading is dropped once a write has waited this long for room in its socket.
    SEND_TIMEOUT = 2.0

    def __init__(self, sock: socket.socket, hub: "Hub") -> None:
        self.sock = sock
        self.hub = hub
        self.alive = True
        self.last_pong = time.monotonic()
        self.rfile = sock.makefile("rb")
        self._write_lock = threading.Lock()
        # SO_SNDTIMEO bounds a blocking write without giving the socket a timeout (its reader blocks
        # on purpose).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(self.SEND_TIMEOUT), 0))

    # -- outbound
    def send(self, data: bytes) -> None:
        """Write a frame now, from the caller's thread: an event leaves the moment the engine makes it,
        with no hand-off to another thread (one would wait for the interpreter lock)."""
        if not self.alive or self.hub.is_silent():
            return
        with self._write_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self._cut()

    def send_json(self, obj: Any) -> None:
        self.send(frame(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode()))

    def _cut(self) -> None:
        """Stop the connection: its reader thread then ends it and forgets it (callers may hold the
        hub's lock, so this never takes it)."""
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
    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise ConnectionError("client went away")
        return data

    def read_message(self) -> tuple[int, bytes]:
        """One complete message (fragments joined); control frames are handled here."""
        parts: list[bytes] = []
        first_op: int | None = None
        while True:
            b1, b2 = self._read_exact(2)
            fin, op = b1 & 0x80, b1 & 0x0F
            masked, n = b2 & 0x80, b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            if not masked:
                raise ProtocolError("client frames must be masked")
            mask = self._read_exact(4)
            raw = self._read_exact(n)
            payload = _unmask(raw, mask)
            if op == OP_PING:
                self.send(frame(OP_PONG, payload))
                continue
            if op == OP_PONG:
                self.last_pong = time.monotonic()
                continue
            if op == OP_CLOSE:
                return op, payload
            if op != OP_CONT:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op or OP_TEXT, b"".join(parts)


def _unmask(raw: bytes, mask: bytes) -> bytes:
    """XOR the payload with the repeating 4-byte mask, as one big-integer operation."""
    if not raw:
        return b""
    rep = (mask * (len(raw) // 4 + 1))[:len(raw)]
    return (int.from_bytes(raw, "big") ^ int.from_bytes(rep, "big")).to_bytes(len(raw), "big")


class Hub:
    """Subscriptions and fan-out; the engine's EventSink."""

    def __init__(self, known_symbols: set[str], clock_ms: Callable[[], int]) -> None:
        self._lock = threading.Lock()
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
                raw = data if isinstance(data, bytes) else json.dumps({"stream": stream, "data": data},
                                                                      separators=(",", ":")).encode()
                text = frame(OP_TEXT, raw)
            if self._batch is not None:
                self._batch.setdefault(conn, []).append(text)
            else:
                conn.send(text)
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
            for conn, frames in held.items():
                conn.send(b"".join(frames))

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
                c.kill()
            else:
                c.send(frame(OP_PING, b""))

    # -- subscription handling
    def handle_text(self, conn: Connection, text: bytes) -> None:
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
        try:
            if not self._handshake(sock):
                return
        except (OSError, ValueError):
            return
        conn = Connection(sock, hub)
        hub.add(conn)
        try:
            while conn.alive:
                op, payload = conn.read_message()
                if op == OP_CLOSE:
                    conn.send(frame(OP_CLOSE, payload[:2]))
                    break
                if op == OP_TEXT:
                    hub.handle_text(conn, payload)
        except (ConnectionError, OSError, ProtocolError, struct.error, ValueError):
            pass
        finally:
            conn.alive = False
            hub.forget(conn)
            try:
                sock.close()
            except OSError:
                pass

    def _handshake(self, sock: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
            if len(data) > 65536:
                return False
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        key = headers.get("sec-websocket-key")
        if time.monotonic() < self.server.hub.refuse_until:
            sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        if not key or headers.get("upgrade", "").lower() != "websocket":
            sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        return True


class WsServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], hub: Hub) -> None:
        super().__init__(addr, _Handler)
        self.hub = hub
