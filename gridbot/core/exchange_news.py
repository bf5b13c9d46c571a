"""What the exchange tells a grid about its orders: a lookup's answer, a cancel's answer, a REST
snapshot of open orders, an order-stream event, and, after a state file rolled back, the orders it lost.
A collaborator of ``OrderManager`` (order_manager.py), working on the grid's state through its typed
interface (grid_state.py) and by its rules: every state change goes through ``_move``, a stale snapshot
never revives a finished order, and a second exchange order with one of our clientIds is cancelled at
once. Pure, no I/O.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from gridbot.core.events import ClosedByExchange, DuplicateOnBook, FilledIncomplete, LookupResolved, OrphanFound
from gridbot.core.models import Fill, Order, OrderStatus, OrderUpdate, Side
from gridbot.core.grid_state import GridState
from gridbot.core.order_state import Cancel, GridOrder, Orphan, OrderState

SEQ_BITS = 24
SEQ_MASK = (1 << SEQ_BITS) - 1


class ExchangeNews:
    """The exchange's news applied to the grid ``m`` (its state as a ``GridState``)."""

    def __init__(self, m: GridState) -> None:
        self.m = m

    def resolve(self, client_id: int, order: Order | None, fills: Iterable[Fill], now_ms: int) -> None:
        """What a lookup found: the order as the exchange knows it (None: not found) and its fills."""
        for f in fills:
            self.m.apply_fill(f)
        o = self.m.orders[client_id]
        o.lookups += 1
        self.m._touch(o)
        if not o.state.live:
            return
        if order is None:
            if o.state in (OrderState.UNKNOWN, OrderState.INTENDED):
                if self.m._move(o, OrderState.LOST if o.state is OrderState.UNKNOWN else OrderState.REJECTED,
                              now_ms):
                    self.m._events.append(LookupResolved(client_id, o.order_id, o.level, "never placed", o.lookups))
            elif o.lookups >= 3:
                self.m._move(o, OrderState.CANCELLED, now_ms)
                self.m._events.append(LookupResolved(client_id, o.order_id, o.level, "gone", o.lookups))
            return
        self.learn_id(o, order.id)
        if order.id in self.m.duplicates:
            return  # the lookup found the twin: ours is looked up again
        if order.status.is_open:
            self.m._move(o, OrderState.OPEN, now_ms)
            o.missing = False
            return
        if order.status is OrderStatus.FILLED or o.complete:
            if not o.complete:
                o.missing = True  # the exchange says filled; its fills have not all arrived yet
                self.m._events.append(FilledIncomplete(o.order_id, o.executed, o.quantity))
            return
        self._closed_by_exchange(o, order.status, now_ms)

    def _closed_by_exchange(self, o: GridOrder, status: OrderStatus, now_ms: int) -> None:
        requested = o.cancel_requested
        if not self.m._move(o, OrderState.CANCELLED, now_ms):
            return
        pair = self.m._pair(o.pair)
        if not requested and pair is not None:
            pair.retry_at_ms = now_ms + self.m.settings.replace_delay_ms
        if not requested or o.executed:
            self.m._events.append(ClosedByExchange(o.order_id, o.client_id, o.level, o.side, o.price,
                                                 status.value.lower(), o.executed, requested))

    def cancel_result(self, client_id: int, order_id: str, result: Order | None, now_ms: int) -> None:
        """Our cancel's answer: the cancelled order, or None when it was no longer on the book."""
        o = self.m.orders.get(client_id)
        if o is None or order_id != o.order_id or not o.state.live:
            return  # a duplicate or a written-off order: its fills, if any, arrive through fill history
        o.cancel_requested = True
        self.m._touch(o)
        if result is None:
            o.missing = True  # filled meanwhile, or already cancelled: find out
            return
        if result.status.is_terminal:
            if result.executed_quantity > o.executed:
                o.missing = True  # fills we have not seen yet; the lookup brings them
                return
            self._closed_by_exchange(o, result.status, now_ms)

    def learn_id(self, o: GridOrder, order_id: str) -> None:
        if o.order_id is None:
            o.order_id = order_id
            self.m._touch(o)
        elif order_id != o.order_id and order_id not in self.m.duplicates:
            # Two exchange orders carry this clientId: keep the one we know, cancel this one at once.
            self.m.duplicates.add(order_id)
            self.m.zombies[order_id] = o.client_id
            self.m._events.append(DuplicateOnBook(order_id, o.client_id, o.level, "a second order with its clientId"))
        self.m.by_order_id[order_id] = o.client_id

    def apply_open_orders(self, snapshot: Iterable[Order], as_of_ms: int) -> int:
        """A REST snapshot of open orders, requested at ``as_of_ms``. Returns how many foreign
        orders (not this grid's) it held."""
        on_book: set[str] = set()
        foreign = 0
        for order in sorted(snapshot, key=lambda x: x.created_at_ms):  # of two with one clientId, keep the older
            on_book.add(order.id)
            o = self.m._find(order.client_id, order.id, order.side, order.price, order.quantity, order.created_at_ms)
            if o is None:
                foreign += order.client_id not in self.m.orphans
                continue
            self.learn_id(o, order.id)
            if order.id in self.m.duplicates:
                continue
            if o.state in (OrderState.LOST, OrderState.REJECTED):
                if order.id in self.m.zombies:
                    continue
                # Ours, yet we had concluded it never reached the book and have placed its pair's
                # order again since: this one is a duplicate, so it goes.
                self.m.zombies[order.id] = o.client_id
                self.m._events.append(DuplicateOnBook(order.id, o.client_id, o.level, o.state.value))
                continue
            if not o.state.live:
                if (o.state is OrderState.CANCELLED and o.closed_ms is not None and as_of_ms > o.closed_ms
                        and order.id == o.order_id and order.id not in self.m.zombies):
                    # Written off (gone after its lookups, or cancelled) before this snapshot was asked
                    # for, yet on the book: its pair has another order since, so this one goes.
                    self.m.zombies[order.id] = o.client_id
                    self.m._events.append(DuplicateOnBook(order.id, o.client_id, o.level, "cancelled"))
                # Otherwise filled or cancelled in our books: the snapshot was taken before the news we
                # already have (fill history is read after it), so it says nothing new.
                continue
            if o.cancel_requested:
                # Our cancel was sent, yet the order is still listed: a 202 (pending) or an empty answer
                # that never took effect. After a second snapshot that still shows it, it is sent again.
                o.cancel_seen += 1
                if o.cancel_seen >= 2:
                    o.cancel_requested, o.cancel_seen = False, 0
                    self.m._touch(o)
            if o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
                self.m._move(o, OrderState.OPEN, as_of_ms)
            if o.state is OrderState.OPEN:
                o.missing = False
            # executed_quantity ahead of our fills is fine: fill history, read after this
            # snapshot, brings those fills.
        for o in self.m.live.values():
            if (o.state is OrderState.OPEN and o.order_id is not None and o.order_id not in on_book
                    and o.sent_ms is not None and o.sent_ms < as_of_ms and not o.complete):
                o.missing = True
        return foreign

    def apply_update(self, u: OrderUpdate, now_ms: int) -> None:
        """One event of the private order stream."""
        o = self.m._find(u.client_id, u.order_id, u.side, u.price, u.quantity)
        if o is None or u.symbol != self.m.grid.symbol:
            return
        self.learn_id(o, u.order_id)
        if u.fill is not None:
            self.m.apply_fill(u.fill)
        elif u.event == "orderFill" and o.state.live:
            o.missing = True    # a fill the event did not fully describe: the lookup reads it, fee included
        if u.order_id in self.m.duplicates:
            return  # the twin's own news (accepted, cancelled) says nothing about our order
        if u.event == "orderAccepted" and o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
            self.m._move(o, OrderState.OPEN, now_ms)
        elif u.event in ("orderCancelled", "orderExpired") and o.state.live:
            if u.executed_quantity is not None and u.executed_quantity > o.executed:
                o.missing = True  # some fills have not reached us: the lookup brings them
                self.m._move(o, OrderState.OPEN, now_ms)
            else:
                self._closed_by_exchange(o, u.status or OrderStatus.CANCELLED, now_ms)

    # ---------------------------------------------------------------------- a rolled-back state
    def recover(self, book: Iterable[Order], fills: Iterable[Fill], client_ids: Iterable[int]) -> list[Orphan]:
        """After a restart: what the exchange holds under this grid's tag that the saved state does not
        know. A power cut can roll a state file back, so orders placed (and filled) after its last
        durable save are unknown to it. An order on the book, or a fill, with our tag and a sequence at or
        beyond the saved one (``risk.recover_from`` while a recovery is under way) whose price is one of
        the grid's levels becomes an *orphan*: the pair that wants that side at that level takes it over
        instead of placing a new order (``take_placements``), and what no pair wants is cancelled. The
        sequence moves past every clientId of our tag seen (book, fills, ``client_ids`` from history), so
        no clientId is ever used twice."""
        floor = self.m.risk.recover_from if self.m.risk.recover_from is not None else self.m.next_seq
        risk_orders = set((self.m.risk.entry or {}).get("orders", ()))
        if self.m.risk.exit is not None and self.m.risk.exit.sale is not None:
            risk_orders |= set(self.m.risk.exit.sale.orders)
        book, fills = list(book), list(fills)
        levels = set(self.m.grid.levels)

        def lost(cid: int | None, price: Decimal | None) -> bool:
            return (cid is not None and cid >> SEQ_BITS == self.m.tag and (cid & SEQ_MASK) >= floor
                    and cid not in self.m.orders and cid not in risk_orders and price in levels)

        for o in book:
            if o.symbol == self.m.grid.symbol and o.quantity == self.m.grid.quantity and lost(o.client_id, o.price):
                assert o.client_id is not None and o.price is not None
                self.m.orphans.setdefault(o.client_id, Orphan(o.client_id, o.id, o.side, o.price, o.created_at_ms, True))
        for f in fills:
            if f.symbol == self.m.grid.symbol and lost(f.client_id, f.price) and f.client_id not in self.m.orphans:
                assert f.client_id is not None
                self.m.orphans[f.client_id] = Orphan(f.client_id, f.order_id, f.side, f.price, f.timestamp_ms, False)
        seen = [cid & SEQ_MASK for cid in (*client_ids, *(o.client_id for o in book), *(f.client_id for f in fills))
                if cid is not None and cid >> SEQ_BITS == self.m.tag]
        if seen and max(seen) >= self.m.next_seq:
            self.m.next_seq = max(seen) + 1
            self.m.version += 1
        if self.m.orphans and self.m.risk.recover_from is None:
            self.m.risk.recover_from = floor
            self.m.risk_changed()
        return sorted(self.m.orphans.values(), key=lambda x: x.client_id)

    def claim_orphan(self, side: Side, price: Decimal) -> Orphan | None:
        """The oldest orphan a pair wanting ``side`` at ``price`` takes over, if any."""
        for cid in sorted(self.m.orphans):
            orphan = self.m.orphans[cid]
            if orphan.side is side and orphan.price == price:
                del self.m.orphans[cid]
                self.m._events.append(OrphanFound(cid, orphan.order_id, side, price, "claimed"))
                return orphan
        return None

    def take_orphan_leftovers(self) -> list[Cancel]:
        """Once every live order is settled (nothing unknown, nothing being looked up) and the pairs have
        taken what they want, the orphans left are wanted by no pair: cancelled when on the book."""
        if not self.m.orphans or any(o.state is not OrderState.OPEN or o.missing for o in self.m.live.values()):
            return []
        out = []
        for cid, orphan in sorted(self.m.orphans.items()):
            self.m._events.append(OrphanFound(cid, orphan.order_id, orphan.side, orphan.price,
                                            "cancelled" if orphan.on_book else "left"))
            if orphan.on_book:
                out.append(Cancel(cid, orphan.order_id))
        self.m.orphans.clear()
        self.m.risk.recover_from = None
        self.m.risk_changed()
        return out
