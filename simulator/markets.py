"""The simulator's spot markets and their filters (backpack_api.md §5).

Filters are realistic values of the kind Backpack publishes: a tick size and a step size whose scale is
the most decimals allowed, a minimum quantity, price bounds, and the multipliers that bound how far an
order's price may be from the last price.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

D = Decimal


@dataclass(frozen=True)
class MarketSpec:
    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal | None
    min_price: Decimal
    max_price: Decimal | None
    # An order price must lie within [last * min_multiplier, last * max_multiplier].
    max_multiplier: Decimal
    min_multiplier: Decimal
    default_price: Decimal
    created_at: str = "2024-01-21T06:34:54.691858"


DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("SOL_USDC", "SOL", "USDC", D("0.01"), D("0.01"), D("0.01"), D("100000"),
               D("0.01"), None, D("1.25"), D("0.75"), D("150.00")),
    MarketSpec("BTC_USDC", "BTC", "USDC", D("0.1"), D("0.00001"), D("0.00001"), D("100"),
               D("0.1"), None, D("1.25"), D("0.75"), D("95000.0")),
    MarketSpec("ETH_USDC", "ETH", "USDC", D("0.01"), D("0.0001"), D("0.001"), D("10000"),
               D("0.01"), None, D("1.25"), D("0.75"), D("3500.00")),
)

DEFAULT_SYMBOL = "SOL_USDC"

# Decimals each asset is settled in; fees are rounded up to this precision.
ASSET_DECIMALS: dict[str, int] = {"USDC": 6, "SOL": 9, "BTC": 8, "ETH": 8}


def decimals_of(step: Decimal) -> int:
    """How many decimals a tick or step size allows (its scale)."""
    exp = step.normalize().as_tuple().exponent
    return max(0, -int(exp))


def market_json(m: MarketSpec) -> dict:
    """The Market object of GET /api/v1/market(s), with every field the spec lists."""
    def s(d: Decimal | None) -> str | None:
        return None if d is None else f"{d:f}"
    return {
        "symbol": m.symbol,
        "baseSymbol": m.base,
        "quoteSymbol": m.quote,
        "marketType": "SPOT",
        "filters": {
            "price": {
                "minPrice": s(m.min_price),
                "maxPrice": s(m.max_price),
                "tickSize": s(m.tick_size),
                "maxMultiplier": s(m.max_multiplier),
                "minMultiplier": s(m.min_multiplier),
                "maxImpactMultiplier": "1.05",
                "minImpactMultiplier": "0.95",
                "meanMarkPriceBand": None,
                "meanPremiumBand": None,
                "borrowEntryFeeMaxMultiplier": None,
                "borrowEntryFeeMinMultiplier": None,
            },
            "quantity": {
                "stepSize": s(m.step_size),
                "minQuantity": s(m.min_quantity),
                "maxQuantity": s(m.max_quantity),
            },
        },
        "imfFunction": None,
        "mmfFunction": None,
        "fundingInterval": None,
        "fundingRateUpperBound": None,
        "fundingRateLowerBound": None,
        "openInterestLimit": None,
        "orderBookState": "Open",
        "createdAt": m.created_at,
        "visible": True,
    }
