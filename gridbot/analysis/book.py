"""The backtester's exchange: one account on one market, matched the way Backpack matches a grid's orders.

Pure and in-process (no lock, no journal, no events): the backtester and ``plan`` run the bot's own
``OrderManager`` and ``GridRisk`` against it, so a backtest is the live bot's logic on a model of the
exchange. The model is the simulator's (``simulator/engine.py``) for everything a grid does, and the
tests that compare a backtest with a live run on the simulator hold the two to the same fills:

- A limit order is refused as the exchange refuses it: a price off the tick or outside the market's
  bounds or price band (``INVALID_PRICE``), a quantity off the step or below the minimum
  (``INVALID_QUANTITY``), a post-only order that would take (``INVALID_ORDER``), funds the account does
  not have (``INSUFFICIENT_FUNDS``). What it needs is locked while it rests.
- A resting order fills when the price trades through it (a buy at p when the price goes below p),
  completely, at its own price, as a maker.
- An order that crosses on arrival takes at the touch (one tick through the last price), all of it, as a
  taker; an IOC order never rests.
- Fees are charged in the asset received: the base on a buy, the quote on a sell. On a perp (``perp``) every
  fee is in the quote (USDC), and nothing is locked: a perp's margin is the backtester's to watch
  (``perp_backtest.py``).

Market rules whose price band is unknown (no multipliers) apply no band: the reading that refuses no
order a real exchange might take.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from gridbot.core.models import Fill, MarketRules, Order, OrderStatus, Side

ZERO = Decimal(0)


class BookRefusal(Exception):
    """The order was refused, with the exchange's code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass
class _Resting:
    id: str
    client_id: int | None
    side: Side
    price: Decimal
    quantity: Decimal
    post_only: bool
    created_ms: int
    seq: int
    locked: Decimal
    executed: Decimal = ZERO
    executed_quote: Decimal = ZERO
    status: OrderStatus = OrderStatus.NEW

    def view(self, symbol: str) -> Order:
        return Order(self.id, self.client_id, symbol, self.side, self.price, self.quantity, self.executed,
                     self.executed_quote, self.status, self.created_ms, self.post_only)


@dataclass
class Book:
    """One market, one account: its balances (available), its resting orders and every fill."""
    rules: MarketRules
    price: Decimal
    balances: dict[str, Decimal]
    maker_fee: Decimal
    taker_fee: Decimal
    now_ms: int = 0
    perp: bool = False
    fills: list[Fill] = field(default_factory=list)
    _open: dict[str, _Resting] = field(default_factory=dict)
    _next_id: int = 1000
    _next_trade: int = 1

    # ------------------------------------------------------------------ orders
    def submit(self, side: Side, price: Decimal, quantity: Decimal, *, client_id: int | None,
               post_only: bool, ioc: bool = False) -> tuple[Order, list[Fill]]:
        """Accept and match one limit order; raise ``BookRefusal`` as the exchange would."""
        self._validate(price, quantity)
        crosses = price > self.price if side is Side.BID else price < self.price
        if post_only and crosses:
            raise BookRefusal("INVALID_ORDER", "Order would immediately match and take.")
        r = self.rules
        need, asset = (price * quantity, r.quote) if side is Side.BID else (quantity, r.base)
        if self.perp:
            need = ZERO
        if self.balances.get(asset, ZERO) < need:
            raise BookRefusal("INSUFFICIENT_FUNDS", "Insufficient funds")
        self.balances[asset] = self.balances.get(asset, ZERO) - need
        self._next_id += 1
        o = _Resting(str(self._next_id), client_id, side, price, quantity, post_only, self.now_ms, self._next_id, need)
        fills: list[Fill] = []
        if crosses:
            touch = self.price + r.tick_size if side is Side.BID else max(self.price - r.tick_size, r.tick_size)
            fills.append(self._fill(o, o.quantity - o.executed, touch, maker=False))
        if o.status is OrderStatus.NEW and ioc:
            o.status = OrderStatus.EXPIRED
            self._release(o)
        elif o.status is OrderStatus.NEW:
            self._open[o.id] = o
        return o.view(r.symbol), fills

    def cancel(self, order_id: str) -> Order | None:
        """Cancel a resting order (None: it is not open)."""
        o = self._open.pop(order_id, None)
        if o is None:
            return None
        o.status = OrderStatus.CANCELLED
        self._release(o)
        return o.view(self.rules.symbol)

    def _validate(self, price: Decimal, quantity: Decimal) -> None:
        r = self.rules
        if price <= 0 or price % r.tick_size != 0:
            raise BookRefusal("INVALID_PRICE", "Invalid price")
        if price < r.min_price or (r.max_price is not None and price > r.max_price):
            raise BookRefusal("INVALID_PRICE", "Price is out of bounds")
        if ((r.max_multiplier is not None and price > self.price * r.max_multiplier)
                or (r.min_multiplier is not None and price < self.price * r.min_multiplier)):
            raise BookRefusal("INVALID_PRICE", "Price is too far from the last active price")
        if quantity <= 0 or quantity % r.step_size != 0:
            raise BookRefusal("INVALID_QUANTITY", "Invalid quantity")
        if quantity < r.min_quantity:
            raise BookRefusal("INVALID_QUANTITY", "Quantity is below the minimum allowed value")
        if r.max_quantity is not None and quantity > r.max_quantity:
            raise BookRefusal("INVALID_QUANTITY", "Quantity is above the maximum allowed value")

    # ------------------------------------------------------------------ the market
    def set_price(self, price: Decimal) -> list[Fill]:
        """Move the market to ``price`` (rounded to the tick) and fill every resting order it trades
        through, best price first, each completely at its own price."""
        tick = self.rules.tick_size
        price = ((price / tick).to_integral_value(ROUND_HALF_UP) * tick).quantize(tick)
        if price <= 0:
            raise BookRefusal("INVALID_PRICE", "Price must be positive")
        self.price = price
        book = self._open.values()
        bids = sorted((o for o in book if o.side is Side.BID and o.price > price), key=lambda o: (-o.price, o.seq))
        asks = sorted((o for o in book if o.side is Side.ASK and o.price < price), key=lambda o: (o.price, o.seq))
        return [self._fill(o, o.quantity - o.executed, o.price, maker=True) for o in bids + asks]

    def resting_extremes(self) -> tuple[Decimal | None, Decimal | None]:
        """(highest resting bid, lowest resting ask): a move fills something only when it trades below the
        one or above the other."""
        bids = [o.price for o in self._open.values() if o.side is Side.BID]
        asks = [o.price for o in self._open.values() if o.side is Side.ASK]
        return (max(bids) if bids else None, min(asks) if asks else None)

    def _fill(self, o: _Resting, qty: Decimal, price: Decimal, *, maker: bool) -> Fill:
        r = self.rules
        rate = self.maker_fee if maker else self.taker_fee
        quote_amount = price * qty
        if self.perp:
            fee_asset, fee = r.quote, _fee(quote_amount, rate)
            self.balances[r.quote] = self.balances.get(r.quote, ZERO) - fee
        elif o.side is Side.BID:
            release = o.price * qty           # a taker fill at a better price frees the rest of its lock
            o.locked -= release
            self.balances[r.quote] = self.balances.get(r.quote, ZERO) + release - quote_amount
            fee_asset, fee = r.base, _fee(qty, rate)
            self.balances[r.base] = self.balances.get(r.base, ZERO) + qty - fee
        else:
            o.locked -= qty
            fee_asset, fee = r.quote, _fee(quote_amount, rate)
            self.balances[r.quote] = self.balances.get(r.quote, ZERO) + quote_amount - fee
        o.executed += qty
        o.executed_quote += quote_amount
        if o.executed >= o.quantity:
            o.status = OrderStatus.FILLED
            self._open.pop(o.id, None)
            self._release(o)
        else:
            o.status = OrderStatus.PARTIALLY_FILLED
        fill = Fill(self._next_trade, o.id, o.client_id, r.symbol, o.side, price, qty, fee, fee_asset, maker,
                    self.now_ms)
        self._next_trade += 1
        self.fills.append(fill)
        return fill

    def _release(self, o: _Resting) -> None:
        """Give back whatever a closed order still holds."""
        if o.locked > 0:
            asset = self.rules.quote if o.side is Side.BID else self.rules.base
            self.balances[asset] = self.balances.get(asset, ZERO) + o.locked
        o.locked = ZERO


def _fee(amount: Decimal, rate: Decimal) -> Decimal:
    """The exact fee, without the trailing zeros a product of decimals carries."""
    fee = amount * rate
    return fee.normalize() if fee else ZERO
