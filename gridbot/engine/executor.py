"""The executor: performs what a grid's manager asks, over the signed REST client.

- ``ActiveGrid`` ties one ``OrderManager`` to its row in the state file: ``save()`` writes what changed,
  and ``publish()`` turns the manager's events into log lines. Every step below saves before it sends.
- Placements are never retried blindly: each order's intent (clientId included) is on disk before its
  request leaves; a lost answer becomes an unknown outcome that is looked up by clientId.
- Several placements go as batch requests of up to ``MAX_BATCH`` orders, sent concurrently when there
  is more than one batch; cancels at shutdown go out with bounded concurrency. Results are applied to
  the manager on the calling thread only (one thread owns state).
- ``sync()`` is the one REST check: open orders, then fills since the checkpoint. Start-up
  reconciliation, the periodic safety net and the last look at shutdown all call it.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Sequence

from backpack_api import (CANCEL_PENDING, BackpackClient, BackpackError, NotFound, OrderRejected, OrderRequest,
                          TransientError, UnknownOutcome)
from gridbot.core.events import CounterOrderDecided
from gridbot.core.models import BatchError, Order, Side
from order_manager import OrderManager
from gridbot.core.order_state import Action, Cancel, Lookup, OrderState, Place
from gridbot.ops.reports import describe, describe_orders
from gridbot.engine.state_store import StateStore

if TYPE_CHECKING:
    from gridbot.engine.perp_account import PerpFunds

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)
# How long a balance read stands as the budget for placements (less what they lock): within a second the
# only change our orders cannot see is someone else's trading on the account.
BUDGET_TTL_S = 1.0
# Backpack does not document its batch limit (docs/exchange.md §8, §11); our simulator enforces 50, and
# the bot never sends more in one request.
MAX_BATCH = 50
# Requests in flight at once for batches and shutdown cancels: 99 cancels are ~100 requests, far
# inside Backpack's 2000 requests/minute (docs/exchange.md §8), sent within about a second.
MAX_CONCURRENT = 8


class ActiveGrid:
    """One grid's manager with its place in the state file (``store`` None: kept in memory only)."""

    def __init__(self, om: OrderManager, store: StateStore | None, grid_id: int | None, created_ms: int,
                 wall_ms: Callable[[], int], *, closing: bool = False) -> None:
        self.om = om
        self.store = store
        self.grid_id = grid_id
        self.created_ms = created_ms
        self.wall_ms = wall_ms
        self.closing = closing            # being cancelled (--reset): no counter-order will follow a fill
        self._saved_version = -1
        self.listeners: list[Callable[[Any], None]] = []  # told every event after the log (notifications)

    @property
    def symbol(self) -> str:
        return self.om.grid.symbol

    def note_price(self, price: Decimal, now_ms: int) -> None:
        """The last price, saved with the grid: ``status`` and ``report`` value the grid at it."""
        self.om.risk.last_price, self.om.risk.last_price_ms = price, now_ms
        self.om.risk_changed()

    def save(self) -> None:
        """Write what changed since the last save, if anything did."""
        if self.store is not None and self.grid_id is not None and self.om.version != self._saved_version:
            self._saved_version = self.om.version
            self.store.save(self.grid_id, self.om.take_changes(), self.wall_ms())

    def checkpoint(self, as_of_ms: int) -> None:
        if self.store is not None and self.grid_id is not None:
            self.store.set_checkpoint(self.grid_id, as_of_ms)

    def publish(self) -> None:
        for ev in self.om.take_events():
            if (self.closing or self.om.risk.exit is not None) and isinstance(ev, CounterOrderDecided):
                continue
            level, message = describe(ev, self.om.grid.quote)
            log.log(level, "%s", message)
            for listen in self.listeners:
                listen(ev)

    def fill_checkpoint(self) -> int:
        """Where fill history is read from: the last fill of this grid (or its creation), never this
        process's start, so fills that happened while the bot was down are found. A minute of
        overlap: fills are de-duplicated by trade id, and the clocks may differ a little."""
        return max(self.om.ledger.last_fill_ms, self.created_ms) - 60_000


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    new_fills: int = 0
    foreign: int = 0
    newly_missing: int = 0
    error: str = ""


class Executor:
    def __init__(self, client: BackpackClient, *, post_only: bool, wall_ms: Callable[[], int],
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.client = client
        self.post_only = post_only
        self.wall_ms = wall_ms
        self.clock = clock
        self.sleep = sleep
        self._pool: ThreadPoolExecutor | None = None
        self._budget: dict[str, Decimal] | None = None   # free balances less what was placed since (covered)
        self._budget_at = 0.0
        self.perp: PerpFunds | None = None    # a perps grid's margin check and reduce-only side (perp_account.py)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _map(self, fn: Callable, items: Sequence) -> list:
        """``fn`` over ``items``, concurrently when there are several (bounded), results in order."""
        if len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(MAX_CONCURRENT, thread_name_prefix="rest")
        return list(self._pool.map(fn, items))

    # -------------------------------------------------------------------------- performing
    def perform(self, g: ActiveGrid, actions: Sequence[Action]) -> None:
        g.publish()   # what led to these actions (a fill) is told before them ("placing ...")
        places = [a for a in actions if isinstance(a, Place)]
        if places:
            self.place(g, places)
        for a in actions:
            if isinstance(a, Lookup):
                self.lookup(g, a)
        self.cancel(g, [a for a in actions if isinstance(a, Cancel)])
        g.publish()

    def _request(self, g: ActiveGrid, p: Place) -> OrderRequest:
        return OrderRequest(g.symbol, p.side, p.price, p.quantity, p.client_id, self.post_only,
                            reduce_only=self.perp is not None and self.perp.reduce_only(p.side))

    def note_balances(self, balances: dict[str, tuple[Decimal, Decimal]]) -> None:
        """Free balances just read (by start-up, or by ``covered``): the budget placements draw on."""
        self._budget = {a: v[0] for a, v in balances.items()}
        self._budget_at = self.clock()

    def covered(self, g: ActiveGrid, places: Sequence[Place]) -> list[Place]:
        """The placements the free balance covers. Every order says ``autoBorrow: false``, so the exchange
        itself refuses one the balance does not cover, whatever the account's margin settings; this is
        the bot's own check on top. The budget is the free balances read less than ``BUDGET_TTL_S`` ago,
        less every order placed since (our own fills and cancels only add to what is free, so it never
        overstates). When it falls short the balances are read again, less every placement whose outcome
        is unknown (it may still land), and what is still not covered is held back here and retried
        later. With no fresh budget (a counter-order after a quiet second) nothing is read: the order
        goes out at once, and the exchange's refusal is the check. On perps the budget is the available
        margin, and each order costs the margin it adds (``covered_margin``)."""
        om = g.om
        now = self.wall_ms()
        if self.perp is not None:
            return self.covered_margin(g, places)

        def need(side: Side, price: Decimal, quantity: Decimal) -> tuple[str, Decimal]:
            return (om.grid.quote, price * quantity) if side is Side.BID else (om.grid.base, quantity)

        def short(budget: dict[str, Decimal]) -> bool:
            total: dict[str, Decimal] = {}
            for p in places:
                asset, amount = need(p.side, p.price, p.quantity)
                total[asset] = total.get(asset, ZERO) + amount
            return any(budget.get(a, ZERO) < v for a, v in total.items())

        if self._budget is None or self.clock() - self._budget_at > BUDGET_TTL_S:
            self._budget = None
            return list(places)
        if short(self._budget):
            try:
                self.note_balances(self.client.balances())
            except BackpackError as e:
                log.warning("cannot read the balances before placing (%s): placing nothing now", e)
                for p in places:
                    om.not_sent(p.client_id, now)
                return []
            assert self._budget is not None
            for o in om.live.values():
                if o.state is OrderState.UNKNOWN:
                    asset, amount = need(o.side, o.price, o.quantity)
                    self._budget[asset] = self._budget.get(asset, ZERO) - amount
        free = self._budget
        assert free is not None
        out = []
        for p in places:
            asset, amount = need(p.side, p.price, p.quantity)
            if free.get(asset, ZERO) < amount:
                om.rejected(p.client_id, "INSUFFICIENT_FUNDS", f"not sent: the free {asset} balance "
                            f"({free.get(asset, ZERO):f}) does not cover it, and the bot never borrows", now)
                continue
            free[asset] = free.get(asset, ZERO) - amount
            out.append(p)
        return out

    def covered_margin(self, g: ActiveGrid, places: Sequence[Place]) -> list[Place]:
        """``covered`` on perps: the available margin (read less than ``BUDGET_TTL_S`` ago, less what was
        placed since) against the margin each order adds to the grid's exposure (``PerpFunds.costs``:
        reduce-only orders and orders on the side that lowers the exposure add none)."""
        om, pf = g.om, self.perp
        assert pf is not None
        now = self.wall_ms()
        if self._budget is None or self.clock() - self._budget_at > BUDGET_TTL_S:
            self._budget = None
            return list(places)
        ours = {p.client_id for p in places}
        resting = [(o.side, o.quantity - o.executed) for o in om.live.values() if o.client_id not in ours]
        total: list[Decimal] = []
        pf.costs(resting, places, lambda i, c: total.append(c) is None)
        if sum(total, ZERO) > self._budget.get("margin", ZERO):
            try:
                self._budget, self._budget_at = {"margin": pf.available()}, self.clock()
            except BackpackError as e:
                log.warning("cannot read the margin before placing (%s): placing nothing now", e)
                for p in places:
                    om.not_sent(p.client_id, now)
                return []
        free = self._budget
        taken: list[Place] = []

        def take(i: int, cost: Decimal) -> bool:
            p = places[i]
            if cost > free.get("margin", ZERO):
                om.rejected(p.client_id, "INSUFFICIENT_MARGIN", f"not sent: the available margin "
                            f"({free.get('margin', ZERO):f}) does not cover the {cost:f} it adds", now)
                return False
            free["margin"] = free.get("margin", ZERO) - cost
            taken.append(p)
            return True
        pf.costs(resting, places, take)
        return taken

    def place(self, g: ActiveGrid, places: Sequence[Place]) -> None:
        """Send orders the free balance covers: one request for one, batch requests for several. Never
        retried blindly."""
        om = g.om
        places = self.covered(g, places)
        if not places:
            return
        now = self.wall_ms()
        for p in places:
            om.sending(p.client_id, now)
            log.info("placing %s %s @ %s (level %d, clientId %d)", p.side.value, p.quantity, p.price,
                     p.level, p.client_id)
        g.save()  # the intents, clientIds included, are on disk before anything is sent
        batches = [places[i:i + MAX_BATCH] for i in range(0, len(places), MAX_BATCH)]
        outcomes = self._map(lambda b: self._send(g, b), batches)
        now = self.wall_ms()
        for batch, outcome in zip(batches, outcomes):
            if isinstance(outcome, UnknownOutcome):
                log.warning("placement outcome unknown (%s): looking the order(s) up by clientId once the "
                            "request can no longer arrive", outcome)
                for p in batch:
                    om.unknown(p.client_id, now)
            elif isinstance(outcome, TransientError):
                log.warning("could not send the order(s): %s", outcome)
                for p in batch:
                    om.not_sent(p.client_id, now)
            else:
                for p, r in zip(batch, outcome):
                    if isinstance(r, BatchError):
                        om.rejected(p.client_id, r.code, r.message, now)
                    else:
                        om.placed(p.client_id, r, now)

    def _send(self, g: ActiveGrid, batch: Sequence[Place]) -> list[Order | BatchError] | BackpackError:
        """One placement request (run on a worker thread: it touches no state)."""
        try:
            if len(batch) == 1:
                return [self.client.place_order(self._request(g, batch[0]))]
            return self.client.place_orders([self._request(g, p) for p in batch])
        except OrderRejected as e:
            return [BatchError(e.code, e.message)] * len(batch)
        except (UnknownOutcome, TransientError) as e:
            return e

    def lookup(self, g: ActiveGrid, a: Lookup) -> None:
        try:
            order = self.client.find_order(g.symbol, a.client_id, since_ms=a.since_ms, side=a.side, price=a.price,
                                           quantity=a.quantity)
            fills = []
            if order is not None and order.executed_quantity > 0:
                fills = self.client.fills(g.symbol, from_ms=a.since_ms, order_id=order.id)
        except BackpackError as e:
            log.warning("lookup of clientId %d failed, will retry: %s", a.client_id, e)
            return
        g.om.news.resolve(a.client_id, order, fills, self.wall_ms())

    def cancel(self, g: ActiveGrid, cancels: Sequence[Cancel]) -> None:
        def send(a: Cancel) -> Order | str | None | BackpackError:
            try:
                return self.client.cancel_order(g.symbol, a.order_id)
            except NotFound:
                return None
            except BackpackError as e:
                return e

        for a, result in zip(cancels, self._map(send, cancels)):
            if isinstance(result, BackpackError):
                log.warning("cancel of order %s failed, will retry: %s", a.order_id, result)
                g.om.cancel_failed(a.client_id)
            elif result != CANCEL_PENDING:  # pending: accepted, not yet executed; the next sync tells
                g.om.news.cancel_result(a.client_id, a.order_id, result, self.wall_ms())

    def cancel_all(self, g: ActiveGrid, timeout: float = 30.0) -> bool:
        """Cancel every order of ``g``'s grid, and only those, until a snapshot confirms it. Returns
        whether none is left."""
        om = g.om
        if not om.live_orders():
            return True   # nothing to cancel (an exit cancelled them already): nothing to say twice
        deadline = self.clock() + timeout
        while om.live_orders() and self.clock() < deadline:
            self.perform(g, [*om.request_cancels(), *om.take_lookups(self.wall_ms())])
            if not om.live_orders():
                break
            as_of = self.wall_ms()
            try:
                om.news.apply_open_orders(self.client.open_orders(g.symbol), as_of)
            except BackpackError as e:
                log.warning("cannot list open orders while stopping: %s", e)
            self.perform(g, om.take_lookups(self.wall_ms()))
            if om.live_orders():
                # Left: an order whose placement outcome is unknown, waiting for its signature window
                # to pass before it can be looked up, or a cancel the exchange accepted (202) but
                # had not yet executed.
                self.sleep(0.5)
        g.save()
        left = om.live_orders()
        if left:
            log.error("could not confirm the cancel of %d order(s): %s; check them on Backpack", len(left),
                      describe_orders(left))
            return False
        log.info("all of this grid's orders are cancelled")
        return True

    # -------------------------------------------------------------------------- checking
    def reconcile(self, g: ActiveGrid) -> bool:
        """A resumed grid settled against the exchange (``sync``), and what it found said in one line.
        False when the exchange did not answer: nothing may be placed until this has succeeded."""
        om = g.om
        unknown = sum(1 for o in om.live.values() if o.state is OrderState.UNKNOWN)
        result = self.sync(g)
        if not result.ok:
            log.warning("cannot reconcile yet (%s); trying again at the next check", result.error)
            return False
        on_book = sum(1 for o in om.live.values() if o.state is OrderState.OPEN and not o.missing)
        missing = sum(1 for o in om.live.values() if o.state is OrderState.OPEN and o.missing)
        waiting = sum(1 for p in om.pairs if p.order is None)
        log.info("reconciled: %d of our orders on the book, %d fill(s) while stopped, %d order(s) with an "
                 "unknown outcome to settle, %d missing to look up, %d pair(s) to (re)place; %d foreign "
                 "order(s) left alone", on_book, result.new_fills, unknown, missing, waiting, result.foreign)
        return True

    def sync(self, g: ActiveGrid, *, orders: bool = True) -> SyncResult:
        """Settle the grid against the exchange: the open orders (unless ``orders`` is False), then the
        fills since the checkpoint, both read before either is applied. On success the checkpoint moves
        to when the snapshot was asked for."""
        om = g.om
        as_of = self.wall_ms()
        try:
            snapshot = self.client.open_orders(g.symbol) if orders else None
            fills = self.client.fills(g.symbol, from_ms=g.fill_checkpoint())
        except BackpackError as e:
            return SyncResult(False, error=str(e))
        new_fills = sum(om.apply_fill(f) for f in sorted(fills, key=lambda f: f.trade_id))
        foreign = missing = 0
        if snapshot is not None:
            before = sum(1 for o in om.live.values() if o.missing)
            foreign = om.news.apply_open_orders(snapshot, as_of)
            missing = max(0, sum(1 for o in om.live.values() if o.missing) - before)
        g.publish()
        g.save()
        g.checkpoint(as_of)
        return SyncResult(True, new_fills, foreign, missing)
