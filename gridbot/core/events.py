"""What happened to the grid, as typed, frozen values.

The pure core (``OrderManager``) records one of these for everything worth telling a person; the shell
takes them (``OrderManager.take_events``) and decides what to do with them: the log formats them
(``reports.describe``), the backtester counts them, and later the notifier and the reports read the same
values. No English is built in the core.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gridbot.core.models import Side


@dataclass(frozen=True)
class FillApplied:
    """A fill of ours, accounted once (by trade id)."""
    trade_id: int
    order_id: str
    client_id: int
    level: int
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    executed: Decimal          # of the order, after this fill
    order_quantity: Decimal
    timestamp_ms: int


@dataclass(frozen=True)
class CounterOrderDecided:
    """An order filled completely: its pair now wants the opposite order one level away."""
    filled_side: Side
    filled_level: int
    side: Side
    price: Decimal
    quantity: Decimal
    level: int


@dataclass(frozen=True)
class RoundTripCompleted:
    number: int                # the grid's round trips so far, this one included
    pair: int                  # levels pair and pair + 1
    profit: Decimal            # in the quote asset, after both fees


@dataclass(frozen=True)
class OrderRefused:
    """The exchange refused a placement; the level is tried again after ``retry_in_ms``."""
    client_id: int
    level: int
    side: Side
    price: Decimal
    quantity: Decimal
    code: str
    message: str
    retry_in_ms: int


@dataclass(frozen=True)
class OutcomeUnknown:
    """A placement got no answer: it is looked up by clientId once it can no longer arrive."""
    client_id: int
    level: int
    side: Side
    price: Decimal


@dataclass(frozen=True)
class LookupResolved:
    """A lookup found that the order never reached the book (``placed_again``) or, after several
    tries, that it is nowhere (``gone``)."""
    client_id: int
    order_id: str | None
    level: int
    outcome: str               # "never placed" | "gone"
    lookups: int


@dataclass(frozen=True)
class ClosedByExchange:
    """One of our orders was cancelled or expired. ``by_us`` when we had asked for it; otherwise the
    exchange (or a person) did, and the level is placed again."""
    order_id: str | None
    client_id: int
    level: int
    side: Side
    price: Decimal
    status: str                # "cancelled" | "expired"
    executed: Decimal
    by_us: bool


@dataclass(frozen=True)
class FilledIncomplete:
    """The exchange says an order filled, but its fills have not all arrived yet: looked up again."""
    order_id: str | None
    executed: Decimal
    quantity: Decimal


@dataclass(frozen=True)
class FilledAfterCancel:
    """An order counted as cancelled filled completely: accounted, but no counter-order follows."""
    order_id: str | None
    level: int


@dataclass(frozen=True)
class DuplicateOnBook:
    """An order of ours is on the book although it was written off (lost or rejected), and its level
    has been placed again since: it is cancelled."""
    order_id: str
    client_id: int
    level: int
    counted_as: str


@dataclass(frozen=True)
class TransitionRefused:
    """A state change not in the transition table (a stale snapshot, a late event): ignored."""
    client_id: int
    level: int
    old: str
    new: str


@dataclass(frozen=True)
class FilledOffGrid:
    """An order a trail move had left outside the grid filled before its cancel: accounted, no
    counter-order (its pair is no longer part of the grid)."""
    order_id: str | None
    level: int
    side: Side
    price: Decimal


@dataclass(frozen=True)
class SaleFill:
    """A fill of the sale an exit makes (``on_stop: sell_base``)."""
    trade_id: int
    order_id: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    sold: Decimal
    target: Decimal


@dataclass(frozen=True)
class OrphanFound:
    """After a restart, an order of ours that the saved state had lost (a state file rolled back by a power
    cut): ``claimed`` when the pair that wants it takes it over, else ``cancelled`` (on the book, wanted
    by no pair) or ``left`` (filled, wanted by no pair: its fills are not in the grid's figures)."""
    client_id: int
    order_id: str
    side: Side
    price: Decimal
    outcome: str


GridEvent = (FillApplied | CounterOrderDecided | RoundTripCompleted | OrderRefused | OutcomeUnknown
             | LookupResolved | ClosedByExchange | FilledIncomplete | FilledAfterCancel | DuplicateOnBook
             | TransitionRefused | FilledOffGrid | SaleFill | OrphanFound)
