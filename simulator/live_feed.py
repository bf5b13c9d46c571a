"""The live feed: the simulator's market follows a real one, trade by trade, from public data only.

It reads ``rest_url`` (Backpack's REST, or another simulator's) and ``ws_url`` (its WebSocket): the
newest trade to start from, then the public ``trade.<symbol>`` and ``ticker.<symbol>`` streams. Every
real trade (price, quantity) becomes a price move that fills resting paper orders conservatively: an
order fills only when the trade printed strictly through its price, and all the orders a trade fills
together get at most the trade's quantity, best price first, in the order the trades happened. So a
real grid's fills can only be better (queue position aside).

On a perp (``_PERP``) it follows the real ``markPrice.<symbol>`` stream too: the paper market's index and
mark are the real ones.

Never signed, never private: this module sends no key, no signature and no ``account.*`` subscription.

Running for weeks: the stream reconnects with backoff (1 s doubling to 30 s) and, once back, fills the
gap from the public trades over REST (``/api/v1/trades``, then ``/api/v1/trades/history`` pages, at
most 30 requests a minute, backing off on 429); trade ids are the de-duplication key (Backpack's grow
per market). With no trade and no ticker for ``stale_after`` seconds the feed is stale: no fills can
happen, and it says so; when prices are back it replays the trades the silence hid, and says so.
"""
from __future__ import annotations

import json
import logging
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

import requests
import websocket

from .feeds import Feed, FeedError

GAP_PAGES = 5                  # /trades/history pages read after a reconnect, at most
HISTORY_PACE_S = 2.0           # 30 requests a minute (docs/exchange.md §8)


class LiveFeed(Feed):
    def __init__(self, trade: Callable[[str, Decimal, Decimal, int], None], symbol: str, rest_url: str,
                 ws_url: str, *, stale_after: float = 30.0, log: logging.Logger | None = None,
                 http: requests.Session | None = None,
                 mark: Callable[[str, Decimal, Decimal], None] | None = None) -> None:
        super().__init__()
        self._trade = trade
        # A perp: the real market's index and mark (``markPrice.<symbol>``) are the paper market's too.
        self._mark = mark if symbol.endswith("_PERP") else None
        self.symbol = symbol
        self.rest_url = rest_url.rstrip("/")
        self.ws_url = ws_url
        self.stale_after = stale_after
        self.log = log or logging.getLogger("simulator.live")
        self.http = http or requests.Session()
        self.last_id: int | None = None
        self.last_message = time.monotonic()
        self.stale = False
        self.connects = 0
        self.trades = 0
        self.gap_filled = 0
        self._ws: Any = None

    # -- public REST, paced and patient with 429
    def _get(self, path: str, params: dict[str, Any]) -> Any:
        for attempt in range(5):
            try:
                r = self.http.get(self.rest_url + path, params=params, timeout=(5, 15))
            except requests.RequestException as e:
                err = f"{type(e).__name__}"
            else:
                if r.status_code == 429:
                    wait = float(r.headers.get("Retry-After") or 2 ** attempt)
                    self.log.warning("live prices: %s rate limited; waiting %.1f s", path, wait)
                    if self._stop.wait(min(wait, 60.0)):
                        break
                    continue
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        err = "answer is not JSON"
                else:
                    err = f"HTTP {r.status_code}"
            if self._stop.wait(min(30.0, 2.0 ** attempt)):
                break
        raise FeedError(f"live prices: GET {self.rest_url}{path} failed ({err})")

    def first_price(self) -> Decimal:
        """The newest trade's price (remembering its id: the stream goes on from it)."""
        trades = self._get("/api/v1/trades", {"symbol": self.symbol, "limit": 1})
        parsed = [t for t in map(_rest_trade, trades if isinstance(trades, list) else []) if t]
        if parsed:
            self.last_id, price, _ = parsed[0]
            return price
        ticker = self._get("/api/v1/ticker", {"symbol": self.symbol})
        try:
            return Decimal(str(ticker["lastPrice"]))
        except (KeyError, TypeError, InvalidOperation):
            raise FeedError(f"live prices: no trade and no last price for {self.symbol} at {self.rest_url}") from None

    # -- applying trades
    def _apply(self, tid: int, price: Decimal, qty: Decimal) -> bool:
        if self.last_id is not None and tid <= self.last_id:
            return False  # seen already (a gap-fill overlaps the stream)
        self.last_id = tid
        with self._tick_lock:
            if self._paused:
                return False
            self.ticks += 1
            self._trade(self.symbol, price, qty, tid)
        self.trades += 1
        return True

    def gap_fill(self) -> int:
        """The trades missed while the stream was down, oldest first."""
        if self.last_id is None:
            return 0
        missed: list[tuple[int, Decimal, Decimal]] = []
        path, offset = "/api/v1/trades", 0
        for page in range(GAP_PAGES + 1):
            batch = self._get(path, {"symbol": self.symbol, "limit": 1000, "offset": offset} if page
                              else {"symbol": self.symbol, "limit": 1000})
            parsed = [t for t in map(_rest_trade, batch if isinstance(batch, list) else []) if t]
            missed += [t for t in parsed if t[0] > self.last_id]
            if not parsed or min(t[0] for t in parsed) <= self.last_id + 1 or len(parsed) < 1000:
                break
            path, offset = "/api/v1/trades/history", offset + len(parsed)
            if self._stop.wait(HISTORY_PACE_S):
                break
        else:
            self.log.warning("live prices: more trades were missed than %d pages hold; the oldest are skipped",
                             GAP_PAGES + 1)
        applied = sum(1 for tid, p, q in sorted(set(missed)) if self._apply(tid, p, q))
        self.gap_filled += applied
        return applied

    # -- the stream
    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._connect()
                backoff = 1.0
                self._listen()
            except (OSError, websocket.WebSocketException, FeedError) as e:
                if self._stop.is_set():
                    break
                self.log.warning("live prices: stream from %s lost (%s); reconnecting in %.0f s", self.ws_url,
                                 type(e).__name__, backoff)
            finally:
                self._close()
            if self._stop.wait(backoff):
                break
            backoff = min(30.0, backoff * 2)

    def _connect(self) -> None:
        self._ws = websocket.create_connection(self.ws_url, timeout=10)
        streams = [f"trade.{self.symbol}", f"ticker.{self.symbol}"]
        if self._mark is not None:
            streams.append(f"markPrice.{self.symbol}")
        self._ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams}))
        self._ws.settimeout(1.0)
        self.connects += 1
        self.last_message = time.monotonic()
        if self.connects > 1:
            n = self.gap_fill()
            self.log.info("live prices: stream back; %d trade(s) missed meanwhile replayed", n)

    def _listen(self) -> None:
        ws = self._ws
        while not self._stop.is_set() and ws is not None:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                raw = None
            now = time.monotonic()
            if raw:
                self._on_message(raw, now)
            elif raw == "" and not ws.connected:
                raise websocket.WebSocketConnectionClosedException("closed")
            if not self.stale and now - self.last_message > self.stale_after:
                self.stale = True
                self.log.warning("live prices stale: nothing from %s for %.0f s; paper fills wait until prices "
                                 "are back", self.ws_url, now - self.last_message)
            if self.stale and now - self.last_message > 3 * self.stale_after:
                raise FeedError("stale stream")  # reconnect: the connection may be dead without a word

    def _on_message(self, raw: Any, now: float) -> None:
        try:
            msg = json.loads(raw)
            data, stream = msg["data"], msg["stream"]
        except (ValueError, KeyError, TypeError):
            return  # a subscription answer, an error object, or a frame we cannot read
        if stream == f"markPrice.{self.symbol}" and self._mark is not None:
            try:
                index, mark = Decimal(str(data["i"])), Decimal(str(data["p"]))
            except (KeyError, TypeError, ValueError, InvalidOperation):
                return
            if index > 0 and mark > 0:
                self._mark(self.symbol, index, mark)
            return
        if stream not in (f"trade.{self.symbol}", f"ticker.{self.symbol}"):
            return
        self.last_message = now
        if self.stale:
            self.stale = False
            n = self.gap_fill()  # what the silence hid, in order, before this message
            self.log.info("live prices are back; %d trade(s) missed meanwhile replayed", n)
        if stream.startswith("trade."):
            try:
                tid, price, qty = int(data["t"]), Decimal(str(data["p"])), Decimal(str(data["q"]))
            except (KeyError, TypeError, ValueError, InvalidOperation):
                return
            if price > 0 and qty > 0:
                self._apply(tid, price, qty)

    def _close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except (OSError, websocket.WebSocketException):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._close()
        super().stop()

    def describe(self) -> dict:
        return {"kind": "live", "rest": self.rest_url, "ws": self.ws_url, "stale": self.stale,
                "connects": self.connects, "trades": self.trades, "gap_filled": self.gap_filled,
                "last_trade_id": self.last_id, "paused": self.paused}


def _rest_trade(t: Any) -> tuple[int, Decimal, Decimal] | None:
    """(id, price, quantity) of a REST trade, or None for one we cannot read."""
    try:
        out = int(t["id"]), Decimal(str(t["price"])), Decimal(str(t["quantity"]))
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return None
    return out if out[1] > 0 and out[2] > 0 else None
