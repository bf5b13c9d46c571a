"""Perpetual futures in the matching engine: what a perp order and its fills do to an account (one USDC
balance, one net position per symbol), continuous PnL realization, hourly funding, and liquidation
(docs/exchange.md §12, docs/simulator.md "Perpetual futures"). The engine (engine.py) calls it under its
lock; the arithmetic is in positions.py.

- **Orders.** No balance is locked. An order that increases risk is accepted only while the account's
  ``netEquityAvailable`` stays at or above zero with it counted (400 ``INSUFFICIENT_MARGIN`` otherwise). A
  reduce-only order must reduce the position (else 400 ``INVALID_ORDER``, or, with the switch
  ``reduce_only_reject`` off, accepted then expired ``ReduceOnlyNotReduced``), is capped at the position's
  size, and never flips it; resting reduce-only orders shrink (``orderModified``), newest first, when the
  position becomes smaller than they would close. A liquidating account's orders are refused
  (``ACCOUNT_LIQUIDATING``).
- **Fills.** The fee is charged in USDC (price × quantity × rate). The position grows at a new average
  entry, or shrinks and realizes PnL into USDC; a fill through zero closes the position and opens a new one
  (a new position id).
- **Funding**, at each interval's end: ``−rate × netQuantity × mark`` into USDC (6 decimals), a funding row,
  a ``FundingPayment`` settlement, ``cumulativeFundingPayment``.
- **Liquidation** when net equity ≤ Σ MMF × position notional: every open order of the account is
  cancelled, then the largest position is closed on the book by ``liquidation_step`` of its size (a market
  order at the touch with origin ``LIQUIDATION_AUTOCLOSE``, fills ``LiquidatePositionOnBook``), one step now
  and one at each later move of the price, until the account is healthy or flat; meanwhile the account's
  orders are refused (``ACCOUNT_LIQUIDATING``). No liquidation fee (its size is not published); no backstop
  liquidity and no ADL (not simulated).
"""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from .perps import naive_utc as naive_hour
from .positions import ZERO, Margin, Position, exposure, history_row, margin, plain, position_event, usdc
from .records import Account, Fill, MarketState, Order, OrderRequest, SimError, naive_utc, s
from .settlement import fee_of

if TYPE_CHECKING:
    from .engine import Exchange
    from .perp_routes import PerpMarkets

LIQUIDATION = "LIQUIDATION_AUTOCLOSE"
COLLATERAL_WEIGHT = Decimal("0.9")    # the haircut of every asset but the quote (the collateral view's)


class PerpEngine:
    def __init__(self, ex: "Exchange", perps: "PerpMarkets", *, reduce_only_reject: bool = True,
                 liquidation_step: Decimal = Decimal(1)) -> None:
        self.ex, self.perps = ex, perps
        self.reduce_only_reject = reduce_only_reject
        self.liquidation_step = liquidation_step
        self._next_position_id = 5_400_000_000
        self._busy = False     # a liquidation's own fills move no further liquidation

    # ------------------------------------------------------------------ prices
    def mark(self, symbol: str) -> Decimal:
        m = self.ex.markets[symbol]
        return self.perps.markets[symbol].mark_at(m.price, self.ex.clock_us()).quantize(m.spec.tick_size)

    def open_orders(self, acct: Account, spot_too: bool = False) -> list[Order]:
        symbols = self.ex.open_by_symbol if spot_too else {s: self.ex.open_by_symbol[s] for s in self.perps.markets}
        return [o for book in symbols.values() for o in book.values() if o.account == acct.api_key]

    def max_quantity(self, acct: Account, symbol: str, side: str, reduce_only: bool) -> Decimal:
        """``/account/limits/order`` on a perp: the most an order may be for, at the market's step. A
        reduce-only order: the position it can close. Otherwise what closes the position plus what the
        available margin carries beyond it (found by halving the interval)."""
        spec = self.ex.markets[symbol].spec
        pos = acct.positions.get(symbol)
        net = pos.net if pos is not None else ZERO
        closes = abs(net) if net and (net > 0) == (side == "Ask") else ZERO
        if reduce_only:
            return closes

        def fits(q: Decimal) -> bool:
            before = self.exposure_qty(acct, symbol)
            return (self.exposure_qty(acct, symbol, (side, q, False)) <= before
                    or self.margin(acct, (symbol, side, q, False)).available >= 0)
        lo, hi = ZERO, closes + max(ZERO, self.margin(acct).available) / (self.mark(symbol) * Decimal("0.001")) + 1
        for _ in range(60):
            mid = ((lo + hi) / 2).quantize(spec.step_size, ROUND_DOWN)
            if mid <= lo:
                break
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo

    def exposure_qty(self, acct: Account, symbol: str, extra: tuple[str, Decimal, bool] | None = None) -> Decimal:
        pos = acct.positions.get(symbol)
        orders = [(o.side, o.remaining, bool(o.reduce_only)) for o in self.ex.open_by_symbol[symbol].values()
                  if o.account == acct.api_key]
        return exposure(pos.net if pos is not None else ZERO, orders + ([extra] if extra else []))

    def margin(self, acct: Account, extra: tuple[str, str, Decimal, bool] | None = None) -> Margin:
        """The account's margin; ``extra``: an order not yet on the book (symbol, side, quantity, reduce-only)."""
        symbols = {sym for sym, p in acct.positions.items() if p.net} | {o.symbol for o in self.open_orders(acct)}
        if extra is not None:
            symbols.add(extra[0])
        rows = []
        for sym in sorted(symbols):
            more = extra[1:] if extra is not None and extra[0] == sym else None
            rows.append((sym, self.perps.markets[sym].params, self.mark(sym), acct.positions.get(sym),
                         self.exposure_qty(acct, sym, more)))
        collateral = spot_locked = ZERO
        quotes = {m.spec.quote for m in self.ex.markets.values()}
        for asset, b in acct.balances.items():
            price = self.ex._mark_price(asset)
            weight = Decimal(1) if asset in quotes else COLLATERAL_WEIGHT
            collateral += (b.available + b.locked) * price * weight
            spot_locked += b.locked * price
        return margin(collateral, spot_locked, rows, acct.leverage_limit)

    # ------------------------------------------------------------------ orders
    def check_order(self, acct: Account, m: MarketState, p: OrderRequest, qty: Decimal) -> tuple[Decimal, str | None]:
        """May this order enter? Returns its quantity (a reduce-only order capped at the position) and an
        expiry reason when it is to be accepted and expired at once."""
        if acct.liquidating:
            raise SimError(400, "ACCOUNT_LIQUIDATING", "Account is liquidating")
        symbol = m.spec.symbol
        pos = acct.positions.get(symbol)
        net = pos.net if pos is not None else ZERO
        if p.reduce_only:
            if not net or (net > 0) != (p.side == "Ask"):
                if self.reduce_only_reject:
                    raise SimError(400, "INVALID_ORDER", "Reduce only order not reduced")
                return qty, "ReduceOnlyNotReduced"
            return min(qty, abs(net)), None
        before = self.exposure_qty(acct, symbol)
        after = self.exposure_qty(acct, symbol, (p.side, qty, False))
        if after > before and self.margin(acct, (symbol, p.side, qty, False)).available < 0:
            raise SimError(400, "INSUFFICIENT_MARGIN", "Insufficient margin")
        return qty, None

    def fee(self, acct: Account, m: MarketState, qty: Decimal, price: Decimal, is_maker: bool) -> tuple[str, Decimal]:
        """A perp fill's fee, in USDC, out of the USDC balance."""
        rate = self.ex.maker_fee if is_maker else self.ex.taker_fee
        fee = fee_of(price * qty, rate)
        self.ex._bal(acct, "USDC").available -= fee
        if fee:
            self._settle(acct, "TradingFees", -fee, None)
        return "USDC", fee

    # ------------------------------------------------------------------ fills
    def on_fill(self, acct: Account, m: MarketState, order: Order, fill: Fill) -> None:
        symbol = m.spec.symbol
        signed = fill.quantity if fill.side == "Bid" else -fill.quantity
        pos = acct.positions.get(symbol)
        if pos is not None and pos.net and (pos.net > 0) != (signed > 0) and abs(signed) > abs(pos.net):
            closing = -pos.net            # through zero: close, then open the rest anew
            self._apply(acct, symbol, closing, fill, fee_share=fill.fee * abs(closing) / fill.quantity)
            self._apply(acct, symbol, signed - closing, fill, fee_share=fill.fee - fill.fee * abs(closing) / fill.quantity)
        else:
            self._apply(acct, symbol, signed, fill, fee_share=fill.fee)
        self._shrink_reduce_only(acct, symbol)

    def _apply(self, acct: Account, symbol: str, signed: Decimal, fill: Fill, fee_share: Decimal) -> None:
        pos = acct.positions.get(symbol)
        opened = pos is None or not pos.net
        if opened:
            self._next_position_id += 1 + self.ex._rng.randrange(5)
            pos = acct.positions[symbol] = Position(symbol, self._next_position_id, fill.ts_us)
        assert pos is not None
        realized = pos.apply_fill(signed, fill.price)
        pos.fees += fee_share
        if fill.system_type is not None:
            pos.liquidated = True
        if realized:
            self.ex._bal(acct, "USDC").available += realized
            self._settle(acct, "RealizePnl", realized, pos.position_id)
        event = "positionOpened" if opened else "positionClosed" if not pos.net else "positionAdjusted"
        if not pos.net:
            pos.closed_us, pos.closing_price = fill.ts_us, fill.price
            acct.closed_positions.append(pos)
        self._tell(acct, pos, event)
        if not pos.net:
            del acct.positions[symbol]
        self.ex._journal("position", account=acct.api_key, symbol=symbol, event=event, net=s(pos.net),
                         entry=s(pos.entry), realized=s(realized))

    def _shrink_reduce_only(self, acct: Account, symbol: str) -> None:
        """Resting reduce-only orders never close more than the position: the newest shrink first."""
        pos = acct.positions.get(symbol)
        room = abs(pos.net) if pos is not None else ZERO
        closing_side = "Ask" if pos is not None and pos.net > 0 else "Bid"
        ro = sorted((o for o in self.ex.open_by_symbol[symbol].values()
                     if o.account == acct.api_key and o.reduce_only), key=lambda o: o.created_us)
        for o in ro:
            if o.side != closing_side or room <= 0:
                self.ex._close(o, "Expired", "ReduceOnlyNotReduced")
                continue
            if o.remaining > room:
                o.quantity = o.executed + room
                self.ex._emit(o, "orderModified")
            room -= o.remaining

    # ------------------------------------------------------------------ realization and funding
    def realize(self) -> None:
        """Continuous realization: every position's PnL since its last settlement into USDC."""
        for acct in list(self.ex.accounts.values()):
            for pos in list(acct.positions.values()):
                amount = pos.realize(self.mark(pos.symbol))
                if amount:
                    self.ex._bal(acct, "USDC").available += amount
                    self._settle(acct, "RealizePnl", amount, pos.position_id)

    def fund(self, symbol: str, end_ms: int, rate: Decimal) -> None:
        """An interval ended: positive rates make longs pay shorts, at the mark."""
        mark = self.mark(symbol)
        for acct in list(self.ex.accounts.values()):
            pos = acct.positions.get(symbol)
            if pos is None or not pos.net:
                continue
            payment = usdc(-rate * pos.net * mark)
            self.ex._bal(acct, "USDC").available += payment
            pos.funding += payment
            acct.funding_rows.append({"fundingRate": f"{rate:f}", "intervalEndTimestamp": naive_hour(end_ms),
                                      "quantity": plain(payment), "subaccountId": 0, "symbol": symbol,
                                      "userId": _user_id(acct)})
            self._settle(acct, "FundingPayment", payment, pos.position_id)
            self._tell(acct, pos, "positionAdjusted")
            self.ex._journal("funding", account=acct.api_key, symbol=symbol, rate=s(rate), quantity=s(payment))
        self.after_move(symbol)

    # ------------------------------------------------------------------ liquidation
    def after_move(self, symbol: str) -> None:
        """The mark may have moved: an account whose equity fell to its maintenance margin starts liquidating
        (its orders cancelled, a first step closed); one liquidating already takes its next step."""
        if self._busy:
            return
        self._busy = True
        try:
            for acct in list(self.ex.accounts.values()):
                if acct.liquidating:
                    self._liquidation_step(acct)
                elif acct.positions:
                    mg = self.margin(acct)
                    if mg.net_equity <= mg.mmf_notional:
                        self.liquidate(acct)
        finally:
            self._busy = False

    def liquidate(self, acct: Account) -> None:
        acct.liquidating = True
        self.ex._journal("liquidation", account=acct.api_key, state="started")
        for o in sorted(self.open_orders(acct, spot_too=True), key=lambda o: o.created_us):
            o.origin = LIQUIDATION
            self.ex._close(o, "Cancelled")
        self._liquidation_step(acct)

    def _liquidation_step(self, acct: Account) -> None:
        """One step: the largest position closed by ``liquidation_step`` of its size on the book; the
        liquidation ends when the account is healthy again or flat. Until then its orders are refused."""
        mg = self.margin(acct)
        live = [p for p in acct.positions.values() if p.net]
        if live and mg.net_equity <= mg.mmf_notional:
            self._close_step(acct, max(live, key=lambda p: abs(p.net) * self.mark(p.symbol)))
            mg = self.margin(acct)
            live = [p for p in acct.positions.values() if p.net]
        if not live or mg.net_equity > mg.mmf_notional:
            acct.liquidating = False
            self.ex._journal("liquidation", account=acct.api_key, state="ended")

    def _close_step(self, acct: Account, pos: Position) -> None:
        m = self.ex.markets[pos.symbol]
        spec = m.spec
        qty = (abs(pos.net) * self.liquidation_step).quantize(spec.step_size, ROUND_DOWN)
        if qty < spec.min_quantity or abs(pos.net) - qty < spec.min_quantity:
            qty = abs(pos.net)
        self.ex._next_order_id += 1
        order = Order(id=str(self.ex._next_order_id), account=acct.api_key, symbol=spec.symbol,
                      side="Ask" if pos.net > 0 else "Bid", order_type="Market", price=None, quantity=qty,
                      quote_quantity=None, time_in_force="IOC", post_only=False, client_id=None,
                      stp="RejectTaker", created_us=self.ex.clock_us(), reduce_only=True, origin=LIQUIDATION)
        self.ex.orders[order.id] = order
        self.ex._emit(order, "orderAccepted")
        self.ex._take(m, order)
        if order.is_open:
            self.ex._close(order, "Expired", "ImmediateOrCancel")

    # ------------------------------------------------------------------ telling
    def _tell(self, acct: Account, pos: Position, event: str | None) -> None:
        sym = pos.symbol
        data = position_event(pos, self.mark(sym), self.perps.markets[sym].params, self.exposure_qty(acct, sym),
                              acct.leverage_limit, event, self.ex.clock_us())
        self.ex.sink.position_event(acct.api_key, sym, data)

    def snapshot(self, api_key: str, symbol: str | None = None) -> list[dict]:
        """The subscription snapshot of ``account.positionUpdate``: one message per open position, no ``e``."""
        with self.ex.lock:
            acct = self.ex.accounts.get(api_key)
            if acct is None:
                return []
            return [position_event(p, self.mark(p.symbol), self.perps.markets[p.symbol].params,
                                   self.exposure_qty(acct, p.symbol), acct.leverage_limit, None, self.ex.clock_us())
                    for p in acct.positions.values() if p.net and (symbol is None or p.symbol == symbol)]

    def history(self, acct: Account) -> list[dict]:
        """Every position of the account, open and closed, as ``/wapi/v1/history/position`` rows."""
        out = []
        for p in [*acct.closed_positions, *acct.positions.values()]:
            sym = p.symbol
            out.append(history_row(p, self.mark(sym), self.perps.markets[sym].params,
                                   self.exposure_qty(acct, sym) if p.closed_us is None else ZERO,
                                   acct.leverage_limit, lambda us: naive_utc(us)))
        return out

    def _settle(self, acct: Account, source: str, quantity: Decimal, position_id: int | None) -> None:
        acct.settlements.append({"engineSequence": self.ex.version, "positionId": position_id and str(position_id),
                                 "quantity": f"{usdc(quantity).normalize():f}" if quantity else "0", "source": source,
                                 "subaccountId": None, "timestamp": naive_utc(self.ex.clock_us()),
                                 "userId": _user_id(acct)})


def _user_id(acct: Account) -> int:
    """A stable number for an account (Backpack's userId): from its key."""
    return int.from_bytes(acct.api_key.encode()[:6], "big") % 10_000_000

