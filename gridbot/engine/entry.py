"""The entry purchase: before a new grid is laid out, buy the base its sells (and its fee reserve) need
and the account lacks, with IOC limit buys no worse than the last price x (1 + ``risk.max_slippage``).

Crash-safe like every order (docs/architecture.md "Money in motion"): the grid's row, with the purchase's target,
its cap and each order's clientId, is in the state file before the order is sent. A restarted bot waits
until the last order's signature window has passed, looks every order up by clientId, and buys only
what the fills found so far leave; it never buys twice. A purchase that cannot be completed within the
cap is reported and the start refused (exit 2) rather than starting a lopsided grid; nothing is placed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable

from backpack_api import BackpackClient, BackpackError, OrderRejected, OrderRequest
from gridbot.core.errors import StartRefused
from gridbot.core.models import MarketRules, Side
from gridbot.ops.reports import fmt_amount
from gridbot.core.risk import buy_ceiling

log = logging.getLogger("grid_bot")

MAX_ORDERS = 10
MAX_EMPTY = 2
ZERO = Decimal(0)


@dataclass
class Entry:
    target: Decimal                 # base to buy (gross, on the step)
    ceiling: Decimal                # no fill above this price
    orders: list[int] = field(default_factory=list)
    sent_ms: int = 0                # when the last order was sent (its window must pass before a lookup)
    bought: Decimal = ZERO          # gross base bought, from the orders' fills
    spent: Decimal = ZERO           # quote spent
    fees: dict[str, str] = field(default_factory=dict)
    done: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (f"{v:f}" if isinstance(v, Decimal) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Entry":
        return cls(Decimal(d["target"]), Decimal(d["ceiling"]), [int(x) for x in d["orders"]], int(d["sent_ms"]),
                   Decimal(d["bought"]), Decimal(d["spent"]), dict(d.get("fees", {})), bool(d["done"]),
                   str(d.get("note", "")))


class EntryPurchase:
    def __init__(self, client: BackpackClient, rules: MarketRules, *, window_ms: int, wall_ms: Callable[[], int],
                 sleep: Callable[[float], None] = time.sleep, new_client_id: Callable[[], int],
                 save: Callable[[Entry], None]) -> None:
        self.client, self.rules = client, rules
        self.window_ms, self.wall_ms, self.sleep = window_ms, wall_ms, sleep
        self.new_client_id, self.save = new_client_id, save

    @staticmethod
    def start(target: Decimal, price: Decimal, max_slippage: Decimal, rules: MarketRules) -> Entry:
        return Entry(target, buy_ceiling(price, max_slippage, rules.tick_size))

    def run(self, e: Entry, quote_kept: Decimal) -> None:
        """Buy until ``e.target`` is bought, the price leaves the cap, or the book gives nothing; raise
        StartRefused (the start refused) when it ends short. ``quote_kept``: the quote the grid's buys
        will lock, which the purchase must leave free."""
        r = self.rules
        if e.orders:
            wait = (e.sent_ms + self.window_ms - self.wall_ms()) / 1000 + 1
            if wait > 0:
                self.sleep(wait)   # the last order may still arrive until its window has passed
        self.settle(e)
        empty = 0
        while not e.done:
            left = ((e.target - e.bought) / r.step_size).to_integral_value(ROUND_DOWN) * r.step_size
            if left <= 0:
                e.done = True
                break
            if left < r.min_quantity:
                left = r.min_quantity
            if len(e.orders) >= MAX_ORDERS or empty >= MAX_EMPTY:
                e.note = f"no seller at or below {e.ceiling} for the rest"
                break
            try:
                price = self.client.ticker_price(r.symbol)
                free_quote = self.client.balances().get(r.quote, (ZERO, ZERO))[0]
            except BackpackError as ex:
                raise StartRefused(f"the entry purchase cannot read the price or balances: {ex}; nothing was placed, "
                                 f"start again") from None
            if price > e.ceiling:
                e.note = f"the price {price} rose above the cap {e.ceiling}"
                break
            if free_quote - quote_kept < left * e.ceiling:
                e.note = (f"the free {r.quote} ({fmt_amount(free_quote)}) does not cover the grid's buys "
                          f"({fmt_amount(quote_kept)}) and {left} {r.base} at up to {e.ceiling}")
                break
            cid = self.new_client_id()
            e.orders.append(cid)
            e.sent_ms = self.wall_ms()
            self.save(e)   # its clientId is on disk before it is sent
            before = e.bought
            log.info("entry: IOC buy %s %s @ %s (clientId %d)", left, r.base, e.ceiling, cid)
            try:
                self.client.place_order(OrderRequest(r.symbol, Side.BID, e.ceiling, left, cid, post_only=False,
                                                     time_in_force="IOC"))
            except OrderRejected as ex:
                e.note = f"the exchange refused the purchase: {ex.message or ex.code}"
                break
            except BackpackError as ex:
                log.warning("entry: no answer for the purchase (%s); looking it up by clientId once its window has "
                            "passed", ex)
                self.sleep(self.window_ms / 1000 + 1)
            self.settle(e)
            empty = empty + 1 if e.bought == before else 0
        self.save(e)
        if not e.done:
            raise StartRefused(f"the entry purchase bought {fmt_amount(e.bought)} of {fmt_amount(e.target)} {r.base} "
                             f"(for {fmt_amount(e.spent)} {r.quote}): {e.note}. Refusing to start a lopsided grid: "
                             f"nothing was placed, and what was bought stays in the account (the next start buys "
                             f"only what is still missing)")
        log.info("entry: bought %s %s for %s %s (at most %s)", fmt_amount(e.bought), r.base, fmt_amount(e.spent),
                 r.quote, e.ceiling)

    def settle(self, e: Entry) -> None:
        """Every purchase order looked up by clientId: the totals from their fills (idempotent)."""
        since = (e.sent_ms or self.wall_ms()) - 600_000
        bought, spent, fees = ZERO, ZERO, {}
        for cid in e.orders:
            for attempt in range(3):
                try:
                    order = self.client.find_order(self.rules.symbol, cid, since_ms=since, side=Side.BID)
                    fills = (self.client.fills(self.rules.symbol, from_ms=since, order_id=order.id)
                             if order is not None and order.executed_quantity > 0 else [])
                    break
                except BackpackError as ex:
                    if attempt == 2:
                        raise StartRefused(f"the entry purchase cannot look up its order {cid}: {ex}; start again (it "
                                         f"is looked up again, never bought twice)") from None
                    self.sleep(1.0)
            for f in fills:
                bought += f.quantity
                spent += f.price * f.quantity
                fees[f.fee_symbol] = fees.get(f.fee_symbol, ZERO) + f.fee
        e.bought, e.spent = bought, spent
        e.fees = {k: f"{v:f}" for k, v in fees.items()}
