"""A perps grid's worst case before its first order: at each end of its range, the position it holds when
every level on that side has filled, the margin that position needs, and the price at which the exchange
would liquidate it (docs/exchange.md §12). Pure: prices, quantities and the market's margin functions in,
decimals out.

The grid's three directions (the perps grid's own issue):
- **neutral** starts flat: the buys below the price open or extend a long, the sells above a short;
- **long** first buys the position its sells above will close, then its buys below add to it;
- **short** mirrors long.

The liquidation price of a position of ``q`` (signed) at average entry ``e`` on collateral ``C`` (less the
fees paid to get there) is where the equity ``C + q × (P − e)`` falls to the maintenance margin
``MMF(|q| × P) × |q| × P`` (Backpack liquidates at a maintenance margin ratio of 100 %), with
``MMF(N) = max(mmf base, mmf factor × √N)``. Round trips completed on the way would only add to the equity,
so they are left out: the figures are the worst case.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Sequence

ZERO = Decimal(0)
DIRECTIONS = ("neutral", "long", "short")


@dataclass(frozen=True)
class MarginFunctions:
    """A perp market's ``imfFunction`` and ``mmfFunction`` (``max(base, factor × √notional)``)."""
    imf_base: Decimal
    imf_factor: Decimal
    mmf_base: Decimal
    mmf_factor: Decimal

    def imf(self, notional: Decimal, leverage: Decimal | None = None) -> Decimal:
        floor = self.imf_base if leverage is None else max(self.imf_base, 1 / leverage)
        return max(floor, self.imf_factor * abs(notional).sqrt())

    def mmf(self, notional: Decimal) -> Decimal:
        return max(self.mmf_base, self.mmf_factor * abs(notional).sqrt())


@dataclass(frozen=True)
class EndState:
    """The grid at one end of its range with every level on that side filled."""
    end: str                          # "bottom" or "top"
    price: Decimal                    # the end level
    position: Decimal                 # signed: positive long
    entry: Decimal                    # average entry price of that position (0 when flat)
    fees: Decimal                     # paid to get there, in quote
    initial_margin: Decimal           # IMF × notional at the end price
    maintenance_margin: Decimal       # MMF × notional at the end price
    liquidation_price: Decimal | None  # None: flat, or no price liquidates it

    @property
    def notional(self) -> Decimal:
        return abs(self.position) * self.price

    def distance(self) -> Decimal | None:
        """How far the liquidation price lies beyond the end, as a fraction of the end price (negative:
        inside the range)."""
        if self.liquidation_price is None:
            return None
        gap = self.price - self.liquidation_price if self.position > 0 else self.liquidation_price - self.price
        return gap / self.price


def liquidation_price(collateral: Decimal, position: Decimal, entry: Decimal, fns: MarginFunctions,
                      tick: Decimal = Decimal("1e-8")) -> Decimal | None:
    """The price at which equity ``collateral + position × (P − entry)`` meets the maintenance margin, found by
    halving the interval to ``tick`` (the margin's square-root term makes it no closed form). A long is
    liquidated at or below it, a short at or above; None when flat, or when a long's collateral covers a fall
    to zero."""
    if not position:
        return None
    q = abs(position)

    def healthy(p: Decimal) -> bool:
        return collateral + position * (p - entry) > fns.mmf(q * p) * q * p

    if position > 0:
        if healthy(tick):
            return None
        return _first_unhealthy(healthy, entry, ZERO, tick)
    return _first_unhealthy(healthy, entry, entry * 2 + collateral / q + 1, tick)   # liquidated up there


def _first_unhealthy(healthy: Callable[[Decimal], bool], safe: Decimal, fatal: Decimal, tick: Decimal) -> Decimal:
    """Walking from ``safe`` toward ``fatal``, the first price at which ``healthy`` fails, to ``tick``, by
    halving the interval (``safe`` itself when it already fails)."""
    if not healthy(safe):
        return safe
    while abs(fatal - safe) > tick:
        mid = (safe + fatal) / 2
        if healthy(mid):
            safe = mid
        else:
            fatal = mid
    return fatal


def _state(end: str, price: Decimal, fills: Sequence[tuple[Decimal, Decimal, Decimal]], collateral: Decimal,
           fns: MarginFunctions, leverage: Decimal | None) -> EndState:
    """``fills``: (signed quantity, price, fee rate) of every fill that leads to this end."""
    position = sum((q for q, _, _ in fills), ZERO)
    fees = sum((abs(q) * p * rate for q, p, rate in fills), ZERO)
    same = [(q, p) for q, p, _ in fills if position and (q > 0) == (position > 0)]
    entry = sum((q * p for q, p in same), ZERO) / sum((q for q, _ in same), ZERO) if same else ZERO
    notional = abs(position) * price
    return EndState(end, price, position, entry, fees, fns.imf(notional, leverage) * notional,
                    fns.mmf(notional) * notional,
                    liquidation_price(collateral - fees, position, entry, fns))


def end_states(levels: Sequence[Decimal], price: Decimal, quantity: Decimal, direction: str, collateral: Decimal,
               fns: MarginFunctions, *, leverage: Decimal | None = None, maker_fee: Decimal = ZERO,
               taker_fee: Decimal = ZERO) -> tuple[EndState, EndState]:
    """The grid's worst case at its bottom and at its top. ``levels``: ascending; the buys rest at the levels
    below ``price``, the sells at those above. A long (short) grid's opening purchase (sale) is bought at
    ``price`` with the taker fee; every level fills with the maker fee."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    buys = [lv for lv in levels if lv < price]
    sells = [lv for lv in levels if lv > price]
    opening: list[tuple[Decimal, Decimal, Decimal]] = []
    if direction == "long" and sells:
        opening = [(quantity * len(sells), price, taker_fee)]
    elif direction == "short" and buys:
        opening = [(-quantity * len(buys), price, taker_fee)]
    bottom = _state("bottom", buys[0] if buys else price,
                    opening + [(quantity, lv, maker_fee) for lv in buys], collateral, fns, leverage)
    top = _state("top", sells[-1] if sells else price,
                 opening + [(-quantity, lv, maker_fee) for lv in sells], collateral, fns, leverage)
    return bottom, top


def quantity_for(levels: Sequence[Decimal], price: Decimal, direction: str, investment: Decimal, leverage: Decimal,
                 step: Decimal, fns: MarginFunctions | None = None, taker_fee: Decimal = ZERO,
                 maker_fee: Decimal = ZERO) -> Decimal:
    """The largest quantity per level, down to ``step``, whose every order the exchange's initial-margin check
    accepts anywhere in the range: the equity (the investment less the fees paid, plus the open position's
    PnL) covers ``IMF × exposure × price`` (docs/exchange.md §12) at the start, when the orders first rest and a
    long's or a short's opening has paid its taker fee, and at each end of the range with every level on that
    side filled, where the counter-orders restore the exposure. Between those the position's loss grows no
    faster than at the ends. ``levels``: those that hold an order (the empty level left out). The initial
    margin fraction is ``1 / leverage``, or the market's (``fns``) at ``investment × leverage`` when larger.
    Round trips completed on the way would only add to the equity."""
    imf = 1 / leverage if fns is None else fns.imf(investment * leverage, leverage)
    dearest = _unit_cost(levels, price, direction, imf, taker_fee, maker_fee)[0]
    if dearest <= 0:
        return ZERO
    return (investment / dearest / step).to_integral_value(rounding="ROUND_DOWN") * step


def collateral_for(levels: Sequence[Decimal], price: Decimal, direction: str, quantity: Decimal, leverage: Decimal,
                   fns: MarginFunctions, taker_fee: Decimal = ZERO, maker_fee: Decimal = ZERO) -> Decimal:
    """The other way round: the collateral a grid of ``quantity`` per level needs, by the rule of
    ``quantity_for`` (the IMF at the largest notional the grid reaches), to the cent."""
    _, notional = _unit_cost(levels, price, direction, 1 / leverage, taker_fee, maker_fee)
    imf = fns.imf(quantity * notional, leverage)
    dearest = _unit_cost(levels, price, direction, imf, taker_fee, maker_fee)[0]
    return (quantity * dearest).quantize(Decimal("0.01"), rounding="ROUND_UP")


def _unit_cost(levels: Sequence[Decimal], price: Decimal, direction: str, imf: Decimal, taker_fee: Decimal,
               maker_fee: Decimal) -> tuple[Decimal, Decimal]:
    """What one unit per level costs in equity at the dearest of the start and the two ends (the margin it must
    keep, the fees it paid, the loss of its position there), and the largest notional per unit among them."""
    buys = [lv for lv in levels if lv < price]
    sells = [lv for lv in levels if lv > price]
    if direction == "neutral":
        start_exposure, opening = max(len(buys), len(sells)), 0
    elif direction in ("long", "short"):
        start_exposure, opening = len(buys) + len(sells), len(sells) if direction == "long" else len(buys)
    else:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    costs = [imf * start_exposure * price + taker_fee * opening * price]
    notional = start_exposure * price
    unit = MarginFunctions(imf, ZERO, ZERO, ZERO)
    for s in end_states(levels, price, Decimal(1), direction, ZERO, unit, maker_fee=maker_fee, taker_fee=taker_fee):
        if s.position:
            costs.append(s.fees - s.position * (s.price - s.entry) + imf * abs(s.position) * s.price)
            notional = max(notional, abs(s.position) * s.price)
    return max(costs), notional


def funding_per_day(position: Decimal, mark: Decimal, rate: Decimal, interval_hours: Decimal = Decimal(1)) -> Decimal:
    """What a position receives in a day at ``rate`` per interval (negative: pays): a positive rate makes
    longs pay."""
    return -rate * position * mark * 24 / interval_hours
