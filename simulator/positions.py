"""Perp positions and an account's margin (docs/exchange.md §12): pure arithmetic on one USDC-settled
account; the perp engine (perp_engine.py) calls it under the exchange's lock.

- **A position** is one net quantity per symbol (positive long, negative short), with its average entry
  price (of the fills that increased it; a reducing fill leaves it), and a *settle price*: the price up to
  which its PnL is already in the USDC balance. Continuous realization (every ``pnl_settle_seconds``) moves
  ``q × (mark − settle)`` into USDC and ``pnlRealized`` and sets the settle price to the mark; a reducing
  fill realizes the closed part's ``c × (price − settle)``. ``pnlUnrealized`` is ``q × (mark − settle)``, so
  while the position has only grown ``pnlRealized + pnlUnrealized = q × (mark − entry)`` (the identity
  Backpack's positions show).
- **Margin.** Net equity = the USDC balance + every position's unrealized PnL. Each market's *exposure* is
  the position plus the open orders that increase it (the larger of the two sides), valued at the mark;
  ``netEquityLocked = Σ IMF × exposure notional``, ``netEquityAvailable = netEquity − netEquityLocked``. A
  risk-increasing order that would make it negative is refused. Liquidation starts when net equity falls to
  ``Σ MMF × position notional``.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable

from .perps import PerpParams, position_imf, position_mmf

D = Decimal
ZERO = D(0)
USDC_PLACES = D("0.000001")   # USDC amounts in perp payloads have at most 6 decimals


def usdc(x: Decimal) -> Decimal:
    return x.quantize(USDC_PLACES, ROUND_HALF_EVEN)


def plain(x: Decimal) -> str:
    return f"{x.normalize():f}" if x else "0"


@dataclass
class Position:
    symbol: str
    position_id: int
    opened_us: int
    net: Decimal = ZERO               # signed
    entry: Decimal = ZERO
    settle: Decimal = ZERO            # PnL up to this price is in the USDC balance
    pnl_realized: Decimal = ZERO
    funding: Decimal = ZERO           # cumulative funding payment: negative = paid
    fees: Decimal = ZERO
    closed_volume: Decimal = ZERO
    liquidated: bool = False
    closed_us: int | None = None
    closing_price: Decimal | None = None

    def apply_fill(self, signed_qty: Decimal, price: Decimal) -> Decimal:
        """A fill of ``signed_qty`` (positive buys) at ``price``, which never crosses zero (the engine splits a
        flip). Returns the PnL it realizes (the USDC to credit)."""
        if self.net == 0 or (self.net > 0) == (signed_qty > 0):
            total = self.net + signed_qty
            self.entry = (self.net * self.entry + signed_qty * price) / total
            self.settle = (self.net * self.settle + signed_qty * price) / total
            self.net = total
            return ZERO
        closed = -signed_qty              # the part of the position this fill closes, with its sign
        realized = closed * (price - self.settle)
        self.net += signed_qty
        self.pnl_realized += realized
        self.closed_volume += abs(signed_qty)
        return realized

    def realize(self, mark: Decimal) -> Decimal:
        """Continuous realization: the PnL since the last settlement into USDC."""
        amount = self.net * (mark - self.settle)
        self.settle = mark
        self.pnl_realized += amount
        return amount

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.net * (mark - self.settle)

    def break_even(self) -> Decimal:
        """The entry price moved by the fees and funding paid, per unit (a reading: Backpack's rule is not
        documented; both long captures fit it)."""
        if not self.net:
            return ZERO
        cost = self.fees - self.funding
        return self.entry + cost / self.net


@dataclass
class Margin:
    """An account's margin summary, as ``/api/v1/capital/collateral`` reports it."""
    net_equity: Decimal
    locked: Decimal
    pnl_unrealized: Decimal
    exposure_notional: Decimal
    mmf_notional: Decimal                  # Σ MMF × position notional: liquidation when net equity ≤ this
    imf_notional: Decimal

    @property
    def available(self) -> Decimal:
        return self.net_equity - self.locked


def exposure(position: Decimal, orders: Iterable[tuple[str, Decimal, bool]]) -> Decimal:
    """A market's net exposure quantity: the position plus the open orders that increase its risk, the
    worse side taken (``orders``: side, remaining quantity, reduce-only)."""
    bids = sum((q for side, q, ro in orders if side == "Bid" and not ro), ZERO)
    asks = sum((q for side, q, ro in orders if side == "Ask" and not ro), ZERO)
    return max(abs(position + bids), abs(position - asks))


def margin(collateral: Decimal, spot_locked: Decimal, markets: Iterable[tuple[str, PerpParams, Decimal, Any, Decimal]],
           leverage_limit: Decimal) -> Margin:
    """``collateral``: the account's balances valued with their haircuts (USDC at 1); ``spot_locked``: what
    its spot orders hold, valued; ``markets``: (symbol, params, mark, position or None, exposure quantity)
    for each perp market the account holds a position or an open order in."""
    equity, locked, upnl, total, mmf_n, imf_n = collateral, spot_locked, ZERO, ZERO, ZERO, ZERO
    for symbol, params, mark, pos, exposure_qty in markets:
        u = pos.unrealized(mark) if pos is not None else ZERO
        notional = exposure_qty * mark
        imf = position_imf(params, notional, leverage_limit)
        pos_notional = abs(pos.net) * mark if pos is not None else ZERO
        mmf = position_mmf(params, pos_notional)
        equity += u
        upnl += u
        locked += imf * notional
        total += notional
        mmf_n += mmf * pos_notional
        imf_n += imf * notional
    return Margin(equity, locked, upnl, total, mmf_n, imf_n)


def position_json(p: Position, mark: Decimal, params: PerpParams, exposure_qty: Decimal, leverage_limit: Decimal,
                  user_id: int) -> dict:
    """``GET /api/v1/position``'s ``FuturePositionWithMargin``: every decimal a string, ``positionId`` a string."""
    notional = exposure_qty * mark
    return {
        "breakEvenPrice": plain(p.break_even()), "cumulativeFundingPayment": plain(p.funding),
        "cumulativeInterest": "0", "entryPrice": plain(p.entry), "estLiquidationPrice": "0",
        "imf": plain(position_imf(params, notional, leverage_limit)),
        "imfFunction": {"base": f"{params.imf_base:f}", "factor": f"{params.imf_factor:f}", "type": "sqrt"},
        "markPrice": f"{mark:f}", "mmf": plain(position_mmf(params, abs(p.net) * mark)),
        "mmfFunction": {"base": f"{params.mmf_base:f}", "factor": f"{params.mmf_factor:f}", "type": "sqrt"},
        "netCost": plain(p.net * p.entry), "netExposureNotional": plain(notional),
        "netExposureQuantity": plain(exposure_qty), "netQuantity": plain(p.net),
        "pnlRealized": plain(usdc(p.pnl_realized)), "pnlUnrealized": plain(usdc(p.unrealized(mark))),
        "positionId": str(p.position_id), "subaccountId": None, "symbol": p.symbol, "userId": user_id,
    }


def position_event(p: Position, mark: Decimal, params: PerpParams, exposure_qty: Decimal, leverage_limit: Decimal,
                   event: str | None, now_us: int) -> dict:
    """``account.positionUpdate``: decimals as strings, ``i`` a number; no ``e`` in the subscription snapshot."""
    r = position_json(p, mark, params, exposure_qty, leverage_limit, 0)
    out: dict[str, Any] = {"E": now_us, "B": r["entryPrice"], "M": r["markPrice"], "P": r["pnlUnrealized"],
                           "Q": r["netExposureQuantity"], "T": now_us, "b": r["breakEvenPrice"], "f": r["imf"],
                           "i": p.position_id, "l": "0", "m": r["mmf"], "n": r["netExposureNotional"],
                           "p": r["pnlRealized"], "q": r["netQuantity"], "s": p.symbol}
    if event is not None:
        out["e"] = event
    return out


def history_row(p: Position, mark: Decimal, params: PerpParams, exposure_qty: Decimal, leverage_limit: Decimal,
                naive: Any) -> dict:
    """A ``/wapi/v1/history/position`` row (``naive``: µs -> naive UTC datetime string)."""
    notional = exposure_qty * mark
    return {
        "id": str(p.position_id), "symbol": p.symbol, "netQuantity": plain(p.net),
        "netExposureQuantity": plain(exposure_qty), "netExposureNotional": plain(notional),
        "netCost": plain(p.net * p.entry), "markPrice": f"{mark:f}", "entryPrice": plain(p.entry),
        "cumulativePnlRealized": plain(usdc(p.pnl_realized)), "unrealizedPnl": plain(usdc(p.unrealized(mark))),
        "fundingQuantity": plain(p.funding), "interest": "0", "liquidated": p.liquidated,
        "imf": plain(position_imf(params, notional, leverage_limit)), "fees": plain(p.fees),
        "state": "Open" if p.closed_us is None else "Closed", "closedVolume": plain(p.closed_volume),
        "liquidationFees": "0", "closingPrice": None if p.closing_price is None else f"{p.closing_price:f}",
        "accountLeverage": f"{leverage_limit:f}", "openedAt": naive(p.opened_us),
        "closedAt": None if p.closed_us is None else naive(p.closed_us),
    }
