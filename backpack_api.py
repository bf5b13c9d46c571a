"""Signed REST client for Backpack Exchange: transport, pacing, retries and the one error boundary.

Rules this module keeps (docs/exchange.md §2-§8):
- Signing (the signing string, keys, the auth hook) is in ``backpack_auth``, re-exported here.
- This is the only module that catches ``requests`` exceptions or reads error bodies. It raises our
  own exceptions, named by what the caller must do, classified by HTTP status and Backpack ``code``
  (never by message text).
- Reads and cancels are retried with capped backoff (honouring ``Retry-After``), re-signed on every
  attempt. An order placement is never retried here: a timeout, a dropped connection, a 5xx or a 429
  leaves its outcome unknown (``UnknownOutcome``) and the caller looks it up by ``clientId``.
- Secrets never reach a log line or an exception message; requests are logged at DEBUG without
  headers.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import requests

import gridbot.exchange.wire as wire
from gridbot.core.errors import GridBotError, Rejected, Transient
from gridbot.core.models import (AccountSettings, BatchError, Fill, FundingPayment, MarginSummary, MarketRules, MarkPrice,
                                 Order, Position, Side)
from gridbot.exchange.net_errors import NEVER_CONNECTED, network_cause
from gridbot.exchange.wire import ParseError
# Signing lives in backpack_auth; its names are part of this module's interface too.
from gridbot.exchange.auth import (DEFAULT_WINDOW_MS, INSTRUCTIONS, MAX_WINDOW_MS, BackpackAuth,  # noqa: F401
                           KeyFormatError, Signer, decode_key, format_value, generate_keypair, public_key_of,
                           signing_payload, wall_clock_ms)

log = logging.getLogger("grid_bot.api")

RETRYABLE_STATUS = (429, 500, 502, 503, 504)
# A signed request refused before it is read (bad signature, timestamp out of its window: docs/exchange.md
# §2.3, §8). Which code goes with which cause is undocumented: the bot measures its clock instead.
REFUSED_BEFORE_READING = ("INVALID_CLIENT_REQUEST", "UNAUTHORIZED", "INVALID_SIGNATURE")


# ---------------------------------------------------------------------------------------- errors
class BackpackError(GridBotError):
    """Anything that went wrong talking to the exchange."""


class TransientError(BackpackError, Transient):
    """Try again later: a timeout, a dropped connection, a 5xx, a 429 (after retries ran out)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownOutcome(BackpackError, Transient):
    """An order placement that may or may not have reached the book: look it up by clientId."""


class ApiError(BackpackError, Rejected):
    """The exchange answered with an error: HTTP status plus Backpack's code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


class OrderRejected(ApiError):
    """The exchange refused this order (post-only cross, funds, price band...): mark the level, go on."""


class NotFound(ApiError):
    """RESOURCE_NOT_FOUND: the order is not (or no longer) on the book."""


class RequestRejected(ApiError):
    """A read or cancel the exchange refused: bad signature, expired timestamp, bad parameter."""


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    client_id: int
    post_only: bool = True
    time_in_force: str = "GTC"
    reduce_only: bool = False          # perps: may only reduce the position

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"symbol": self.symbol, "side": self.side.value, "orderType": "Limit",
                               "price": f"{self.price:f}", "quantity": f"{self.quantity:f}",
                               "timeInForce": self.time_in_force, "postOnly": self.post_only,
                               "clientId": self.client_id, "selfTradePrevention": "RejectTaker"}
        if self.symbol.endswith("_PERP"):
            # The borrow and lend flags are "spot margin only" (docs/exchange.md §12): a perp order has none.
            if self.reduce_only:
                out["reduceOnly"] = True
            return out
        # Never a loan: whatever the account's margin settings, the exchange refuses an order the balance
        # does not cover (the default when the flag is absent is not documented). autoLendRedeem is left
        # to the exchange's default (docs/exchange.md §6.1).
        out["autoBorrow"] = False
        return out


CANCEL_PENDING = "cancel-pending"  # a 202: the cancel was accepted but not yet executed


def _error_of(resp: requests.Response) -> tuple[str, str]:
    """Backpack's (code, message) from an error body; proxies answer HTML, so be lenient."""
    try:
        body = resp.json()
    except ValueError:
        return "HTTP_" + str(resp.status_code), (resp.text or "").strip()[:200]
    if isinstance(body, dict):
        return str(body.get("code") or f"HTTP_{resp.status_code}"), str(body.get("message") or "")
    return f"HTTP_{resp.status_code}", str(body)[:200]


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Pacer:
    """At most ``per_minute`` requests in any 60 s, as Backpack counts them (2000 a minute per
    subaccount, docs/exchange.md §8): a burst up to the budget goes at once, the next waits for the
    oldest to leave the window. Several grids on one account each take a share (``api.requests_per_minute``)."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.per_minute = per_minute
        self.clock, self.sleep = clock, sleep
        self.sent: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()
        self.waited = 0.0

    def wait(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                while self.sent and now - self.sent[0] >= self.WINDOW_S:
                    self.sent.popleft()
                if len(self.sent) < self.per_minute:
                    self.sent.append(now)
                    return
                delay = self.WINDOW_S - (now - self.sent[0])
            self.waited += delay
            self.sleep(delay)


class BackpackClient:
    """Backpack's REST API as Python calls returning domain values."""

    def __init__(self, base_url: str, signer: Signer | None = None, *,
                 timeout: tuple[float, float] = (5.0, 10.0), window_ms: int = DEFAULT_WINDOW_MS,
                 max_attempts: int = 4, backoff_base: float = 0.5, backoff_cap: float = 8.0,
                 clock_ms: Callable[[], int] = wall_clock_ms,
                 sleep: Callable[[float], None] = time.sleep, requests_per_minute: int = 1800) -> None:
        self.base_url = base_url.rstrip("/")
        self.pacer = Pacer(requests_per_minute, sleep=sleep)
        self.signer = signer
        self.timeout = timeout
        self.window_ms = window_ms
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.sleep = sleep
        self.clock_ms = clock_ms
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "backpack-grid-bot/1"
        self._auth = BackpackAuth(signer, window_ms, clock_ms) if signer else None
        self.requests_sent = 0
        self.signed_refusals = 0  # signed requests refused before being read: the bot then checks its clock

    def close(self) -> None:
        self.session.close()

    # -- transport
    def _send(self, method: str, path: str, params: Mapping[str, Any] | None,
              body: Any) -> requests.Response:
        signed = (method, path) in INSTRUCTIONS
        if signed and self._auth is None:
            raise RequestRejected(0, "NO_KEYS", f"{method} {path} needs API keys")
        data = json.dumps(body, separators=(",", ":")) if body is not None else None
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else None
        query = {k: format_value(v) for k, v in params.items()} if params else None
        log.debug("-> %s %s %s%s", method, path, query or "", f" {data}" if data else "")
        self.pacer.wait()
        self.requests_sent += 1
        started = time.monotonic()
        resp = self.session.request(method, self.base_url + path, params=query, data=data,
                                    headers=headers, timeout=self.timeout,
                                    auth=self._auth if signed else None)
        log.debug("<- %s %s %s in %.1f ms", resp.status_code, method, path,
                  (time.monotonic() - started) * 1000)
        return resp

    def _note_refusal(self, code: str) -> None:
        if code in REFUSED_BEFORE_READING:
            self.signed_refusals += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_cap, self.backoff_base * (2 ** attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, 60.0))
        return delay

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              body: Any = None, retry: bool = True,
              reject: type[ApiError] = RequestRejected) -> requests.Response:
        """A read or a cancel: retried on transient failures; 4xx raised as ``reject`` (or NotFound)."""
        attempts = self.max_attempts if retry else 1
        last: TransientError | None = None
        for attempt in range(attempts):
            if attempt:
                self.sleep(self._backoff(attempt - 1, last.retry_after if last else None))
            try:
                resp = self._send(method, path, params, body)
            except requests.RequestException as e:
                last = TransientError(f"{method} {path}: {network_cause(e)}")
                log.warning("%s %s failed (%s), attempt %d of %d", method, path, network_cause(e),
                            attempt + 1, attempts)
                continue
            if resp.status_code in RETRYABLE_STATUS:
                code, message = _error_of(resp)
                last = TransientError(f"{method} {path}: HTTP {resp.status_code} {code}",
                                      _retry_after(resp))
                log.warning("%s %s answered %s %s, attempt %d of %d", method, path, resp.status_code,
                            code, attempt + 1, attempts)
                continue
            if resp.status_code >= 400:
                code, message = _error_of(resp)
                if resp.status_code == 404 or code == "RESOURCE_NOT_FOUND":
                    raise NotFound(resp.status_code, code, message)
                if (method, path) in INSTRUCTIONS:
                    self._note_refusal(code)
                raise reject(resp.status_code, code, message)
            return resp
        assert last is not None
        raise last

    @staticmethod
    def _json(resp: requests.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            raise TransientError(f"{resp.request.method} {urlsplit(resp.url).path}: "
                                 f"answer is not JSON") from None

    def _parse(self, fn: Callable[[Any], Any], data: Any) -> Any:
        try:
            return fn(data)
        except ParseError as e:
            # A malformed answer is treated like a failed request: nothing is assumed from it.
            raise TransientError(f"unexpected answer from the exchange: {e}") from None

    # -- public
    def markets(self) -> list[MarketRules]:
        data = self._json(self._call("GET", "/api/v1/markets"))
        if not isinstance(data, list):
            raise TransientError("markets: expected a list")
        out = []
        for item in data:
            try:
                out.append(wire.parse_market(item))
            except ParseError:
                continue  # a perp or an exotic market with fields we do not need
        return out

    def ticker_price(self, symbol: str) -> Decimal:
        data = self._json(self._call("GET", "/api/v1/ticker", params={"symbol": symbol}))
        return self._parse(wire.parse_ticker, data).last_price

    def server_time_ms(self) -> int:
        resp = self._call("GET", "/api/v1/time")
        try:
            return int(resp.text.strip())
        except ValueError:
            raise TransientError("time: not an integer") from None

    def klines(self, symbol: str, interval: str, start_s: int, end_s: int | None = None) -> list[dict]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "startTime": start_s}
        if end_s is not None:
            params["endTime"] = end_s
        data = self._json(self._call("GET", "/api/v1/klines", params=params))
        if not isinstance(data, list):
            raise TransientError("klines: expected a list")
        return data

    # -- signed reads
    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        return self._parse(wire.parse_balances, self._json(self._call("GET", "/api/v1/capital")))

    def account_settings(self) -> AccountSettings:
        return self._parse(wire.parse_account_settings, self._json(self._call("GET", "/api/v1/account")))

    # -- perps (docs/exchange.md §12)
    def positions(self, symbol: str | None = None) -> list[Position]:
        """The open positions; flat is an empty list, whether the exchange answers ``[]``, 404 or a zero."""
        try:
            data = self._json(self._call("GET", "/api/v1/position", params={"symbol": symbol} if symbol else None))
        except NotFound:
            return []
        if not isinstance(data, list):
            raise TransientError("position: expected a list")
        return [p for p in (self._parse(wire.parse_position, d) for d in data) if p.net_quantity]

    def margin(self) -> MarginSummary:
        return self._parse(wire.parse_margin, self._json(self._call("GET", "/api/v1/capital/collateral")))

    def set_leverage(self, limit: Decimal) -> None:
        """The subaccount's ``leverageLimit`` (a decimal string; Backpack answers 200 with no body)."""
        self._call("PATCH", "/api/v1/account", body={"leverageLimit": f"{limit:f}"})

    def mark_price(self, symbol: str) -> MarkPrice:
        data = self._json(self._call("GET", "/api/v1/markPrices", params={"symbol": symbol}))
        if not isinstance(data, list) or not data:
            raise TransientError("markPrices: expected a list with the market")
        return self._parse(wire.parse_mark_price, data[0])

    def funding_rates(self, symbol: str, limit: int = 1000, offset: int = 0) -> list[tuple[int, Decimal]]:
        """A perp's realized funding rates, newest first: (interval end in ms, rate); public."""
        data = self._json(self._call("GET", "/api/v1/fundingRates",
                                     params={"symbol": symbol, "limit": limit, "offset": offset}))
        if not isinstance(data, list):
            raise TransientError("fundingRates: expected a list")
        return [self._parse(wire.parse_funding_rate, d) for d in data]

    def funding_payments(self, symbol: str, limit: int = 100) -> list[FundingPayment]:
        data = self._json(self._call("GET", "/wapi/v1/history/funding",
                                     params={"symbol": symbol, "limit": limit, "sortDirection": "Desc"}))
        if not isinstance(data, list):
            raise TransientError("funding: expected a list")
        return [self._parse(wire.parse_funding_payment, d) for d in data]

    def open_orders(self, symbol: str | None) -> list[Order]:
        """The open orders of ``symbol``, or of every market (None)."""
        data = self._json(self._call("GET", "/api/v1/orders", params={"symbol": symbol} if symbol else None))
        if not isinstance(data, list):
            raise TransientError("orders: expected a list")
        return [self._parse(wire.parse_order, d) for d in data]

    def _pages(self, path: str, params: dict[str, Any], page_size: int) -> Iterable[list[dict]]:
        offset = 0
        while True:
            page = self._json(self._call("GET", path, params={**params, "limit": page_size,
                                                               "offset": offset}))
            if not isinstance(page, list):
                raise TransientError(f"{path}: expected a list")
            yield page
            if len(page) < page_size:
                return
            offset += len(page)

    def fills(self, symbol: str, from_ms: int | None = None, *, order_id: str | None = None,
              page_size: int = 1000) -> list[Fill]:
        """Every fill of ours on ``symbol`` since ``from_ms`` (of one order, if given), oldest first,
        all pages."""
        params: dict[str, Any] = {"symbol": symbol, "sortDirection": "Asc", "fillType": "User"}
        if from_ms is not None:
            params["from"] = from_ms
        if order_id is not None:
            params["orderId"] = order_id
        out: list[Fill] = []
        for page in self._pages("/wapi/v1/history/fills", params, page_size):
            out.extend(self._parse(wire.parse_fill, d) for d in page)
        return out

    def find_order(self, symbol: str, client_id: int, *, since_ms: int, side: Side,
                   price: Decimal | None = None, quantity: Decimal | None = None,
                   page_size: int = 1000) -> Order | None:
        """Look an order up by clientId, on the book, else in order history back to ``since_ms``. Only an
        order with this side (and this price and quantity, when given), created at or after ``since_ms``,
        counts: another grid on the account, or an earlier one, may have used the same clientId, so a
        clientId alone never identifies our order."""
        def ours(o: Order) -> bool:
            return (o.client_id == client_id and o.side is side and (price is None or o.price == price)
                    and (quantity is None or o.quantity == quantity)
                    and not (o.created_at_ms and o.created_at_ms < since_ms))

        found = [o for o in self.open_orders(symbol) if ours(o)]
        if found:
            return min(found, key=lambda o: o.created_at_ms)   # of two with one clientId, the older
        params = {"symbol": symbol, "sortDirection": "Desc"}
        for page in self._pages("/wapi/v1/history/orders", params, page_size):
            for d in page:
                o = self._parse(wire.parse_order, d)
                if ours(o):
                    return o
                if o.created_at_ms and o.created_at_ms < since_ms:
                    return None
        return None

    def recent_client_ids(self, symbol: str, limit: int = 1000) -> set[int]:
        """The clientIds of the account's recent orders and fills on ``symbol`` (one page of each history,
        newest first): a new grid's tag avoids them."""
        out: set[int] = set()
        params = {"symbol": symbol, "sortDirection": "Desc", "limit": limit, "offset": 0}
        for path, parse in (("/wapi/v1/history/orders", wire.parse_order), ("/wapi/v1/history/fills", wire.parse_fill)):
            page = self._json(self._call("GET", path, params=params))
            if not isinstance(page, list):
                raise TransientError(f"{path}: expected a list")
            out.update(cid for cid in (self._parse(parse, d).client_id for d in page) if cid is not None)
        return out

    # -- orders
    def _send_placement(self, path: str, body: Any, what: str) -> requests.Response:
        """Send a placement once, never retried: an answer that did not come is UnknownOutcome (the
        caller looks the order up by clientId before sending anything again)."""
        try:
            resp = self._send("POST", path, None, body)
        except requests.ConnectTimeout as e:
            # The connection was never made, so the order was never sent.
            raise TransientError(f"POST {path}: {network_cause(e)}") from e
        except requests.RequestException as e:
            cause = network_cause(e)
            if cause.endswith(NEVER_CONNECTED):   # no name, or nothing listening: nothing was sent
                raise TransientError(f"POST {path}: {cause}") from e
            raise UnknownOutcome(f"{what}: {cause}") from e
        if resp.status_code in RETRYABLE_STATUS:
            raise UnknownOutcome(f"{what}: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            code, message = _error_of(resp)
            self._note_refusal(code)
            raise OrderRejected(resp.status_code, code, message)
        return resp

    def place_order(self, req: OrderRequest) -> Order:
        """Place one order. Raises OrderRejected, or UnknownOutcome when the answer never came."""
        what = f"order clientId {req.client_id}"
        resp = self._send_placement("/api/v1/order", req.to_wire(), what)
        try:
            return wire.parse_order(resp.json())
        except (ValueError, ParseError) as e:
            raise UnknownOutcome(f"order clientId {req.client_id}: unreadable answer") from e

    def place_orders(self, reqs: Sequence[OrderRequest]) -> list[Order | BatchError]:
        """Batch placement: one result per request, in order. UnknownOutcome covers the whole batch."""
        resp = self._send_placement("/api/v1/orders", [r.to_wire() for r in reqs], f"batch of {len(reqs)}")
        try:
            data = resp.json()
            if not isinstance(data, list) or len(data) != len(reqs):
                raise ParseError("batch answer does not have one item per order")
            return [wire.parse_batch_item(d) for d in data]
        except (ValueError, ParseError) as e:
            raise UnknownOutcome(f"batch of {len(reqs)}: unreadable answer") from e

    def cancel_order(self, symbol: str, order_id: str) -> Order | str:
        """Cancel one order (retried). Returns the cancelled order, or CANCEL_PENDING on a 202.
        Raises NotFound when it is no longer on the book (filled, or already cancelled)."""
        resp = self._call("DELETE", "/api/v1/order", body={"symbol": symbol, "orderId": order_id})
        if resp.status_code == 202 or not resp.content:
            return CANCEL_PENDING
        return self._parse(wire.parse_order, self._json(resp))
