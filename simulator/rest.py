"""The simulator's REST server: Backpack's public and signed endpoints plus the ``/_sim/`` control API.

One handler per ``(method, path)``. A request passes, in order: the control-API check (loopback only),
scheduled faults (delay, error status), body parsing, signature check (signed routes), rate limiting,
the handler, and the after-faults (dropped response, 202). Every response is written in one
``sendall`` with TCP_NODELAY, so keep-alive clients never wait on Nagle's algorithm.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

from . import signing
from .records import SimError, plain
from .replies import Reply
from .wire import fill_json, order_history_json, order_json
from .control_api import ControlRoutes
from .markets import KLINE_SECONDS, market_json

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger("simulator.rest")

DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
HISTORICAL_PATHS = ("/api/v1/klines", "/api/v1/trades/history")
REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: Any
    account: str | None
    client: str

    def q(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

    def need(self, name: str) -> str:
        v = self.q(name)
        if v is None or v == "":
            raise SimError(400, "INVALID_CLIENT_REQUEST", f"Missing parameter `{name}`")
        return v

    def int_param(self, name: str, default: int | None = None, *, lo: int | None = None,
                  hi: int | None = None) -> int | None:
        v = self.q(name)
        if v is None or v == "":
            return default
        try:
            n = int(v)
        except ValueError:
            raise SimError(400, "INVALID_CLIENT_REQUEST",
                           f"failed to parse parameter `{name}`: invalid digit found in string") from None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise SimError(400, "INVALID_CLIENT_REQUEST", f"Invalid value for parameter `{name}`")
        return n


def _paged(req: Request, items: list, key: Callable[[Any], Any], render: Callable[[Any], dict]) -> Reply:
    limit = req.int_param("limit", 100, lo=1, hi=1000)
    offset = req.int_param("offset", 0, lo=0)
    direction = req.q("sortDirection") or "Desc"
    if direction not in ("Asc", "Desc"):
        raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for parameter `sortDirection`")
    items = sorted(items, key=key, reverse=direction == "Desc")
    total = len(items)
    page = items[offset:offset + limit]
    pages = (total + limit - 1) // limit
    headers = {"X-PAGE-COUNT": str(pages), "X-CURRENT-PAGE": str(offset // limit + 1),
               "X-PAGE-SIZE": str(limit), "X-TOTAL": str(total),
               "ACCESS-CONTROL-EXPOSE-HEADERS": "X-PAGE-COUNT, X-CURRENT-PAGE, X-PAGE-SIZE, X-TOTAL",
               "CACHE-CONTROL": "no-store"}
    return Reply(200, [render(x) for x in page], headers=headers)


class Routes:
    """Backpack's endpoints on top of one simulator."""

    def __init__(self, sim: "Simulator") -> None:
        self.sim = sim
        self.ex = sim.exchange
        self.public: dict[tuple[str, str], Callable[[Request], Reply]] = {
            ("GET", "/api/v1/markets"): self.markets,
            ("GET", "/api/v1/market"): self.market,
            ("GET", "/api/v1/ticker"): self.ticker,
            ("GET", "/api/v1/tickers"): self.tickers,
            ("GET", "/api/v1/depth"): self.depth,
            ("GET", "/api/v1/klines"): self.klines,
            ("GET", "/api/v1/trades"): self.trades,
            ("GET", "/api/v1/trades/history"): self.trades_history,
            ("GET", "/api/v1/assets"): self.assets,
            ("GET", "/api/v1/time"): lambda r: Reply(200, text=str(self.ex.clock_us() // 1000)),
            ("GET", "/api/v1/ping"): lambda r: Reply(200, text="pong"),
            ("GET", "/api/v1/status"): lambda r: Reply(200, {"status": "Ok", "message": None}),
            # Tokenized stocks (RFQ markets): the simulator lists none (ccxt asks for them with the markets).
            ("GET", "/api/v1/securities"): lambda r: Reply(200, []),
        }
        self.public.update(sim.perps.routes())
        self.signed: dict[tuple[str, str], Callable[[Request], Reply]] = {
            ("GET", "/api/v1/capital"): self.capital,
            ("GET", "/api/v1/capital/collateral"): self.collateral,
            ("GET", "/api/v1/account"): self.account,
            ("GET", "/api/v1/account/limits/order"): self.max_order_quantity,
            ("GET", "/api/v1/order"): self.get_order,
            ("POST", "/api/v1/order"): self.post_order,
            ("DELETE", "/api/v1/order"): self.delete_order,
            ("GET", "/api/v1/orders"): self.get_orders,
            ("POST", "/api/v1/orders"): self.post_orders,
            ("DELETE", "/api/v1/orders"): self.delete_orders,
            ("GET", "/wapi/v1/history/fills"): self.fill_history,
            ("GET", "/wapi/v1/history/orders"): self.order_history,
        }
        self.signed.update(sim.perps.signed_routes())
        assert set(self.signed) == set(signing.INSTRUCTIONS)

    # -- public
    def markets(self, r: Request) -> Reply:
        """``marketType`` (repeatable) filters; without it, spot and perp markets (as Backpack's default)."""
        types = [v for k, v in r.query if k == "marketType"] or ["SPOT", "PERP"]
        return Reply(200, [market_json(m.spec) for m in self.ex.markets.values()
                           if ("PERP" if m.spec.is_perp else "SPOT") in types])

    def market(self, r: Request) -> Reply:
        return Reply(200, market_json(self.ex.market(r.need("symbol")).spec))

    def ticker(self, r: Request) -> Reply:
        interval = r.q("interval")
        if interval not in (None, "1d", "1w"):
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for parameter `interval`")
        return Reply(200, self.ex.ticker(r.need("symbol")))

    def tickers(self, r: Request) -> Reply:
        return Reply(200, [self.ex.ticker(sym) for sym in self.ex.markets])

    def depth(self, r: Request) -> Reply:
        limit = r.int_param("limit", 1000)
        if limit not in DEPTH_LIMITS:
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for parameter `limit`")
        return Reply(200, self.ex.depth(r.need("symbol"), limit))

    def klines(self, r: Request) -> Reply:
        symbol = r.need("symbol")
        interval = r.need("interval")
        if interval not in KLINE_SECONDS:
            raise SimError(400, "INVALID_CLIENT_REQUEST",
                           f"failed to parse parameter `interval`: unknown variant `{interval}`")
        start = r.int_param("startTime")
        if start is None:
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Missing parameter `startTime`")
        end = r.int_param("endTime")
        price_type = r.q("priceType")
        if price_type not in (None, "Last", "Index", "Mark"):
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for parameter `priceType`")
        return Reply(200, self.ex.klines(symbol, KLINE_SECONDS[interval], start, end,
                                         price_at=self.sim.perps.price_at(symbol, price_type)))

    def trades(self, r: Request) -> Reply:
        """The newest trades first: ids and timestamps falling, as Backpack sends them."""
        return Reply(200, self.ex.recent_trades(r.need("symbol"), r.int_param("limit", 100, lo=1, hi=1000)))

    def trades_history(self, r: Request) -> Reply:
        """Older trades, newest first, ``offset`` trades back (rate limited like klines)."""
        return Reply(200, self.ex.recent_trades(r.need("symbol"), r.int_param("limit", 100, lo=1, hi=1000),
                                                r.int_param("offset", 0, lo=0)))

    def assets(self, r: Request) -> Reply:
        return Reply(200, self.ex.assets())

    # -- signed
    def capital(self, r: Request) -> Reply:
        acct = self.ex.account(r.account)
        with self.ex.lock:
            return Reply(200, {a: {"available": plain(b.available), "locked": plain(b.locked), "staked": "0"}
                               for a, b in acct.balances.items()})

    def collateral(self, r: Request) -> Reply:
        return Reply(200, self.ex.collateral(r.account))

    def account(self, r: Request) -> Reply:
        return Reply(200, self.ex.account_summary(r.account))

    def max_order_quantity(self, r: Request) -> Reply:
        side = r.need("side")
        if side not in ("Bid", "Ask"):
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for parameter `side`")
        price = r.q("price")
        try:
            limit = None if price is None else Decimal(price)
        except InvalidOperation:
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for parameter `price`") from None
        return Reply(200, self.ex.max_order_quantity(r.account, r.need("symbol"), side, limit,
                                                     reduce_only=r.q("reduceOnly") == "true"))

    def get_order(self, r: Request) -> Reply:
        o = self.ex.get_open_order(r.account, r.need("symbol"), r.q("orderId"), r.q("clientId"))
        return Reply(200, order_json(o, listed=True))

    def post_order(self, r: Request) -> Reply:
        return Reply(200, order_json(self.ex.place(r.account, r.body)))

    def post_orders(self, r: Request) -> Reply:
        if isinstance(r.body, list) and len(r.body) > self.sim.config.max_batch:
            # Backpack's batch limit is undocumented; the simulator enforces a conservative one.
            raise SimError(400, "INVALID_CLIENT_REQUEST",
                           f"Batch contains too many orders (at most {self.sim.config.max_batch})")
        out = []
        for res in self.ex.place_batch(r.account, r.body):
            if isinstance(res, SimError):
                out.append({"operation": "Err", "code": res.code, "message": res.message})
            else:
                item = order_json(res)
                item["operation"] = "Ok"
                out.append(item)
        return Reply(200, out)

    def delete_order(self, r: Request) -> Reply:
        return Reply(200, order_json(self.ex.cancel(r.account, r.body)))

    def get_orders(self, r: Request) -> Reply:
        mt = r.q("marketType")
        orders = self.ex.open_orders(r.account, r.q("symbol"))
        if mt is not None:
            # SPOT and PERP filter by the market's kind; the other kinds (IPERP, DATED, PREDICTION, RFQ) list none
            orders = [o for o in orders
                      if mt in ("SPOT", "PERP") and self.ex.markets[o.symbol].spec.is_perp == (mt == "PERP")]
        return Reply(200, [order_json(o, listed=True) for o in orders])

    def delete_orders(self, r: Request) -> Reply:
        return Reply(200, [order_json(o) for o in self.ex.cancel_all(r.account, r.body)])

    def fill_history(self, r: Request) -> Reply:
        fill_type = r.q("fillType")
        fills = self.ex.fill_history(r.account, symbol=r.q("symbol"), order_id=r.q("orderId"),
                                     from_ms=r.int_param("from"), to_ms=r.int_param("to"))
        if fill_type not in (None, "User", "AllLiquidation"):
            fills = []  # the simulator has no system fills
        return _paged(r, fills, key=lambda f: (f.ts_us, f.trade_id), render=fill_json)

    def order_history(self, r: Request) -> Reply:
        orders = self.ex.order_history(r.account, symbol=r.q("symbol"), order_id=r.q("orderId"))
        return _paged(r, orders, key=lambda o: (o.created_us, o.id), render=order_history_json)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "RestServer"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    @staticmethod
    def _body(reply: Reply) -> tuple[bytes, str | None]:
        if reply.text is not None:
            return reply.text.encode(), "text/plain; charset=utf-8"
        if reply.payload is None:
            return b"", None
        return json.dumps(reply.payload, separators=(",", ":")).encode(), "application/json; charset=utf-8"

    def _send(self, reply: Reply, *, body: bytes | None = None, ctype: str | None = None,
              length: int | None = None) -> None:
        """Write the answer in one piece; ``body``/``ctype`` replace the reply's own (faults), and
        ``length`` announces a Content-Length other than the body's (a stalled answer)."""
        if body is None:
            body, ctype = self._body(reply)
        lines = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}",
                 f"Content-Length: {len(body) if length is None else length}"]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.extend(f"{k}: {v}" for k, v in reply.headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.wfile.write(head + body)
        self.wfile.flush()

    def _send_malformed(self, reply: Reply, kind: str, seconds: float) -> None:
        """A 200 whose body a client cannot use (the request behind it was processed)."""
        good, ctype = self._body(reply)
        ok = Reply(200, headers=reply.headers)
        if kind == "html":
            self._send(ok, body=b"<html><head><title>Just a moment...</title></head><body></body></html>",
                       ctype="text/html; charset=utf-8")
        elif kind == "truncated":
            self._send(ok, body=good[:len(good) // 2], ctype=ctype)
        elif kind == "wrong_shape":
            wrapped = {"data": reply.payload} if not isinstance(reply.payload, dict) else [reply.payload]
            self._send(ok, body=json.dumps(wrapped).encode(), ctype="application/json; charset=utf-8")
        elif kind == "empty":
            self._send(ok, body=b"", ctype=None)
        else:  # stall: half the body, silence, then the connection closes short of its length
            self._send(ok, body=good[:len(good) // 2], ctype=ctype, length=len(good))
            time.sleep(seconds)
            self._drop()

    def _drop(self) -> None:
        """Close the connection without a response (the client sees the connection reset)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        path = url.path
        query = parse_qsl(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        client = self.client_address[0]

        if path.startswith("/_sim/"):
            if not ipaddress.ip_address(client).is_loopback:
                self._send(Reply(403, {"error": "the control API answers loopback clients only"}))
                return
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(Reply(400, {"error": "body is not JSON"}))
                return
            self._send(ControlRoutes(sim).handle(method, path, query, body))
            return

        received_us = sim.exchange.clock_us()
        journalled = False

        def journal(status: int, account: str | None = None) -> None:
            # Before the answer leaves: a client that acts on an answer finds its request journalled.
            nonlocal journalled
            journalled = True
            sim.exchange.count_request(method, path, account, status, received_us)

        try:
            delay = sim.faults.take("delay", method, path)
            if delay is not None:
                time.sleep(delay.seconds or 0)
            fault = sim.faults.take("http_status", method, path)
            if fault is not None and fault.status != 202:
                journal(fault.status or 500)
                self._send(self._fault_reply(fault.status or 500, fault.retry_after))
                return
            reply, account = self._process(method, path, query, raw, client)
            if sim.faults.take("replay", method, path) is not None:
                self._process(method, path, query, raw, client)  # delivered twice; the first answer goes back
            late = sim.faults.take("late_answer", method, path)
            if late is not None:
                time.sleep(late.seconds or 0)
            if reply.status < 400 and sim.faults.take("drop_response", method, path) is not None:
                journal(0, account)
                self._drop()
                return
            bad = sim.faults.take("malformed", method, path) if reply.status < 400 else None
            if bad is not None:
                journal(200, account)
                self._send_malformed(reply, bad.body or "html", bad.seconds or 0)
                return
            if fault is not None and fault.status == 202 and reply.status == 200:
                reply = Reply(202)
            journal(reply.status, account)
            self._send(reply)
        finally:
            if not journalled:  # an error before any answer
                sim.exchange.count_request(method, path, None, 500, received_us)

    @staticmethod
    def _fault_reply(status: int, retry_after: float | None) -> Reply:
        if status == 429:
            # Sent as given: a fractional Retry-After ("0.5") must not become 0.
            headers = {"Retry-After": f"{retry_after if retry_after is not None else 1:g}"}
            return Reply(429, {"code": "TOO_MANY_REQUESTS", "message": "Too many requests"}, headers=headers)
        if status in (502, 504):
            # What a proxy in front of the exchange answers: not JSON.
            return Reply(status, text=f"<html><body><h1>{status} {REASONS[status]}</h1></body></html>")
        if status == 503:
            return Reply(503, {"code": "SERVER_ERROR",
                               "message": "Unknown error, please check your request or try again later."})
        if status >= 500:
            return Reply(status, {"code": "SERVER_ERROR", "message": "Internal server error"})
        return Reply(status, {"code": "INVALID_CLIENT_REQUEST", "message": REASONS.get(status, "Error")})

    def _process(self, method: str, path: str, query: list[tuple[str, str]], raw: bytes,
                 client: str) -> tuple[Reply, str | None]:
        sim = self.server.sim
        routes = self.server.routes
        key = (method, path)
        handler = routes.public.get(key)
        signed = handler is None
        if signed:
            handler = routes.signed.get(key)
        if handler is None:
            return Reply(404, {"code": "RESOURCE_NOT_FOUND", "message": "Not Found"}), None
        try:
            body = json.loads(raw, parse_float=Decimal) if raw and method != "GET" else None
        except ValueError as e:
            return Reply(400, {"code": "INVALID_CLIENT_REQUEST",
                               "message": f"parse request payload error: {e}"}), None
        account = None
        if signed:
            try:
                h = signing.parse_headers(self.headers.get)
                signing.decode_key(h.api_key)
                signing.check_time(h.timestamp_ms, h.window_ms, sim.exchange.clock_us() // 1000)
                instruction = signing.INSTRUCTIONS[key]
                message = signing.signing_string(instruction, query, body, h.timestamp_ms, h.window_ms)
                signing.verify(h.api_key, h.signature, message)
            except signing.AuthFailure as e:
                return Reply(400, {"code": "INVALID_CLIENT_REQUEST", "message": e.message}), None
            account = h.api_key
        limit = 30 if path in HISTORICAL_PATHS else None
        wait = sim.limiter.check(account or f"ip:{client}:{'hist' if limit else 'std'}", limit)
        if wait is not None:
            return Reply(429, {"code": "TOO_MANY_REQUESTS", "message": "Too many requests"},
                         headers={"Retry-After": str(max(1, int(wait + 0.999)))}), account
        req = Request(method, path, query, body, account, client)
        try:
            return handler(req), account
        except SimError as e:
            return Reply(e.status, e.body()), account


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], sim: "Simulator") -> None:
        super().__init__(addr, Handler)
        self.sim = sim
        self.routes = Routes(sim)
