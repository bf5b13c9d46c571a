"""The parsers that turn Backpack's wire JSON into the domain values of ``gridbot/core/models.py`` (docs/exchange.md).

Translation happens once, here, at the edge: decimal strings become ``Decimal``, ``"Bid"`` becomes
``Side.BID``, ``"PartiallyFilled"`` becomes ``OrderStatus.PARTIALLY_FILLED``, a fill's string
``clientId`` becomes an int, naive UTC datetimes become epoch milliseconds. Every parser accepts an
optional field both present-as-null and absent. A malformed message raises ``ParseError`` naming the
field, never a bare KeyError.
"""
from __future__ import annotations

import functools
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping, TypeVar

from gridbot.core.errors import Transient
from gridbot.core.perp_risk import MarginFunctions
from gridbot.core.models import (AccountSettings, BatchError, Fill, FundingPayment, MarginSummary, MarketRules, MarkPrice,
                                 Order, OrderStatus, OrderUpdate, Position, Side, Ticker)

T = TypeVar("T")


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ParseError(Transient, ValueError):
    """Exchange data that does not have the shape the contract describes."""


def _an_object(parse: Callable[[Any], T]) -> Callable[[Any], T]:
    """A parser of a JSON object refuses anything else with a ParseError (a list, a string, null), as
    a malformed answer must never escape as an AttributeError."""
    @functools.wraps(parse)
    def checked(d: Any) -> T:
        if not isinstance(d, Mapping):
            raise ParseError(f"{parse.__name__.removeprefix('parse_')}: expected an object, got {type(d).__name__}")
        return parse(d)
    return checked


def _req(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise ParseError(f"{where}: missing field {key!r}")
    return d[key]


def dec(value: Any, field: str = "value") -> Decimal:
    """A decimal from the wire's string (numbers are accepted too, via their text)."""
    if isinstance(value, bool) or value is None:
        raise ParseError(f"{field}: expected a decimal string, got {value!r}")
    try:
        d = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ParseError(f"{field}: not a decimal: {value!r}") from None
    if not d.is_finite():
        raise ParseError(f"{field}: not a finite decimal: {value!r}")
    return d


def opt_dec(value: Any, field: str) -> Decimal | None:
    return None if value is None else dec(value, field)


def opt_int(value: Any, field: str) -> int | None:
    """An integer that may arrive as a number or a digit string (clientId, ids, times)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ParseError(f"{field}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ParseError(f"{field}: expected an integer, got {value!r}") from None


def naive_utc_ms(text: Any, field: str) -> int:
    """``"2025-07-27T17:39:00.092"`` (naive UTC) -> epoch milliseconds."""
    if not isinstance(text, str):
        raise ParseError(f"{field}: expected a datetime string, got {text!r}")
    try:
        dt = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise ParseError(f"{field}: not a datetime: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def side(value: Any, field: str = "side") -> Side:
    try:
        return Side(value)
    except ValueError:
        raise ParseError(f"{field}: unknown side {value!r}") from None


def status(value: Any, field: str = "status") -> OrderStatus:
    try:
        return OrderStatus(value)
    except ValueError:
        raise ParseError(f"{field}: unknown order status {value!r}") from None


@_an_object
def parse_market(d: Mapping[str, Any]) -> MarketRules:
    where = "market"
    filters = _req(d, "filters", where)
    price = _req(filters, "price", "market.filters")
    qty = _req(filters, "quantity", "market.filters")
    return MarketRules(
        symbol=_req(d, "symbol", where),
        base=_req(d, "baseSymbol", where),
        quote=_req(d, "quoteSymbol", where),
        tick_size=dec(_req(price, "tickSize", "filters.price"), "tickSize"),
        step_size=dec(_req(qty, "stepSize", "filters.quantity"), "stepSize"),
        min_quantity=dec(_req(qty, "minQuantity", "filters.quantity"), "minQuantity"),
        max_quantity=opt_dec(qty.get("maxQuantity"), "maxQuantity"),
        min_price=dec(_req(price, "minPrice", "filters.price"), "minPrice"),
        max_price=opt_dec(price.get("maxPrice"), "maxPrice"),
        max_multiplier=opt_dec(price.get("maxMultiplier"), "maxMultiplier"),
        min_multiplier=opt_dec(price.get("minMultiplier"), "minMultiplier"),
        order_book_state=d.get("orderBookState") or "Open",
        margin=_margin_functions(d),
    )


def _margin_functions(d: Mapping[str, Any]) -> MarginFunctions | None:
    """A perp's ``imfFunction`` and ``mmfFunction`` (``{"type": "sqrt", "base", "factor"}``); None on spot."""
    imf, mmf = d.get("imfFunction"), d.get("mmfFunction")
    if not isinstance(imf, Mapping) or not isinstance(mmf, Mapping):
        return None
    return MarginFunctions(dec(_req(imf, "base", "imfFunction"), "imfFunction.base"),
                           dec(_req(imf, "factor", "imfFunction"), "imfFunction.factor"),
                           dec(_req(mmf, "base", "mmfFunction"), "mmfFunction.base"),
                           dec(_req(mmf, "factor", "mmfFunction"), "mmfFunction.factor"))


@_an_object
def parse_order(d: Mapping[str, Any]) -> Order:
    where = "order"
    created = d.get("createdAt")
    created_ms = naive_utc_ms(created, "order.createdAt") if isinstance(created, str) \
        else (opt_int(created, "order.createdAt") or 0)
    return Order(
        id=str(_req(d, "id", where)),
        client_id=opt_int(d.get("clientId"), "order.clientId"),
        symbol=_req(d, "symbol", where),
        side=side(_req(d, "side", where)),
        price=opt_dec(d.get("price"), "order.price"),
        quantity=opt_dec(d.get("quantity"), "order.quantity"),
        executed_quantity=dec(d.get("executedQuantity") or "0", "order.executedQuantity"),
        executed_quote_quantity=dec(d.get("executedQuoteQuantity") or "0", "order.executedQuoteQuantity"),
        status=status(_req(d, "status", where)),
        created_at_ms=created_ms,
        post_only=bool(d.get("postOnly") or False),
        expiry_reason=d.get("expiryReason"),
    )


@_an_object
def parse_batch_item(d: Mapping[str, Any]) -> Order | BatchError:
    if d.get("operation") == "Err" or ("code" in d and "id" not in d):
        return BatchError(str(d.get("code") or "UNKNOWN"), str(d.get("message") or ""))
    return parse_order(d)


@_an_object
def parse_fill(d: Mapping[str, Any]) -> Fill:
    where = "fill"
    trade_id = opt_int(d.get("tradeId"), "fill.tradeId")
    if trade_id is None:
        raise ParseError("fill: missing field 'tradeId'")
    return Fill(
        trade_id=trade_id,
        order_id=str(_req(d, "orderId", where)),
        client_id=opt_int(d.get("clientId"), "fill.clientId"),
        symbol=_req(d, "symbol", where),
        side=side(_req(d, "side", where)),
        price=dec(_req(d, "price", where), "fill.price"),
        quantity=dec(_req(d, "quantity", where), "fill.quantity"),
        fee=dec(_req(d, "fee", where), "fill.fee"),
        fee_symbol=_req(d, "feeSymbol", where),
        is_maker=bool(d.get("isMaker")),
        timestamp_ms=naive_utc_ms(_req(d, "timestamp", where), "fill.timestamp"),
    )


@_an_object
def parse_balances(d: Mapping[str, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    """``/api/v1/capital`` -> {asset: (available, locked)}."""
    if not isinstance(d, Mapping):
        raise ParseError("capital: expected an object keyed by asset")
    out = {}
    for asset, b in d.items():
        if not isinstance(b, Mapping):
            raise ParseError(f"capital.{asset}: expected an object")
        out[asset] = (dec(b.get("available") or "0", f"{asset}.available"),
                      dec(b.get("locked") or "0", f"{asset}.locked"))
    return out


@_an_object
def parse_account_settings(d: Mapping[str, Any]) -> AccountSettings:
    """``/api/v1/account``. Its fees are documented in basis points ("10" is 0.1%); a missing field is
    None, never guessed."""
    def fee(name: str) -> Decimal | None:
        v = d.get(name)
        return None if v is None else dec(v, f"account.{name}") / 10_000

    def flag(name: str) -> bool | None:
        v = d.get(name)
        return v if isinstance(v, bool) else None

    limit = d.get("borrowLimit")
    return AccountSettings(fee("spotMakerFee"), fee("spotTakerFee"), flag("autoLend"), flag("autoBorrowSettlements"),
                           flag("autoRepayBorrows"), None if limit is None else dec(limit, "account.borrowLimit"),
                           opt_dec(d.get("leverageLimit"), "account.leverageLimit"))


# ------------------------------------------------------------------------------ perpetual futures
# Decimals and ids are accepted as strings or numbers (docs/exchange.md §12: recorders and the docs' own
# examples write some as numbers).
@_an_object
def parse_position(d: Mapping[str, Any]) -> Position:
    w = "position"
    return Position(str(_req(d, "symbol", w)), str(_req(d, "positionId", w)),
                    dec(_req(d, "netQuantity", w), "netQuantity"), dec(_req(d, "entryPrice", w), "entryPrice"),
                    dec(_req(d, "markPrice", w), "markPrice"),
                    dec(d.get("netExposureQuantity") or 0, "netExposureQuantity"),
                    dec(d.get("pnlRealized") or 0, "pnlRealized"), dec(d.get("pnlUnrealized") or 0, "pnlUnrealized"),
                    dec(d.get("cumulativeFundingPayment") or 0, "cumulativeFundingPayment"))


@_an_object
def parse_margin(d: Mapping[str, Any]) -> MarginSummary:
    w = "collateral"
    return MarginSummary(dec(_req(d, "netEquity", w), "netEquity"), dec(_req(d, "netEquityAvailable", w),
                                                                        "netEquityAvailable"),
                         dec(_req(d, "netEquityLocked", w), "netEquityLocked"),
                         dec(d.get("pnlUnrealized") or 0, "pnlUnrealized"),
                         opt_dec(d.get("marginFraction"), "marginFraction"), dec(d.get("imf") or 0, "imf"),
                         dec(d.get("mmf") or 0, "mmf"))


@_an_object
def parse_mark_price(d: Mapping[str, Any]) -> MarkPrice:
    nxt = d.get("nextFundingTimestamp")
    return MarkPrice(str(_req(d, "symbol", "markPrice")), dec(_req(d, "markPrice", "markPrice"), "markPrice"),
                     opt_dec(d.get("indexPrice"), "indexPrice"), opt_dec(d.get("fundingRate"), "fundingRate"),
                     None if nxt is None else int(dec(nxt, "nextFundingTimestamp")))


@_an_object
def parse_funding_rate(d: Mapping[str, Any]) -> tuple[int, Decimal]:
    """A ``/api/v1/fundingRates`` row: (the interval's end in ms, its rate)."""
    w = "fundingRate"
    return (naive_utc_ms(_req(d, "intervalEndTimestamp", w), "intervalEndTimestamp"),
            dec(_req(d, "fundingRate", w), "fundingRate"))


@_an_object
def parse_funding_payment(d: Mapping[str, Any]) -> FundingPayment:
    w = "funding"
    return FundingPayment(str(_req(d, "symbol", w)), dec(_req(d, "quantity", w), "quantity"),
                          dec(_req(d, "fundingRate", w), "fundingRate"),
                          naive_utc_ms(_req(d, "intervalEndTimestamp", w), "intervalEndTimestamp"))


@_an_object
def parse_ticker(d: Mapping[str, Any]) -> Ticker:
    return Ticker(_req(d, "symbol", "ticker"), dec(_req(d, "lastPrice", "ticker"), "ticker.lastPrice"))


@_an_object
def parse_ticker_event(d: Mapping[str, Any]) -> tuple[Ticker, int]:
    """A ``ticker.<symbol>`` stream payload -> (ticker, event time µs)."""
    return (Ticker(_req(d, "s", "ticker event"), dec(_req(d, "c", "ticker event"), "ticker.c")),
            opt_int(d.get("E"), "ticker.E") or 0)


@_an_object
def parse_order_update(d: Mapping[str, Any]) -> OrderUpdate:
    where = "orderUpdate"
    event = _req(d, "e", where)
    symbol = _req(d, "s", where)
    order_id = str(_req(d, "i", where))
    client_id = opt_int(d.get("c"), "orderUpdate.c")
    sd = side(_req(d, "S", where), "orderUpdate.S")
    engine_us = opt_int(d.get("T"), "orderUpdate.T") or 0
    fill = None
    if event == "orderFill" and (d.get("n") is None or not d.get("N")):
        # A fill without its fee: booked as it is it would count a zero fee, and the REST fill (with the
        # fee) would then be dropped as a duplicate. The fill is left to the lookup this event triggers.
        fill = None
    elif event == "orderFill":
        trade_id = opt_int(d.get("t"), "orderUpdate.t")
        if trade_id is None:
            raise ParseError("orderUpdate: orderFill without a trade id 't'")
        fill = Fill(trade_id=trade_id, order_id=order_id, client_id=client_id, symbol=symbol,
                    side=sd, price=dec(_req(d, "L", where), "orderUpdate.L"),
                    quantity=dec(_req(d, "l", where), "orderUpdate.l"),
                    fee=dec(d.get("n"), "orderUpdate.n"), fee_symbol=str(d.get("N")),
                    is_maker=bool(d.get("m")), timestamp_ms=engine_us // 1000)
    st = d.get("X")
    return OrderUpdate(
        event=event, symbol=symbol, order_id=order_id, client_id=client_id, side=sd,
        status=status(st, "orderUpdate.X") if st is not None else None,
        price=opt_dec(d.get("p"), "orderUpdate.p"), quantity=opt_dec(d.get("q"), "orderUpdate.q"),
        executed_quantity=opt_dec(d.get("z"), "orderUpdate.z"),
        executed_quote_quantity=opt_dec(d.get("Z"), "orderUpdate.Z"),
        fill=fill, expiry_reason=d.get("R"),
        event_time_us=opt_int(d.get("E"), "orderUpdate.E") or 0, engine_time_us=engine_us,
        origin=str(d["O"]) if d.get("O") is not None else None)
