"""The grid's money: fills, fees by asset, inventory and cash flow, round trips and grid profit.

Pure and exact (``Decimal`` only). A fill charges its fee in the asset it received (Backpack's rule):
a fee in base leaves the position, a fee in quote leaves the cash flow, and either is valued in quote at
the fill's price for the round trip's profit. A round trip is two consecutive completed orders of one
pair: sell proceeds minus buy cost minus both legs' fees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from gridbot.core.models import Fill, Side

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
    funding: Decimal | None = None    # perps: funding received (+) or paid (-) by the grid's position; None on spot


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
    fees_quote: Decimal = ZERO        # every fee valued in quote (a fee in base at its fill's price)
    funding: Decimal = ZERO           # perps: funding received (+) or paid (-), in quote (the exchange's rows)

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
        self.fees_quote += fee_quote
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
                      self.round_trips, self.fill_count, self.last_fill_ms, self.fees_quote, self.funding)


@dataclass
class StartFunds:
    """What the grid took at its start (after an entry purchase) and the price then: the base of every
    return figure. ``time_ms``: when it started (None for a grid saved before it was recorded)."""
    base: Decimal
    quote: Decimal
    price: Decimal
    time_ms: int | None = None

    @property
    def value(self) -> Decimal:
        return self.base * self.price + self.quote

    def to_json(self) -> dict:
        return {"base": f"{self.base:f}", "quote": f"{self.quote:f}", "price": f"{self.price:f}", "time_ms": self.time_ms}

    @classmethod
    def from_json(cls, d: dict) -> "StartFunds":
        return cls(Decimal(d["base"]), Decimal(d["quote"]), Decimal(d["price"]), d.get("time_ms"))


def equity(funds: StartFunds, ledger: Ledger, price: Decimal) -> Decimal:
    """What the grid's funds are worth at ``price``: its starting funds plus everything it traded
    (fees included: they left the position or the cash flow), plus the funding a perp position received.
    A perps grid's starting funds are its opening position and its collateral less what that position
    cost (``perp_start_funds``), so its value is the collateral."""
    return (funds.base + ledger.position) * price + funds.quote + ledger.quote_flow + ledger.funding


def perp_start_funds(investment: Decimal, position: Decimal, price: Decimal, time_ms: int | None = None) -> StartFunds:
    """A perps grid's starting funds: its collateral, holding its opening ``position`` (signed; 0 for
    neutral) valued at ``price``: the equity formula then gives collateral + PnL."""
    return StartFunds(position, investment - position * price, price, time_ms)


def total_return(funds: StartFunds | None, ledger: Ledger, price: Decimal | None) -> Decimal | None:
    """The grid's total return on its starting funds at ``price`` (grid profit + floating PnL, net of
    fees): equity / starting value - 1. None when unknown."""
    if funds is None or price is None or funds.value <= 0:
        return None
    return equity(funds, ledger, price) / funds.value - 1


YEAR_S = 365 * 86400


@dataclass(frozen=True)
class Figures:
    """The profit figures, one definition for the live bot, ``status``, ``report`` and ``backtest``.

    - equity: the starting funds plus the grid's flows, valued at the price;
    - grid profit: completed round trips, net of both fees; floating PnL: the grid's inventory now against
      its starting inventory, valued at the price, less the grid profit (the open legs); funding (perps):
      what the position received or paid, its own line;
    - against holding: equity - the starting funds untouched at the price = grid profit + floating PnL
      + funding;
    - total return: equity / starting value - 1 (what holding did to the starting funds, plus the
      above); break-even: the price at which the total return is zero. Fees are inside all of these:
      they left the inventory (base) or the cash (quote);
    - annualised grid yield: grid profit / starting value, scaled to a year by the grid's age (None
      before 30 days: too early to say)."""
    price: Decimal
    start: StartFunds
    start_value: Decimal
    equity: Decimal
    grid_profit: Decimal
    floating_pnl: Decimal
    fees: dict[str, Decimal]
    fees_quote: Decimal
    total_return: Decimal
    hold_value: Decimal
    vs_hold: Decimal
    break_even: Decimal | None
    age_s: float
    annual_yield: Decimal | None
    funding: Decimal = ZERO

    def to_json(self) -> dict:
        def d(x: Decimal | None) -> str | None:
            return None if x is None else f"{x:f}"

        def r(x: Decimal | None) -> str | None:
            """A ratio or a derived price: 8 places are more than any reader needs (a long division has 28)."""
            return None if x is None else f"{x.quantize(Decimal('1e-8')).normalize():f}"
        return {"price": d(self.price), "start_funds": self.start.to_json(), "start_value": d(self.start_value),
                "equity": d(self.equity), "grid_profit": d(self.grid_profit), "floating_pnl": d(self.floating_pnl),
                "fees": {k: d(v) for k, v in sorted(self.fees.items())}, "fees_quote": d(self.fees_quote),
                "total_return": r(self.total_return), "hold_value": d(self.hold_value), "vs_hold": d(self.vs_hold),
                "break_even": r(self.break_even), "age_s": int(self.age_s), "annual_yield": r(self.annual_yield),
                "funding": d(self.funding)}


def figures_since(start: StartFunds | None, ledger: Ledger, price: Decimal | None, now_ms: int,
                  created_ms: int) -> Figures | None:
    """``figures`` at ``now_ms``, the grid's age counted from its start (or, for a grid saved before its
    start time was recorded, from its creation); None before the grid has started or has a price."""
    if start is None or price is None:
        return None
    return figures(start, ledger, price, max(0.0, (now_ms - (start.time_ms or created_ms)) / 1000))


def figures(start: StartFunds, ledger: Ledger, price: Decimal, age_s: float) -> Figures:
    value = start.value
    eq = equity(start, ledger, price)
    hold = start.base * price + start.quote
    base_now = start.base + ledger.position
    # Equity is zero-return where base_now x P + (quote + flow) = value.
    # A break-even price means something only while the grid holds base worth counting: after a sale on a
    # stop-loss a few satoshis left would give a price far from any market (4049 for SOL), so below 1% of
    # the starting value in base there is none.
    break_even = ((value - start.quote - ledger.quote_flow - ledger.funding) / base_now
                  if base_now > 0 and base_now * price >= value / 100 else None)
    if break_even is not None and break_even < 0:
        break_even = None
    # Scaled to a year only from 30 days on: two lucky days would read as a yield of hundreds of percent.
    annual = (ledger.grid_profit / value * Decimal(YEAR_S) / Decimal(age_s)
              if age_s >= 30 * 86400 and value > 0 else None)
    return Figures(price, start, value, eq, ledger.grid_profit, eq - hold - ledger.grid_profit - ledger.funding,
                   dict(ledger.fees), ledger.fees_quote, eq / value - 1 if value > 0 else ZERO, hold, eq - hold,
                   break_even, age_s, annual, ledger.funding)
