"""One crash-safe, capped IOC campaign: the entry purchase (entry.py) and the exit's sale (exit_runner.py)
run the same loop, so they wait, account, cap and fail the same way.

- **Written down before sent.** Each order's clientId is reserved and saved with the campaign (its
  ``orders``, and ``sent_ms``) before the order is sent.
- **Waited once.** An order whose answer did not come may still reach the exchange until its signature
  window has passed: the campaign waits that window once (after the unknown outcome, or once on resuming
  a campaign a crash interrupted), then settles by looking each order up by clientId. It never sends
  again blind, so nothing is bought or sold twice.
- **Capped.** Every order is an IOC limit at the cap (the last price × (1 ± ``max_slippage``)); at most
  ``MAX_ORDERS`` orders, and it stops after ``MAX_EMPTY`` orders in a row that filled nothing.
- **One way to fail.** A read that fails (the price, the balances, a lookup) raises ``Paused``: nothing is
  lost, and running the campaign again continues it. A campaign that ends short is over (``done``) with a
  ``note`` saying why; what that means is the caller's (the entry refuses the start, the exit reports it).

The side's policy (how much is left, how much the balances allow now) and its accounting (where a fill
goes) are the caller's, given as functions.
"""
from __future__ import annotations

import logging
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Protocol

from backpack_api import BackpackClient, BackpackError, OrderRejected, OrderRequest
from gridbot.core.models import Fill, MarketRules, Side

log = logging.getLogger("grid_bot")

MAX_ORDERS = 10     # IOC orders per campaign at most; what is left then is reported
MAX_EMPTY = 2       # IOC orders in a row that filled nothing: no counterparty within the cap
LOOKUP_ATTEMPTS = 3
ZERO = Decimal(0)


class Paused(Exception):
    """The campaign cannot go on now (the exchange did not answer a read): run it again later."""


class Book(Protocol):
    """What the campaign keeps in the state file (``Entry``, ``Sale``): written before each order is sent."""
    orders: list[int]
    sent_ms: int
    done: bool
    note: str


def down_to_step(qty: Decimal, rules: MarketRules) -> Decimal:
    return (qty / rules.step_size).to_integral_value(ROUND_DOWN) * rules.step_size


class IocCampaign:
    def __init__(self, client: BackpackClient, rules: MarketRules, side: Side, cap: Decimal, *, label: str,
                 what: str, window_ms: int, wall_ms: Callable[[], int], sleep: Callable[[float], None],
                 reduce_only: bool = False, read: Callable[[], Any] | None = None) -> None:
        self.client, self.rules, self.side, self.cap = client, rules, side, cap
        self.label, self.what = label, what    # "entry", "purchase"; "exit", "sale": the log's and the notes' words
        self.window_ms, self.wall_ms, self.sleep = window_ms, wall_ms, sleep
        self.reduce_only = reduce_only         # perps: a close that may only reduce the position
        # What ``fit`` weighs each order against: the balances (spot), the margin or the position (perps).
        self.read: Callable[[], Any] = read or client.balances

    def beyond_cap(self, price: Decimal) -> str | None:
        if self.side is Side.BID and price > self.cap:
            return f"the price {price} rose above the cap {self.cap}"
        if self.side is Side.ASK and price < self.cap:
            return f"the price {price} fell below the cap {self.cap}"
        return None

    def run(self, book: Book, *, left: Callable[[], tuple[Decimal, str]],
            fit: Callable[[Decimal, Any], tuple[Decimal, str]],
            reserve: Callable[[], int], save: Callable[[], None], settle: Callable[[list[int]], None],
            filled: Callable[[], Decimal]) -> None:
        """Take the campaign as far as it goes: until ``left`` says nothing is (0, with a note when that is
        short of the target), the cap, the order limit, or an empty book ends it. ``fit``: the quantity the
        balances allow now for what is left at this price (0 and why, to end it). ``reserve``: a new clientId,
        recorded in ``book.orders``. ``settle``: look these orders up and account their fills. ``filled``:
        what the campaign has bought or sold so far (to tell an empty order)."""
        if book.orders and not book.done:
            self.wait_window(book.sent_ms)          # a resumed campaign: its last order may still arrive
        settle(list(book.orders))
        empty = 0
        while not book.done:
            qty, note = left()
            if qty <= 0:
                book.done, book.note = True, note or book.note   # a note from before (a partial target) stays
                break
            if len(book.orders) >= MAX_ORDERS or empty >= MAX_EMPTY:
                who = "seller at or below" if self.side is Side.BID else "buyer at or above"
                book.done, book.note = True, book.note or f"no {who} {self.cap} for the rest"
                break
            try:
                price = self.client.ticker_price(self.rules.symbol)
                funds = self.read()
            except BackpackError as e:
                raise Paused(f"cannot read the price or balances: {e}") from None
            short = self.beyond_cap(price)
            if short is None:
                qty, short = fit(qty, funds)
                short = short if qty <= 0 else None
            if short is not None:
                book.done, book.note = True, short
                break
            cid = reserve()
            book.sent_ms = self.wall_ms()
            save()   # its clientId is on disk before it is sent
            before = filled()
            log.info("%s: IOC %s %s %s @ %s (clientId %d)", self.label, "buy" if self.side is Side.BID else "sell",
                     qty, self.rules.base, self.cap, cid)
            try:
                self.client.place_order(OrderRequest(self.rules.symbol, self.side, self.cap, qty, cid,
                                                     post_only=False, time_in_force="IOC",
                                                     reduce_only=self.reduce_only))
            except OrderRejected as e:
                log.warning("%s: the %s order was refused: %s %s", self.label, self.what, e.code, e.message)
                book.done, book.note = True, f"the exchange refused the {self.what}: {e.message or e.code}"
                break
            except BackpackError as e:
                # No answer (or none we could read): the order may still arrive until its signature
                # window has passed; only then does a lookup by clientId tell for sure.
                log.warning("%s: no answer for the order (%s); looking it up by clientId once its window has "
                            "passed", self.label, e)
                self.wait_window(book.sent_ms)
            settle([cid])
            empty = empty + 1 if filled() == before else 0
        save()

    def wait_window(self, sent_ms: int) -> None:
        """Until an order sent at ``sent_ms`` can no longer arrive (its signature window and a second); a
        whole window when the time is not known (a sale saved by an earlier version)."""
        wait = (sent_ms + self.window_ms - self.wall_ms()) / 1000 + 1 if sent_ms else self.window_ms / 1000 + 1
        if wait > 0:
            self.sleep(wait)

    def fills_of(self, client_id: int, since_ms: int) -> list[Fill]:
        """The fills of the campaign's order ``client_id`` (none when it never reached the book)."""
        last: BackpackError | None = None
        for attempt in range(LOOKUP_ATTEMPTS):
            try:
                order = self.client.find_order(self.rules.symbol, client_id, since_ms=since_ms, side=self.side)
                if order is None or order.executed_quantity <= 0:
                    return []
                return self.client.fills(self.rules.symbol, from_ms=since_ms, order_id=order.id)
            except BackpackError as e:
                log.warning("%s: lookup of clientId %d failed (%s)", self.label, client_id, e)
                if attempt + 1 < LOOKUP_ATTEMPTS:
                    self.sleep(1.0)
                last = e
        raise Paused(f"cannot look up its order {client_id}: {last}")
