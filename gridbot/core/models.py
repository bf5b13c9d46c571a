"""The domain values every layer shares: sides, order states, market rules, orders, fills, order
updates. Frozen dataclasses and enums, built once at the edge (``gridbot/exchange/wire.py`` parses
Backpack's JSON into them; the backtester's book makes them directly) and never mutated.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from gridbot.core.perp_risk import MarginFunctions


class Side(Enum):
    BID = "Bid"
    ASK = "Ask"

    @property
    def opposite(self) -> "Side":
        return Side.ASK if self is Side.BID else Side.BID


class OrderStatus(Enum):
    NEW = "New"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    EXPIRED = "Expired"
    TRIGGER_PENDING = "TriggerPending"
    TRIGGER_FAILED = "TriggerFailed"
    TRIGGERED = "Triggered"  # the Rust client's spelling (docs/exchange.md §11)

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, OrderStatus.TRIGGER_PENDING)

    @property
    def is_terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED,
                        OrderStatus.TRIGGER_FAILED)


@dataclass(frozen=True)
class MarketRules:
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal | None
    min_price: Decimal
    max_price: Decimal | None
    max_multiplier: Decimal | None
    min_multiplier: Decimal | None
    order_book_state: str
    margin: MarginFunctions | None = None    # a perp's imfFunction and mmfFunction; None on spot


@dataclass(frozen=True)
class Order:
    """An order as /api/v1/order(s) (createdAt in ms) or order history (a datetime) return it."""
    id: str
    client_id: int | None
    symbol: str
    side: Side
    price: Decimal | None
    quantity: Decimal | None
    executed_quantity: Decimal
    executed_quote_quantity: Decimal
    status: OrderStatus
    created_at_ms: int
    post_only: bool
    expiry_reason: str | None = None


@dataclass(frozen=True)
class BatchError:
    """One refused item of a batch placement."""
    code: str
    message: str


@dataclass(frozen=True)
class Fill:
    trade_id: int
    order_id: str
    client_id: int | None
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    timestamp_ms: int


@dataclass(frozen=True)
class Ticker:
    symbol: str
    last_price: Decimal


@dataclass(frozen=True)
class OrderUpdate:
    """One ``account.orderUpdate`` event (docs/exchange.md §9.6)."""
    event: str
    symbol: str
    order_id: str
    client_id: int | None
    side: Side
    status: OrderStatus | None
    price: Decimal | None
    quantity: Decimal | None
    executed_quantity: Decimal | None
    executed_quote_quantity: Decimal | None
    fill: Fill | None
    expiry_reason: str | None
    event_time_us: int
    engine_time_us: int
    origin: str | None = None       # ``O``: USER, or the exchange's own (LIQUIDATION_AUTOCLOSE, ADL_AUTOCLOSE...)


@dataclass(frozen=True)
class AccountSettings:
    """What ``GET /api/v1/account`` says about the account (None: the field was absent). Fees are fractions
    (Backpack writes basis points)."""
    spot_maker_fee: Decimal | None
    spot_taker_fee: Decimal | None
    auto_lend: bool | None
    auto_borrow_settlements: bool | None
    auto_repay_borrows: bool | None
    borrow_limit: Decimal | None
    leverage_limit: Decimal | None = None   # perps: the subaccount's


# ------------------------------------------------------------------------------ perpetual futures
@dataclass(frozen=True)
class Position:
    """A perp position (``GET /api/v1/position``): ``net_quantity`` positive long, negative short."""
    symbol: str
    position_id: str
    net_quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal
    net_exposure_quantity: Decimal
    pnl_realized: Decimal
    pnl_unrealized: Decimal
    cumulative_funding: Decimal          # negative: paid


@dataclass(frozen=True)
class MarginSummary:
    """``GET /api/v1/capital/collateral``: the account's equity and margin (perps valued at the mark)."""
    net_equity: Decimal
    available: Decimal
    locked: Decimal
    pnl_unrealized: Decimal
    margin_fraction: Decimal | None      # None: no exposure
    imf: Decimal
    mmf: Decimal


@dataclass(frozen=True)
class MarkPrice:
    """``GET /api/v1/markPrices``: a perp's mark and index, and the running funding interval's rate and end."""
    symbol: str
    mark: Decimal
    index: Decimal | None
    funding_rate: Decimal | None
    next_funding_ms: int | None


@dataclass(frozen=True)
class FundingPayment:
    """A ``/wapi/v1/history/funding`` row: ``quantity`` positive received, negative paid (USDC)."""
    symbol: str
    quantity: Decimal
    rate: Decimal
    interval_end_ms: int
