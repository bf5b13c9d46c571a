"""What a simulated market requires of an order (tick, step, bounds, the price band around the last price,
the minimum) and where it meets the synthetic book: whether it crosses, and the price a taker gets.
Pure functions of a market's state and an order request.
"""
from __future__ import annotations

from decimal import Decimal

from .markets import decimals_of
from .records import MarketState, OrderRequest, SimError, _scale


def validate(m: MarketState, p: OrderRequest) -> None:
    """Refuse an order the market's rules refuse, with Backpack's codes and messages."""
    spec = m.spec
    if p.type == "Limit":
        if p.price is None:
            raise SimError(400, "INVALID_ORDER", "Limit order requires a price")
        if p.qty is None:
            raise SimError(400, "INVALID_ORDER", "Limit order requires a quantity")
    elif p.qty is None and p.qq is None:
        raise SimError(400, "INVALID_ORDER", "Market order requires a quantity or a quote quantity")
    price = p.price
    if price is not None:
        if _scale(price) > decimals_of(spec.tick_size):
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Price decimal too long")
        if price <= 0 or price % spec.tick_size != 0:
            raise SimError(400, "INVALID_PRICE", "Invalid price")
        if price < spec.min_price or (spec.max_price is not None and price > spec.max_price):
            raise SimError(400, "INVALID_PRICE", "Price is out of bounds")
        if price > m.price * spec.max_multiplier or price < m.price * spec.min_multiplier:
            raise SimError(400, "INVALID_PRICE", "Price is too far from the last active price")
    qty = p.qty
    if qty is not None:
        if _scale(qty) > decimals_of(spec.step_size):
            raise SimError(400, "INVALID_CLIENT_REQUEST", "Quantity decimal too long")
        if qty <= 0 or qty % spec.step_size != 0:
            raise SimError(400, "INVALID_QUANTITY", "Invalid quantity")
        if qty < spec.min_quantity:
            raise SimError(400, "INVALID_QUANTITY", "Quantity is below the minimum allowed value")
        if spec.max_quantity is not None and qty > spec.max_quantity:
            raise SimError(400, "INVALID_QUANTITY", "Quantity is above the maximum allowed value")

def crosses(m: MarketState, side: str, price: Decimal) -> bool:
    """Would a limit order at ``price`` cross the market (and take)?"""
    return price > m.price if side == "Bid" else price < m.price

def touch(m: MarketState, side: str) -> Decimal:
    """The price a taker gets: the synthetic best ask for a buy, best bid for a sell."""
    if side == "Bid":
        return m.price + m.spec.tick_size
    return max(m.price - m.spec.tick_size, m.spec.tick_size)
