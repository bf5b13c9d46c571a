"""What the exchange tells a grid about its orders: a lookup's answer, a cancel's answer, a REST
snapshot of open orders, an order-stream event. A mixin of ``OrderManager`` (order_manager.py), whose
rules it follows: every state change goes through ``_move``, a stale snapshot never revives a finished
order, and a second exchange order with one of our clientIds is cancelled at once. Pure, no I/O.
"""
from __future__ import annotations

from typing import Iterable

from gridbot.core.events import ClosedByExchange, DuplicateOnBook, FilledIncomplete, LookupResolved
from gridbot.core.models import Fill, Order, OrderStatus, OrderUpdate
from gridbot.core.order_state import GridOrder, OrderState


class ExchangeNews:
    """Applied by ``OrderManager``; ``self`` is the manager."""

    def resolve(self, client_id: int, order: Order | None, fills: Iterable[Fill], now_ms: int) -> None:
        """What a lookup found: the order as the exchange knows it (None: not found) and its fills."""
        for f in fills:
            self.apply_fill(f)
        o = self.orders[client_id]
        o.lookups += 1
        self._touch(o)
        if not o.state.live:
            return
        if order is None:
            if o.state in (OrderState.UNKNOWN, OrderState.INTENDED):
                if self._move(o, OrderState.LOST if o.state is OrderState.UNKNOWN else OrderState.REJECTED,
                              now_ms):
                    self._events.append(LookupResolved(client_id, o.order_id, o.level, "never placed", o.lookups))
            elif o.lookups >= 3:
                self._move(o, OrderState.CANCELLED, now_ms)
                self._events.append(LookupResolved(client_id, o.order_id, o.level, "gone", o.lookups))
            return
        self._learn_id(o, order.id)
        if order.id in self.duplicates:
            return  # the lookup found the twin: ours is looked up again
        if order.status.is_open:
            self._move(o, OrderState.OPEN, now_ms)
            o.missing = False
            return
        if order.status is OrderStatus.FILLED or o.complete:
            if not o.complete:
                o.missing = True  # the exchange says filled; its fills have not all arrived yet
                self._events.append(FilledIncomplete(o.order_id, o.executed, o.quantity))
            return
        self._closed_by_exchange(o, order.status, now_ms)

    def _closed_by_exchange(self, o: GridOrder, status: OrderStatus, now_ms: int) -> None:
        requested = o.cancel_requested
        if not self._move(o, OrderState.CANCELLED, now_ms):
            return
        pair = self._pair(o.pair)
        if not requested and pair is not None:
            pair.retry_at_ms = now_ms + self.settings.replace_delay_ms
        if not requested or o.executed:
            self._events.append(ClosedByExchange(o.order_id, o.client_id, o.level, o.side, o.price,
                                                 status.value.lower(), o.executed, requested))

    def cancel_result(self, client_id: int, order_id: str, result: Order | None, now_ms: int) -> None:
        """Our cancel's answer: the cancelled order, or None when it was no longer on the book."""
        o = self.orders[client_id]
        if order_id != o.order_id or not o.state.live:
            return  # a duplicate or a written-off order: its fills, if any, arrive through fill history
        o.cancel_requested = True
        self._touch(o)
        if result is None:
            o.missing = True  # filled meanwhile, or already cancelled: find out
            return
        if result.status.is_terminal:
            if result.executed_quantity > o.executed:
                o.missing = True  # fills we have not seen yet; the lookup brings them
                return
            self._closed_by_exchange(o, result.status, now_ms)

    def _learn_id(self, o: GridOrder, order_id: str) -> None:
        if o.order_id is None:
            o.order_id = order_id
            self._touch(o)
        elif order_id != o.order_id and order_id not in self.duplicates:
            # Two exchange orders carry this clientId: keep the one we know, cancel this one at once.
            self.duplicates.add(order_id)
            self.zombies[order_id] = o.client_id
            self._events.append(DuplicateOnBook(order_id, o.client_id, o.level, "a second order with its clientId"))
        self.by_order_id[order_id] = o.client_id

    def apply_open_orders(self, snapshot: Iterable[Order], as_of_ms: int) -> int:
        """A REST snapshot of open orders, requested at ``as_of_ms``. Returns how many foreign
        orders (not this grid's) it held."""
        on_book: set[str] = set()
        foreign = 0
        for order in sorted(snapshot, key=lambda x: x.created_at_ms):  # of two with one clientId, keep the older
            on_book.add(order.id)
            o = self._find(order.client_id, order.id)
            if o is None:
                foreign += 1
                continue
            self._learn_id(o, order.id)
            if order.id in self.duplicates:
                continue
            if o.state in (OrderState.LOST, OrderState.REJECTED):
                if order.id in self.zombies:
                    continue
                # Ours, yet we had concluded it never reached the book and have placed its pair's
                # order again since: this one is a duplicate, so it goes.
                self.zombies[order.id] = o.client_id
                self._events.append(DuplicateOnBook(order.id, o.client_id, o.level, o.state.value))
                continue
            if not o.state.live:
                # Filled or cancelled in our books: the snapshot was taken before the news we already
                # have (fill history is read after it), so it says nothing new.
                continue
            if o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
                self._move(o, OrderState.OPEN, as_of_ms)
            if o.state is OrderState.OPEN:
                o.missing = False
            # executed_quantity ahead of our fills is fine: fill history, read after this
            # snapshot, brings those fills.
        for o in self.live.values():
            if (o.state is OrderState.OPEN and o.order_id is not None and o.order_id not in on_book
                    and o.sent_ms is not None and o.sent_ms < as_of_ms and not o.complete):
                o.missing = True
        return foreign

    def apply_update(self, u: OrderUpdate, now_ms: int) -> None:
        """One event of the private order stream."""
        o = self._find(u.client_id, u.order_id)
        if o is None or u.symbol != self.grid.symbol:
            return
        self._learn_id(o, u.order_id)
        if u.fill is not None:
            self.apply_fill(u.fill)
        if u.order_id in self.duplicates:
            return  # the twin's own news (accepted, cancelled) says nothing about our order
        if u.event == "orderAccepted" and o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
            self._move(o, OrderState.OPEN, now_ms)
        elif u.event in ("orderCancelled", "orderExpired") and o.state.live:
            if u.executed_quantity is not None and u.executed_quantity > o.executed:
                o.missing = True  # some fills have not reached us: the lookup brings them
                self._move(o, OrderState.OPEN, now_ms)
            else:
                self._closed_by_exchange(o, u.status or OrderStatus.CANCELLED, now_ms)
