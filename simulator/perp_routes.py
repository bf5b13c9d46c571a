"""The perp markets' public endpoints, their control route, and the streams' payloads (perps.py holds the
rules): ``GET /api/v1/markPrices``, ``/api/v1/fundingRates``, ``/api/v1/openInterest``, klines of the
``Mark`` and ``Index`` price, and ``POST /_sim/perp``.

Every read first rolls the markets' funding intervals forward to the simulator's clock, so
``/fundingRates`` has a row for each interval that has ended, however the clock was moved.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Callable

from .perp_engine import _user_id
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
        # Called for each funding interval that ends (the perp engine pays it): symbol, end ms, rate.
        self.on_funding: Callable[[str, int, Decimal], None] | None = None
        self.roll()

    def roll(self) -> None:
        now_ms = self.ex.clock_us() // 1000
        with self.ex.lock:
            for p in self.markets.values():
                for end in p.roll(now_ms):
                    if self.on_funding is not None:
                        self.on_funding(p.symbol, end, p.rate_at(end))
                p.open_interest = sum((max(a.positions[p.symbol].net, Decimal(0)) for a in self.ex.accounts.values()
                                       if p.symbol in a.positions), Decimal(0))

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
        self.roll()
        symbol = r.q("symbol")
        now_ms = self.ex.clock_us() // 1000
        with self.ex.lock:
            symbols = [self.perp(symbol).symbol] if symbol else sorted(self.markets)
            return Reply(200, [self.markets[s].open_interest_json(now_ms) for s in symbols])

    # -- signed
    def signed_routes(self) -> dict[tuple[str, str], Callable[["Request"], Reply]]:
        return {("GET", "/api/v1/position"): self.position,
                ("PATCH", "/api/v1/account"): self.account_update,
                ("GET", "/wapi/v1/history/position"): self.position_history,
                ("GET", "/wapi/v1/history/funding"): self.funding_history,
                ("GET", "/wapi/v1/history/settlement"): self.settlement_history}

    def position(self, r: "Request") -> Reply:
        """The open positions, an array (for one symbol too); a symbol without one: 404 "Position not found"
        (when Backpack answers 404 is not documented; an empty account answers ``[]``)."""
        from .positions import position_json
        symbol = r.q("symbol")
        engine = self.ex.perp
        with self.ex.lock:
            acct = self.ex.account(r.account)
            if symbol is not None:
                self.perp(symbol)
            out = [position_json(p, engine.mark(p.symbol), self.markets[p.symbol].params,
                                 engine.exposure_qty(acct, p.symbol), acct.leverage_limit, _user_id(acct))
                   for p in acct.positions.values() if p.net and (symbol is None or p.symbol == symbol)]
        if symbol is not None and not out:
            raise SimError(404, "RESOURCE_NOT_FOUND", "Position not found")
        return Reply(200, out)

    def account_update(self, r: "Request") -> Reply:
        """``PATCH /api/v1/account``: ``leverageLimit`` (a decimal string from 1 to 50; what Backpack allows is
        not documented) and the auto-* flags; 200 with an empty body."""
        body = r.body if isinstance(r.body, dict) else {}
        value = body.get("leverageLimit")
        if value is not None:
            try:
                limit = Decimal(str(value))
            except InvalidOperation:
                limit = Decimal(0)
            if not isinstance(value, str) or not Decimal(1) <= limit <= Decimal(50):
                raise SimError(400, "INVALID_CLIENT_REQUEST", "Invalid value for `leverageLimit`")
            with self.ex.lock:
                self.ex.account(r.account).leverage_limit = limit
                self.ex._journal("leverage", account=r.account, limit=f"{limit:f}")
        return Reply(200, text="")

    def position_history(self, r: "Request") -> Reply:
        from .rest import _paged
        symbol, state = r.q("symbol"), r.q("state")
        with self.ex.lock:
            rows = [row for row in self.ex.perp.history(self.ex.account(r.account))
                    if (symbol is None or row["symbol"] == symbol) and (state is None or row["state"] == state)]
        return _paged(r, rows, key=lambda row: (row["openedAt"], row["id"]), render=lambda row: row)

    def funding_history(self, r: "Request") -> Reply:
        return self._ledger(r, "funding_rows", "symbol")

    def settlement_history(self, r: "Request") -> Reply:
        return self._ledger(r, "settlements", "source")

    def _ledger(self, r: "Request", ledger: str, key: str) -> Reply:
        """An account's ledger rows (filtered by the query's ``key`` when given), paged in the order written."""
        from .rest import _paged
        want = r.q(key)
        with self.ex.lock:
            rows = [row for row in getattr(self.ex.account(r.account), ledger) if want is None or row[key] == want]
        return _paged(r, list(enumerate(rows)), key=lambda x: x[0], render=lambda x: x[1])

    # -- control
    def control(self, body: Any) -> Reply:
        """``POST /_sim/perp``: ``{"symbol", "indexPrice"?, "markPrice"?, "premium"?, "fundingRate"?,
        "fundingRates"?, "fundingDue"?, "realize"?}``. An index, mark or premium of ``null`` follows the rule
        again. ``fundingRates``: the running interval's rate, then the next intervals', in order (the last
        stays). ``fundingDue``: the running interval ends now and pays (funding otherwise falls due as the
        simulator's clock passes each hour; ``POST /_sim/clock`` moves it)."""
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
            rates = body.get("fundingRates")
            if values["fundingRate"] is not None or rates:
                self.roll()
                try:
                    series = [Decimal(str(x)) for x in rates] if rates else [values["fundingRate"]]
                except (InvalidOperation, TypeError):
                    return Reply(400, {"error": "fundingRates must be a list of decimals"})
                p.set_rate(now_us // 1000, series[0])
                p.upcoming = series[1:]
            if body.get("fundingDue"):
                self.roll()
                end = p.due_now(now_us // 1000)
                if self.on_funding is not None:
                    self.on_funding(p.symbol, end, p.rate_at(end))
            if body.get("realize"):
                self.ex.perp.realize()
            self.ex.perp.after_move(p.symbol)    # a mark set apart may liquidate
        self.roll()
        with self.ex.lock:
            return Reply(200, self.mark_price_json(p.symbol))
