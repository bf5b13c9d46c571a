"""An order's life: its states, the table of allowed transitions, the records the grid keeps, and the
actions the grid asks its shell to perform.

Pure values, no I/O. ``OrderManager`` moves an order only through ``allowed`` (a table of transitions): a
transition not in ``ALLOWED`` is refused, so a stale REST snapshot can never turn a ``FILLED`` order
back into ``OPEN``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from gridbot.core.accounting import Leg, Ledger
from gridbot.core.models import Fill, Side
from gridbot.core.risk import RiskState

ZERO = Decimal(0)


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


def allowed(old: OrderState, new: OrderState) -> bool:
    """May an order in ``old`` move to ``new``? (Staying put is always allowed.)"""
    return new is old or new in ALLOWED[old]


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
    """Find out what became of an order (by clientId, and only an order with its side, price and
    quantity: another grid's order may carry the same clientId), with its fills."""
    client_id: int
    order_id: str | None
    since_ms: int
    side: Side
    price: Decimal
    quantity: Decimal


Action = Place | Cancel | Lookup


# ------------------------------------------------------------------------------------- records
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
    cancel_seen: int = 0              # snapshots that still showed it on the book after our cancel was sent
    trade_ids: list[int] = field(default_factory=list)   # its fills' trade ids (they leave memory with it)

    @property
    def complete(self) -> bool:
        return self.executed >= self.quantity

    def is_this(self, side: Side, price: Decimal | None, quantity: Decimal | None) -> bool:
        """Could an exchange order with this order's clientId and these terms be this order? A clientId
        alone proves nothing: another grid on the account may have drawn the same one."""
        return (side is self.side and (price is None or price == self.price)
                and (quantity is None or quantity == self.quantity))

    def could_fill(self, fill: Fill, margin_ms: int) -> bool:
        """Could this fill, carrying this order's clientId, be one of its fills? Its side, its time (not
        before the order was recorded, give or take ``margin_ms`` of clock difference), and its price (a
        resting limit order fills at its own price; one that took liquidity at its price or better)."""
        if fill.side is not self.side or (fill.timestamp_ms and fill.timestamp_ms < self.created_ms - margin_ms):
            return False
        if fill.is_maker:
            return fill.price == self.price
        return fill.price <= self.price if self.side is Side.BID else fill.price >= self.price


@dataclass(frozen=True)
class Orphan:
    """An order of ours the saved state does not know (it was rolled back): found on the book or in fill
    history after a restart, waiting for the pair that wants it."""
    client_id: int
    order_id: str
    side: Side
    price: Decimal
    created_ms: int
    on_book: bool


@dataclass
class Pair:
    index: int
    side: Side
    order: int | None = None          # clientId of its live order
    opener: Leg | None = None         # the completed order that opened the round trip under way
    retry_at_ms: int = 0
    rejections: int = 0
    waiting_since: int = 0            # sequence number: who waited first for a shared level
    round_trips: int = 0
    funds_refusals: int = 0           # in a row: its order is held back until the free balance covers it
    after_cancel: int | None = None   # a pair a trail move added: placed once this order's cancel is confirmed


@dataclass
class Settings:
    window_ms: int = 5000             # signature window: after it an unsent order can't arrive
    lookup_margin_ms: int = 1000
    retry_base_ms: int = 2000
    retry_cap_ms: int = 60_000
    replace_delay_ms: int = 1000      # after the exchange cancelled one of our orders
    funds_retry_ms: int = 5000        # an order held back for funds: tried again after this, doubling
    max_multiplier: Decimal | None = None
    min_multiplier: Decimal | None = None
    # How far the exchange's clock may be behind ours: an exchange order or fill carrying one of our
    # clientIds but dated earlier than our order's record by more than this was another grid's.
    clock_margin_ms: int = 2000


@dataclass(frozen=True)
class Snapshot:
    """The whole saved state of a grid's manager, as a value (copies, safe to keep)."""
    pairs: tuple[Pair, ...]
    orders: tuple[GridOrder, ...]
    seen_trades: frozenset[int]
    next_seq: int
    wait_seq: int
    ledger: Ledger
    risk: RiskState = field(default_factory=RiskState)


@dataclass(frozen=True)
class Changes:
    """What changed since the last ``take_changes``: copies of the orders and pairs whose saved fields
    changed, the newly applied fills, and the totals."""
    orders: tuple[GridOrder, ...]
    pairs: tuple[Pair, ...]
    fills: tuple[Fill, ...]
    next_seq: int
    wait_seq: int
    ledger: Ledger
    levels: tuple[Decimal, ...] = ()   # the grid's levels now (a trail move changes them)
    risk: dict | None = None           # RiskState.to_json()


# ------------------------------------------------------------------------------ the placement rule
def placeable(post_only: bool, s: Settings, side: Side, price: Decimal, market: Decimal | None) -> bool:
    """Would the exchange accept this order now? (A post-only order must not cross, and the price must
    sit inside the market's band around the last price.)"""
    if market is None:
        return True
    if post_only and (price > market if side is Side.BID else price < market):
        return False
    if s.max_multiplier is not None and price > market * s.max_multiplier:
        return False
    return s.min_multiplier is None or price >= market * s.min_multiplier


def placeable_range(post_only: bool, s: Settings, side: Side, price: Decimal) -> tuple[Decimal | None, Decimal | None]:
    """The market prices (low, high; None = unbounded) at which ``placeable`` holds for an order at
    ``price``: the same rule, as an interval."""
    lo: Decimal | None = None
    hi: Decimal | None = None
    if post_only:
        if side is Side.BID:
            lo = price
        else:
            hi = price
    if s.max_multiplier is not None:
        bound = price / s.max_multiplier
        lo = bound if lo is None else max(lo, bound)
    if s.min_multiplier is not None:
        bound = price / s.min_multiplier
        hi = bound if hi is None else min(hi, bound)
    return lo, hi
