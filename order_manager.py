"""The grid's state machine: which level holds which order, fills, counter-orders, accounting.

No I/O, no clock: callers pass ``now_ms`` and prices in, and take actions (``Place``, ``Cancel``,
``Lookup``) and notes (lines worth logging) out. The live bot, paper mode and the backtester drive
this one class.

The model. N levels make N - 1 adjacent *pairs*; pair k spans levels k and k+1 and always wants
exactly one order: a buy at level k or a sell at level k+1. When that order has filled completely the
pair flips side (buy at i filled -> sell at i+1; sell at j filled -> buy at j-1). A pair's completed
orders alternate between opening and closing a round trip, so a round trip is two consecutive
completed orders of one pair; its profit is the sell proceeds minus the buy cost minus both fees (a
fee charged in the base asset is valued at its fill price).

Rules:
- Every order gets a fresh ``clientId`` (``tag << 24 | sequence``) and is recorded as INTENDED before
  the caller sends it. Order states change only along ``ALLOWED``; anything else is refused and noted,
  so a stale snapshot can never revive a finished order.
- Fills are the truth for executed amounts, applied once per trade id whichever path brought them.
  An order is complete when its fills add up to its quantity; only then does its pair flip.
- A level never holds two live orders: a pair whose level is taken waits until it is free.
- An order whose placement outcome is unknown is looked up (``Lookup``) only after its signature
  window has passed, when the exchange can no longer accept it; until then its pair waits.
- An order that vanished without our cancel is looked up before anything is concluded; one that the
  exchange cancelled or expired is replaced at the same level and side.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Iterable

from grid_calculator import GridSpec, initial_plan
from models import Fill, Order, OrderStatus, OrderUpdate, Side

ZERO = Decimal(0)
SEQ_BITS = 24
SEQ_MAX = (1 << SEQ_BITS) - 1


def _d(value: Decimal) -> str:
    """A decimal for a note: exact, without trailing zeros."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class OrderState(Enum):
    INTENDED = "intended"    # clientId chosen and recorded; being sent
    UNKNOWN = "unknown"      # sent, no answer: may or may not be on the book
    OPEN = "open"            # on the book (possibly partially filled)
    FILLED = "filled"        # fills add up to the quantity
    CANCELLED = "cancelled"  # cancelled or expired, by us or by the exchange
    REJECTED = "rejected"    # refused at placement
    LOST = "lost"            # outcome was unknown; looked up after its window: never placed

    @property
    def live(self) -> bool:
        return self in _LIVE_STATES


_LIVE_STATES = frozenset({OrderState.INTENDED, OrderState.UNKNOWN, OrderState.OPEN})

ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    OrderState.INTENDED: frozenset({OrderState.UNKNOWN, OrderState.OPEN, OrderState.FILLED,
                                    OrderState.CANCELLED, OrderState.REJECTED}),
    OrderState.UNKNOWN: frozenset({OrderState.OPEN, OrderState.FILLED, OrderState.CANCELLED,
                                   OrderState.LOST}),
    OrderState.OPEN: frozenset({OrderState.FILLED, OrderState.CANCELLED}),
    OrderState.FILLED: frozenset(),
    OrderState.CANCELLED: frozenset(),
    OrderState.REJECTED: frozenset(),
    OrderState.LOST: frozenset(),
}


# ------------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Place:
    client_id: int
    level: int
    side: Side
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True)
class Cancel:
    client_id: int
    order_id: str


@dataclass(frozen=True)
class Lookup:
    """Find out what became of an order (by clientId), with its fills."""
    client_id: int
    order_id: str | None
    since_ms: int


Action = Place | Cancel | Lookup


# ------------------------------------------------------------------------------------- state
@dataclass
class GridOrder:
    client_id: int
    pair: int
    level: int
    side: Side
    price: Decimal
    quantity: Decimal
    state: OrderState
    created_ms: int
    order_id: str | None = None
    sent_ms: int | None = None
    executed: Decimal = ZERO          # from the fills we have applied
    executed_quote: Decimal = ZERO
    fee_quote: Decimal = ZERO         # fees valued in the quote asset
    cancel_requested: bool = False
    missing: bool = False             # absent from a snapshot; being looked up
    lookups: int = 0
    next_lookup_ms: int = 0
    closed_ms: int | None = None

    @property
    def complete(self) -> bool:
        return self.executed >= self.quantity


@dataclass
class Pair:
    index: int
    side: Side
    order: int | None = None          # clientId of its live order
    opener: tuple[Side, Decimal, Decimal, Decimal] | None = None  # (side, qty, quote, fee_quote)
    retry_at_ms: int = 0
    rejections: int = 0
    waiting_since: int = 0            # sequence number: who waited first for a shared level
    round_trips: int = 0


@dataclass(frozen=True)
class Stats:
    price: Decimal | None
    open_bids: int
    open_asks: int
    round_trips: int
    grid_profit: Decimal
    fees: dict[str, Decimal]
    position: Decimal                 # base bought - base sold - base fees, by this grid
    quote_flow: Decimal               # quote received - quote spent - quote fees
    floating_pnl: Decimal | None      # (position valued at price + quote flow) - grid profit
    fills: int
    waiting: int                      # pairs with no order on the book right now


@dataclass(frozen=True)
class Changes:
    """What changed since the last ``take_changes``: orders (clientIds) and pairs (indexes) whose saved
    fields changed, and newly applied fills."""
    orders: frozenset[int]
    pairs: frozenset[int]
    fills: tuple[Fill, ...]


@dataclass
class Settings:
    window_ms: int = 5000             # signature window: after it an unsent order can't arrive
    lookup_margin_ms: int = 1000
    retry_base_ms: int = 2000
    retry_cap_ms: int = 60_000
    replace_delay_ms: int = 1000      # after the exchange cancelled one of our orders
    max_multiplier: Decimal | None = None
    min_multiplier: Decimal | None = None


class OrderManager:
    def __init__(self, grid: GridSpec, *, tag: int, settings: Settings | None = None,
                 next_seq: int = 1) -> None:
        if not 1 <= tag <= 255:
            raise ValueError("tag must be 1..255")
        self.grid = grid
        self.tag = tag
        self.settings = settings or Settings()
        self.next_seq = next_seq
        self.orders: dict[int, GridOrder] = {}
        # The live orders (intended, unknown, open), kept apart: every decision looks at them only, and
        # a grid that has traded for months has thousands of finished orders.
        self.live: dict[int, GridOrder] = {}
        self.by_order_id: dict[str, int] = {}
        self.pairs: list[Pair] = []
        self.seen_trades: set[int] = set()
        self.fees: dict[str, Decimal] = {}
        self.position = ZERO
        self.quote_flow = ZERO
        self.grid_profit = ZERO
        self.round_trips = 0
        self.fill_count = 0
        self.last_fill_ms = 0
        self.wait_seq = 0
        self.version = 0                       # bumped by every change; the store saves on a change
        self.zombies: dict[int, str] = {}      # clientId -> order id: ours, written off, yet on the book
        self._changed: set[int] = set()
        self._changed_pairs: set[int] = set()
        self._new_fills: list[Fill] = []
        self._notes: list[tuple[str, str]] = []

    # -------------------------------------------------------------------------- bookkeeping
    def note(self, level: str, message: str) -> None:
        self._notes.append((level, message))

    def drain_notes(self) -> list[tuple[str, str]]:
        notes, self._notes = self._notes, []
        return notes

    def new_client_id(self) -> int:
        if self.next_seq > SEQ_MAX:
            raise RuntimeError("clientId sequence exhausted for this grid tag")
        cid = (self.tag << SEQ_BITS) | self.next_seq
        self.next_seq += 1
        return cid

    def is_ours(self, client_id: int | None) -> bool:
        return client_id is not None and client_id in self.orders

    def _find(self, client_id: int | None, order_id: str | None) -> GridOrder | None:
        if client_id is not None and client_id in self.orders:
            return self.orders[client_id]
        if order_id is not None and order_id in self.by_order_id:
            return self.orders[self.by_order_id[order_id]]
        return None

    def _move(self, o: GridOrder, new: OrderState, now_ms: int | None = None) -> bool:
        if new is o.state:
            return True
        if new not in ALLOWED[o.state]:
            self.note("WARNING", f"refused {o.state.value} -> {new.value} for order {o.client_id} "
                                 f"(level {o.level}); keeping {o.state.value}")
            return False
        o.state = new
        self.version += 1
        self._changed.add(o.client_id)
        if not new.live:
            self.live.pop(o.client_id, None)
            o.closed_ms = now_ms
            o.missing = False
            pair = self.pairs[o.pair]
            if pair.order == o.client_id:
                pair.order = None
        return True

    def _level_price(self, level: int) -> Decimal:
        return self.grid.levels[level]

    # -------------------------------------------------------------------------- start
    def start(self, price: Decimal) -> int:
        """Lay out the pairs for a grid starting at ``price``; returns the empty level."""
        empty, plan = initial_plan(self.grid, price)
        self.version += 1
        self.pairs = []
        for k in range(len(self.grid.levels) - 1):
            side = Side.BID if k < empty else Side.ASK
            self.pairs.append(Pair(index=k, side=side, waiting_since=self._next_wait()))
            self._changed_pairs.add(k)
        return empty

    def _next_wait(self) -> int:
        self.wait_seq += 1
        return self.wait_seq

    def _touch(self, o: GridOrder) -> None:
        """An order's saved fields changed: the next save writes it."""
        self._changed.add(o.client_id)
        self.version += 1

    def take_changes(self) -> Changes:
        changes = Changes(frozenset(self._changed), frozenset(self._changed_pairs), tuple(self._new_fills))
        self._changed.clear()
        self._changed_pairs.clear()
        self._new_fills.clear()
        return changes

    def restore(self, *, pairs: list[Pair], orders: list[GridOrder], seen_trades: set[int], next_seq: int,
                wait_seq: int, round_trips: int, grid_profit: Decimal, position: Decimal,
                quote_flow: Decimal, fees: dict[str, Decimal], fill_count: int, last_fill_ms: int) -> None:
        """Load saved state (after a restart). An order that was about to be sent when the process
        died may or may not have reached the exchange: it becomes an unknown outcome, looked up once
        its signature window has passed."""
        self.pairs = sorted(pairs, key=lambda p: p.index)
        self.orders = {o.client_id: o for o in orders}
        self.by_order_id = {o.order_id: o.client_id for o in orders if o.order_id}
        self.seen_trades = set(seen_trades)
        self.next_seq, self.wait_seq = next_seq, wait_seq
        self.round_trips, self.grid_profit = round_trips, grid_profit
        self.position, self.quote_flow, self.fees = position, quote_flow, dict(fees)
        self.fill_count, self.last_fill_ms = fill_count, last_fill_ms
        self.live = {o.client_id: o for o in orders if o.state.live}
        for o in self.orders.values():
            if o.state is OrderState.INTENDED:
                o.sent_ms = o.sent_ms if o.sent_ms is not None else o.created_ms
                o.state = OrderState.UNKNOWN
                self._changed.add(o.client_id)
            if o.state.live:
                pair = self.pairs[o.pair]
                pair.order = o.client_id
        self.version += 1

    # -------------------------------------------------------------------------- deciding
    def live_orders(self) -> list[GridOrder]:
        return list(self.live.values())

    def _occupied(self) -> dict[int, GridOrder]:
        return {o.level: o for o in self.live.values()}

    def placeable(self, side: Side, price: Decimal, market: Decimal | None) -> bool:
        """Would the exchange accept this order now? (A post-only order must not cross, and the
        price must sit inside the market's band around the last price.)"""
        if market is None:
            return True
        if self.grid.post_only:
            if side is Side.BID and price > market:
                return False
            if side is Side.ASK and price < market:
                return False
        s = self.settings
        if s.max_multiplier is not None and price > market * s.max_multiplier:
            return False
        if s.min_multiplier is not None and price < market * s.min_multiplier:
            return False
        return True

    def placeable_range(self, side: Side, price: Decimal) -> tuple[Decimal | None, Decimal | None]:
        """The market prices (low, high; None = unbounded) at which ``placeable`` holds for an order
        at ``price``: the same rule, as an interval."""
        lo: Decimal | None = None
        hi: Decimal | None = None
        if self.grid.post_only:
            if side is Side.BID:
                lo = price
            else:
                hi = price
        s = self.settings
        if s.max_multiplier is not None:
            bound = price / s.max_multiplier
            lo = bound if lo is None else max(lo, bound)
        if s.min_multiplier is not None:
            bound = price / s.min_multiplier
            hi = bound if hi is None else min(hi, bound)
        return lo, hi

    def waiting_ranges(self, now_ms: int) -> list[tuple[Decimal | None, Decimal | None]]:
        """For each pair that would place an order if the price let it: where the price must be."""
        occupied = self._occupied()
        out = []
        for p in self.pairs:
            if p.order is not None or now_ms < p.retry_at_ms:
                continue
            level = self.grid.pair_level(p.index, p.side)
            if level not in occupied:
                out.append(self.placeable_range(p.side, self._level_price(level)))
        return out

    def actions(self, now_ms: int, market: Decimal | None) -> list[Action]:
        """What the running bot should do now: placements, lookups, and cancels of zombies."""
        return [*self.placements(now_ms, market), *self.lookups(now_ms), *self.zombie_cancels()]

    def zombie_cancels(self) -> list[Cancel]:
        out = [Cancel(cid, oid) for cid, oid in self.zombies.items()]
        self.zombies.clear()
        return out

    def placements(self, now_ms: int, market: Decimal | None) -> list[Place]:
        """An order for every pair without one whose level is free, unless it must wait (a retry
        delay, or a price at which the order would cross or leave the price band). Each Place is
        recorded as INTENDED here, before the caller sends it."""
        out: list[Place] = []
        occupied = self._occupied()
        waiting = sorted((p for p in self.pairs if p.order is None), key=lambda p: p.waiting_since)
        for pair in waiting:
            level = self.grid.pair_level(pair.index, pair.side)
            if level in occupied or now_ms < pair.retry_at_ms:
                continue
            price = self._level_price(level)
            if not self.placeable(pair.side, price, market):
                continue
            cid = self.new_client_id()
            o = GridOrder(cid, pair.index, level, pair.side, price, self.grid.quantity,
                          OrderState.INTENDED, created_ms=now_ms)
            self.orders[cid] = o
            self.live[cid] = o
            self._changed.add(cid)
            pair.order = cid
            occupied[level] = o
            out.append(Place(cid, level, pair.side, price, self.grid.quantity))
        if out:
            self.version += 1
        return out

    def lookups(self, now_ms: int) -> list[Lookup]:
        """Orders to look up: an unknown outcome once its window has passed, a vanished open order."""
        out: list[Lookup] = []
        for o in list(self.live.values()):
            if now_ms < o.next_lookup_ms:
                continue
            due = (o.state is OrderState.UNKNOWN and o.sent_ms is not None
                   and now_ms >= o.sent_ms + self.settings.window_ms + self.settings.lookup_margin_ms)
            if due or (o.state is OrderState.OPEN and o.missing):
                o.next_lookup_ms = now_ms + self.settings.retry_base_ms * (1 + min(o.lookups, 5))
                out.append(Lookup(o.client_id, o.order_id, o.created_ms - 60_000))
        return out

    def cancels(self) -> list[Cancel]:
        """Cancel every order of ours known to be on the book (each once, until it fails)."""
        out: list[Cancel] = self.zombie_cancels()
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

    def placed(self, client_id: int, order: Order, now_ms: int) -> None:
        self.version += 1
        o = self.orders[client_id]
        self._learn_id(o, order.id)
        if o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
            self._move(o, OrderState.OPEN, now_ms)
        if order.status.is_terminal and not o.complete:
            # Filled (taker) or expired on arrival: the fills and the final state come by lookup.
            o.missing = True

    def rejected(self, client_id: int, code: str, message: str, now_ms: int) -> None:
        o = self.orders[client_id]
        if not self._move(o, OrderState.REJECTED, now_ms):
            return
        pair = self.pairs[o.pair]
        pair.rejections += 1
        delay = min(self.settings.retry_cap_ms, self.settings.retry_base_ms * 2 ** (pair.rejections - 1))
        pair.retry_at_ms = now_ms + delay
        self.note("WARNING", f"{o.side.value} {o.quantity:f} @ {o.price:f} (level {o.level}) rejected: "
                             f"{code} {message}; retrying in {delay / 1000:.0f} s")

    def unknown(self, client_id: int, now_ms: int) -> None:
        self.version += 1
        o = self.orders[client_id]
        if o.sent_ms is None:
            o.sent_ms = now_ms
            self._touch(o)
        if self._move(o, OrderState.UNKNOWN, now_ms):
            self.note("WARNING", f"no answer for {o.side.value} @ {o.price:f} (level {o.level}, clientId "
                                 f"{client_id}); will look it up by clientId")

    def not_sent(self, client_id: int, now_ms: int) -> None:
        """The request never left (connection refused): nothing can be on the book."""
        o = self.orders[client_id]
        if self._move(o, OrderState.REJECTED, now_ms):
            pair = self.pairs[o.pair]
            pair.retry_at_ms = now_ms + self.settings.retry_base_ms

    def resolve(self, client_id: int, order: Order | None, fills: Iterable[Fill], now_ms: int) -> None:
        """What a lookup found: the order as the exchange knows it (None: not found) and its fills."""
        self.version += 1
        for f in fills:
            self.apply_fill(f)
        o = self.orders[client_id]
        o.lookups += 1
        if not o.state.live:
            return
        if order is None:
            if o.state in (OrderState.UNKNOWN, OrderState.INTENDED):
                if self._move(o, OrderState.LOST if o.state is OrderState.UNKNOWN else OrderState.REJECTED,
                              now_ms):
                    self.note("INFO", f"clientId {client_id} (level {o.level}) never reached the book; "
                                      f"placing it again")
            elif o.lookups >= 3:
                self._move(o, OrderState.CANCELLED, now_ms)
                self.note("ERROR", f"order {o.order_id} (level {o.level}) is neither on the book nor in "
                                   f"history after {o.lookups} lookups; treating it as gone")
            return
        self._learn_id(o, order.id)
        if order.status.is_open:
            if o.state is not OrderState.OPEN:
                self._move(o, OrderState.OPEN, now_ms)
            o.missing = False
            return
        if order.status is OrderStatus.FILLED or o.complete:
            if not o.complete:
                o.missing = True  # the exchange says filled; its fills have not all arrived yet
                self.note("WARNING", f"order {o.order_id} is filled but only {o.executed:f} of "
                                     f"{o.quantity:f} has been seen in fills; looking again")
            return
        self._closed_by_exchange(o, order.status, now_ms)

    def _closed_by_exchange(self, o: GridOrder, status: OrderStatus, now_ms: int) -> None:
        requested = o.cancel_requested
        if self._move(o, OrderState.CANCELLED, now_ms):
            part = f" after {o.executed:f} filled" if o.executed else ""
            if not requested:
                pair = self.pairs[o.pair]
                pair.retry_at_ms = now_ms + self.settings.replace_delay_ms
                self.note("WARNING", f"order {o.order_id} ({o.side.value} @ {o.price:f}, level {o.level}) "
                                     f"was {status.value.lower()} by the exchange or by hand{part}; "
                                     f"replacing it")
            elif o.executed:
                self.note("INFO", f"cancelled order {o.order_id} (level {o.level}){part}")

    def cancel_result(self, client_id: int, result: Order | None, now_ms: int) -> None:
        """Our cancel's answer: the cancelled order, or None when it was no longer on the book."""
        self.version += 1
        o = self.orders[client_id]
        o.cancel_requested = True
        self._touch(o)
        if not o.state.live:
            return  # a zombie: its fills, if any, arrive through fill history
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
        self.by_order_id[order_id] = o.client_id

    # -------------------------------------------------------------------------- observations
    def apply_fill(self, fill: Fill) -> bool:
        """Account one fill (once per trade id). True when it was new and ours."""
        if fill.trade_id in self.seen_trades:
            return False
        o = self._find(fill.client_id, fill.order_id)
        if o is None or fill.symbol != self.grid.symbol:
            return False
        self.seen_trades.add(fill.trade_id)
        self._new_fills.append(fill)
        self._changed.add(o.client_id)
        self.version += 1
        self._learn_id(o, fill.order_id)
        quote_amt = fill.price * fill.quantity
        o.executed += fill.quantity
        o.executed_quote += quote_amt
        self.fees[fill.fee_symbol] = self.fees.get(fill.fee_symbol, ZERO) + fill.fee
        fee_quote = ZERO
        if fill.fee_symbol == self.grid.quote:
            fee_quote = fill.fee
            self.quote_flow -= fill.fee
        elif fill.fee_symbol == self.grid.base:
            fee_quote = fill.fee * fill.price
            self.position -= fill.fee
        o.fee_quote += fee_quote
        if fill.side is Side.BID:
            self.position += fill.quantity
            self.quote_flow -= quote_amt
        else:
            self.position -= fill.quantity
            self.quote_flow += quote_amt
        self.fill_count += 1
        self.last_fill_ms = max(self.last_fill_ms, fill.timestamp_ms)
        self.note("INFO", f"fill: {fill.side.value} {fill.quantity:f} @ {fill.price:f} (level {o.level}, "
                          f"order {fill.order_id}, {o.executed:f}/{o.quantity:f}), fee {fill.fee:f} "
                          f"{fill.fee_symbol}")
        if o.complete:
            self._completed(o, fill.timestamp_ms)
        return True

    def _completed(self, o: GridOrder, now_ms: int) -> None:
        was_live = o.state.live
        if o.state is OrderState.CANCELLED:
            self.note("ERROR", f"order {o.order_id} (level {o.level}) filled completely after it was "
                               f"counted as cancelled; accounting it, but its counter-order is skipped")
            return
        if not self._move(o, OrderState.FILLED, now_ms) or not was_live:
            return
        pair = self.pairs[o.pair]
        self._changed_pairs.add(pair.index)
        if pair.order == o.client_id:
            pair.order = None
        leg = (o.side, o.executed, o.executed_quote, o.fee_quote)
        if pair.opener is None:
            pair.opener = leg
        else:
            buy, sell = (pair.opener, leg) if pair.opener[0] is Side.BID else (leg, pair.opener)
            profit = sell[2] - buy[2] - buy[3] - sell[3]
            pair.opener = None
            pair.round_trips += 1
            self.round_trips += 1
            self.grid_profit += profit
            self.note("INFO", f"round trip {self.round_trips} on levels {pair.index}-{pair.index + 1}: "
                              f"profit {_d(profit)} {self.grid.quote}")
        pair.side = o.side.opposite
        pair.retry_at_ms = 0
        pair.rejections = 0
        pair.waiting_since = self._next_wait()
        nxt = self.grid.pair_level(pair.index, pair.side)
        self.note("INFO", f"{o.side.value} at level {o.level} filled: counter-order {pair.side.value} "
                          f"{self.grid.quantity:f} @ {self._level_price(nxt):f} (level {nxt})")

    def apply_open_orders(self, snapshot: Iterable[Order], as_of_ms: int) -> int:
        """A REST snapshot of open orders, requested at ``as_of_ms``. Returns how many foreign
        orders (not this grid's) it held."""
        self.version += 1
        on_book: set[str] = set()
        foreign = 0
        for order in snapshot:
            on_book.add(order.id)
            o = self._find(order.client_id, order.id)
            if o is None:
                foreign += 1
                continue
            self._learn_id(o, order.id)
            if o.state in (OrderState.LOST, OrderState.REJECTED):
                if o.client_id in self.zombies:
                    continue
                # Ours, yet we had concluded it never reached the book and have placed its pair's
                # order again since: this one is a duplicate, so it goes.
                self.zombies[o.client_id] = order.id
                self.note("ERROR", f"order {order.id} (clientId {o.client_id}, level {o.level}) is on the book "
                                   f"although it was counted as {o.state.value}; cancelling it")
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
        self.version += 1
        o = self._find(u.client_id, u.order_id)
        if o is None or u.symbol != self.grid.symbol:
            return
        self._learn_id(o, u.order_id)
        if u.fill is not None:
            self.apply_fill(u.fill)
        if u.event == "orderAccepted" and o.state in (OrderState.INTENDED, OrderState.UNKNOWN):
            self._move(o, OrderState.OPEN, now_ms)
        elif u.event in ("orderCancelled", "orderExpired") and o.state.live:
            if u.executed_quantity is not None and u.executed_quantity > o.executed:
                o.missing = True  # some fills have not reached us: the lookup brings them
                if o.state is not OrderState.OPEN:
                    self._move(o, OrderState.OPEN, now_ms)
            else:
                self._closed_by_exchange(o, u.status or OrderStatus.CANCELLED, now_ms)

    # -------------------------------------------------------------------------- reporting
    def stats(self, price: Decimal | None) -> Stats:
        bids = sum(1 for o in self.live.values() if o.state is OrderState.OPEN and o.side is Side.BID)
        asks = sum(1 for o in self.live.values() if o.state is OrderState.OPEN and o.side is Side.ASK)
        floating = None
        if price is not None:
            floating = self.position * price + self.quote_flow - self.grid_profit
        waiting = sum(1 for p in self.pairs if p.order is None)
        return Stats(price, bids, asks, self.round_trips, self.grid_profit, dict(self.fees),
                     self.position, self.quote_flow, floating, self.fill_count, waiting)

    def level_view(self) -> list[dict]:
        """Each level with the order resting on it (for status and plan output)."""
        occupied = self._occupied()
        rows = []
        for i, price in enumerate(self.grid.levels):
            o = occupied.get(i)
            rows.append({"level": i, "price": price,
                         "side": o.side.value if o else None,
                         "state": o.state.value if o else None,
                         "order_id": o.order_id if o else None,
                         "client_id": o.client_id if o else None,
                         "executed": o.executed if o else None})
        return rows
