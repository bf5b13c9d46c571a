"""The perp markets' public endpoints, their control route, and the streams' payloads (perps.py holds the
rules): ``GET /api/v1/markPrices``, ``/api/v1/fundingRates``, ``/api/v1/openInterest``, klines of the
``Mark`` and ``Index`` price, and ``POST /_sim/perp``.

Every read first rolls the markets' funding intervals forward to the simulator's clock, so
``/fundingRates`` has a row for each interval that has ended, however the clock was moved.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Callable

from .perps import PerpMarket
from .records import SimError
from .replies import Reply

if TYPE_CHECKING:
    from .rest import Request
    from .server import Simulator

MAX_FUNDING_ROWS = 10_000


class PerpMarkets:
    """The simulator's perp markets (``sim.perps``), read and changed under the exchange's lock."""

    def __init__(self, sim: "Simulator") -> None:
        self.sim = sim
        self.ex = sim.exchange
        self.markets: dict[str, PerpMarket] = {
            sym: PerpMarket(sym, m.spec.perp) for sym, m in self.ex.markets.items() if m.spec.perp is not None}
        self.roll()

    def roll(self) -> None:
        now_ms = self.ex.clock_us() // 1000
        with self.ex.lock:
            for p in self.markets.values():
                p.roll(now_ms)

    def perp(self, symbol: str) -> PerpMarket:
        p = self.markets.get(symbol)
        if p is None:
            self.ex.market(symbol)    # an unknown symbol: the exchange's own error
            raise SimError(400, "INVALID_MARKET", "Market is not a perpetual future")
        return p

    def _last(self, symbol: str) -> tuple[Decimal, Decimal]:
        m = self.ex.markets[symbol]
        return m.price, m.spec.tick_size

    def mark_price_json(self, symbol: str) -> dict:
        last, tick = self._last(symbol)
        return self.markets[symbol].mark_price_json(last, self.ex.clock_us(), tick)

    def mark_price_event(self, symbol: str) -> dict:
        with self.ex.lock:
            last, tick = self._last(symbol)
            return self.markets[symbol].mark_price_event(last, self.ex.clock_us(), tick)

    def open_interest_event(self, symbol: str) -> dict:
        with self.ex.lock:
            return self.markets[symbol].open_interest_event(self.ex.clock_us())

    def price_at(self, symbol: str, price_type: str | None) -> Callable[[Decimal, int], Decimal] | None:
        """How a last-price print becomes a ``Mark`` or ``Index`` price at its time, for klines (None: the
        last price itself; a spot market's index and mark are its last price)."""
        p = self.markets.get(symbol)
        if p is None or price_type in (None, "Last"):
            return None
        return p.mark_at if price_type == "Mark" else p.index_at

    # -- REST
    def routes(self) -> dict[tuple[str, str], Callable[["Request"], Reply]]:
        return {("GET", "/api/v1/markPrices"): self.mark_prices,
                ("GET", "/api/v1/fundingRates"): self.funding_rates,
                ("GET", "/api/v1/openInterest"): self.open_interest}

    def mark_prices(self, r: "Request") -> Reply:
        """An array, for one symbol too. ``marketType`` defaults to perps; spot markets have no mark."""
        self.roll()
        symbol = r.q("symbol")
        with self.ex.lock:
            symbols = [self.perp(symbol).symbol] if symbol else sorted(self.markets)
            return Reply(200, [self.mark_price_json(s) for s in symbols])

    def funding_rates(self, r: "Request") -> Reply:
        """Realized rates of one market, newest first (``symbol`` required; ``limit`` up to 10,000)."""
        self.roll()
        p = self.perp(r.need("symbol"))
        limit = r.int_param("limit", 100, lo=1, hi=MAX_FUNDING_ROWS)
        offset = r.int_param("offset", 0, lo=0)
        with self.ex.lock:
            rows = p.funding_rate_rows()
        total = len(rows)
        headers = {"X-PAGE-COUNT": str((total + limit - 1) // limit), "X-CURRENT-PAGE": str(offset // limit + 1),
                   "X-PAGE-SIZE": str(limit), "X-TOTAL": str(total),
                   "ACCESS-CONTROL-EXPOSE-HEADERS": "X-PAGE-COUNT, X-CURRENT-PAGE, X-PAGE-SIZE, X-TOTAL"}
        return Reply(200, rows[offset:offset + limit], headers=headers)

    def open_interest(self, r: "Request") -> Reply:
        symbol = r.q("symbol")
        now_ms = self.ex.clock_us() // 1000
        with self.ex.lock:
            symbols = [self.perp(symbol).symbol] if symbol else sorted(self.markets)
            return Reply(200, [self.markets[s].open_interest_json(now_ms) for s in symbols])

    # -- control
    def control(self, body: Any) -> Reply:
        """``POST /_sim/perp``: ``{"symbol", "indexPrice"?, "markPrice"?, "premium"?, "fundingRate"?}``; an
        index, mark or premium of ``null`` follows the rule again (funding falls due as the simulator's clock
        passes each hour: ``POST /_sim/clock`` moves it)."""
        if not isinstance(body, dict) or body.get("symbol") not in self.markets:
            return Reply(400, {"error": f"body must be {{\"symbol\": one of {sorted(self.markets)}, ...}}"})
        p = self.markets[body["symbol"]]
        try:
            values = {k: None if body.get(k) is None else Decimal(str(body[k]))
                      for k in ("indexPrice", "markPrice", "premium", "fundingRate")}
        except InvalidOperation:
            return Reply(400, {"error": "indexPrice, markPrice, premium and fundingRate must be decimals"})
        now_us = self.ex.clock_us()
        with self.ex.lock:
            if {"indexPrice", "markPrice", "premium"} & set(body):
                p.set(now_us, index=values["indexPrice"], mark=values["markPrice"], premium=values["premium"])
            if values["fundingRate"] is not None:
                p.set_rate(now_us // 1000, values["fundingRate"])
            p.roll(now_us // 1000)
            return Reply(200, self.mark_price_json(p.symbol))
