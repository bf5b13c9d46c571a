"""Backtesting: historical prices through the bot's own ``OrderManager`` and the simulator's matching
engine, in-process. There is no second implementation of the grid: orders are placed into the
simulator's ``Exchange``, which fills them as it fills the bot's on paper, and the fills go back into
the same state machine the live bot runs.

Fill model (documented in the README):
- A resting order fills only when the price trades through it (a buy at p when the price goes below
  p), completely, at its own price, with the maker fee.
- Within a candle the price travels open -> nearer extreme -> farther extreme -> close
  (``simulator.feeds.candle_path``); a candle with open = high = low = close is a single price.
- After each point of that path the grid places what it would place at that price; a counter-order
  placed within a candle fills later in the same candle only if the rest of the path reaches it.
- Backpack's price band applies as in live trading: an order too far from the price waits.

Speed: a candle that can neither fill a resting order nor let a waiting order rest changes nothing,
so it is not replayed through the engine; whether it can is decided from the engine's resting orders
(``Exchange.resting_extremes``) and the manager's own placement rule (``OrderManager.waiting_ranges``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Sequence

from grid_calculator import GridSpec, funds_needed, initial_plan
from models import Fill, Order, OrderStatus, Side
from order_manager import OrderManager, Settings
from simulator.engine import Exchange, SimError
from simulator.feeds import Candle, candle_path
from simulator.markets import MarketSpec

ZERO = Decimal(0)
ACCOUNT = "backtest"


def _parse_start(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=timezone.utc)


@dataclass
class BacktestResult:
    candles: int
    start: str
    end: str
    start_price: Decimal
    end_price: Decimal
    round_trips: int
    grid_profit: Decimal
    fees: dict[str, Decimal]
    fills: int
    start_funds: dict[str, Decimal]
    start_equity: Decimal
    final_equity: Decimal
    hold_equity: Decimal          # the starting funds, untouched, valued at the end price
    buy_and_hold_equity: Decimal  # the starting funds all in base at the start, valued at the end
    max_drawdown: Decimal         # the largest fall of equity from a peak, as a fraction of it
    time_in_range: Decimal        # the share of candles that closed inside the grid
    fills_per_day: Decimal
    final_base: Decimal
    final_quote: Decimal
    # For plots: (candle index, close) and (candle index, side, price) of fills, equity per candle.
    series: dict[str, list] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """Decimals as strings; the keys the issue names come first."""
        d = asdict(self)
        d.pop("series")
        out = {k: d.pop(k) for k in ("round_trips", "grid_profit", "fees", "final_equity", "hold_equity",
                                     "max_drawdown")}
        out.update(d)
        return json.loads(json.dumps(out, default=lambda x: f"{x:f}" if isinstance(x, Decimal) else str(x)))


class Backtest:
    """One grid, one price history."""

    def __init__(self, grid: GridSpec, spec: MarketSpec, *, maker_fee: Decimal, keep_series: bool = False) -> None:
        self.grid = grid
        self.spec = spec
        self.maker_fee = maker_fee
        self.keep_series = keep_series
        self.now_us = 0

    def _clock(self) -> int:
        return self.now_us

    def run(self, candles: Sequence[Candle]) -> BacktestResult:
        if not candles:
            raise ValueError("no candles to backtest")
        grid, sym = self.grid, self.grid.symbol
        first = candles[0].open
        _, plan = initial_plan(grid, first)
        funds = funds_needed(grid, plan)
        base0, quote0 = funds.get(grid.base, ZERO), funds.get(grid.quote, ZERO)
        t0 = _parse_start(candles[0].start)
        step_us = 60_000_000
        if len(candles) > 1:
            step_us = max(1, int((_parse_start(candles[1].start) - t0).total_seconds() * 1_000_000))
        base_us = int(t0.timestamp()) * 1_000_000
        self.now_us = base_us
        # A buy pays its fee in the base asset it receives, and its counter-sell sells the full
        # quantity: the difference comes from spare base on the account, as it does live. The account
        # holds a reserve for that; the figures below are the grid's own: its funds plus its flows.
        reserve = {grid.base: grid.quantity * len(grid.levels)}
        balances = {a: v + reserve.get(a, ZERO) for a, v in funds.items()}
        ex = Exchange([self.spec], maker_fee=self.maker_fee, taker_fee=self.maker_fee, starting_balances=balances,
                      prices={sym: first}, clock_us=self._clock, history=False)
        om = OrderManager(grid, tag=1, settings=Settings(max_multiplier=self.spec.max_multiplier,
                                                         min_multiplier=self.spec.min_multiplier))
        om.start(first)
        self._act(ex, om, first)
        bid, ask = ex.resting_extremes(sym)
        waits = om.waiting_ranges(self.now_us // 1000)
        base_total, quote_total = base0, quote0
        start_equity = base0 * first + quote0
        peak, max_dd = start_equity, ZERO
        low_level, high_level = grid.levels[0], grid.levels[-1]
        in_range = 0
        closes: list = []
        equity_series: list = []
        fill_marks: list = []
        for i, c in enumerate(candles):
            lo, hi = c.low, c.high
            busy = (bid is not None and lo < bid) or (ask is not None and hi > ask) or any(
                (a is None or hi >= a) and (b is None or lo <= b) for a, b in waits)
            if busy:
                self.now_us = base_us + i * step_us
                for price in candle_path(c):
                    fills = ex.set_price(sym, price)
                    for f in fills:
                        om.apply_fill(Fill(f.trade_id, f.order_id, f.client_id, sym, Side(f.side), f.price,
                                           f.quantity, f.fee, f.fee_symbol, f.is_maker, f.ts_us // 1000))
                        if self.keep_series:
                            fill_marks.append((i, f.side, f.price))
                    self._act(ex, om, price)
                om.drain_notes()
                bid, ask = ex.resting_extremes(sym)
                waits = om.waiting_ranges(self.now_us // 1000)
                base_total, quote_total = base0 + om.position, quote0 + om.quote_flow
            close = c.close
            if low_level <= close <= high_level:
                in_range += 1
            equity = base_total * close + quote_total
            if equity > peak:
                peak = equity
            elif peak and (peak - equity) / peak > max_dd:
                max_dd = (peak - equity) / peak
            if self.keep_series:
                closes.append(close)
                equity_series.append(equity)
        last = candles[-1].close
        st = om.stats(last)
        days = Decimal(max(1, len(candles)) * step_us) / Decimal(86_400_000_000)
        q = Decimal("0.000001")
        return BacktestResult(
            candles=len(candles), start=candles[0].start, end=candles[-1].start, start_price=first,
            end_price=last, round_trips=st.round_trips, grid_profit=st.grid_profit, fees=st.fees,
            fills=st.fills, start_funds=funds, start_equity=start_equity,
            final_equity=base_total * last + quote_total,
            hold_equity=base0 * last + quote0,
            buy_and_hold_equity=(base0 + quote0 / first) * last,
            max_drawdown=max_dd.quantize(q), time_in_range=(Decimal(in_range) / len(candles)).quantize(q),
            fills_per_day=(Decimal(st.fills) / days).quantize(Decimal("0.01")),
            final_base=base_total, final_quote=quote_total,
            series={"close": closes, "equity": equity_series, "fills": fill_marks} if self.keep_series else {})

    def _act(self, ex: Exchange, om: OrderManager, price: Decimal) -> None:
        """What the bot's shell does with the manager's actions, without HTTP: place into the engine."""
        now_ms = self.now_us // 1000
        for p in om.placements(now_ms, price):
            om.sending(p.client_id, now_ms)
            payload = {"symbol": self.grid.symbol, "side": p.side.value, "orderType": "Limit",
                       "price": f"{p.price:f}", "quantity": f"{p.quantity:f}", "timeInForce": "GTC",
                       "postOnly": self.grid.post_only, "clientId": p.client_id}
            try:
                o = ex.place(ACCOUNT, payload)
            except SimError as e:
                om.rejected(p.client_id, e.code, e.message, now_ms)
                continue
            om.placed(p.client_id, Order(o.id, o.client_id, o.symbol, Side(o.side), o.price, o.quantity,
                                         o.executed, o.executed_quote, OrderStatus(o.status),
                                         o.created_us // 1000, o.post_only), now_ms)


def run_backtest(grid: GridSpec, spec: MarketSpec, candles: Sequence[Candle], maker_fee: Decimal,
                 keep_series: bool = False) -> BacktestResult:
    return Backtest(grid, spec, maker_fee=maker_fee, keep_series=keep_series).run(candles)


def iter_pairs(values: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``grid_num=10,20,40`` -> ("grid_num", ["10", "20", "40"])."""
    out = []
    for v in values:
        key, sep, rest = v.partition("=")
        if not sep or not rest:
            raise ValueError(f"--sweep takes KEY=V1,V2,... (got {v!r})")
        out.append((key.strip(), [x.strip() for x in rest.split(",") if x.strip()]))
    return out
