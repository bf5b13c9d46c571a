"""Wire formats: the JSON Backpack sends for orders, fills and candles, and the order payload it accepts.

Pure functions between the engine's records and Backpack's shapes (docs/exchange.md §5-§7).
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .records import Fill, Order, OrderRequest, UINT32_MAX, _dec, naive_utc, parse_error, s



def parse_client_id(value: Any) -> int | None:
    """A JSON ``clientId``: a u32 number (a string, a bool or a fraction is refused)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        raise parse_error("invalid value for `clientId`, expected u32")
    return value


def parse_order_payload(payload: Any) -> OrderRequest:
    """An ``OrderExecutePayload`` checked field by field, as Backpack's parser answers (docs/exchange.md §6.1)."""
    if not isinstance(payload, dict):
        raise parse_error('Expected input type "OrderExecutePayload"')
    for name in ("symbol", "side", "orderType"):
        if name not in payload:
            raise parse_error(f"missing field `{name}`")
    symbol = payload["symbol"]
    if not isinstance(symbol, str):
        raise parse_error("invalid type for `symbol`")
    side = payload["side"]
    if side not in ("Bid", "Ask"):
        raise parse_error(f"unknown variant `{side}`, expected `Bid` or `Ask`")
    otype = payload["orderType"]
    if otype not in ("Limit", "Market"):
        raise parse_error(f"unknown variant `{otype}`, expected `Market` or `Limit`")
    tif = payload.get("timeInForce") or "GTC"
    if tif not in ("GTC", "IOC", "FOK"):
        raise parse_error(f"unknown variant `{tif}`, expected one of `GTC`, `IOC`, `FOK`")
    post_only = payload.get("postOnly", False)
    if post_only is None:
        post_only = False
    if not isinstance(post_only, bool):
        raise parse_error("invalid type for `postOnly`, expected a boolean")
    client_id = parse_client_id(payload.get("clientId"))
    stp = payload.get("selfTradePrevention") or "RejectTaker"
    if stp not in ("RejectTaker", "RejectMaker", "RejectBoth", "Allow"):
        raise parse_error(f"unknown variant `{stp}` for `selfTradePrevention`")
    flags = {}
    for name in ("autoBorrow", "autoBorrowRepay", "autoLend", "autoLendRedeem", "reduceOnly"):
        value = payload.get(name)
        if value is not None and not isinstance(value, bool):
            raise parse_error(f"invalid type for `{name}`, expected a boolean")
        flags[name] = value
    price = _dec(payload["price"], "price") if payload.get("price") is not None else None
    qty = _dec(payload["quantity"], "quantity") if payload.get("quantity") is not None else None
    qq = (_dec(payload["quoteQuantity"], "quoteQuantity")
          if payload.get("quoteQuantity") is not None else None)
    return OrderRequest(symbol=symbol, side=side, type=otype, tif=tif, post_only=post_only,
                        client_id=client_id, stp=stp, price=price, qty=qty, qq=qq, auto_borrow=flags["autoBorrow"],
                        reduce_only=flags["reduceOnly"])


def kline_time(t: int) -> str:
    """A candle's start or end as Backpack writes it (UTC; sorts as text in time order)."""
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def kline_json(bucket_s: int, interval_s: int, c: dict) -> dict:
    fmt = kline_time
    return {"start": fmt(bucket_s), "end": fmt(bucket_s + interval_s), "open": s(c["o"]),
            "high": s(c["h"]), "low": s(c["l"]), "close": s(c["c"]), "volume": s(c["v"]),
            "quoteVolume": s(c["qv"]), "trades": str(c["n"])}


def order_json(o: Order, listed: bool = False) -> dict:
    """An order as /api/v1/order(s) return it: optional fields present as null, createdAt in ms.

    The key sets are the captured ones (tests/fixtures/backpack_captures.json "Order: ..."): ``systemOrderType`` only
    where orders are listed or looked up (GET), not in the answer to a placement or a cancel; a
    market order has ``quoteQuantity`` and no ``price`` or ``postOnly``.
    """
    out: dict[str, Any] = {
        "orderType": o.order_type, "id": o.id, "clientId": o.client_id, "symbol": o.symbol,
        "side": o.side, "quantity": s(o.quantity), "executedQuantity": s(o.executed),
        "executedQuoteQuantity": s(o.executed_quote), "timeInForce": o.time_in_force,
        "selfTradePrevention": o.stp, "status": o.status, "createdAt": o.created_us // 1000,
        "reduceOnly": o.reduce_only or None, "relatedOrderId": None, "strategyId": None, "triggerBy": None,
        "triggerPrice": None, "triggerQuantity": None, "triggeredAt": None,
        "stopLossTriggerPrice": None, "stopLossLimitPrice": None, "stopLossTriggerBy": None,
        "takeProfitTriggerPrice": None, "takeProfitLimitPrice": None, "takeProfitTriggerBy": None,
    }
    if listed:
        out["systemOrderType"] = None
    if o.order_type == "Limit":
        out["price"] = s(o.price)
        out["postOnly"] = o.post_only
    else:
        out["quoteQuantity"] = s(o.quote_quantity)
    return out


def quote_quantity(o: Order) -> Decimal | None:
    """What an order is worth in quote: a limit order's price x quantity, without padding zeros
    (``"4"`` for 0.001 at 4000 in order history, tests/fixtures/backpack_captures.json "Order: /wapi/v1/history/orders");
    a market order's quote quantity as given or as the engine set it."""
    if o.price is not None:
        return (o.price * o.quantity).normalize()
    return o.quote_quantity


def order_history_json(o: Order) -> dict:
    """The history shape (spec schema ``Order``): createdAt is a naive datetime string; the key set is
    the captured one (tests/fixtures/backpack_captures.json "Order: /wapi/v1/history/orders item")."""
    return {
        "id": o.id, "createdAt": naive_utc(o.created_us), "executedQuantity": s(o.executed),
        "executedQuoteQuantity": s(o.executed_quote), "expiryReason": o.expiry_reason,
        "orderType": o.order_type, "postOnly": o.post_only, "price": s(o.price),
        "quantity": s(o.quantity), "quoteQuantity": s(quote_quantity(o)),
        "selfTradePrevention": o.stp, "status": o.status, "side": o.side, "symbol": o.symbol,
        "timeInForce": o.time_in_force, "triggerBy": None, "triggerPrice": None,
        "triggerQuantity": None, "clientId": o.client_id, "systemOrderType": None,
        "strategyId": None,
        "stopLossTriggerPrice": None, "stopLossLimitPrice": None, "stopLossTriggerBy": None,
        "takeProfitTriggerPrice": None, "takeProfitLimitPrice": None, "takeProfitTriggerBy": None,
    }


def fill_json(f: Fill) -> dict:
    """A fill as /wapi/v1/history/fills returns it: clientId a string, timestamp naive datetime."""
    return {"clientId": None if f.client_id is None else str(f.client_id), "fee": s(f.fee),
            "feeSymbol": f.fee_symbol, "isMaker": f.is_maker, "orderId": f.order_id,
            "price": s(f.price), "quantity": s(f.quantity), "side": f.side, "symbol": f.symbol,
            "systemOrderType": f.system_type, "timestamp": naive_utc(f.ts_us), "tradeId": f.trade_id}


def order_state(o: Order) -> dict:
    return {"id": o.id, "account": o.account, "symbol": o.symbol, "side": o.side,
            "orderType": o.order_type, "price": s(o.price), "quantity": s(o.quantity),
            "executedQuantity": s(o.executed), "executedQuoteQuantity": s(o.executed_quote),
            "status": o.status, "clientId": o.client_id, "postOnly": o.post_only,
            "timeInForce": o.time_in_force, "createdAtUs": o.created_us, "closedAtUs": o.closed_us,
            "expiryReason": o.expiry_reason, "reduceOnly": o.reduce_only, "origin": o.origin}


def fill_state(f: Fill) -> dict:
    return {"tradeId": f.trade_id, "orderId": f.order_id, "clientId": f.client_id,
            "account": f.account, "symbol": f.symbol, "side": f.side, "price": s(f.price),
            "quantity": s(f.quantity), "fee": s(f.fee), "feeSymbol": f.fee_symbol,
            "isMaker": f.is_maker, "timestampUs": f.ts_us}


def order_update(order: Order, event: str, fill: Fill | None, now: int) -> dict:
    """An ``account.orderUpdate`` event for ``order`` (docs/exchange.md §9.6)."""
    data: dict[str, Any] = {
        "e": event, "E": now, "s": order.symbol, "i": order.id, "S": order.side,
        "o": order.order_type.upper(), "f": order.time_in_force, "q": s(order.quantity),
        "X": order.status, "t": fill.trade_id if fill else None, "z": s(order.executed),
        "Z": s(order.executed_quote), "V": order.stp, "T": now, "O": order.origin, "r": bool(order.reduce_only),
    }
    if order.post_only:
        # Captures of orders that are not post-only have no ``y`` key at all (tests/fixtures/backpack_captures.json
        # "WS orderAccepted (limit)"); the spec's all-fields example sends ``"y": true``.
        data["y"] = True
    if order.client_id is not None:
        data["c"] = order.client_id
    if order.price is not None:
        data["p"] = s(order.price)
        data["Q"] = s(order.price * order.quantity)
    elif order.quote_quantity is not None:
        data["Q"] = s(order.quote_quantity)  # "4.30" on a market order ("WS orderAccepted (market)")
    if fill is not None:
        data.update({"l": s(fill.quantity), "L": s(fill.price), "m": fill.is_maker,
                     "n": s(fill.fee), "N": fill.fee_symbol})
    if event == "orderExpired":
        data["R"] = order.expiry_reason
    return data
