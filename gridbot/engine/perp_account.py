"""A perps grid's account: the margin its orders need (the executor's check before sending), the start-up
checks of the subaccount (its leverage, its positions and orders, its available equity) and the opening of a
long's or a short's position (docs/perps.md).

The margin rule is the exchange's (docs/exchange.md §12): a market's exposure is its position plus the open
orders that add to it, the worse side taken (``max(|position + buys|, |position - sells|)``; reduce-only
orders add none), and it locks ``IMF × exposure × mark``, with the IMF ``max(1 / leverage, the market's
function)``. An order that does not raise the exposure needs no margin.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence

from backpack_api import BackpackClient, BackpackError
from gridbot.core.errors import InputError, StartRefused
from gridbot.core.models import MarketRules, Side
from gridbot.core.order_state import Place
from gridbot.core.perp_risk import MarginFunctions
from gridbot.engine.grid_setup import signed_read
from gridbot.engine.ioc_campaign import down_to_step
from gridbot.ops.reports import fmt_amount

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)


class PerpFunds:
    """What the executor asks on perps: which orders are reduce-only, and the margin an order adds."""

    def __init__(self, client: BackpackClient, fns: MarginFunctions, leverage: Decimal, reduce: Side | None,
                 mark: Decimal, position: Callable[[], Decimal]) -> None:
        self.client, self.fns, self.leverage, self.reduce = client, fns, leverage, reduce
        self.mark = mark                  # the last mark read (the watch keeps it fresh)
        self.position = position          # the grid's position as its fills say

    def reduce_only(self, side: Side) -> bool:
        return side is self.reduce

    def locked(self, position: Decimal, bids: Decimal, asks: Decimal) -> Decimal:
        exposure = max(abs(position + bids), abs(position - asks))
        notional = exposure * self.mark
        return self.fns.imf(notional, self.leverage) * notional

    def costs(self, resting: Iterable[tuple[Side, Decimal]], places: Sequence[Place],
              take: Callable[[int, Decimal], bool]) -> None:
        """Walk ``places`` in order: each one's added margin, given the ``resting`` orders (side, remaining)
        and the places taken so far, is offered to ``take(index, margin)``, which says whether it is taken."""
        pos = self.position()
        bids = asks = ZERO
        for side, qty in resting:
            if not self.reduce_only(side):
                bids, asks = (bids + qty, asks) if side is Side.BID else (bids, asks + qty)
        before = self.locked(pos, bids, asks)
        for i, p in enumerate(places):
            if self.reduce_only(p.side):
                take(i, ZERO)
                continue
            nb, na = (bids + p.quantity, asks) if p.side is Side.BID else (bids, asks + p.quantity)
            after = self.locked(pos, nb, na)
            if take(i, max(ZERO, after - before)):
                bids, asks, before = nb, na, after

    def available(self) -> Decimal:
        return self.client.margin().available


def grid_position(om: Any) -> Decimal:
    """The position a perps grid holds as its own records say: its opening and every fill since."""
    return (om.risk.start.base if om.risk.start is not None else ZERO) + om.ledger.position


def net_position(client: BackpackClient, symbol: str) -> Decimal:
    """The exchange's position on ``symbol`` (signed; 0 when flat)."""
    return sum((p.net_quantity for p in client.positions(symbol) if p.symbol == symbol), ZERO)


class PerpAccount:
    """The start-up's checks of a perps grid's subaccount, and its opening."""

    def __init__(self, client: BackpackClient, cfg: Any, rules: MarketRules) -> None:
        self.client, self.cfg, self.t, self.rules = client, cfg, cfg.trading, rules

    def check(self, opening: Decimal, collateral: Decimal, *, resumed: bool) -> Decimal:
        """The subaccount may run this grid: no position or open order on another market (leverage and
        margin are per subaccount: one grid per subaccount), the leverage set to ``trading.leverage``, and
        the investment available. Returns the position already held on the grid's market (a new grid
        counts it toward its opening, as a spot grid counts the free base toward its purchase)."""
        t = self.t
        positions = signed_read(lambda: self.client.positions(), "read the positions")
        others = [p for p in positions if p.symbol != t.symbol]
        if others:
            raise InputError(f"the subaccount holds a position on {', '.join(sorted({p.symbol for p in others}))}: a "
                             f"perps grid needs a subaccount of its own (leverage and margin are shared by every "
                             f"market of a subaccount); use another subaccount's keys")
        held = sum((p.net_quantity for p in positions if p.symbol == t.symbol), ZERO)
        if not resumed:
            if held and (opening == 0 or (held > 0) != (opening > 0) or abs(held) > abs(opening)):
                raise InputError(f"the subaccount already holds a {'long' if held > 0 else 'short'} of {abs(held)} "
                                 f"{self.rules.base} on {t.symbol}, which this {t.direction} grid does not open: close it "
                                 f"first, or use another subaccount")
            self.set_leverage()
            m = signed_read(self.client.margin, "read the margin")
            if m.available < collateral - (abs(held) * self.mark_of() / t.leverage if held else ZERO):
                what = (f"trading.investment {t.investment}" if t.investment is not None else
                        f"the {fmt_amount(collateral)} this grid of trading.quantity {t.quantity} needs")
                raise InputError(f"the subaccount has {fmt_amount(m.available)} {self.rules.quote} available, less than "
                                 f"{what}: deposit collateral, or invest less")
        return held

    def mark_of(self) -> Decimal:
        return signed_read(lambda: self.client.mark_price(self.t.symbol), "read the mark price").mark

    def set_leverage(self) -> None:
        """The subaccount's leverage limit to ``trading.leverage``: only when it holds no other order (a
        change would alter the margin of what it holds), then verified."""
        t = self.t
        now = signed_read(self.client.account_settings, "read the account").leverage_limit
        if now is not None and now == t.leverage:
            return
        orders = signed_read(lambda: self.client.open_orders(None), "list open orders")
        if orders:
            where = ", ".join(sorted({o.symbol for o in orders}))
            raise InputError(f"the subaccount's leverage is {now}, not trading.leverage {t.leverage}, and it has "
                             f"{len(orders)} open order(s) ({where}): the bot changes the leverage only on an idle "
                             f"subaccount; cancel them, or set trading.leverage to {now}")
        try:
            self.client.set_leverage(t.leverage)
            after = self.client.account_settings().leverage_limit
        except BackpackError as e:
            raise StartRefused(f"cannot set the subaccount's leverage to {t.leverage}: {e}") from None
        if after is not None and after != t.leverage:
            raise StartRefused(f"the exchange kept the subaccount's leverage at {after} after the bot asked for "
                               f"{t.leverage}: set trading.leverage to {after}")
        log.info("perps: the subaccount's leverage limit set to %s (it was %s)", t.leverage, now)

    def fit_opening(self, e: Any) -> Callable[[Decimal, Any], tuple[Decimal, str]]:
        """The opening's check before each IOC order: the available margin covers it at the cap."""
        def fit(qty: Decimal, margin: Any) -> tuple[Decimal, str]:
            need = qty * e.ceiling / self.t.leverage
            if margin.available < need:
                most = down_to_step(margin.available * self.t.leverage / e.ceiling, self.rules)
                if most < self.rules.min_quantity:
                    return ZERO, (f"the available margin ({fmt_amount(margin.available)} {self.rules.quote}) does not "
                                  f"cover {qty} {self.rules.base} at {e.ceiling}")
                return most, ""
            return qty, ""
        return fit
