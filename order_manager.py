"""The grid's state machine: which level holds which order, fills, counter-orders.

No I/O, no clock: callers pass ``now_ms`` and prices in, and take actions (``Place``, ``Cancel``,
``Lookup``) and typed events (``events.py``) out. The live bot, paper mode and the backtester drive this
one class. Methods that change state are named as commands (``take_actions``, ``request_cancels``,
``apply_fill``...); ``stats``, ``live_orders``, ``waiting_ranges`` and ``placeable`` are queries. What the
exchange reports (lookups, cancels, snapshots, stream events, a rolled-back state) is applied by ``news``
(exchange_news.py), the moves along the ladder by ``trail`` and the orders outside the pairs (entry
purchase, exit sale) by ``outside`` (grid_moves.py): collaborators that see the manager only through its
typed interface, ``GridState`` (grid_state.py).

The model. N levels make N - 1 adjacent *pairs*; pair k spans levels k and k+1 and always wants
exactly one order: a buy at level k or a sell at level k+1. When that order has filled completely the
pair flips side (buy at i filled -> sell at i+1; sell at j filled -> buy at j-1). A pair's completed
orders alternate between opening and closing a round trip (``accounting.Ledger``).

Rules:
- Every order gets a fresh ``clientId`` (``tag << 24 | sequence``) and is recorded as INTENDED before
  the caller sends it. Order states change only along ``order_state.ALLOWED``; anything else is
  refused (``TransitionRefused``), so a stale snapshot can never revive a finished order.
- Fills are the truth for executed amounts, applied once per trade id whichever path brought them.
  An order is complete when its fills add up to its quantity; only then does its pair flip.
- A level never holds two live orders: a pair whose level is taken waits until it is free.
- An unknown outcome is looked up only once its signature window has passed; a vanished order is
  looked up before anything is concluded; one the exchange cancelled is replaced at its level.
"""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from gridbot.core.accounting import Ledger, Stats
from gridbot.core.events import (CounterOrderDecided, FillApplied, FilledAfterCancel, FilledOffGrid, GridEvent, OrderRefused,
                    OutcomeUnknown, RoundTripCompleted, TransitionRefused)
from gridbot.core.exchange_news import SEQ_BITS, SEQ_MASK, ExchangeNews
from grid_calculator import GridSpec, initial_plan
from gridbot.core.grid_moves import OutsideOrders, TrailMoves
from gridbot.core.models import Fill, Order, Side
from gridbot.core.order_state import (Action, Cancel, Changes, GridOrder, Lookup, OrderState, Orphan, Pair, Place, Settings,
                         Snapshot, allowed, placeable, placeable_range)
from gridbot.core.risk import RiskState

SEQ_MAX = SEQ_MASK
# Refusals that mean "not now, for funds" (a perp's margin among them): the level waits and tries again.
FUNDS_CODES = frozenset({"INSUFFICIENT_FUNDS", "INSUFFICIENT_MARGIN", "MAX_LEVERAGE_REACHED", "POSITION_LIMIT"})
# A finished order stays in memory this long after it closed (late news about it is still recognised:
# a fill that raced its cancel, a stale snapshot), then leaves with its trade ids; the state file keeps
# everything the figures and ``report`` need. A year of fills thus costs no memory.
RETAIN_MS = 10 * 60_000


class OrderManager:
    def __init__(self, grid: GridSpec, *, tag: int, settings: Settings | None = None) -> None:
        if not 1 <= tag <= 255:
            raise ValueError("tag must be 1..255")
        self.grid = grid
        self.tag = tag
        self.settings = settings or Settings()
        self.next_seq = 1
        self.orders: dict[int, GridOrder] = {}
        # The live orders (intended, unknown, open), kept apart: every decision looks at them only, and
        # a grid that has traded for months has thousands of finished orders.
        self.live: dict[int, GridOrder] = {}
        self.by_order_id: dict[str, int] = {}
        self.pairs: list[Pair] = []
        self.seen_trades: set[int] = set()
        self.ledger = Ledger(grid.base, grid.quote)
        self.wait_seq = 0
        # Exits and trailing (risk.py): the trigger, the trail offset, an exit and its sale. Pairs and
        # orders carry absolute indices on the grid's ladder: the window is offset .. offset + n - 1.
        self.risk = RiskState()
        self.version = 0                       # bumped by every change; the store saves on a change
        # Order id -> clientId: ours and on the book, to be cancelled: written off (lost, rejected) yet
        # there, or a second exchange order with one clientId (a placement delivered twice).
        self.zombies: dict[str, int] = {}
        self.duplicates: set[str] = set()      # the second orders' ids: their fills never complete ours
        self.orphans: dict[int, Orphan] = {}   # ours, lost by a rolled-back state (exchange_news.recover)
        self._changed: set[int] = set()
        self._changed_pairs: set[int] = set()
        self._new_fills: list[Fill] = []
        self._events: list[GridEvent] = []
        self._next_sweep_ms = 0
        self.news = ExchangeNews(self)        # what the exchange reports
        self.trail = TrailMoves(self)         # the grid's moves along its ladder
        self.outside = OutsideOrders(self)    # the entry's and the sale's orders

    # -------------------------------------------------------------------------- snapshots
    def snapshot(self) -> Snapshot:
        return Snapshot(tuple(replace(p) for p in self.pairs), tuple(replace(o) for o in self.orders.values()),
                        frozenset(self.seen_trades), self.next_seq, self.wait_seq, self.ledger.copy(),
                        RiskState.from_json(self.risk.to_json()))

    @classmethod
    def from_snapshot(cls, grid: GridSpec, tag: int, snap: Snapshot,
                      settings: Settings | None = None) -> "OrderManager":
        """A manager resumed from saved state (after a restart). An order that was about to be sent when
        the process died may or may not have reached the exchange: it becomes an unknown outcome,
        looked up once its signature window has passed."""
        om = cls(grid, tag=tag, settings=settings)
        om.risk = RiskState.from_json(snap.risk.to_json())
        om.pairs = sorted((replace(p, order=None) for p in snap.pairs), key=lambda p: p.index)
        om.orders = {o.client_id: replace(o) for o in snap.orders}
        om.by_order_id = {o.order_id: o.client_id for o in om.orders.values() if o.order_id}
        om.seen_trades = set(snap.seen_trades)
        om.next_seq, om.wait_seq, om.ledger = snap.next_seq, snap.wait_seq, snap.ledger.copy()
        for o in om.orders.values():
            if o.state is OrderState.INTENDED:
                o.sent_ms = o.sent_ms if o.sent_ms is not None else o.created_ms
                o.state = OrderState.UNKNOWN
                om._changed.add(o.client_id)
            if o.state.live:
                om.live[o.client_id] = o
                pair = om._pair(o.pair)
                if pair is not None:
                    pair.order = o.client_id
                elif o.cancel_requested:
                    # Left behind by a trail move: its cancel may not have been sent before the process
                    # died, so it is sent (again); an order already gone answers "not found".
                    o.cancel_requested = False
                    om._changed.add(o.client_id)
        om.version += 1
        return om

    def take_changes(self) -> Changes:
        pairs = (self._pair(i) for i in sorted(self._changed_pairs))
        changes = Changes(tuple(replace(self.orders[c]) for c in sorted(self._changed)),
                          tuple(replace(p) for p in pairs if p is not None),
                          tuple(self._new_fills), self.next_seq, self.wait_seq, self.ledger.copy(),
                          self.grid.levels, self.risk.to_json())
        self._changed.clear()
        self._changed_pairs.clear()
        self._new_fills.clear()
        return changes

    def take_events(self) -> list[GridEvent]:
        events, self._events = self._events, []
        return events

    # -------------------------------------------------------------------------- bookkeeping
    def _new_client_id(self) -> int:
        if self.next_seq > SEQ_MAX:
            raise RuntimeError("clientId sequence exhausted for this grid tag")
        cid = (self.tag << SEQ_BITS) | self.next_seq
        self.next_seq += 1
        return cid

    def _find(self, client_id: int | None, order_id: str | None, side: Side, price: Decimal | None,
              quantity: Decimal | None, created_ms: int = 0) -> GridOrder | None:
        """Our order that an exchange order is. Its order id is certain. A clientId is ours only with our
        order's side, price and quantity, and not created before ours was recorded (``created_ms``, when
        known): another grid on the account, or an earlier one, may carry the same clientId."""
        if order_id is not None and order_id in self.by_order_id:
            return self.orders.get(self.by_order_id[order_id])
        o = self.orders.get(client_id) if client_id is not None else None
        if o is None or not o.is_this(side, price, quantity):
            return None
        return o if not created_ms or created_ms >= o.created_ms - self.settings.clock_margin_ms else None

    def _find_fill(self, fill: Fill) -> GridOrder | None:
        """Our order that a fill belongs to: by its order id, else by its clientId when the fill could be
        that order's and that order's exchange id is not yet known to be another one."""
        if fill.order_id in self.by_order_id:
            return self.orders.get(self.by_order_id[fill.order_id])
        o = self.orders.get(fill.client_id) if fill.client_id is not None else None
        if o is None or not o.could_fill(fill, self.settings.clock_margin_ms) or (
                o.order_id is not None and o.order_id != fill.order_id):
            return None
        return o

    def _move(self, o: GridOrder, new: OrderState, now_ms: int | None = None) -> bool:
        """The one place an order changes state, along the transition table."""
        if new is o.state:
            return True
        if not allowed(o.state, new):
            self._events.append(TransitionRefused(o.client_id, o.level, o.state.value, new.value))
            return False
        o.state = new
        self._touch(o)
        if not new.live:
            self.live.pop(o.client_id, None)
            o.closed_ms = now_ms
            o.missing = False
            pair = self._pair(o.pair)
            if pair is not None and pair.order == o.client_id:
                pair.order = None
        return True

    @property
    def offset(self) -> int:
        return self.risk.offset

    def _pair(self, index: int) -> Pair | None:
        """The pair with absolute index ``index``, or None when it lies outside the grid's window (a
        trail move dropped it)."""
        k = index - self.risk.offset
        return self.pairs[k] if 0 <= k < len(self.pairs) else None

    def level_price(self, level: int) -> Decimal:
        """The price of absolute level ``level`` (inside the window)."""
        return self.grid.levels[level - self.risk.offset]

    def risk_changed(self) -> None:
        """The risk state changed: the next save writes it."""
        self.version += 1

    def _next_wait_seq(self) -> int:
        self.wait_seq += 1
        return self.wait_seq

    def _touch(self, o: GridOrder) -> None:
        """An order's saved fields changed: the next save writes it."""
        self._changed.add(o.client_id)
        self.version += 1

    # -------------------------------------------------------------------------- start
    def start(self, price: Decimal) -> int:
        """Lay out the pairs for a grid starting at ``price``; returns the empty level."""
        empty, _ = initial_plan(self.grid, price)
        self.version += 1
        self.pairs = []
        for k in range(len(self.grid.levels) - 1):
            side = Side.BID if k < empty else Side.ASK
            self.pairs.append(Pair(index=self.offset + k, side=side, waiting_since=self._next_wait_seq()))
            self._changed_pairs.add(self.offset + k)
        return empty

    def adopt(self, taken: dict[int, Order], now_ms: int) -> None:
        """Take over open orders as this grid's own (``--adopt``), their history starting now: each
        becomes its pair's order, on its side (``grid_calculator.match_open_orders`` chose them)."""
        for k, order in taken.items():
            pair = self.pairs[k]
            pair.side = order.side
            level = self.grid.pair_level(k, order.side)
            assert order.client_id is not None and self.grid.levels[level] == order.price
            # Dated when the exchange created it: a lookup searches history from an order's creation on.
            o = GridOrder(order.client_id, k, level, order.side, self.grid.levels[level], self.grid.quantity,
                          OrderState.OPEN, created_ms=order.created_at_ms or now_ms, order_id=order.id, sent_ms=now_ms)
            self.orders[o.client_id] = self.live[o.client_id] = o
            self.by_order_id[order.id] = o.client_id
            pair.order = o.client_id
            self._changed_pairs.add(k)
            self._touch(o)

    # -------------------------------------------------------------------------- deciding
    def live_orders(self) -> list[GridOrder]:
        return list(self.live.values())

    def _occupied(self) -> dict[int, GridOrder]:
        return {o.level: o for o in self.live.values()}

    def placeable(self, side: Side, price: Decimal, market: Decimal | None) -> bool:
        return placeable(self.grid.post_only, self.settings, side, price, market)

    def placeable_range(self, side: Side, price: Decimal) -> tuple[Decimal | None, Decimal | None]:
        return placeable_range(self.grid.post_only, self.settings, side, price)

    def waiting_ranges(self, now_ms: int) -> list[tuple[Decimal | None, Decimal | None]]:
        """For each pair that would place an order if the price let it: where the price must be."""
        occupied = self._occupied()
        out = []
        for p in self.pairs:
            if p.order is not None or now_ms < p.retry_at_ms:
                continue
            level = self.grid.pair_level(p.index, p.side)
            if level not in occupied:
                out.append(self.placeable_range(p.side, self.level_price(level)))
        return out

    def take_actions(self, now_ms: int, market: Decimal | None) -> list[Action]:
        """What the running bot should do now: placements, lookups, and cancels of duplicates and of
        orders a trail move left outside the grid."""
        placements = self.take_placements(now_ms, market)
        return [*placements, *self.take_lookups(now_ms), *self.take_zombie_cancels(), *self.trail.take_orphan_cancels(),
                *self.news.take_orphan_leftovers()]

    def take_zombie_cancels(self) -> list[Cancel]:
        out = [Cancel(cid, oid) for oid, cid in self.zombies.items()]
        self.zombies.clear()
        return out

    def take_placements(self, now_ms: int, market: Decimal | None) -> list[Place]:
        """An order for every pair without one whose level is free, unless it must wait (a retry
        delay, or a price at which the order would cross or leave the price band). Each Place is
        recorded as INTENDED here, before the caller sends it."""
        if now_ms >= self._next_sweep_ms:
            self.forget_finished(now_ms)
        out: list[Place] = []
        occupied = self._occupied()
        waiting = sorted((p for p in self.pairs if p.order is None), key=lambda p: p.waiting_since)
        for pair in waiting:
            level = self.grid.pair_level(pair.index, pair.side)
            if level in occupied or now_ms < pair.retry_at_ms:
                continue
            if pair.after_cancel is not None:
                if pair.after_cancel in self.live:
                    continue        # a trail move's cancel not yet confirmed: its funds are not yet free
                pair.after_cancel = None
            price = self.level_price(level)
            orphan = self.news.claim_orphan(pair.side, price) if self.orphans else None
            if orphan is not None:
                # Ours already (the saved state had lost it): looked up at once, never placed again.
                o = GridOrder(orphan.client_id, pair.index, level, pair.side, price, self.grid.quantity,
                              OrderState.UNKNOWN, created_ms=orphan.created_ms, order_id=orphan.order_id, sent_ms=0)
                self.orders[o.client_id] = self.live[o.client_id] = o
                self.by_order_id[orphan.order_id] = o.client_id
                self._touch(o)
                pair.order = o.client_id
                occupied[level] = o
                continue
            if not self.placeable(pair.side, price, market):
                continue
            cid = self._new_client_id()
            o = GridOrder(cid, pair.index, level, pair.side, price, self.grid.quantity,
                          OrderState.INTENDED, created_ms=now_ms)
            self.orders[cid] = o
            self.live[cid] = o
            self._touch(o)
            pair.order = cid
            occupied[level] = o
            out.append(Place(cid, level, pair.side, price, self.grid.quantity))
        return out

    def forget_finished(self, now_ms: int) -> int:
        """Drop the orders that finished more than ``RETAIN_MS`` ago, and their trade ids, from memory.
        A fill of a forgotten order can no longer be matched, so it can never be counted twice either."""
        self._next_sweep_ms = now_ms + 60_000
        cutoff = now_ms - RETAIN_MS
        gone = [o for o in self.orders.values()
                if not o.state.live and o.closed_ms is not None and o.closed_ms < cutoff
                and o.client_id not in self._changed]
        for o in gone:
            del self.orders[o.client_id]
            self.seen_trades.difference_update(o.trade_ids)
        if gone:
            # Every exchange id that named a forgotten order (its own, a twin's) goes with it.
            self.by_order_id = {oid: cid for oid, cid in self.by_order_id.items() if cid in self.orders}
        return len(gone)

    def take_lookups(self, now_ms: int) -> list[Lookup]:
        """Orders to look up now (each is not due again for a while): an unknown outcome once its
        window has passed, a vanished open order."""
        out: list[Lookup] = []
        for o in list(self.live.values()):
            if now_ms < o.next_lookup_ms:
                continue
            due = (o.state is OrderState.UNKNOWN and o.sent_ms is not None
                   and now_ms >= o.sent_ms + self.settings.window_ms + self.settings.lookup_margin_ms)
            if due or (o.state is OrderState.OPEN and o.missing):
                o.next_lookup_ms = now_ms + self.settings.retry_base_ms * (1 + min(o.lookups, 5))
                out.append(Lookup(o.client_id, o.order_id, o.created_ms - self.settings.clock_margin_ms, o.side, o.price,
                                  o.quantity))
        return out

    def request_cancels(self) -> list[Cancel]:
        """Cancel every order of ours known to be on the book (each once, until it fails)."""
        out: list[Cancel] = self.take_zombie_cancels()
        for o in self.live.values():
            if o.state is OrderState.OPEN and o.order_id is not None and not o.cancel_requested:
                o.cancel_requested = True
                self._touch(o)
                out.append(Cancel(o.client_id, o.order_id))
        return out

    def cancel_failed(self, client_id: int) -> None:
        """The cancel request itself failed (transient): it may be sent again."""
        o = self.orders[client_id]
        o.cancel_requested = False
        self._touch(o)

    # -------------------------------------------------------------------------- results
    def sending(self, client_id: int, now_ms: int) -> None:
        """The caller is about to send this order (its intent is recorded)."""
        o = self.orders[client_id]
        o.sent_ms = now_ms
        self._touch(o)

    def held_for_funds(self) -> list[Pair]:
        """The pairs whose order is held back because the free balance did not cover it."""
        return [p for p in self.pairs if p.funds_refusals and p.order is None]

    def placed(self, client_id: int, order: Order, now_ms: int) -> None:
        o = self.orders[client_id]
        pair = self._pair(o.pair)
        if pair is not None and pair.funds_refusals:
            pair.funds_refusals = 0
        self.news.learn_id(o, order.id)
        if o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
            self._move(o, OrderState.OPEN, now_ms)
        if order.status.is_terminal and not o.complete:
            # Filled (taker) or expired on arrival: the fills and the final state come by lookup.
            o.missing = True

    def rejected(self, client_id: int, code: str, message: str, now_ms: int) -> None:
        o = self.orders[client_id]
        if not self._move(o, OrderState.REJECTED, now_ms):
            return
        pair = self._pair(o.pair)
        if pair is None:
            return
        if code in FUNDS_CODES:
            # Held back for funds: its own outcome and backoff (the level waits for the balance, which
            # a fill or a deposit brings), not a refusal of the order itself.
            pair.funds_refusals += 1
            delay = min(self.settings.retry_cap_ms, self.settings.funds_retry_ms * 2 ** (pair.funds_refusals - 1))
        else:
            pair.rejections += 1
            delay = min(self.settings.retry_cap_ms, self.settings.retry_base_ms * 2 ** (pair.rejections - 1))
        pair.retry_at_ms = now_ms + delay
        self._events.append(OrderRefused(client_id, o.level, o.side, o.price, o.quantity, code, message, delay))

    def unknown(self, client_id: int, now_ms: int) -> None:
        o = self.orders[client_id]
        if o.sent_ms is None:
            o.sent_ms = now_ms
            self._touch(o)
        if o.state is not OrderState.UNKNOWN and self._move(o, OrderState.UNKNOWN, now_ms):
            self._events.append(OutcomeUnknown(client_id, o.level, o.side, o.price))

    def not_sent(self, client_id: int, now_ms: int) -> None:
        """The request never left (connection refused): nothing can be on the book."""
        o = self.orders[client_id]
        pair = self._pair(o.pair)
        if self._move(o, OrderState.REJECTED, now_ms) and pair is not None:
            pair.retry_at_ms = now_ms + self.settings.retry_base_ms

    # -------------------------------------------------------------------------- observations
    def apply_fill(self, fill: Fill) -> bool:
        """Account one fill (once per trade id). True when it was new and ours."""
        if fill.trade_id in self.seen_trades:
            return False
        if fill.client_id is not None and self.risk.exit is not None and self.risk.exit.sale is not None \
                and fill.client_id in self.risk.exit.sale.orders and fill.symbol == self.grid.symbol \
                and fill.side.value == self.risk.exit.sale.side:
            return self.outside.sale_fill(fill)
        o = self._find_fill(fill)
        if o is None or fill.symbol != self.grid.symbol:
            return False
        self.seen_trades.add(fill.trade_id)
        o.trade_ids.append(fill.trade_id)
        self._new_fills.append(fill)
        self._touch(o)
        self.news.learn_id(o, fill.order_id)
        if fill.order_id in self.duplicates:
            # The duplicate's fill moved money: it is accounted, but it is not our order's progress.
            self.ledger.record_fill(fill)
            self._events.append(FillApplied(fill.trade_id, fill.order_id, o.client_id, o.level, fill.side,
                                            fill.price, fill.quantity, fill.fee, fill.fee_symbol, o.executed,
                                            o.quantity, fill.timestamp_ms))
            return True
        o.executed += fill.quantity
        o.executed_quote += fill.price * fill.quantity
        o.fee_quote += self.ledger.record_fill(fill)
        self._events.append(FillApplied(fill.trade_id, fill.order_id, o.client_id, o.level, fill.side, fill.price,
                                        fill.quantity, fill.fee, fill.fee_symbol, o.executed, o.quantity,
                                        fill.timestamp_ms))
        if o.complete:
            self._completed(o, fill.timestamp_ms)
        return True

    def _completed(self, o: GridOrder, now_ms: int) -> None:
        was_live = o.state.live
        if o.state is OrderState.CANCELLED:
            self._events.append(FilledAfterCancel(o.order_id, o.level))
            return
        if not self._move(o, OrderState.FILLED, now_ms) or not was_live:
            return
        pair = self._pair(o.pair)
        if pair is None:
            # A trail move had dropped its pair (the fill raced the cancel): accounted, no counter-order.
            self._events.append(FilledOffGrid(o.order_id, o.level, o.side, o.price))
            return
        self._changed_pairs.add(pair.index)
        leg = (o.side, o.executed, o.executed_quote, o.fee_quote)
        if pair.opener is None:
            pair.opener = leg
        else:
            profit = self.ledger.record_round_trip(pair.opener, leg)
            pair.opener = None
            pair.round_trips += 1
            self._events.append(RoundTripCompleted(self.ledger.round_trips, pair.index, profit))
        pair.side = o.side.opposite
        pair.retry_at_ms = 0
        pair.rejections = 0
        pair.funds_refusals = 0
        pair.waiting_since = self._next_wait_seq()
        nxt = self.grid.pair_level(pair.index, pair.side)
        self._events.append(CounterOrderDecided(o.side, o.level, pair.side, self.level_price(nxt),
                                                self.grid.quantity, nxt))

    # -------------------------------------------------------------------------- reporting
    def stats(self, price: Decimal | None) -> Stats:
        open_sides = [o.side for o in self.live.values() if o.state is OrderState.OPEN]
        bids, asks = open_sides.count(Side.BID), open_sides.count(Side.ASK)
        waiting = sum(1 for p in self.pairs if p.order is None)
        lg = self.ledger
        perp = self.grid.symbol.endswith("_PERP")   # its position: the whole, opening included (the exchange's)
        opening = self.risk.start.base if perp and self.risk.start is not None else 0
        return Stats(price, bids, asks, lg.round_trips, lg.grid_profit, dict(lg.fees), lg.position + opening,
                     lg.quote_flow, lg.floating_pnl(price), lg.fill_count, waiting, lg.funding if perp else None)
