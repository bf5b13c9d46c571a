"""Backtesting a perps grid: the same engine as a spot backtest (the bot's ``OrderManager`` and ``GridRisk``
on ``book.py``), with what only perps have (docs/perps.md):

- the grid the live bot lays out (``engine/perp_grid.py``: its sizing, its opening), every fee in USDC;
- **funding**: each interval's rate (the exchange's funding-rate history, or a ``funding_rate`` column of
  the klines file) paid at the close of the candle the interval ends in, ``-rate × position × close``
  to the cent's ten-thousandth (6 places), as the simulator pays it; a positive rate makes longs pay;
- **margin on every candle**: at each point of a candle's path (and at the adverse extreme of a quiet
  candle) the equity against the maintenance margin, and the margin fraction against the margin stop
  (``risk.stop_margin_fraction``, or the default the live bot logs), which stops the grid and closes its
  position with a capped IOC as the live bot does;
- **liquidation**: where the equity meets the maintenance margin the exchange would liquidate: the
  backtest says so, with the price (to the tick, found exactly between the path's points) and the candle,
  and the grid's orders and position end there.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Sequence

from grid_calculator import Ladder
from gridbot.analysis.backtest import Backtest, BacktestResult, describe_exit
from gridbot.analysis.book import Book
from gridbot.core.accounting import equity, figures, perp_start_funds
from gridbot.core.models import MarketRules, Side
from gridbot.core.perp_risk import liquidation_price
from gridbot.core.risk import Exit, GridRisk, RiskConfig
from gridbot.engine.exit_runner import close_of
from gridbot.engine.perp_grid import (PerpGrid, margin_stop_fraction, opening_position, perp_grid, reduce_side,
                                     shown_liquidation, to_tick_toward)
from gridbot.engine.perp_watch import LIQUIDATION, MARGIN_STOP
from gridbot.marketdata.candles import Candle, candle_path
from gridbot.marketdata.history import _parse_start
from gridbot.ops.reports import fmt_amount
from order_manager import OrderManager, Settings

ZERO = Decimal(0)
USDC_PLACES = Decimal("0.000001")


class PerpBacktest(Backtest):
    def __init__(self, pg: PerpGrid, rules: MarketRules, t: Any, risk: RiskConfig,
                 funding: Sequence[tuple[int, Decimal]] = (), keep_series: bool = False) -> None:
        super().__init__(pg.grid, rules, maker_fee=t.maker_fee, keep_series=keep_series, risk=risk)
        assert rules.margin is not None
        self.pg, self.t, self.fns = pg, t, rules.margin
        self.funding = sorted(funding)
        self.reduce = reduce_side(t.direction)
        self.stop_at: Decimal | None = None
        self.liquidation: dict[str, Any] | None = None
        self.frozen: Decimal | None = None        # the equity left when the position was liquidated
        self.payments: list[dict[str, Any]] = []
        self.min_mf: Decimal | None = None
        self.last_price = ZERO
        self.opening = ZERO
        self.exposure = ZERO                      # the grid's exposure (quantity), as of the last busy candle

    def position(self, om: OrderManager) -> Decimal:
        """The grid's position: its opening and its fills (0 before it is laid out)."""
        return ZERO if om.risk.start is None else om.risk.start.base + om.ledger.position

    def _lay_out(self, om: OrderManager, gr: GridRisk, price: Decimal, now_ms: int) -> None:
        """Laid out at ``price`` (at once, or where its trigger is crossed): centred there with ``auto_price``,
        a long's or a short's opening at that price, its starting funds on its collateral."""
        if self.t.auto_price and om.risk.trigger is not None:
            om.trail.recentre(perp_grid(self.rules, self.t, self.risk, price).grid.levels, self.rules.tick_size)
        self.opening = opening_position(om.grid.levels, price, om.grid.quantity, self.t.direction)
        om.risk.start = perp_start_funds(self.pg.collateral, self.opening, price, now_ms)
        self.stop_at = self.risk.stop_margin_fraction or margin_stop_fraction(om.grid, price, self.t, self.rules,
                                                                              self.pg.collateral)
        super()._lay_out(om, gr, price, now_ms)

    def run(self, candles: Sequence[Candle]) -> BacktestResult:
        grid, t, rules = self.grid, self.t, self.rules
        first = candles[0].open
        om = OrderManager(grid, tag=1, settings=Settings(max_multiplier=rules.max_multiplier,
                                                         min_multiplier=rules.min_multiplier))
        om.risk.ladder = Ladder(grid.levels[0], grid.levels[-1], len(grid.levels), grid.mode, rules.tick_size)
        t0 = _parse_start(candles[0].start)
        step_us = 60_000_000
        if len(candles) > 1:
            step_us = max(1, int((_parse_start(candles[1].start) - t0).total_seconds() * 1_000_000))
        base_us = self.now_us = int(t0.timestamp()) * 1_000_000
        ex = Book(rules, first, {rules.quote: self.pg.collateral}, maker_fee=t.maker_fee, taker_fee=t.taker_fee,
                  now_ms=base_us // 1000, perp=True)
        gr = GridRisk(self.risk)
        om.risk.arm(self.risk.trigger_price, first)
        if om.risk.triggered:
            self._lay_out(om, gr, first, base_us // 1000)
        self.last_price = first
        self._step(ex, om, gr, first)
        peak, max_dd, in_range, exit_candle, f_i = self.pg.collateral, ZERO, 0, None, 0
        closes: list = []
        equity_series: list = []
        stale = True      # the book's extremes and the exposure: read again after a busy candle (only it changes them)
        bid = ask = None
        for i, c in enumerate(candles):
            self.candle = i
            self.now_us = base_us + i * step_us
            ex.now_ms = self.now_us // 1000
            if om.risk.exit is None and self.frozen is None:
                if stale:
                    bid, ask = ex.resting_extremes()
                    self.exposure = self._exposure(om, ex)
                waits = om.waiting_ranges(self.now_us // 1000)
                busy = ((bid is not None and c.low < bid) or (ask is not None and c.high > ask)
                        or any((a is None or c.high >= a) and (b is None or c.low <= b) for a, b in waits)
                        or self._busy(om, gr, c.low, c.high) or self._margin_at_risk(om, ex, c))
                # A quiet candle (nothing can fill, wait, exit or near the margin) changes nothing: not replayed.
                for price in (candle_path(c) if busy else ()):
                    for f in ex.set_price(price):
                        self._apply(om, f, i)
                    if self._margin(om, ex, gr, price, candles[i].start):
                        exit_candle = i
                        break
                    self._step(ex, om, gr, price)
                    self.last_price = price
                    if om.risk.exit is not None:
                        exit_candle = i
                        break
                om.take_events()
                stale = busy
                if not busy:
                    self.last_price = c.close
            end_ms = (base_us + (i + 1) * step_us) // 1000
            while f_i < len(self.funding) and self.funding[f_i][0] < end_ms:
                at_ms, rate = self.funding[f_i]
                f_i += 1
                pos = self.position(om)
                if at_ms >= base_us // 1000 and pos and self.frozen is None:
                    pay = (-rate * pos * c.close).quantize(USDC_PLACES, ROUND_HALF_EVEN)
                    om.ledger.funding += pay
                    self.payments.append({"candle": i, "time": c.start, "rate": rate, "quantity": pay})
            if om.grid.levels[0] <= c.close <= om.grid.levels[-1]:
                in_range += 1
            start = om.risk.start
            eq = (self.frozen if self.frozen is not None else self.pg.collateral if start is None
                  else equity(start, om.ledger, c.close))
            if eq > peak:
                peak = eq
            elif peak and (peak - eq) / peak > max_dd:
                max_dd = (peak - eq) / peak
            if self.keep_series:
                closes.append(c.close)
                equity_series.append(eq)
        return self._result(candles, om, step_us, base_us, max_dd, in_range, exit_candle, closes, equity_series)

    # -------------------------------------------------------------------------- margin
    def _exposure(self, om: OrderManager, ex: Book) -> Decimal:
        pos = self.position(om)
        bids = sum((o.quantity - o.executed for o in ex._open.values() if o.side is Side.BID
                    and self.reduce is not Side.BID), ZERO)
        asks = sum((o.quantity - o.executed for o in ex._open.values() if o.side is Side.ASK
                    and self.reduce is not Side.ASK), ZERO)
        return max(abs(pos + bids), abs(pos - asks))

    def _margin_at_risk(self, om: OrderManager, ex: Book, c: Candle) -> bool:
        """A quiet candle still counts when its adverse extreme would reach the margin stop or liquidation."""
        pos = self.position(om)
        if not pos:
            return False
        worst = c.low if pos > 0 else c.high
        eq = equity(om.risk.start, om.ledger, worst)
        notional = abs(pos) * worst
        exposure = self.exposure * worst
        return (eq <= self.fns.mmf(notional) * notional
                or (self.stop_at is not None and exposure > 0 and eq / exposure <= self.stop_at))

    def _margin(self, om: OrderManager, ex: Book, gr: GridRisk, price: Decimal, when: str) -> bool:
        """The margin at ``price``: True when the position is liquidated there (the grid is over); the margin
        stop is written down for the next step to carry out."""
        pos = self.position(om)
        if not pos or om.risk.exit is not None:
            return False
        start = om.risk.start
        eq = equity(start, om.ledger, price)
        notional = abs(pos) * price
        if eq <= self.fns.mmf(notional) * notional:
            # Between the last point and this one the price moved one way: the exact price is found there.
            before = equity(start, om.ledger, self.last_price)
            exact = liquidation_price(before, pos, self.last_price, self.fns) or price
            exact = to_tick_toward(exact, pos, self.rules.tick_size)
            for o in list(ex._open.values()):
                ex.cancel(o.id)
            self.frozen = equity(start, om.ledger, exact)
            self.liquidation = {"price": exact, "candle": self.candle, "time": when, "position": pos,
                                "equity_left": self.frozen}
            om.risk.exit = Exit(LIQUIDATION, f"the {'long' if pos > 0 else 'short'} of {fmt_amount(abs(pos))} "
                                f"{self.grid.base} reached its maintenance margin at {exact}: the exchange "
                                f"liquidates it", exact, self.now_us // 1000, "keep", phase="done")
            gr.exit_done()
            return True
        exposure = self._exposure(om, ex) * price
        if exposure > 0:
            mf = eq / exposure
            self.min_mf = mf if self.min_mf is None else min(self.min_mf, mf)
            if self.stop_at is not None and mf <= self.stop_at:
                gr.stop(om, MARGIN_STOP, f"the margin fraction {mf:.4f} reached {self.stop_at:.4f}", price,
                        self.now_us // 1000, "close")
        return False

    def _exit(self, ex: Book, om: OrderManager, price: Decimal, base0: Decimal) -> bool:
        """A perps grid's exit: cancel its orders, then (``close``) close the position with a capped IOC."""
        self._cancel(ex, om, om.request_cancels())
        e = om.risk.exit
        assert e is not None
        if e.on_stop == "close":
            e.sale = close_of(self.position(om), price, self.risk.max_slippage, self.rules)
            if e.sale.target > 0:
                cid = om.outside.new_sale_order()
                _, fills = ex.submit(Side(e.sale.side), e.sale.floor, e.sale.target, client_id=cid, post_only=False,
                                     ioc=True)
                for f in fills:
                    self._apply(om, f, self.candle)
            e.sale.done = True
        e.phase = "done"
        return True

    # -------------------------------------------------------------------------- the result
    def _result(self, candles: Sequence[Candle], om: OrderManager, step_us: int, base_us: int, max_dd: Decimal,
                in_range: int, exit_candle: int | None, closes: list, equity_series: list) -> BacktestResult:
        first, last = candles[0].open, candles[-1].close
        start = om.risk.start or perp_start_funds(self.pg.collateral, ZERO, first)   # never laid out: its collateral
        valued_at = self.liquidation["price"] if self.liquidation else last
        st = om.stats(last)
        final = self.frozen if self.frozen is not None else equity(start, om.ledger, last)
        days = Decimal(max(1, len(candles)) * step_us) / Decimal(86_400_000_000)
        q = Decimal("0.000001")
        exit_info = describe_exit(om, exit_candle, candles)
        b, tp = self.pg.bottom, self.pg.top
        perp = {"direction": self.t.direction, "leverage": self.t.leverage, "investment": self.pg.collateral,
                "opening": self.opening, "position": self.position(om) if self.frozen is None else ZERO,
                "funding": om.ledger.funding, "funding_payments": self.payments,
                "liquidation": self.liquidation, "stop_margin_fraction": self.stop_at,
                "min_margin_fraction": None if self.min_mf is None else self.min_mf.quantize(Decimal("0.0001")),
                "planned_liquidation": {"bottom": shown_liquidation(b, self.rules.tick_size),
                                        "top": shown_liquidation(tp, self.rules.tick_size)},
                "refused": list(self.pg.refused)}
        return BacktestResult(
            candles=len(candles), start=candles[0].start, end=candles[-1].start, start_price=first, end_price=last,
            round_trips=st.round_trips, grid_profit=st.grid_profit, fees=st.fees, fills=st.fills,
            start_funds={self.grid.quote: self.pg.collateral}, start_equity=self.pg.collateral, final_equity=final,
            hold_equity=start.base * last + start.quote, buy_and_hold_equity=self.pg.collateral / first * last,
            max_drawdown=max_dd.quantize(q), time_in_range=(Decimal(in_range) / len(candles)).quantize(q),
            fills_per_day=(Decimal(st.fills) / days).quantize(Decimal("0.01")) if days >= 1 else None,
            final_base=perp["position"], final_quote=final - perp["position"] * last,
            exit=exit_info, trail_moves=[{"candle": i, "time": candles[i].start, "text": text}
                                         for i, kind, text in self.events if kind == "trail"],
            trail_offset=om.offset, levels=self.grid.levels,
            figures=None if om.risk.start is None else figures(
                start, om.ledger, valued_at, (base_us + len(candles) * step_us) / 1_000_000 - (start.time_ms or 0) / 1000
            ).to_json(),
            triggered=None if self.risk.trigger_price is None else next(
                ({"candle": i, "time": candles[i].start} for i, kind, _ in self.events if kind == "trigger"), None),
            series={"close": closes, "equity": equity_series, "fills": self.fill_marks,
                    "start": [c.start for c in candles]} if self.keep_series else {},
            perp=perp)


def perp_lines(r: BacktestResult, quote: str) -> list[str]:
    """The perps part of a backtest's report."""
    p = r.perp
    if p is None:
        return []
    out = [f"  perps           {p['direction']} at leverage {fmt_amount(p['leverage'])}, collateral "
           f"{fmt_amount(p['investment'])} {quote}; opened {fmt_amount(p['opening'])}; position at the end "
           f"{fmt_amount(p['position'])}",
           f"  funding         {'+' if p['funding'] > 0 else ''}{fmt_amount(p['funding'])} {quote} in "
           f"{len(p['funding_payments'])} payment(s) (+ received, - paid)",
           "  margin          lowest margin fraction " + (f"{p['min_margin_fraction']}" if p["min_margin_fraction"]
                                                         is not None else "-") + "; the grid stops at "
           + (f"{p['stop_margin_fraction']:.4f}" if p["stop_margin_fraction"] is not None else "twice the maintenance")]
    liq = p["liquidation"]
    if liq is not None:
        out.append(f"  LIQUIDATED      at {liq['price']} in candle {liq['candle']} ({liq['time']}): the "
                   f"{'long' if liq['position'] > 0 else 'short'} of {fmt_amount(abs(liq['position']))}; "
                   f"{fmt_amount(liq['equity_left'])} {quote} of equity left")
    for line in p["refused"]:
        out.append(f"  note            run would refuse this grid: {line}")
    return out
