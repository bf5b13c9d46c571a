"""The simulator's records and plumbing: errors, accounts, orders, fills, markets' state, event sinks.

Plain values shared by the engine, its market data and the wire formats; no logic of matching here.
"""
from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ContextManager, Protocol

from .markets import MarketSpec

D = Decimal
ZERO = Decimal(0)
UINT32_MAX = 2**32 - 1

OPEN_STATUSES = ("New", "PartiallyFilled")


class SimError(Exception):
    """An error answer: HTTP status plus Backpack's ``{"code", "message"}`` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict:
        return {"code": self.code, "message": self.message}


def parse_error(detail: str) -> SimError:
    # Request-parse failures come from the web framework with this prefix (docs/exchange.md §8).
    return SimError(400, "INVALID_CLIENT_REQUEST", f"parse request payload error: {detail}")


class EventSink(Protocol):
    def order_event(self, account: str, symbol: str, data: dict) -> None: ...
    def position_event(self, account: str, symbol: str, data: dict) -> None: ...
    def public_event(self, stream: str, data: dict) -> None: ...
    def wants(self, stream: str) -> bool: ...
    def batch(self) -> ContextManager[None]: ...


class HeldEvents:
    """Events of one matching pass, held and then sent together, in order: a price move that fills
    several orders sends their updates back to back once the pass is done, as an engine does."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.held: list[tuple[str, tuple]] = []

    def order_event(self, account: str, symbol: str, data: dict) -> None:
        self.held.append(("order_event", (account, symbol, data)))

    def position_event(self, account: str, symbol: str, data: dict) -> None:
        self.held.append(("position_event", (account, symbol, data)))

    def public_event(self, stream: str, data: dict) -> None:
        self.held.append(("public_event", (stream, data)))

    def wants(self, stream: str) -> bool:
        return self.sink.wants(stream)

    def batch(self) -> ContextManager[None]:
        return self.sink.batch()

    def release(self) -> None:
        with self.sink.batch():
            for name, args in self.held:
                getattr(self.sink, name)(*args)
        self.held.clear()


class NullSink:
    def order_event(self, account: str, symbol: str, data: dict) -> None:
        pass

    def position_event(self, account: str, symbol: str, data: dict) -> None:
        pass

    def public_event(self, stream: str, data: dict) -> None:
        pass

    def wants(self, stream: str) -> bool:
        return False

    def batch(self) -> ContextManager[None]:
        return contextlib.nullcontext()


def s(d: Decimal | None) -> str | None:
    """A decimal as Backpack writes it: a plain string, never exponent notation."""
    return None if d is None else f"{d:f}"


def plain(d: Decimal) -> str:
    """A balance as Backpack shows it: no exponent, no trailing zeros (``"120"``, ``"0.5"``)."""
    return f"{d.normalize():f}" if d else "0"


def naive_utc(us: int, with_micros: bool = False) -> str:
    """A naive UTC datetime string: ms precision (history endpoints) or µs."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).replace(tzinfo=None)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if with_micros:
        return f"{text}.{us % 1_000_000:06d}"
    return f"{text}.{(us // 1000) % 1000:03d}"


@dataclass
class Balance:
    available: Decimal = ZERO
    locked: Decimal = ZERO


@dataclass
class Account:
    api_key: str
    balances: dict[str, Balance]
    created_us: int
    # Margin borrowing, off by default (``/_sim/borrowing`` turns it on): an order that allows borrowing
    # (``autoBorrow`` true, or absent: Backpack's default is not documented, and the harsh reading here
    # catches a client that never says) may lock more than is available, up to this limit in the asset's
    # own units; the balance then goes negative, a loan.
    borrow_limit: Decimal = Decimal(0)
    # Perpetual futures (positions.py): one net position per symbol, the subaccount's leverage limit (what
    # Backpack's default is, is not documented: 10 here), whether a liquidation runs, and its ledgers.
    positions: dict[str, Any] = field(default_factory=dict)
    leverage_limit: Decimal = Decimal(10)
    liquidating: bool = False
    funding_rows: list[dict] = field(default_factory=list)
    settlements: list[dict] = field(default_factory=list)
    closed_positions: list[Any] = field(default_factory=list)


@dataclass
class Order:
    id: str
    account: str
    symbol: str
    side: str
    order_type: str
    price: Decimal | None
    quantity: Decimal
    quote_quantity: Decimal | None
    time_in_force: str
    post_only: bool
    client_id: int | None
    stp: str
    created_us: int
    status: str = "New"
    executed: Decimal = ZERO
    executed_quote: Decimal = ZERO
    locked: Decimal = ZERO  # what this order still holds: quote for a Bid, base for an Ask
    expiry_reason: str | None = None
    closed_us: int | None = None
    reduce_only: bool | None = None   # as sent: a plain order shows null in REST, false in the stream
    origin: str = "USER"              # who entered it: USER, or LIQUIDATION_AUTOCLOSE (the liquidation engine)

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class OrderRequest:
    """An order as the engine takes it: ``wire.parse_order_payload`` makes one from Backpack's JSON;
    the backtester builds one directly."""
    symbol: str
    side: str                  # Bid | Ask
    type: str                  # Limit | Market
    qty: Decimal | None
    price: Decimal | None = None
    qq: Decimal | None = None  # a market order's quote quantity
    tif: str = "GTC"
    post_only: bool = False
    client_id: int | None = None
    stp: str = "RejectTaker"
    auto_borrow: bool | None = None   # None: the field was absent
    reduce_only: bool | None = None   # perps: may only reduce the position


@dataclass
class Fill:
    trade_id: int
    order_id: str
    client_id: int | None
    account: str
    symbol: str
    side: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    fee_symbol: str
    is_maker: bool
    ts_us: int
    system_type: str | None = None    # a fill the system made: LiquidatePositionOnBook


@dataclass
class MarketState:
    spec: MarketSpec
    price: Decimal
    # (ts_us, price, base volume) for every price print and every trade: klines and 24 h stats.
    ticks_ts: list[int] = field(default_factory=list)
    ticks: list[tuple[Decimal, Decimal]] = field(default_factory=list)
    # The market's trades, oldest first: GET /api/v1/trades and /trades/history read them newest first.
    trades: deque = field(default_factory=lambda: deque(maxlen=100_000))
    next_trade_id: int = 1
    depth_update_id: int = 0
    # The synthetic book's quantity at each tick beyond the touch, for takers: None = unlimited at the
    # touch. With a depth, a crossing order walks the book tick by tick and moves the price.
    taker_depth: Decimal | None = None
    last_book: dict[str, dict[Decimal, Decimal]] = field(default_factory=lambda: {"a": {}, "b": {}})


def _dec(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise parse_error(f"invalid type for `{name}`, expected a decimal string")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise parse_error(f"invalid decimal for `{name}`: {value!r}") from None
    if not d.is_finite():
        raise parse_error(f"invalid decimal for `{name}`: {value!r}")
    return d


def _scale(d: Decimal) -> int:
    exp = d.as_tuple().exponent
    return max(0, -int(exp))


def _counterparty_id(trade_id: int) -> str:
    """The order id of the simulated market participant on the other side of a trade."""
    return str(3_000_000_000 + trade_id)


SYNTHETIC_LEVELS = 10
SYNTHETIC_QTY = {"SOL_USDC": D("250"), "BTC_USDC": D("2.5"), "ETH_USDC": D("40")}
