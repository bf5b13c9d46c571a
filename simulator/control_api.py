"""The simulator's control API under ``/_sim/``: not Backpack's; loopback clients only, no auth.

Prices, faults, balances, the feed, the clock and a dump of everything (documented in the README).
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from . import signing
from .faults import FaultSpecError
from .records import plain, s
from .replies import Reply
from .wire import fill_state, order_state

if TYPE_CHECKING:
    from .engine import Exchange
    from .server import Simulator


def exchange_state(ex: "Exchange", journal_since_us: int = 0) -> dict:
    """Everything the exchange holds, for ``GET /_sim/state``: markets, fees, balances, orders, fills, the
    request count and the journal since ``journal_since_us``."""
    with ex.lock:
        return {
            "time_us": ex.clock_us(),
            "markets": {sym: {"price": s(m.price), "tickSize": s(m.spec.tick_size),
                              "stepSize": s(m.spec.step_size), "base": m.spec.base,
                              "quote": m.spec.quote}
                        for sym, m in ex.markets.items()},
            "fees": {"maker": s(ex.maker_fee), "taker": s(ex.taker_fee)},
            "accounts": {k: {a: {"available": plain(b.available), "locked": plain(b.locked)}
                             for a, b in acct.balances.items()}
                         for k, acct in ex.accounts.items()},
            # Perps: each account's leverage limit, liquidation state, open positions (net, entry, settle price,
            # realized PnL, funding, fees) and its funding and settlement ledgers.
            "perp_accounts": {k: {"leverageLimit": s(acct.leverage_limit), "liquidating": acct.liquidating,
                                  "positions": {sym: {"positionId": p.position_id, "netQuantity": s(p.net),
                                                      "entryPrice": s(p.entry), "settlePrice": s(p.settle),
                                                      "pnlRealized": s(p.pnl_realized),
                                                      "cumulativeFunding": plain(p.funding), "fees": plain(p.fees)}
                                                for sym, p in acct.positions.items()},
                                  "funding": list(acct.funding_rows), "settlements": list(acct.settlements)}
                              for k, acct in ex.accounts.items() if acct.positions or acct.funding_rows
                              or acct.settlements},
            "orders": [order_state(o) for o in ex.orders.values()],
            "fills": [fill_state(f) for f in ex.fills],
            "requests": ex.request_count,
            "journal": [e for e in ex.journal if e["t"] >= journal_since_us],
        }


class ControlRoutes:
    """``/_sim/``: not Backpack's; loopback only, no auth."""

    def __init__(self, sim: "Simulator") -> None:
        self.sim = sim

    def handle(self, method: str, path: str, query: list[tuple[str, str]], body: Any) -> Reply:
        sim = self.sim
        ex = sim.exchange
        if (method, path) == ("GET", "/_sim/state"):
            since = dict(query).get("journal_since_us")
            state = exchange_state(ex, int(since) if since else 0)
            state["feed"] = sim.feed.describe()
            state["faults"] = sim.faults.list()
            state["ws"] = {"connections": len(sim.hub.connections), "messages_sent": sim.hub.messages_sent,
                           "streams": sim.hub.streams()}
            state["urls"] = sim.urls()
            with ex.lock:
                state["perps"] = {sym: p.to_json() for sym, p in sim.perps.markets.items()}
            return Reply(200, state)
        if (method, path) == ("POST", "/_sim/perp"):
            return sim.perps.control(body)
        if (method, path) == ("POST", "/_sim/price"):
            if not isinstance(body, dict) or "price" not in body:
                return Reply(400, {"error": "body must be {\"symbol\": ..., \"price\": \"...\"}"})
            symbol = body.get("symbol", sim.config.symbol)
            try:
                price = Decimal(str(body["price"]))
                liquidity = Decimal(str(body["liquidity"])) if body.get("liquidity") is not None else None
            except InvalidOperation:
                return Reply(400, {"error": "price and liquidity must be decimals"})
            fills = ex.set_price(symbol, price, liquidity=liquidity)
            return Reply(200, {"symbol": symbol, "price": s(ex.markets[symbol].price),
                               "fills": [{"tradeId": f.trade_id, "orderId": f.order_id,
                                          "side": f.side, "price": s(f.price),
                                          "quantity": s(f.quantity)} for f in fills]})
        if (method, path) == ("POST", "/_sim/depth"):
            if not isinstance(body, dict) or "quantity" not in body:
                return Reply(400, {"error": "body must be {\"symbol\": ..., \"quantity\": \"...\" or null}"})
            symbol = body.get("symbol", sim.config.symbol)
            try:
                quantity = None if body["quantity"] is None else Decimal(str(body["quantity"]))
            except InvalidOperation:
                return Reply(400, {"error": "quantity must be a decimal or null"})
            if quantity is not None and not quantity > 0:
                return Reply(400, {"error": "quantity must be above 0 (null: unlimited)"})
            ex.set_taker_depth(symbol, quantity)
            return Reply(200, {"symbol": symbol, "quantity": None if quantity is None else s(quantity)})
        if (method, path) == ("POST", "/_sim/clock"):
            if not isinstance(body, dict) or not isinstance(body.get("offset_ms"), int):
                return Reply(400, {"error": "body must be {\"offset_ms\": N} (an integer, may be negative)"})
            ex.clock_offset_us = body["offset_ms"] * 1000
            return Reply(200, {"offset_ms": body["offset_ms"]})
        if path == "/_sim/faults":
            if method == "GET":
                return Reply(200, {"faults": sim.faults.list()})
            if method == "DELETE":
                sim.faults.clear()
                return Reply(200, {"faults": []})
            if method == "POST":
                specs = body if isinstance(body, list) else [body]
                try:
                    added = [sim.add_fault(spec) for spec in specs]
                except FaultSpecError as e:
                    return Reply(400, {"error": str(e)})
                return Reply(200, {"faults": added})
        if (method, path) == ("POST", "/_sim/balance"):
            if not isinstance(body, dict) or not {"api_key", "asset", "available"} <= set(body):
                return Reply(400, {"error": "body must be {\"api_key\", \"asset\", \"available\"}"})
            try:
                signing.decode_key(body["api_key"])
                amount = Decimal(str(body["available"]))
            except (signing.AuthFailure, InvalidOperation):
                return Reply(400, {"error": "api_key must be base64 of 32 bytes, available a decimal"})
            ex.set_balance(body["api_key"], body["asset"], amount)
            return Reply(200, {"ok": True})
        if (method, path) == ("POST", "/_sim/borrowing"):
            try:
                signing.decode_key(body["api_key"])
                limit = Decimal(str(body["limit"]))
            except (signing.AuthFailure, InvalidOperation, KeyError, TypeError):
                return Reply(400, {"error": "body must be {\"api_key\": base64 of 32 bytes, \"limit\": a decimal}"})
            ex.set_borrowing(body["api_key"], limit)
            return Reply(200, {"ok": True})
        if (method, path) == ("POST", "/_sim/feed"):
            body = body or {}
            if "paused" in body:
                sim.feed.pause(bool(body["paused"]))
            stepped = sim.feed.step(int(body["step"])) if "step" in body else 0
            if "step_points" in body:
                stepped += sim.feed.step_points(int(body["step_points"]))
            return Reply(200, {"stepped": stepped, "feed": sim.feed.describe()})
        return Reply(404, {"error": f"no control route {method} {path}"})
