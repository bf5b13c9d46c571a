"""The grid's money: fills, fees by asset, inventory and cash flow, round trips and grid profit.

Pure and exact (``Decimal`` only). A fill charges its fee in the asset it received (Backpack's rule):
a fee in base leaves the position, a fee in quote leaves the cash flow, and either is valued in quote at
the fill's price for the round trip's profit. A round trip is two consecutive completed orders of one
pair: sell proceeds minus buy cost minus both legs' fees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from models import Fill, Side

ZERO = Decimal(0)
Leg = tuple[Side, Decimal, Decimal, Decimal]  # a completed order: (side, quantity, quote amount, fee in quote)


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


@dataclass
class Ledger:
    base: str
    quote: str
    fees: dict[str, Decimal] = field(default_factory=dict)
    position: Decimal = ZERO
    quote_flow: Decimal = ZERO
    grid_profit: Decimal = ZERO
    round_trips: int = 0
    fill_count: int = 0
    last_fill_ms: int = 0

    def record_fill(self, fill: Fill) -> Decimal:
        """Account one fill; returns its fee valued in quote."""
        quote_amt = fill.price * fill.quantity
        self.fees[fill.fee_symbol] = self.fees.get(fill.fee_symbol, ZERO) + fill.fee
        fee_quote = ZERO
        if fill.fee_symbol == self.quote:
            fee_quote = fill.fee
            self.quote_flow -= fill.fee
        elif fill.fee_symbol == self.base:
            fee_quote = fill.fee * fill.price
            self.position -= fill.fee
        if fill.side is Side.BID:
            self.position += fill.quantity
            self.quote_flow -= quote_amt
        else:
            self.position -= fill.quantity
            self.quote_flow += quote_amt
        self.fill_count += 1
        self.last_fill_ms = max(self.last_fill_ms, fill.timestamp_ms)
        return fee_quote

    def record_round_trip(self, opener: Leg, closer: Leg) -> Decimal:
        """Two completed legs of one pair close a round trip; returns its profit."""
        buy, sell = (opener, closer) if opener[0] is Side.BID else (closer, opener)
        profit = sell[2] - buy[2] - buy[3] - sell[3]
        self.round_trips += 1
        self.grid_profit += profit
        return profit

    def floating_pnl(self, price: Decimal | None) -> Decimal | None:
        if price is None:
            return None
        return self.position * price + self.quote_flow - self.grid_profit

    def copy(self) -> "Ledger":
        return Ledger(self.base, self.quote, dict(self.fees), self.position, self.quote_flow, self.grid_profit,
                      self.round_trips, self.fill_count, self.last_fill_ms)
