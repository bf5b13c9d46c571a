"""The simulated exchange: accounts, order entry, matching, fills, cancels and an event journal.

Its records live in ``records.py``, Backpack's wire formats in ``wire.py`` and its market data (ticker,
depth, klines) in ``market_data.py``, a mixin of ``Exchange``.

No sockets here. The REST and WebSocket servers call into one ``Exchange`` under its lock; every
change of an order produces the order-update event Backpack would push (docs/exchange.md §9.6), which
is handed to an ``EventSink`` (the WebSocket hub) while the lock is held, so events leave in the
order they happened.

Matching model (documented in the README):
- The market has one price ``m`` (the last trade). The synthetic book around it has its best bid at
  ``m - tick`` and its best ask at ``m + tick`` with unlimited quantity.
- A limit Bid crosses on arrival when its price is above ``m`` (it then takes at ``m + tick``, taker
  fee); an Ask crosses when its price is below ``m`` (takes at ``m - tick``). Post-only orders that would
  cross are rejected with INVALID_ORDER. With a taker depth (``/_sim/depth``) the book holds only that
  much at each tick: a crossing order walks it up to its limit and moves ``m`` to its last fill; an IOC
  or market order's remainder expires.
- A resting order fills at its own price (maker fee) when the price trades through it: a Bid at ``p``
  when ``m < p``, an Ask when ``m > p``. A price move fills every crossed order completely, or at most
  ``liquidity`` of each when the move says so (a partial fill). Resting orders never match each other.
- Fees are charged in the asset received (base on a buy, quote on a sell), exactly: amount x rate with
  no rounding and no padding zeros (Backpack charges ``"0.0047325"`` USDC on 4.7325 USDC at 0.1 %,
  tests/fixtures/backpack_captures.json "Fill"), so balances are exact too.
"""
from __future__ import annotations

import bisect
import random
import threading
import time
from collections import deque
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any, Callable, Iterable

from .account_views import AccountViews
from .market_data import MarketData
from .markets import MarketSpec
from .records import (ZERO, Account, Balance, EventSink, Fill, HeldEvents, MarketState, NullSink, Order,
                      OrderRequest, SimError, _counterparty_id, parse_error, s)
from .order_rules import crosses as crosses_market, touch, validate
from .settlement import fill_spot, lock_spot
from .wire import order_update, parse_client_id, parse_order_payload


# The fills the system makes on an account's behalf, by the origin of their order.
SYSTEM_FILLS = {"LIQUIDATION_AUTOCLOSE": "LiquidatePositionOnBook"}


class Exchange(MarketData, AccountViews):
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
        self.reject_hook: Callable[[OrderRequest], SimError | None] = lambda payload: None
        self._rng = random.Random(seed)
        # Order ids are digit strings that grow but are not contiguous (docs/exchange.md §1).
        self._next_order_id = 4_227_700_000 + self._rng.randrange(100_000)
        self.request_count = 0
        self.version = 0
        # Called under the lock after a change that filled an order, before its events leave (paper mode on
        # live prices saves the account here, so the bot can never know a fill the saved account lacks).
        self.durable: Callable[[], None] | None = None
        self.perp: Any = NoPerps()     # the perp engine (perp_engine.py), set by the simulator
        now = self.clock_us()
        for m in self.markets.values():
            self._record_tick(m, now, m.price, ZERO)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _round_tick(spec: MarketSpec, price: Decimal) -> Decimal:
        steps = (price / spec.tick_size).to_integral_value(ROUND_HALF_UP)
        return (steps * spec.tick_size).quantize(spec.tick_size)

    def _journal(self, kind: str, **fields: Any) -> None:
        self.version += 1  # something changed (paper mode saves the exchange when it has)
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

    def raise_ids(self, base: int) -> None:
        """Hand out trade and order ids above ``base`` from now on."""
        with self.lock:
            for m in self.markets.values():
                m.next_trade_id = max(m.next_trade_id, base + 1)
            self._next_order_id = max(self._next_order_id, base)

    def set_borrowing(self, api_key: str, limit: Decimal) -> None:
        """Turn margin borrowing on for an account (``limit`` > 0, in each asset's units) or off (0)."""
        with self.lock:
            self.account(api_key).borrow_limit = limit
            self._journal("borrowing_set", account=api_key, limit=s(limit))

    def set_balance(self, api_key: str, asset: str, available: Decimal) -> None:
        with self.lock:
            self._bal(self.account(api_key), asset).available = available
            self._journal("balance_set", account=api_key, asset=asset, available=s(available))

    def count_request(self, method: str, path: str, account: str | None, status: int,
                      received_us: int | None = None) -> None:
        """Journal a request as its answer leaves (``t``), with when it arrived (``received``)."""
        with self.lock:
            self.request_count += 1
            self._journal("request", method=method, path=path, account=account, status=status,
                          received=received_us)

    # ------------------------------------------------------------------ order entry
    def place(self, api_key: str, payload: Any) -> Order:
        """One order as its JSON payload arrives over the wire (``submit`` does the rest)."""
        return self.submit(api_key, parse_order_payload(payload))

    def submit(self, api_key: str, p: OrderRequest) -> Order:
        """Validate, lock funds, accept and match one order; raise SimError as Backpack would."""
        return self._durably(lambda: self._submit(api_key, p))

    def _durably(self, change: Callable[[], Any]) -> Any:
        """Run ``change``; with a ``durable`` hook, hold its events until the hook has run, so nobody
        learns of an order, a fill or a cancel before it is saved."""
        if self.durable is None:
            return change()
        with self.lock:
            held = self.sink = HeldEvents(self.sink)
            try:
                return change()
            finally:
                self.sink = held.sink
                self.durable()
                held.release()

    def _submit(self, api_key: str, p: OrderRequest) -> Order:
        with self.lock:
            forced = self.reject_hook(p)
            if forced is not None:
                raise forced
            m = self.market(p.symbol)
            validate(m, p)
            spec = m.spec
            acct = self.account(api_key)
            crosses = p.type == "Market" or crosses_market(m, p.side, p.price)
            if p.type == "Limit" and p.post_only and crosses:
                raise SimError(400, "INVALID_ORDER", "Order would immediately match and take.")
            qty = p.qty
            if qty is None:  # market order by quote quantity
                qty = (p.qq / touch(m, p.side)).quantize(spec.step_size, ROUND_DOWN)
                if qty < spec.min_quantity:
                    raise SimError(400, "INVALID_QUANTITY", "Quantity is below the minimum allowed value")
            expire = None
            if spec.perp is None:
                need = lock_spot(self, acct, m, p, qty)
            else:    # a perp locks no balance: margin gates it (perp_engine.py)
                need, (qty, expire) = ZERO, self.perp.check_order(acct, m, p, qty)
            now = self.clock_us()
            quote_qty = p.qq
            if p.type == "Market" and quote_qty is None:
                # A market order by quantity reports the quote it may spend: quantity x the touch,
                # rounded up to the tick. Undocumented; it is what both captures show ("3.82" for 0.001 at
                # 3814.28, "4.30" for 0.0010 at 4299.16; tests/fixtures/backpack_captures.json "Order: POST ... market").
                quote_qty = (qty * touch(m, p.side) / spec.tick_size).to_integral_value(ROUND_UP) \
                    * spec.tick_size
            self._next_order_id += 1 + self._rng.randrange(7)
            order = Order(id=str(self._next_order_id), account=api_key, symbol=spec.symbol,
                          side=p.side, order_type=p.type, price=p.price, quantity=qty,
                          quote_quantity=quote_qty, time_in_force=p.tif, post_only=p.post_only,
                          client_id=p.client_id, stp=p.stp, created_us=now, locked=need,
                          reduce_only=p.reduce_only)
            self.orders[order.id] = order
            self.open_by_symbol[spec.symbol][order.id] = order
            self._journal("order_new", order_id=order.id, account=api_key, symbol=spec.symbol,
                          side=order.side, price=s(order.price), quantity=s(qty),
                          client_id=order.client_id)
            self._emit(order, "orderAccepted")
            if expire is not None:    # a reduce-only order that cannot reduce, accepted then expired
                self._close(order, "Expired", expire)
                return order
            if crosses:
                self._take(m, order)
            if order.status in ("New", "PartiallyFilled") and (
                    p.type == "Market" or order.time_in_force in ("IOC", "FOK")):
                reason = "FillOrKill" if order.time_in_force == "FOK" else "ImmediateOrCancel"
                self._close(order, "Expired", reason)
            self._book_changed(m)
            return order

    def _take(self, m: MarketState, order: Order) -> None:
        """A crossing order takes liquidity: completely at the touch (unlimited), or, with a taker depth,
        ``depth`` at each tick from the touch outward up to its limit price, moving the market's price
        to its last fill (a fill-or-kill order fills only if the book within its limit holds it all)."""
        depth = m.taker_depth
        if depth is None:
            self._fill(m, order, order.remaining, touch(m, order.side), is_maker=False)
            return
        tick = m.spec.tick_size
        step = tick if order.side == "Bid" else -tick
        limit = order.price if order.order_type == "Limit" else None

        def within(px: Decimal) -> bool:
            return px > 0 and (limit is None or (px <= limit if order.side == "Bid" else px >= limit))

        if order.time_in_force == "FOK":
            px, available = touch(m, order.side), ZERO
            while within(px) and available < order.remaining:
                available, px = available + depth, px + step
            if available < order.remaining:
                return
        px, last = touch(m, order.side), None
        for _ in range(100_000):
            if order.remaining <= 0 or not within(px):
                break
            qty = min(order.remaining, depth)
            self._fill(m, order, qty, px, is_maker=False)
            last, px = px, px + step
        if last is not None:
            m.price = last
            self._record_tick(m, self.clock_us(), last, ZERO)

    def set_taker_depth(self, symbol: str, quantity: Decimal | None) -> None:
        with self.lock:
            self.market(symbol).taker_depth = quantity

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
    def _fill(self, m: MarketState, order: Order, qty: Decimal, price: Decimal, *,
              is_maker: bool) -> Fill:
        spec = m.spec
        acct = self.accounts[order.account]
        rate = self.maker_fee if is_maker else self.taker_fee
        quote_amt = price * qty
        if spec.perp is None:
            fee_asset, fee = fill_spot(self, acct, m, order, qty, price, rate)
        else:
            fee_asset, fee = self.perp.fee(acct, m, qty, price, is_maker)
        now = self.clock_us()
        order.executed += qty
        order.executed_quote += quote_amt
        trade_id = m.next_trade_id
        m.next_trade_id += 1
        fill = Fill(trade_id, order.id, order.client_id, order.account, spec.symbol, order.side, price,
                    qty, fee, fee_asset, is_maker, now, SYSTEM_FILLS.get(order.origin))
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
        if spec.perp is not None:
            self.perp.on_fill(acct, m, order, fill)
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
    def _find_open(self, api_key: str, symbol: str, order_id: Any, client_id: int | None) -> Order:
        self.market(symbol)
        if (order_id is None) == (client_id is None):
            raise SimError(400, "INVALID_CLIENT_REQUEST",
                           "Must specify exactly one of `orderId` or `clientId`")
        if client_id is not None:
            cid = client_id
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

    def cancel(self, api_key: str, body: Any) -> Order:
        return self._durably(lambda: self._cancel(api_key, body))

    def _cancel(self, api_key: str, body: Any) -> Order:
        with self.lock:
            if not isinstance(body, dict) or "symbol" not in body:
                raise parse_error("missing field `symbol`")
            # A JSON clientId is a u32 number here as on POST: a string is refused on both.
            try:
                order = self._find_open(api_key, body["symbol"], body.get("orderId"),
                                        parse_client_id(body.get("clientId")))
            except SimError as e:
                if e.code == "RESOURCE_NOT_FOUND":
                    # Hummingbot's tests see an unknown order on cancel answered with 400.
                    raise SimError(400, e.code, e.message) from None
                raise
            self._close(order, "Cancelled")
            self._book_changed(self.markets[order.symbol])
            return order

    def cancel_all(self, api_key: str, body: Any) -> list[Order]:
        return self._durably(lambda: self._cancel_all(api_key, body))

    def _cancel_all(self, api_key: str, body: Any) -> list[Order]:
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

    # ------------------------------------------------------------------ price moves
    def set_price(self, symbol: str, price: Decimal, *, liquidity: Decimal | None = None,
                  volume: Decimal = ZERO, total: Decimal | None = None, cause: int | None = None) -> list[Fill]:
        """Move the market to ``price`` and fill every resting order the move trades through: each
        completely, or at most ``liquidity`` of each, or at most ``total`` of them all together (a real
        trade of that quantity, ``cause`` its id, fills no more than it traded), best price first."""
        with self.lock:
            m = self.market(symbol)
            price = self._round_tick(m.spec, price)
            if price <= 0:
                raise SimError(400, "INVALID_PRICE", "Price must be positive")
            m.price = price
            now = self.clock_us()
            self._record_tick(m, now, price, volume)
            self._journal("price", symbol=symbol, price=s(price), cause=cause,
                          quantity=None if total is None else s(total))
            book = self.open_by_symbol[symbol].values()
            bids = sorted((o for o in book if o.side == "Bid" and o.price is not None and o.price > price),
                          key=lambda o: (-o.price, o.created_us))
            asks = sorted((o for o in book if o.side == "Ask" and o.price is not None and o.price < price),
                          key=lambda o: (o.price, o.created_us))
            fills = []
            held = self.sink = HeldEvents(self.sink)
            try:
                left = None if total is None else total.quantize(m.spec.step_size, ROUND_DOWN)
                for o in bids + asks:
                    qty = o.remaining
                    if liquidity is not None:
                        qty = min(qty, liquidity.quantize(m.spec.step_size, ROUND_DOWN))
                    if left is not None:
                        qty = min(qty, left)
                    if qty <= 0:
                        continue
                    fills.append(self._fill(m, o, qty, o.price, is_maker=True))
                    if left is not None:
                        left -= qty
                self._book_changed(m)
                if m.spec.perp is not None:
                    self.perp.after_move(symbol)   # a new mark: liquidations
            finally:
                self.sink = held.sink
                if fills and self.durable is not None:
                    self.durable()
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

    # ------------------------------------------------------------------ events
    def _emit(self, order: Order, event: str, fill: Fill | None = None) -> None:
        self.sink.order_event(order.account, order.symbol, order_update(order, event, fill, self.clock_us()))


class NoPerps:
    """An exchange without a perp engine (the backtester's): perp markets are refused."""

    def check_order(self, *args: Any) -> Any:
        raise SimError(400, "INVALID_ORDER", "perpetual futures are not simulated here")

    def after_move(self, symbol: str) -> None:
        pass

    def margin(self, acct: Any, extra: Any = None) -> None:
        return None
