"""The simulated exchange: accounts, orders, matching, fills, market data and an event journal.

No sockets here. The REST and WebSocket servers call into one ``Exchange`` under its lock; every
change of an order produces the order-update event Backpack would push (backpack_api.md §9.6), which
is handed to an ``EventSink`` (the WebSocket hub) while the lock is held, so events leave in the
order they happened.

Matching model (documented in the README):
- The market has one price ``m`` (the last trade). The synthetic book around it has its best bid at
  ``m - tick`` and its best ask at ``m + tick`` with unlimited quantity.
- A limit Bid crosses on arrival when its price is above ``m`` (it then takes at ``m + tick``, taker
  fee); an Ask crosses when its price is below ``m`` (takes at ``m - tick``). Post-only orders that would
  cross are rejected with INVALID_ORDER.
- A resting order fills at its own price (maker fee) when the price trades through it: a Bid at ``p``
  when ``m < p``, an Ask when ``m > p``. A price move fills every crossed order completely, or at most
  ``liquidity`` of each when the move says so (a partial fill). Resting orders never match each other.
- Fees are charged in the asset received (base on a buy, quote on a sell), rounded up to that asset's
  settlement decimals.
"""
from __future__ import annotations

import bisect
import contextlib
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Any, Callable, ContextManager, Iterable, Protocol

from .markets import ASSET_DECIMALS, MarketSpec, decimals_of

D = Decimal
ZERO = Decimal(0)
UINT32_MAX = 2**32 - 1

OPEN_STATUSES = ("New", "PartiallyFilled")


class SimError(Exception):
    """An error answer: HTTP status plus Backpack's ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict:
        return {"code": self.code, "message": self.message}


def parse_error(detail: str) -> SimError:
    # Request-parse failures come from the web framework with this prefix (backpack_api.md §8).
    return SimError(400, "INVALID_CLIENT_REQUEST", f"parse request payload error: {detail}")


class EventSink(Protocol):
    def order_event(self, account: str, symbol: str, data: dict) -> None: ...
    def public_event(self, stream: str, data: dict) -> None: ...
    def wants(self, stream: str) -> bool: ...
    def batch(self) -> ContextManager[None]: ...


class HeldEvents:
    """Events of one matching pass, held and then sent together, in order: a price move that fills
    several orders sends their updates back to back once the pass is done, as an engine does."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.held: list[tuple[str, tuple]] = []

    def order_event(self, account: str, symbol: str, data: dict) -> None:
        self.held.append(("order_event", (account, symbol, data)))

    def public_event(self, stream: str, data: dict) -> None:
        self.held.append(("public_event", (stream, data)))

    def wants(self, stream: str) -> bool:
        return self.sink.wants(stream)

    def batch(self) -> ContextManager[None]:
        return self.sink.batch()

    def release(self) -> None:
        with self.sink.batch():
            for name, args in self.held:
                getattr(self.sink, name)(*args)
        self.held.clear()


class NullSink:
    def order_event(self, account: str, symbol: str, data: dict) -> None:
        pass

    def public_event(self, stream: str, data: dict) -> None:
        pass

    def wants(self, stream: str) -> bool:
        return False

    def batch(self) -> ContextManager[None]:
        return contextlib.nullcontext()


def s(d: Decimal | None) -> str | None:
    """A decimal as Backpack writes it: a plain string, never exponent notation."""
    return None if d is None else f"{d:f}"


def plain(d: Decimal) -> str:
    """A balance as Backpack shows it: no exponent, no trailing zeros (``"120"``, ``"0.5"``)."""
    return f"{d.normalize():f}" if d else "0"


def naive_utc(us: int, with_micros: bool = False) -> str:
    """A naive UTC datetime string: ms precision (history endpoints) or µs."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).replace(tzinfo=None)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if with_micros:
        return f"{text}.{us % 1_000_000:06d}"
    return f"{text}.{(us // 1000) % 1000:03d}"


@dataclass
class Balance:
    available: Decimal = ZERO
    locked: Decimal = ZERO


@dataclass
class Account:
    api_key: str
    balances: dict[str, Balance]
    created_us: int


@dataclass
class Order:
    id: str
    account: str
    symbol: str
    side: str
    order_type: str
    price: Decimal | None
    quantity: Decimal
    quote_quantity: Decimal | None
    time_in_force: str
    post_only: bool
    client_id: int | None
    stp: str
    created_us: int
    status: str = "New"
    executed: Decimal = ZERO
    executed_quote: Decimal = ZERO
    locked: Decimal = ZERO  # what this order still holds: quote for a Bid, base for an Ask
    expiry_reason: str | None = None
    closed_us: int | None = None

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass
class Fill:
    trade_id: int
    order_id: str
    client_id: int | None
    account: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    ts_us: int


@dataclass
class MarketState:
    spec: MarketSpec
    price: Decimal
    # (ts_us, price, base volume) for every price print and every trade: klines and 24 h stats.
    ticks_ts: list[int] = field(default_factory=list)
    ticks: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    trades: deque = field(default_factory=lambda: deque(maxlen=1000))
    next_trade_id: int = 1
    depth_update_id: int = 0
    last_book: dict[str, dict[Decimal, Decimal]] = field(default_factory=lambda: {"a": {}, "b": {}})


def _dec(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise parse_error(f"invalid type for `{name}`, expected a decimal string")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise parse_error(f"invalid decimal for `{name}`: {value!r}") from None
    if not d.is_finite():
        raise parse_error(f"invalid decimal for `{name}`: {value!r}")
    return d


def _scale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return max(0, -int(exp))


def _counterparty_id(trade_id: int) -> str:
    """The order id of the simulated market participant on the other side of a trade."""
    return str(3_000_000_000 + trade_id)


SYNTHETIC_LEVELS = 10
SYNTHETIC_QTY = {"SOL_USDC": D("250"), "BTC_USDC": D("2.5"), "ETH_USDC": D("40")}


class Exchange:
    def __init__(self, markets: Iterable[MarketSpec], *, maker_fee: Decimal, taker_fee: Decimal,
                 starting_balances: dict[str, Decimal], prices: dict[str, Decimal] | None = None,
                 clock_us: Callable[[], int] | None = None, seed: int = 0,
                 journal_size: int = 200_000, history: bool = True) -> None:
        self.lock = threading.RLock()
        # history=False (the backtester): no journal and no price history, which it does not read.
        self.history = history
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.starting_balances = dict(starting_balances)
        base_clock = clock_us or (lambda: time.time_ns() // 1000)
        # The simulator's clock may run ahead of (or behind) the machine's, as an exchange's does of a
        # bot whose clock drifted: every timestamp it makes and checks moves with it.
        self.clock_offset_us = 0
        self.clock_us = lambda: base_clock() + self.clock_offset_us
        self.markets: dict[str, MarketState] = {}
        for spec in markets:
            price = (prices or {}).get(spec.symbol, spec.default_price)
            self.markets[spec.symbol] = MarketState(spec, self._round_tick(spec, price))
        self.accounts: dict[str, Account] = {}
        self.orders: dict[str, Order] = {}          # every order ever, by id
        self.open_by_symbol: dict[str, dict[str, Order]] = {m: {} for m in self.markets}
        self.fills: list[Fill] = []
        self.journal: deque = deque(maxlen=journal_size)
        self.sink: EventSink = NullSink()
        # Fault injection: a hook that may refuse an order before it is validated.
        self.reject_hook: Callable[[dict], SimError | None] = lambda payload: None
        self._rng = random.Random(seed)
        # Order ids are digit strings that grow but are not contiguous (backpack_api.md §1).
        self._next_order_id = 4_227_700_000 + self._rng.randrange(100_000)
        self.request_count = 0
        now = self.clock_us()
        for m in self.markets.values():
            self._record_tick(m, now, m.price, ZERO)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _round_tick(spec: MarketSpec, price: Decimal) -> Decimal:
        steps = (price / spec.tick_size).to_integral_value(ROUND_HALF_UP)
        return (steps * spec.tick_size).quantize(spec.tick_size)

    def _journal(self, kind: str, **fields: Any) -> None:
        if not self.history:
            return
        entry = {"t": self.clock_us(), "type": kind}
        entry.update(fields)
        self.journal.append(entry)

    def market(self, symbol: str) -> MarketState:
        m = self.markets.get(symbol)
        if m is None:
            raise SimError(400, "INVALID_SYMBOL", "Invalid symbol")
        return m

    def account(self, api_key: str) -> Account:
        """The account of an API key, created and funded on first use."""
        with self.lock:
            acct = self.accounts.get(api_key)
            if acct is None:
                acct = Account(api_key, {a: Balance(v) for a, v in self.starting_balances.items()},
                               self.clock_us())
                self.accounts[api_key] = acct
                self._journal("account_created", account=api_key)
            return acct

    def _bal(self, acct: Account, asset: str) -> Balance:
        b = acct.balances.get(asset)
        if b is None:
            b = acct.balances[asset] = Balance()
        return b

    def set_balance(self, api_key: str, asset: str, available: Decimal) -> None:
        with self.lock:
            self._bal(self.account(api_key), asset).available = available
            self._journal("balance_set", account=api_key, asset=asset, available=s(available))

    def count_request(self, method: str, path: str, account: str | None, status: int,
                      received_us: int | None = None) -> None:
        """Journal a request once answered (``t``), with when it arrived (``received``)."""
        with self.lock:
            self.request_count += 1
            self._journal("request", method=method, path=path, account=account, status=status,
                          received=received_us)

    # ------------------------------------------------------------------ order entry
    def _parse_order(self, payload: Any) -> dict:
        if not isinstance(payload, dict):
            raise parse_error('Expected input type "OrderExecutePayload"')
        for name in ("symbol", "side", "orderType"):
            if name not in payload:
                raise parse_error(f"missing field `{name}`")
        symbol = payload["symbol"]
        if not isinstance(symbol, str):
            raise parse_error("invalid type for `symbol`")
        side = payload["side"]
        if side not in ("Bid", "Ask"):
            raise parse_error(f"unknown variant `{side}`, expected `Bid` or `Ask`")
        otype = payload["orderType"]
        if otype not in ("Limit", "Market"):
            raise parse_error(f"unknown variant `{otype}`, expected `Market` or `Limit`")
        tif = payload.get("timeInForce") or "GTC"
        if tif not in ("GTC", "IOC", "FOK"):
            raise parse_error(f"unknown variant `{tif}`, expected one of `GTC`, `IOC`, `FOK`")
        post_only = payload.get("postOnly", False)
        if post_only is None:
            post_only = False
        if not isinstance(post_only, bool):
            raise parse_error("invalid type for `postOnly`, expected a boolean")
        client_id = payload.get("clientId")
        if client_id is not None:
            if isinstance(client_id, bool) or not isinstance(client_id, int) \
                    or not 0 <= client_id <= UINT32_MAX:
                raise parse_error("invalid value for `clientId`, expected u32")
        stp = payload.get("selfTradePrevention") or "RejectTaker"
        if stp not in ("RejectTaker", "RejectMaker", "RejectBoth", "Allow"):
            raise parse_error(f"unknown variant `{stp}` for `selfTradePrevention`")
        price = _dec(payload["price"], "price") if payload.get("price") is not None else None
        qty = _dec(payload["quantity"], "quantity") if payload.get("quantity") is not None else None
        qq = (_dec(payload["quoteQuantity"], "quoteQuantity")
              if payload.get("quoteQuantity") is not None else None)
        return {"symbol": symbol, "side": side, "type": otype, "tif": tif, "post_only": post_only,
                "client_id": client_id, "stp": stp, "price": price, "qty": qty, "qq": qq}

    def _validate(self, m: MarketState, p: dict) -> None:
        spec = m.spec
        if p["type"] == "Limit":
            if p["price"] is None:
                raise SimError(400, "INVALID_ORDER", "Limit order requires a price")
            if p["qty"] is None:
                raise SimError(400, "INVALID_ORDER", "Limit order requires a quantity")
        elif p["qty"] is None and p["qq"] is None:
            raise SimError(400, "INVALID_ORDER", "Market order requires a quantity or a quote quantity")
        price = p["price"]
        if price is not None:
            if _scale(price) > decimals_of(spec.tick_size):
                raise SimError(400, "INVALID_CLIENT_REQUEST", "Price decimal too long")
            if price <= 0 or price % spec.tick_size != 0:
                raise SimError(400, "INVALID_PRICE", "Invalid price")
            if price < spec.min_price or (spec.max_price is not None and price > spec.max_price):
                raise SimError(400, "INVALID_PRICE", "Price is out of bounds")
            if price > m.price * spec.max_multiplier or price < m.price * spec.min_multiplier:
                raise SimError(400, "INVALID_PRICE", "Price is too far from the last active price")
        qty = p["qty"]
        if qty is not None:
            if _scale(qty) > decimals_of(spec.step_size):
                raise SimError(400, "INVALID_CLIENT_REQUEST", "Quantity decimal too long")
            if qty <= 0 or qty % spec.step_size != 0:
                raise SimError(400, "INVALID_QUANTITY", "Invalid quantity")
            if qty < spec.min_quantity:
                raise SimError(400, "INVALID_QUANTITY", "Quantity is below the minimum allowed value")
            if spec.max_quantity is not None and qty > spec.max_quantity:
                raise SimError(400, "INVALID_QUANTITY", "Quantity is above the maximum allowed value")

    def _crosses(self, m: MarketState, side: str, price: Decimal) -> bool:
        return price > m.price if side == "Bid" else price < m.price

    def _touch(self, m: MarketState, side: str) -> Decimal:
        """The price a taker gets: the synthetic best ask for a buy, best bid for a sell."""
        if side == "Bid":
            return m.price + m.spec.tick_size
        return max(m.price - m.spec.tick_size, m.spec.tick_size)

    def place(self, api_key: str, payload: Any) -> Order:
        """Validate, lock funds, accept and match one order; raise SimError as Backpack would."""
        with self.lock:
            p = self._parse_order(payload)
            forced = self.reject_hook(p)
            if forced is not None:
                raise forced
            m = self.market(p["symbol"])
            self._validate(m, p)
            spec = m.spec
            acct = self.account(api_key)
            crosses = p["type"] == "Market" or self._crosses(m, p["side"], p["price"])
            if p["type"] == "Limit" and p["post_only"] and crosses:
                raise SimError(400, "INVALID_ORDER", "Order would immediately match and take.")
            qty = p["qty"]
            if qty is None:  # market order by quote quantity
                qty = (p["qq"] / self._touch(m, p["side"])).quantize(spec.step_size, ROUND_DOWN)
                if qty < spec.min_quantity:
                    raise SimError(400, "INVALID_QUANTITY", "Quantity is below the minimum allowed value")
            if p["side"] == "Bid":
                lock_price = p["price"] if p["type"] == "Limit" else self._touch(m, "Bid")
                need, asset = lock_price * qty, spec.quote
            else:
                need, asset = qty, spec.base
            bal = self._bal(acct, asset)
            if bal.available < need:
                raise SimError(400, "INSUFFICIENT_FUNDS", "Insufficient funds")
            bal.available -= need
            bal.locked += need
            now = self.clock_us()
            self._next_order_id += 1 + self._rng.randrange(7)
            order = Order(id=str(self._next_order_id), account=api_key, symbol=spec.symbol,
                          side=p["side"], order_type=p["type"], price=p["price"], quantity=qty,
                          quote_quantity=p["qq"], time_in_force=p["tif"], post_only=p["post_only"],
                          client_id=p["client_id"], stp=p["stp"], created_us=now, locked=need)
            self.orders[order.id] = order
            self.open_by_symbol[spec.symbol][order.id] = order
            self._journal("order_new", order_id=order.id, account=api_key, symbol=spec.symbol,
                          side=order.side, price=s(order.price), quantity=s(qty),
                          client_id=order.client_id)
            self._emit(order, "orderAccepted")
            if crosses:
                # Unlimited liquidity at the touch: a crossing order fills completely as taker.
                self._fill(m, order, order.remaining, self._touch(m, order.side), is_maker=False)
            elif order.time_in_force in ("IOC", "FOK"):
                reason = "ImmediateOrCancel" if order.time_in_force == "IOC" else "FillOrKill"
                self._close(order, "Expired", reason)
            self._book_changed(m)
            return order

    def place_batch(self, api_key: str, items: Any) -> list[Order | SimError]:
        if not isinstance(items, list):
            raise parse_error('Expected input type "Vec<OrderExecutePayload>"')
        results: list[Order | SimError] = []
        with self.lock:
            for item in items:
                try:
                    results.append(self.place(api_key, item))
                except SimError as e:
                    results.append(e)
        return results

    # ------------------------------------------------------------------ fills and closes
    def _fee(self, asset: str, amount: Decimal, rate: Decimal) -> Decimal:
        places = Decimal(1).scaleb(-ASSET_DECIMALS.get(asset, 8))
        return (amount * rate).quantize(places, ROUND_UP)

    def _fill(self, m: MarketState, order: Order, qty: Decimal, price: Decimal, *,
              is_maker: bool) -> Fill:
        spec = m.spec
        acct = self.accounts[order.account]
        rate = self.maker_fee if is_maker else self.taker_fee
        quote_amt = price * qty
        if order.side == "Bid":
            # The order locked (limit price x qty); a taker fill at a better price frees the rest.
            lock_price = order.price if order.order_type == "Limit" else self._touch(m, "Bid")
            release = lock_price * qty
            quote = self._bal(acct, spec.quote)
            quote.locked -= release
            quote.available += release - quote_amt
            order.locked -= release
            fee_asset, fee = spec.base, self._fee(spec.base, qty, rate)
            self._bal(acct, spec.base).available += qty - fee
        else:
            base = self._bal(acct, spec.base)
            base.locked -= qty
            order.locked -= qty
            fee_asset, fee = spec.quote, self._fee(spec.quote, quote_amt, rate)
            self._bal(acct, spec.quote).available += quote_amt - fee
        now = self.clock_us()
        order.executed += qty
        order.executed_quote += quote_amt
        trade_id = m.next_trade_id
        m.next_trade_id += 1
        fill = Fill(trade_id, order.id, order.client_id, order.account, spec.symbol, order.side, price,
                    qty, fee, fee_asset, is_maker, now)
        self.fills.append(fill)
        m.trades.append({"id": trade_id, "price": s(price), "quantity": s(qty),
                         "quoteQuantity": s(quote_amt), "timestamp": now // 1000,
                         "isBuyerMaker": is_maker == (order.side == "Bid")})
        self._record_tick(m, now, m.price, qty)
        self._journal("fill", trade_id=trade_id, order_id=order.id, client_id=order.client_id,
                      account=order.account, side=order.side, price=s(price), quantity=s(qty),
                      fee=s(fee), fee_symbol=fee_asset, maker=is_maker)
        if order.remaining <= 0:
            order.status = "Filled"
            order.closed_us = now
            self.open_by_symbol[spec.symbol].pop(order.id, None)
            self._release(order)
        else:
            order.status = "PartiallyFilled"
        self._emit(order, "orderFill", fill)
        self.sink.public_event(f"trade.{spec.symbol}", {
            "e": "trade", "E": now, "s": spec.symbol, "p": s(price), "q": s(qty),
            "b": order.id if order.side == "Bid" else _counterparty_id(trade_id),
            "a": order.id if order.side == "Ask" else _counterparty_id(trade_id),
            "t": trade_id, "T": now, "m": is_maker == (order.side == "Bid")})
        return fill

    def _release(self, order: Order) -> None:
        """Give back whatever a closed order still holds."""
        if order.locked <= 0:
            order.locked = ZERO
            return
        spec = self.markets[order.symbol].spec
        bal = self._bal(self.accounts[order.account], spec.quote if order.side == "Bid" else spec.base)
        bal.locked -= order.locked
        bal.available += order.locked
        order.locked = ZERO

    def _close(self, order: Order, status: str, reason: str | None = None) -> None:
        order.status = status
        order.expiry_reason = reason
        order.closed_us = self.clock_us()
        self.open_by_symbol[order.symbol].pop(order.id, None)
        self._release(order)
        self._journal("order_closed", order_id=order.id, account=order.account, status=status,
                      client_id=order.client_id, reason=reason)
        self._emit(order, "orderCancelled" if status == "Cancelled" else "orderExpired")

    # ------------------------------------------------------------------ queries and cancels
    def _find_open(self, api_key: str, symbol: str, order_id: Any, client_id: Any) -> Order:
        self.market(symbol)
        if (order_id is None) == (client_id is None):
            raise SimError(400, "INVALID_CLIENT_REQUEST",
                           "Must specify exactly one of `orderId` or `clientId`")
        if client_id is not None:
            try:
                cid = int(client_id)
            except (TypeError, ValueError):
                raise parse_error("invalid value for `clientId`, expected u32") from None
            # Backpack does not document whether clientIds must be unique; the newest open one wins.
            matches = [o for o in self.open_by_symbol[symbol].values()
                       if o.account == api_key and o.client_id == cid]
            if matches:
                return max(matches, key=lambda o: o.created_us)
        else:
            o = self.open_by_symbol[symbol].get(str(order_id))
            if o is not None and o.account == api_key:
                return o
        raise SimError(404, "RESOURCE_NOT_FOUND", "Order not found")

    def get_open_order(self, api_key: str, symbol: str, order_id: Any = None,
                       client_id: Any = None) -> Order:
        with self.lock:
            return self._find_open(api_key, symbol, order_id, client_id)

    def cancel(self, api_key: str, body: Any) -> Order:
        with self.lock:
            if not isinstance(body, dict) or "symbol" not in body:
                raise parse_error("missing field `symbol`")
            try:
                order = self._find_open(api_key, body["symbol"], body.get("orderId"),
                                        body.get("clientId"))
            except SimError as e:
                if e.code == "RESOURCE_NOT_FOUND":
                    # Hummingbot's tests see an unknown order on cancel answered with 400.
                    raise SimError(400, e.code, e.message) from None
                raise
            self._close(order, "Cancelled")
            self._book_changed(self.markets[order.symbol])
            return order

    def cancel_all(self, api_key: str, body: Any) -> list[Order]:
        with self.lock:
            if not isinstance(body, dict) or "symbol" not in body:
                raise parse_error("missing field `symbol`")
            m = self.market(body["symbol"])
            kind = body.get("orderType")
            if kind not in (None, "RestingLimitOrder", "ConditionalOrder"):
                raise parse_error(f"unknown variant `{kind}` for `orderType`")
            if kind == "ConditionalOrder":
                return []
            victims = [o for o in self.open_by_symbol[m.spec.symbol].values() if o.account == api_key]
            for o in sorted(victims, key=lambda o: o.created_us):
                self._close(o, "Cancelled")
            self._book_changed(m)
            return victims

    def open_orders(self, api_key: str, symbol: str | None) -> list[Order]:
        with self.lock:
            if symbol is not None:
                self.market(symbol)
                books = [self.open_by_symbol[symbol]]
            else:
                books = list(self.open_by_symbol.values())
            out = [o for book in books for o in book.values() if o.account == api_key]
            return sorted(out, key=lambda o: o.created_us)

    def fill_history(self, api_key: str, *, symbol: str | None, order_id: str | None,
                     from_ms: int | None, to_ms: int | None) -> list[Fill]:
        with self.lock:
            out = []
            for f in self.fills:
                if f.account != api_key:
                    continue
                if symbol is not None and f.symbol != symbol:
                    continue
                if order_id is not None and f.order_id != order_id:
                    continue
                ms = f.ts_us // 1000
                if from_ms is not None and ms < from_ms:
                    continue
                if to_ms is not None and ms > to_ms:
                    continue
                out.append(f)
            return out

    def order_history(self, api_key: str, *, symbol: str | None, order_id: str | None) -> list[Order]:
        """Closed orders only: whether Backpack lists open ones here is undocumented, so a bot
        must not rely on it (it finds open orders through GET /api/v1/order)."""
        with self.lock:
            out = [o for o in self.orders.values()
                   if o.account == api_key and not o.is_open
                   and (symbol is None or o.symbol == symbol)
                   and (order_id is None or o.id == order_id)]
            return out

    # ------------------------------------------------------------------ price moves
    def set_price(self, symbol: str, price: Decimal, *, liquidity: Decimal | None = None,
                  volume: Decimal = ZERO) -> list[Fill]:
        """Move the market to ``price`` and fill every resting order the move trades through."""
        with self.lock:
            m = self.market(symbol)
            price = self._round_tick(m.spec, price)
            if price <= 0:
                raise SimError(400, "INVALID_PRICE", "Price must be positive")
            m.price = price
            now = self.clock_us()
            self._record_tick(m, now, price, volume)
            self._journal("price", symbol=symbol, price=s(price))
            book = self.open_by_symbol[symbol].values()
            bids = sorted((o for o in book if o.side == "Bid" and o.price is not None and o.price > price),
                          key=lambda o: (-o.price, o.created_us))
            asks = sorted((o for o in book if o.side == "Ask" and o.price is not None and o.price < price),
                          key=lambda o: (o.price, o.created_us))
            fills = []
            held = self.sink = HeldEvents(self.sink)
            try:
                for o in bids + asks:
                    qty = o.remaining
                    if liquidity is not None:
                        qty = min(qty, liquidity.quantize(m.spec.step_size, ROUND_DOWN))
                    if qty <= 0:
                        continue
                    fills.append(self._fill(m, o, qty, o.price, is_maker=True))
                self._book_changed(m)
            finally:
                self.sink = held.sink
                held.release()
            return fills

    def _record_tick(self, m: MarketState, ts_us: int, price: Decimal, volume: Decimal) -> None:
        if not self.history:
            return
        m.ticks_ts.append(ts_us)
        m.ticks.append((price, volume))
        # Keep a little over 24 h of prints, trimming in chunks to keep appends cheap.
        horizon = ts_us - 25 * 3600 * 1_000_000
        if len(m.ticks_ts) > 4096 and m.ticks_ts[0] < horizon:
            cut = bisect.bisect_left(m.ticks_ts, horizon)
            del m.ticks_ts[:cut]
            del m.ticks[:cut]

    def record_market_trade(self, symbol: str, quantity: Decimal) -> None:
        """A trade by somebody else at the current price (the random feed's market flow)."""
        with self.lock:
            m = self.market(symbol)
            now = self.clock_us()
            tid = m.next_trade_id
            m.next_trade_id += 1
            m.trades.append({"id": tid, "price": s(m.price), "quantity": s(quantity),
                             "quoteQuantity": s(m.price * quantity), "timestamp": now // 1000,
                             "isBuyerMaker": bool(tid % 2)})
            self.sink.public_event(f"trade.{symbol}", {
                "e": "trade", "E": now, "s": symbol, "p": s(m.price), "q": s(quantity),
                "b": _counterparty_id(tid), "a": _counterparty_id(tid + 1), "t": tid, "T": now,
                "m": bool(tid % 2)})

    def resting_extremes(self, symbol: str) -> tuple[Decimal | None, Decimal | None]:
        """(highest resting bid, lowest resting ask): a price move fills something only when it
        trades below the one or above the other."""
        with self.lock:
            book = self.open_by_symbol[symbol].values()
            bids = [o.price for o in book if o.side == "Bid" and o.price is not None]
            asks = [o.price for o in book if o.side == "Ask" and o.price is not None]
            return (max(bids) if bids else None, min(asks) if asks else None)

    # ------------------------------------------------------------------ market data
    def ticker(self, symbol: str) -> dict:
        with self.lock:
            m = self.market(symbol)
            now = self.clock_us()
            start = bisect.bisect_left(m.ticks_ts, now - 24 * 3600 * 1_000_000)
            window = m.ticks[start:] or [(m.price, ZERO)]
            first = window[0][0]
            high = max(p for p, _ in window)
            low = min(p for p, _ in window)
            vol = sum((v for _, v in window), ZERO)
            qvol = sum((p * v for p, v in window), ZERO)
            trades = sum(1 for _, v in window if v > 0)
            change = m.price - first
            pct = (change / first).quantize(D("0.000001")) if first else ZERO
            return {"symbol": symbol, "firstPrice": s(first), "lastPrice": s(m.price),
                    "priceChange": s(change), "priceChangePercent": s(pct), "high": s(high),
                    "low": s(low), "volume": s(vol), "quoteVolume": s(qvol), "trades": str(trades)}

    def ticker_event(self, symbol: str) -> dict:
        t = self.ticker(symbol)
        now = self.clock_us()
        return {"e": "ticker", "E": now, "s": symbol, "o": t["firstPrice"], "c": t["lastPrice"],
                "h": t["high"], "l": t["low"], "v": t["volume"], "V": t["quoteVolume"],
                "n": int(t["trades"])}

    def _book(self, m: MarketState) -> dict[str, dict[Decimal, Decimal]]:
        """Synthetic liquidity around the price plus every resting order."""
        tick = m.spec.tick_size
        qty = SYNTHETIC_QTY.get(m.spec.symbol, D("100"))
        asks: dict[Decimal, Decimal] = {}
        bids: dict[Decimal, Decimal] = {}
        for k in range(1, SYNTHETIC_LEVELS + 1):
            asks[m.price + k * tick] = qty
            if m.price - k * tick > 0:
                bids[m.price - k * tick] = qty
        for o in self.open_by_symbol[m.spec.symbol].values():
            side = bids if o.side == "Bid" else asks
            if o.price is not None:
                side[o.price] = side.get(o.price, ZERO) + o.remaining
        return {"a": asks, "b": bids}

    def depth(self, symbol: str, limit: int) -> dict:
        with self.lock:
            m = self.market(symbol)
            book = self._book(m)
            asks = sorted(book["a"].items())[:limit]
            bids = sorted(book["b"].items(), reverse=True)[:limit]
            return {"asks": [[s(p), s(q)] for p, q in asks],
                    "bids": [[s(p), s(q)] for p, q in sorted(bids)],
                    "lastUpdateId": str(m.depth_update_id), "timestamp": self.clock_us()}

    def _book_changed(self, m: MarketState) -> None:
        """Push bookTicker and an incremental depth update (absolute quantities, 0 = removed).

        Skipped while nobody listens, so that an order's own events leave sooner. That stays exact:
        the next update is diffed against the last book published, so it carries every level that
        changed meanwhile, with its absolute quantity, and the update ids stay consecutive."""
        sym = m.spec.symbol
        if not (self.sink.wants(f"depth.{sym}") or self.sink.wants(f"bookTicker.{sym}")):
            return
        book = self._book(m)
        now = self.clock_us()
        diff: dict[str, list[list[str | None]]] = {"a": [], "b": []}
        for side in ("a", "b"):
            old, new = m.last_book[side], book[side]
            for p in sorted(set(old) | set(new)):
                if old.get(p) != new.get(p):
                    diff[side].append([s(p), s(new.get(p, ZERO))])
        m.last_book = book
        if diff["a"] or diff["b"]:
            first = m.depth_update_id + 1
            m.depth_update_id += 1
            self.sink.public_event(f"depth.{m.spec.symbol}", {
                "e": "depth", "E": now, "s": m.spec.symbol, "a": diff["a"], "b": diff["b"],
                "U": first, "u": m.depth_update_id, "T": now})
        best_ask = min(book["a"]) if book["a"] else None
        best_bid = max(book["b"]) if book["b"] else None
        self.sink.public_event(f"bookTicker.{m.spec.symbol}", {
            "e": "bookTicker", "E": now, "s": m.spec.symbol,
            "a": s(best_ask), "A": s(book["a"].get(best_ask)) if best_ask else None,
            "b": s(best_bid), "B": s(book["b"].get(best_bid)) if best_bid else None,
            "u": m.depth_update_id, "T": now})

    def klines(self, symbol: str, interval_s: int, start_s: int, end_s: int | None) -> list[dict]:
        """Candles from the simulator's own price history, oldest first."""
        with self.lock:
            m = self.market(symbol)
            end_us = (end_s * 1_000_000) if end_s is not None else self.clock_us()
            i = bisect.bisect_left(m.ticks_ts, start_s * 1_000_000)
            j = bisect.bisect_right(m.ticks_ts, end_us)
            out: list[dict] = []
            cur: dict | None = None
            for ts, (price, vol) in zip(m.ticks_ts[i:j], m.ticks[i:j]):
                bucket = (ts // 1_000_000) // interval_s * interval_s
                if cur is None or cur["_b"] != bucket:
                    cur = {"_b": bucket, "o": price, "h": price, "l": price, "c": price,
                           "v": ZERO, "qv": ZERO, "n": 0}
                    out.append(cur)
                cur["h"] = max(cur["h"], price)
                cur["l"] = min(cur["l"], price)
                cur["c"] = price
                cur["v"] += vol
                cur["qv"] += vol * price
                cur["n"] += 1 if vol > 0 else 0
            return [kline_json(c["_b"], interval_s, c) for c in out]

    # ------------------------------------------------------------------ events
    def _emit(self, order: Order, event: str, fill: Fill | None = None) -> None:
        now = self.clock_us()
        data: dict[str, Any] = {
            "e": event, "E": now, "s": order.symbol, "i": order.id, "S": order.side,
            "o": order.order_type.upper(), "f": order.time_in_force, "q": s(order.quantity),
            "X": order.status, "t": fill.trade_id if fill else None, "z": s(order.executed),
            "Z": s(order.executed_quote), "V": order.stp, "T": now, "O": "USER", "r": False,
            "y": order.post_only,
        }
        if order.client_id is not None:
            data["c"] = order.client_id
        if order.price is not None:
            data["p"] = s(order.price)
            data["Q"] = s(order.price * order.quantity)
        if fill is not None:
            data.update({"l": s(fill.quantity), "L": s(fill.price), "m": fill.is_maker,
                         "n": s(fill.fee), "N": fill.fee_symbol})
        if event == "orderExpired":
            data["R"] = order.expiry_reason
        self.sink.order_event(order.account, order.symbol, data)

    # ------------------------------------------------------------------ state dump
    def state(self, journal_since_us: int = 0) -> dict:
        with self.lock:
            return {
                "time_us": self.clock_us(),
                "markets": {sym: {"price": s(m.price), "tickSize": s(m.spec.tick_size),
                                  "stepSize": s(m.spec.step_size), "base": m.spec.base,
                                  "quote": m.spec.quote}
                            for sym, m in self.markets.items()},
                "fees": {"maker": s(self.maker_fee), "taker": s(self.taker_fee)},
                "accounts": {k: {a: {"available": plain(b.available), "locked": plain(b.locked)}
                                 for a, b in acct.balances.items()}
                             for k, acct in self.accounts.items()},
                "orders": [order_state(o) for o in self.orders.values()],
                "fills": [fill_state(f) for f in self.fills],
                "requests": self.request_count,
                "journal": [e for e in self.journal if e["t"] >= journal_since_us],
            }


def kline_time(t: int) -> str:
    """A candle's start or end as Backpack writes it (UTC; sorts as text in time order)."""
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def kline_json(bucket_s: int, interval_s: int, c: dict) -> dict:
    fmt = kline_time
    return {"start": fmt(bucket_s), "end": fmt(bucket_s + interval_s), "open": s(c["o"]),
            "high": s(c["h"]), "low": s(c["l"]), "close": s(c["c"]), "volume": s(c["v"]),
            "quoteVolume": s(c["qv"]), "trades": str(c["n"])}


def order_json(o: Order) -> dict:
    """An order as /api/v1/order(s) return it: optional fields present as null, createdAt in ms."""
    out: dict[str, Any] = {
        "orderType": o.order_type, "id": o.id, "clientId": o.client_id, "symbol": o.symbol,
        "side": o.side, "quantity": s(o.quantity), "executedQuantity": s(o.executed),
        "executedQuoteQuantity": s(o.executed_quote), "timeInForce": o.time_in_force,
        "selfTradePrevention": o.stp, "status": o.status, "createdAt": o.created_us // 1000,
        "reduceOnly": None, "relatedOrderId": None, "strategyId": None, "triggerBy": None,
        "triggerPrice": None, "triggerQuantity": None, "triggeredAt": None,
        "stopLossTriggerPrice": None, "stopLossLimitPrice": None, "stopLossTriggerBy": None,
        "takeProfitTriggerPrice": None, "takeProfitLimitPrice": None, "takeProfitTriggerBy": None,
        "systemOrderType": None,
    }
    if o.order_type == "Limit":
        out["price"] = s(o.price)
        out["postOnly"] = o.post_only
    else:
        out["quoteQuantity"] = s(o.quote_quantity)
        out["slippageTolerance"] = None
        out["slippageToleranceType"] = None
    return out


def order_history_json(o: Order) -> dict:
    """The history shape (spec schema ``Order``): createdAt is a naive datetime string."""
    return {
        "id": o.id, "createdAt": naive_utc(o.created_us), "executedQuantity": s(o.executed),
        "executedQuoteQuantity": s(o.executed_quote), "expiryReason": o.expiry_reason,
        "orderType": o.order_type, "postOnly": o.post_only, "price": s(o.price),
        "quantity": s(o.quantity), "quoteQuantity": s(o.quote_quantity),
        "selfTradePrevention": o.stp, "status": o.status, "side": o.side, "symbol": o.symbol,
        "timeInForce": o.time_in_force, "triggerBy": None, "triggerPrice": None,
        "triggerQuantity": None, "clientId": o.client_id, "systemOrderType": None,
        "strategyId": None, "slippageTolerance": None, "slippageToleranceType": None,
        "stopLossTriggerPrice": None, "stopLossLimitPrice": None, "stopLossTriggerBy": None,
        "takeProfitTriggerPrice": None, "takeProfitLimitPrice": None, "takeProfitTriggerBy": None,
    }


def fill_json(f: Fill) -> dict:
    """A fill as /wapi/v1/history/fills returns it: clientId a string, timestamp naive datetime."""
    return {"clientId": None if f.client_id is None else str(f.client_id), "fee": s(f.fee),
            "feeSymbol": f.fee_symbol, "isMaker": f.is_maker, "orderId": f.order_id,
            "price": s(f.price), "quantity": s(f.quantity), "side": f.side, "symbol": f.symbol,
            "systemOrderType": None, "timestamp": naive_utc(f.ts_us), "tradeId": f.trade_id}


def order_state(o: Order) -> dict:
    return {"id": o.id, "account": o.account, "symbol": o.symbol, "side": o.side,
            "orderType": o.order_type, "price": s(o.price), "quantity": s(o.quantity),
            "executedQuantity": s(o.executed), "executedQuoteQuantity": s(o.executed_quote),
            "status": o.status, "clientId": o.client_id, "postOnly": o.post_only,
            "timeInForce": o.time_in_force, "createdAtUs": o.created_us, "closedAtUs": o.closed_us,
            "expiryReason": o.expiry_reason}


def fill_state(f: Fill) -> dict:
    return {"tradeId": f.trade_id, "orderId": f.order_id, "clientId": f.client_id,
            "account": f.account, "symbol": f.symbol, "side": f.side, "price": s(f.price),
            "quantity": s(f.quantity), "fee": s(f.fee), "feeSymbol": f.fee_symbol,
            "isMaker": f.is_maker, "timestampUs": f.ts_us}
