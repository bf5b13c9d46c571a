"""The simulator's spot markets and their filters (docs/exchange.md §5).

Filters are realistic values of the kind Backpack publishes: a tick size and a step size whose scale is
the most decimals allowed, a minimum quantity, price bounds, and the multipliers that bound how far an
order's price may be from the last price.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# The candle intervals are the shared market-data package's (the REST klines and the streams read it).
from gridbot.marketdata.candles import KLINE_SECONDS  # noqa: F401

from .perps import PerpParams

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
    # meanMarkPriceBand (max, min): SOL_USDC's real values; BTC_USDC's from hummingbot's capture.
    mark_band: tuple[str, str] = ("1.15", "0.9")
    created_at: str = "2025-01-21T06:34:54.691858"
    impact_band: tuple[str, str] = ("1.03", "0.97")   # maxImpactMultiplier, minImpactMultiplier
    perp: PerpParams | None = None                    # a perpetual future (perps.py); None: spot

    @property
    def is_perp(self) -> bool:
        return self.perp is not None


DEFAULT_MARKETS: tuple[MarketSpec, ...] = (
    # SOL_USDC's filters are the real ones (tests/fixtures/backpack_captures.json "Market", ccxt): no maximum quantity.
    MarketSpec("SOL_USDC", "SOL", "USDC", D("0.01"), D("0.01"), D("0.01"), None,
               D("0.01"), None, D("1.25"), D("0.75"), D("150.00")),
    MarketSpec("BTC_USDC", "BTC", "USDC", D("0.1"), D("0.00001"), D("0.00001"), D("100"),
               D("0.1"), None, D("1.25"), D("0.75"), D("95000.0"), mark_band=("1.03", "0.97")),
    MarketSpec("ETH_USDC", "ETH", "USDC", D("0.01"), D("0.0001"), D("0.001"), D("10000"),
               D("0.01"), None, D("1.25"), D("0.75"), D("3500.00")),
    # SOL_USDC_PERP is Backpack's own client's fixture of the market, hourly funding (captures "Market
    # (PERP)", bpx-api-client): its bands, its IMF 0.02 / 0.00006 and MMF 0.0135 / 0.000036.
    MarketSpec("SOL_USDC_PERP", "SOL", "USDC", D("0.01"), D("0.01"), D("0.01"), None,
               D("0.01"), D("1000"), D("2"), D("0.25"), D("150.00"), mark_band=("1.1", "0.9"),
               impact_band=("1.01", "0.99"),
               perp=PerpParams(D("0.02"), D("0.00006"), D("0.0135"), D("0.000036"))),
    # BTC_USDC_PERP: BTC_USDC's filters, with the margin functions Backpack published for ETH_USDC_PERP in
    # 2025 (IMF 0.02 / 0.0000935, MMF 0.0125 / 0.0000561): BTC's own are not captured anywhere.
    MarketSpec("BTC_USDC_PERP", "BTC", "USDC", D("0.1"), D("0.00001"), D("0.00001"), D("100"),
               D("0.1"), None, D("1.25"), D("0.75"), D("95000.0"), mark_band=("1.03", "0.97"),
               perp=PerpParams(D("0.02"), D("0.0000935"), D("0.0125"), D("0.0000561"))),
)

DEFAULT_SYMBOL = "SOL_USDC"


def decimals_of(step: Decimal) -> int:
    """How many decimals a tick or step size allows (its scale)."""
    exp = step.normalize().as_tuple().exponent
    return max(0, -int(exp))


def market_json(m: MarketSpec) -> dict:
    """The Market object of GET /api/v1/market(s), with every field the spec lists, as Backpack sends a
    crypto spot market (tests/fixtures/backpack_captures.json "Market": SOL_USDC from ccxt, BTC_USDC from hummingbot).

    The price-update multipliers (docs/exchange.md §5) are null: Backpack sends them for some markets
    only and their spot values are unknown; null is the reading that bounds no order further.
    """
    def s(d: Decimal | None) -> str | None:
        return None if d is None else f"{d:f}"
    return {
        "symbol": m.symbol,
        "baseSymbol": m.base,
        "quoteSymbol": m.quote,
        "marketType": "PERP" if m.perp is not None else "SPOT",
        "filters": {
            "price": {
                "minPrice": s(m.min_price),
                "maxPrice": s(m.max_price),
                "tickSize": s(m.tick_size),
                "maxMultiplier": s(m.max_multiplier),
                "minMultiplier": s(m.min_multiplier),
                "maxImpactMultiplier": m.impact_band[0],
                "minImpactMultiplier": m.impact_band[1],
                "meanMarkPriceBand": {"maxMultiplier": m.mark_band[0], "minMultiplier": m.mark_band[1]},
                "meanPremiumBand": None if m.perp is None else {"tolerancePct": s(m.perp.premium_tolerance)},
                "borrowEntryFeeMaxMultiplier": None,
                "borrowEntryFeeMinMultiplier": None,
                "maxPriceUpdateMultiplier": None,
                "minPriceUpdateMultiplier": None,
            },
            "quantity": {
                "stepSize": s(m.step_size),
                "minQuantity": s(m.min_quantity),
                "maxQuantity": s(m.max_quantity),
            },
        },
        **(perp_fields(m.perp) if m.perp is not None else {
            "imfFunction": None,
            "mmfFunction": None,
            "fundingInterval": None,
            "fundingRateUpperBound": None,
            "fundingRateLowerBound": None,
            "openInterestLimit": "0",
            "positionLimitWeight": None,
        }),
        "orderBookState": "Open",
        "createdAt": m.created_at,
        "visible": True,
        "rwaMarketType": None,
    }


def perp_fields(p: PerpParams) -> dict:
    """A perp market's own fields (tests/fixtures/backpack_captures.json "Market (PERP)", Backpack's client
    fixture): the margin functions with decimals as strings, the funding interval as an integer of ms, the
    funding bounds in basis points."""
    return {
        "imfFunction": {"base": f"{p.imf_base:f}", "factor": f"{p.imf_factor:f}", "type": "sqrt"},
        "mmfFunction": {"base": f"{p.mmf_base:f}", "factor": f"{p.mmf_factor:f}", "type": "sqrt"},
        "fundingInterval": p.funding_interval_ms,
        "fundingRateUpperBound": f"{p.funding_upper_bps:f}",
        "fundingRateLowerBound": f"{p.funding_lower_bps:f}",
        "openInterestLimit": f"{p.open_interest_limit:f}",
        "positionLimitWeight": f"{p.position_limit_weight:f}",
    }
