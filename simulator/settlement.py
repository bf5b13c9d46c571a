"""What an order and its fills do to an account's money, per kind of market: spot (here) moves the base and
quote balances and locks what a resting order may spend; a perp (perp_engine.py) moves only USDC and a
position, gated by margin. The engine (engine.py) calls these under its lock.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from .order_rules import touch
from .records import ZERO, Account, MarketState, Order, OrderRequest, SimError, s

if TYPE_CHECKING:
    from .engine import Exchange


def fee_of(amount: Decimal, rate: Decimal) -> Decimal:
    """The exact fee, without the trailing zeros a product of decimals carries."""
    fee = amount * rate
    return fee.normalize() if fee else ZERO


def lock_spot(ex: "Exchange", acct: Account, m: MarketState, p: OrderRequest, qty: Decimal) -> Decimal:
    """Lock what a spot order may spend (quote for a buy at its limit, base for a sell); returns it."""
    spec = m.spec
    if p.side == "Bid":
        lock_price = p.price if p.type == "Limit" else touch(m, "Bid")
        need, asset = lock_price * qty, spec.quote
    else:
        need, asset = qty, spec.base
    bal = ex._bal(acct, asset)
    if bal.available < need:
        # Backpack lends to an order that allows borrowing on an account that borrows: what is missing
        # becomes a loan (a negative available balance), within the account's limit.
        loan = need - bal.available   # the liability once this order has locked what it needs
        if p.auto_borrow is False or loan > acct.borrow_limit:
            raise SimError(400, "INSUFFICIENT_FUNDS", "Insufficient funds")
        ex._journal("borrow", account=acct.api_key, asset=asset, quantity=s(need - max(bal.available, ZERO)))
    bal.available -= need
    bal.locked += need
    return need


def fill_spot(ex: "Exchange", acct: Account, m: MarketState, order: Order, qty: Decimal, price: Decimal,
              rate: Decimal) -> tuple[str, Decimal]:
    """A spot fill's balances: the asset received, less its fee (charged in that asset). Returns (fee asset,
    fee)."""
    spec = m.spec
    quote_amt = price * qty
    if order.side == "Bid":
        # The order locked (limit price x qty); a taker fill at a better price frees the rest.
        lock_price = order.price if order.order_type == "Limit" else touch(m, "Bid")
        release = lock_price * qty
        quote = ex._bal(acct, spec.quote)
        quote.locked -= release
        quote.available += release - quote_amt
        order.locked -= release
        fee = fee_of(qty, rate)
        ex._bal(acct, spec.base).available += qty - fee
        return spec.base, fee
    base = ex._bal(acct, spec.base)
    base.locked -= qty
    order.locked -= qty
    fee = fee_of(quote_amt, rate)
    ex._bal(acct, spec.quote).available += quote_amt - fee
    return spec.quote, fee
