"""The WebSocket thread: live prices (``ticker.<symbol>``) and, when asked, the private order stream
(``account.orderUpdate.<symbol>``, signed as docs/exchange.md §9.4).

Rules:
- Callbacks stay tiny: parse, put a normalised event on the main thread's queue, return. The thread
  never touches bot state.
- It owns its reconnect loop (``while not stop: run_forever(...)``) with capped exponential backoff,
  and subscribes again on every open, so a dropped connection or a clean close both reconnect.
- Two watchdogs: the library's ping/pong timeout catches a dead TCP connection, and a data watchdog
  closes a connection that has sent nothing for ``stale_after`` seconds (the ticker arrives every
  second, so silence means the stream stalled). Either way the main loop hears ``StreamDown`` and,
  after the next open, ``StreamUp(reconnect=True)``: its cue to reconcile over REST, since a gap may
  have hidden a fill.
"""
from __future__ import annotations

import json
import logging
import queue
import select
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import websocket

import gridbot.exchange.wire as wire
from backpack_api import Signer, wall_clock_ms
from gridbot.core.models import OrderUpdate

log = logging.getLogger("grid_bot.ws")


@dataclass(frozen=True)
class TickerEvent:
    price: Decimal
    event_time_us: int
    received: float  # monotonic


@dataclass(frozen=True)
class OrderEvent:
    update: OrderUpdate
    received: float
    more: bool = False   # another frame had already arrived when this one was read: more follows


@dataclass(frozen=True)
class StreamUp:
    reconnect: bool
    down_for: float  # seconds the stream was down before this open (0 on the first)


@dataclass(frozen=True)
class StreamDown:
    reason: str


@dataclass(frozen=True)
class StreamError:
    message: str


StreamEvent = TickerEvent | OrderEvent | StreamUp | StreamDown | StreamError


def _hard_close(app: websocket.WebSocketApp) -> None:
    """Close now, from another thread, and make the stream thread notice at once. Its select() only
    wakes on a socket that is shut down (``WebSocket.abort()``): ``close()`` alone ends by closing the
    file descriptor, which does not wake a poll in another thread, and it swallows its own errors.
    So: say goodbye, abort, then let the library clean up without waiting for the server's reply."""
    ws = app.sock
    if ws is not None:
        try:
            ws.send_close()
        except Exception:  # the connection may already be gone; closing is all that matters
            pass
        ws.abort()
    app.close(timeout=0)


def _more_waiting(app: websocket.WebSocketApp) -> bool:
    """Has the next frame already arrived (in the socket, or decrypted in its TLS buffer)? A burst of
    fills from one price jump arrives as frames back to back: the bot then takes them all before it
    acts, so their counter-orders leave in one batch request. Never blocks."""
    sock = getattr(app.sock, "sock", None)
    if sock is None:
        return False
    try:
        pending = getattr(sock, "pending", None)
        if pending is not None and pending() > 0:
            return True
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False


class MarketStream:
    def __init__(self, url: str, symbol: str, events: "queue.Queue[Any]", *,
                 signer: Signer | None = None, private: bool = False, ping_interval: float = 20.0,
                 ping_timeout: float = 10.0, stale_after: float = 5.0, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = wall_clock_ms, window_ms: int = 5000) -> None:
        if private and signer is None:
            raise ValueError("the private order stream needs a signer")
        self.url = url
        self.symbol = symbol
        self.events = events
        self.signer = signer
        self.private = private
        self.ping_interval = ping_interval
        self.ping_timeout = min(ping_timeout, ping_interval * 0.9)
        self.stale_after = stale_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.clock = clock
        self.wall_ms = wall_ms
        self.window_ms = window_ms
        self._stop = threading.Event()
        self._app: websocket.WebSocketApp | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self.up = False               # subscribed, and the server has certainly registered it
        self._connected = False       # the socket is open (up or not yet acknowledged)
        self.opens = 0
        self.last_message = 0.0
        self._down_since: float | None = None
        self._close_reason = ""

    @property
    def public_streams(self) -> list[str]:
        return [f"ticker.{self.symbol}"]

    @property
    def private_streams(self) -> list[str]:
        return [f"account.orderUpdate.{self.symbol}"] if self.private else []

    # -- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ws-stream", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="ws-watchdog", daemon=True)
        self._thread.start()
        self._watchdog.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            app = self._app
        if app is not None:
            _hard_close(app)
        for t in (self._thread, self._watchdog):
            if t is not None:
                t.join(timeout)

    def force_reconnect(self, reason: str) -> None:
        with self._lock:
            app = self._app
        if app is not None and self._connected:
            self._close_reason = reason
            _hard_close(app)

    # -- the thread
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            app = websocket.WebSocketApp(self.url, on_open=self._on_open, on_message=self._on_message,
                                         on_error=self._on_error, on_close=self._on_close,
                                         on_pong=self._on_pong)
            with self._lock:
                self._app = app
            if self._stop.is_set():
                break
            opened_at = None
            self._close_reason = ""
            try:
                before = self.opens
                app.run_forever(ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
                                skip_utf8_validation=True)
                if self.opens > before:
                    opened_at = True
            except Exception as e:  # the library can raise from its own loop; never let the thread die
                self._close_reason = self._close_reason or f"{type(e).__name__}: {e}"
            was_up = self.up
            self.up = self._connected = False
            if self._stop.is_set():
                break
            if self._down_since is None:
                self._down_since = self.clock()
            reason = self._close_reason or "connection closed"
            if was_up or opened_at:
                self.events.put(StreamDown(reason))
            # A connection that lasted resets the backoff; one that failed at once doubles it.
            healthy = was_up and self.clock() - self.last_message < self.stale_after
            failures = 0 if healthy else failures + 1
            delay = min(self.backoff_cap, self.backoff_base * (2 ** max(0, failures - 1)))
            log.warning("WebSocket down (%s); reconnecting in %.1f s", reason, delay)
            self._stop.wait(delay)

    def _watch(self) -> None:
        while not self._stop.wait(min(0.5, self.stale_after / 4)):
            if self._connected and self.clock() - self.last_message > self.stale_after:
                log.warning("WebSocket silent for %.1f s: reconnecting", self.clock() - self.last_message)
                self.force_reconnect(f"no message for {self.stale_after:g} s")

    # -- callbacks: parse, enqueue, return
    def _on_open(self, ws: websocket.WebSocketApp) -> None:
        if self._stop.is_set():
            # stop() ran while this connection was being made: its close came before the library's
            # loop started (which resets the flag the close set), so close now.
            _hard_close(ws)
            return
        # Private first, public second: the server reads a connection's frames in order, so the first
        # frame of a stream we subscribed (the ticker, pushed continuously) proves both subscriptions are
        # registered. Backpack acknowledges no SUBSCRIBE (docs/exchange.md §11), and a pong proves nothing
        # here (a server may answer a ping before reading the frames queued ahead of it). Until that
        # data frame, events for our first orders could still be lost, so the stream does not count as up.
        if self.private_streams:
            assert self.signer is not None
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": self.private_streams,
                                "signature": self.signer.ws_signature(self.wall_ms(), self.window_ms)}))
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": self.public_streams}))
        if ws.sock is not None:
            ws.sock.ping("subscribed")
        self.last_message = self.clock()
        self._connected = True

    def _acknowledged(self) -> None:
        """The first frame after subscribing: the stream is up."""
        now = self.clock()
        down_for = now - self._down_since if self._down_since is not None else 0.0
        self._down_since = None
        reconnect = self.opens > 0
        self.opens += 1
        self.up = True
        log.info("WebSocket %s: subscribed to %s", "reconnected" if reconnect else "connected",
                 ", ".join(self.public_streams + self.private_streams))
        self.events.put(StreamUp(reconnect, down_for))

    def _on_pong(self, ws: websocket.WebSocket, data: Any) -> None:
        # Proof the connection lives, not that the subscriptions are registered: a server may answer a
        # ping (at the protocol level) before it has read the SUBSCRIBE frames sent ahead of it.
        self.last_message = self.clock()

    def _on_message(self, ws: websocket.WebSocketApp, message: str) -> None:
        now = self.clock()
        self.last_message = now
        try:
            msg = json.loads(message)
            if not isinstance(msg, dict):
                return
            if "error" in msg:
                err = msg.get("error") or {}
                self.events.put(StreamError(f"{err.get('code')}: {err.get('message')}"))
                return
            stream, data = msg.get("stream"), msg.get("data")
            if not isinstance(data, dict) or not isinstance(stream, str):
                return
            if self._connected and not self.up and stream in self.public_streams + self.private_streams:
                # Data on a stream we subscribed: the server has registered that subscription, and the
                # ones sent before it (it reads a connection's frames in order). Only now is the stream up.
                self._acknowledged()
            if stream.startswith("ticker."):
                ticker, event_us = wire.parse_ticker_event(data)
                if stream != f"ticker.{self.symbol}" or ticker.symbol != self.symbol:
                    # Another market's price (a frame for a stream we did not ask for): never ours to act on.
                    log.debug("ignored a ticker frame of %s on %s", ticker.symbol, stream)
                    return
                self.events.put(TickerEvent(ticker.last_price, event_us, now))
            elif stream.startswith("account.orderUpdate"):
                self.events.put(OrderEvent(wire.parse_order_update(data), now, _more_waiting(ws)))
        except (ValueError, wire.ParseError) as e:
            self.events.put(StreamError(f"unreadable message: {e}"))

    def _on_error(self, ws: websocket.WebSocketApp, error: Exception) -> None:
        # Exceptions raised inside callbacks land here too; keep the reason for the reconnect log.
        self._close_reason = self._close_reason or f"{type(error).__name__}: {error}"

    def _on_close(self, ws: websocket.WebSocketApp, code: Any, message: Any) -> None:
        if code is not None and not self._close_reason:
            self._close_reason = f"closed by the server ({code})"
