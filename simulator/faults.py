"""Scheduled faults for the simulator's control API (``POST /_sim/faults``).

Kinds:
- ``http_status``: answer ``status`` to matching requests without processing them (500, 502, 503,
  429 with ``retry_after``). Status 202 is different: the request *is* processed and the answer is
  an empty 202, as Backpack may answer a cancel.
- ``delay``: hold matching requests ``seconds`` before processing them.
- ``drop_response``: process matching requests, then drop the connection without an answer (an
  order that is accepted but whose response never arrives).
- ``late_answer``: process matching requests now and hold the answer ``seconds`` (an order accepted
  after its client may have given up on it; ``delay`` holds the request before processing instead).
- ``replay``: process matching requests twice, as a network that delivers a signed request again
  inside its window would; the client gets the first answer.
- ``malformed``: process matching requests (an order *is* placed), then answer 200 with a broken
  body, ``body`` one of: ``html`` (a proxy's HTML page), ``truncated`` (the JSON cut in half, a
  complete HTTP answer), ``wrong_shape`` (valid JSON of another shape), ``empty`` (no body at all),
  ``stall`` (the headers and half the body, then ``seconds`` of silence, then the connection closes).
- ``order_reject``: refuse the next ``count`` orders (single or batch items) that match ``side`` and
  ``price`` (both optional) with ``code`` and ``message`` (default: the post-only rejection), as the
  engine may refuse an order for reasons a bot cannot foresee.
- ``ws_drop``: drop every WebSocket connection now; with ``seconds``, refuse new ones for that long.
- ``ws_silent``: the WebSocket server sends nothing (no data, no pongs) for ``seconds``.
- ``ws_duplicate``, ``ws_reorder``, ``ws_malformed``, ``ws_foreign``: the next ``count`` data messages
  (default 1) of streams starting with ``stream`` (default: every stream) are sent twice; held back
  and sent after the next message of their stream (or a second later); sent as a text frame whose
  JSON is cut in half (the event is lost to the client); or preceded by the same event on another
  market's stream (``account.orderUpdate.BTC_USDC`` for an order update of SOL_USDC, and so on), as
  a multiplexed connection can deliver a frame the client did not subscribe to.

- ``ws_late_subscribe``: the next ``count`` SUBSCRIBE requests (and every text frame after each, in order)
  are handled ``seconds`` after the server read them; a ping the client sent after them is answered at
  once (as the protocol layer answers pings while it reads), so a pong proves no subscription.

HTTP faults match ``method`` (or any) and ``path`` (exact, or ``*`` for every Backpack path) and last
for ``count`` matching requests or ``duration`` seconds (default: one request).
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Callable

HTTP_KINDS = ("http_status", "delay", "drop_response", "late_answer", "replay", "malformed")
ORDER_KINDS = ("order_reject",)
WS_KINDS = ("ws_drop", "ws_silent")
WS_MESSAGE_KINDS = ("ws_duplicate", "ws_reorder", "ws_malformed", "ws_foreign", "ws_late_subscribe")
MALFORMED_BODIES = ("html", "truncated", "wrong_shape", "empty", "stall")


class FaultSpecError(ValueError):
    pass


@dataclass
class Fault:
    id: int
    kind: str
    method: str | None = None
    path: str = "*"
    status: int | None = None
    retry_after: float | None = None
    seconds: float | None = None
    side: str | None = None
    price: str | None = None
    code: str | None = None
    message: str | None = None
    body: str | None = None
    stream: str = ""
    count: int | None = None
    until: float | None = None  # monotonic deadline
    hits: int = 0

    def active(self, now: float) -> bool:
        if self.until is not None:
            return now < self.until
        return self.count is None or self.hits < self.count

    def public(self) -> dict:
        d = asdict(self)
        d.pop("until")
        return d


class FaultBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._clock = clock

    def add(self, spec: Any) -> Fault:
        if not isinstance(spec, dict):
            raise FaultSpecError("a fault is a JSON object")
        kind = spec.get("kind")
        kinds = HTTP_KINDS + ORDER_KINDS + WS_KINDS + WS_MESSAGE_KINDS
        if kind not in kinds:
            raise FaultSpecError(f"unknown fault kind {kind!r}; one of {', '.join(kinds)}")
        f = Fault(id=next(self._ids), kind=kind)
        method = spec.get("method")
        if method is not None:
            if not isinstance(method, str):
                raise FaultSpecError("method must be a string")
            f.method = method.upper()
        path = spec.get("path", "*")
        if not isinstance(path, str):
            raise FaultSpecError("path must be a string")
        f.path = path
        if kind == "http_status":
            status = spec.get("status")
            if not isinstance(status, int) or not (status == 202 or 400 <= status <= 599):
                raise FaultSpecError("http_status needs a status: 202 or 400..599")
            f.status = status
            if spec.get("retry_after") is not None:
                f.retry_after = float(spec["retry_after"])
        if kind == "malformed":
            if spec.get("body") not in MALFORMED_BODIES:
                raise FaultSpecError(f"malformed needs a body: one of {', '.join(MALFORMED_BODIES)}")
            f.body = spec["body"]
            if f.body == "stall":
                f.seconds = 2.0
        if kind in WS_MESSAGE_KINDS:
            stream = spec.get("stream", "")
            if not isinstance(stream, str):
                raise FaultSpecError("stream must be a string (a stream name or its prefix)")
            f.stream = stream
        timed = ("delay", "late_answer", "ws_silent", "ws_late_subscribe")
        if kind in timed or (kind in ("ws_drop", "malformed") and spec.get("seconds") is not None):
            try:
                f.seconds = float(spec["seconds"])
            except (KeyError, TypeError, ValueError):
                raise FaultSpecError(f"{kind} needs seconds") from None
        if kind == "order_reject":
            f.side = spec.get("side")
            f.price = None if spec.get("price") is None else str(spec["price"])
            f.code = str(spec.get("code") or "INVALID_ORDER")
            f.message = str(spec.get("message") or "Order would immediately match and take.")
        if kind in HTTP_KINDS + ORDER_KINDS + WS_MESSAGE_KINDS:
            if spec.get("duration") is not None:
                f.until = self._clock() + float(spec["duration"])
            else:
                count = spec.get("count", 1)
                if not isinstance(count, int) or count < 1:
                    raise FaultSpecError("count must be a positive integer")
                f.count = count
            with self._lock:
                self._faults.append(f)
        return f

    def take(self, kind: str, method: str, path: str) -> Fault | None:
        """The first active fault of ``kind`` matching the request; counts it as used."""
        now = self._clock()
        with self._lock:
            self._faults = [f for f in self._faults if f.active(now)]
            for f in self._faults:
                if f.kind != kind:
                    continue
                if f.method is not None and f.method != method:
                    continue
                if f.path != "*" and f.path != path:
                    continue
                f.hits += 1
                return f
        return None

    def take_ws(self, kind: str, stream: str) -> Fault | None:
        """The first active WebSocket message fault of ``kind`` whose prefix matches ``stream``."""
        now = self._clock()
        with self._lock:
            for f in self._faults:
                if f.kind == kind and f.active(now) and stream.startswith(f.stream):
                    f.hits += 1
                    return f
        return None

    def take_order_reject(self, side: str, price: str | None) -> Fault | None:
        """The first active order_reject fault matching this order; counts it as used."""
        now = self._clock()
        with self._lock:
            for f in self._faults:
                if f.kind != "order_reject" or not f.active(now):
                    continue
                if f.side is not None and f.side != side:
                    continue
                if f.price is not None and (price is None or Decimal(f.price) != Decimal(price)):
                    continue
                f.hits += 1
                return f
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict]:
        now = self._clock()
        with self._lock:
            return [f.public() for f in self._faults if f.active(now)]
