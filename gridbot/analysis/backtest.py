"""Backtesting: historical prices through the bot's own ``OrderManager`` and ``GridRisk`` on the
backtester's exchange (``book.py``, the simulator's matching model without its server), in-process.
There is no second implementation of the grid: orders are placed into the ``Book``, which fills them as
the simulator fills the bot's on paper, and the fills go back into the same state machine the live bot
runs.

Fill model (documented in the README):
- A resting order fills only when the price trades through it (a buy at p when the price goes below
  p), completely, at its own price, with the maker fee.
- Within a candle the price travels open -> nearer extreme -> farther extreme -> close
  (``gridbot.marketdata.candles.candle_path``); a candle with open = high = low = close is a single price.
- After each point of that path the grid places what it would place at that price; a counter-order
  placed within a candle fills later in the same candle only if the rest of the path reaches it.
- Backpack's price band applies as in live trading: an order too far from the price waits.

Speed: a candle that can neither fill a resting order nor let a waiting order rest changes nothing,
so it is not replayed through the book; whether it can is decided from the book's resting orders
(``Book.resting_extremes``) and the manager's own placement rule (``OrderManager.waiting_ranges``).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Callable, Sequence

from grid_calculator import GridSpec, Ladder, funds_needed, initial_plan
from gridbot.marketdata.history import _parse_start
from gridbot.core.accounting import figures
from gridbot.analysis.book import Book, BookRefusal
from gridbot.core.models import Fill, MarketRules, Side
from order_manager import OrderManager, Settings
from gridbot.core.risk import (CarryOutExit, GridRisk, LayOut, PlaceOrders, RiskConfig, Sale, sale_floor, start_funds,
                               trail_needs)
from gridbot.ops.reports import fmt_amount
from gridbot.marketdata.candles import Candle, candle_path

ZERO = Decimal(0)


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
    fills_per_day: Decimal | None    # None over less than a day of candles
    final_base: Decimal
    final_quote: Decimal
    exit: dict[str, Any] | None = None       # why, when and at what price the grid stopped, what the sale brought
    trail_moves: list[dict] = field(default_factory=list)
    trail_offset: int = 0
    triggered: dict[str, Any] | None = None  # with a trigger price: the candle it was crossed in (None: never)
    figures: dict[str, Any] | None = None    # accounting.figures at the end price: the live bot's definitions
    levels: tuple[Decimal, ...] = ()         # the levels the grid was laid out on (auto_price: where the trigger was)
    # For plots: (candle index, close) and (candle index, side, price) of fills, equity per candle.
    series: dict[str, list] = field(default_factory=dict, repr=False)
    perp: dict[str, Any] | None = None       # a perps grid's funding, margin and liquidation (perp_backtest.py)

    def summary(self) -> dict[str, Any]:
        """Decimals as strings; the keys the issue names come first."""
        d = asdict(self)
        d.pop("series")
        d.pop("levels")       # the command prints them with the grid
        out = {k: d.pop(k) for k in ("round_trips", "grid_profit", "fees", "final_equity", "hold_equity",
                                     "max_drawdown")}
        out.update(d)
        # Decimals as a trader reads them: at most 8 places, no trailing zeros ("1377.96575", not
        # "1377.965750000000000000000000" from a long division); the figures' too ("3", not "3.00000"), so
        # that a value reads the same whichever engine computed it (sweep.py keeps other trailing zeros).
        out["figures"] = _plain(out["figures"])
        return json.loads(json.dumps(out, default=lambda x: fmt_amount(x) if isinstance(x, Decimal) else str(x)))


def _plain(v: Any) -> Any:
    """Decimal strings in ``v`` (nested dicts) as ``fmt_amount`` writes them."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, str) and _NUMBER_TEXT.fullmatch(v):
        return fmt_amount(Decimal(v))
    return v


_NUMBER_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class Backtest:
    """One grid, one price history."""

    def __init__(self, grid: GridSpec, rules: MarketRules, *, maker_fee: Decimal, keep_series: bool = False,
                 risk: RiskConfig | None = None, reserve: Decimal = ZERO,
                 recentre: Callable[[Decimal], tuple[Decimal, ...]] | None = None) -> None:
        self.grid = grid
        self.recentre = recentre          # auto_price with a trigger: the levels around the price it is crossed at
        self.reserve = reserve            # investment mode: the base kept for the buys' fees (part of the funds)
        self.rules = rules
        self.maker_fee = maker_fee
        self.keep_series = keep_series
        self.risk = risk or RiskConfig()
        self.now_us = 0
        self.fill_marks: list = []
        self.candle = 0
        self.events: list[tuple[int, str, str]] = []
        self.base0 = ZERO
        self.laid_out: tuple[Decimal, ...] = ()

    def _busy(self, om: OrderManager, gr: GridRisk, lo: Decimal, hi: Decimal) -> bool:
        """Can this candle change anything for the exits or the trail? (A candle that cannot is skipped.)"""
        c, st = self.risk, om.risk
        if st.exit is not None:
            return False
        if not st.triggered:
            return st.trigger is not None and (hi >= st.trigger if st.trigger_from == "below" else lo <= st.trigger)
        if gr.guard.since or c.stop_loss_return is not None or c.take_profit_return is not None:
            return True
        levels = om.grid.levels
        return ((c.stop_loss_price is not None and lo <= c.stop_loss_price)
                or (c.take_profit_price is not None and hi >= c.take_profit_price)
                or (c.out_of_range in ("stop", "trail") and (lo < levels[0] or hi > levels[-1])))

    def run(self, candles: Sequence[Candle]) -> BacktestResult:
        if not candles:
            raise ValueError("no candles to backtest")
        grid = self.grid
        first = candles[0].open
        om = OrderManager(grid, tag=1, settings=Settings(max_multiplier=self.rules.max_multiplier,
                                                         min_multiplier=self.rules.min_multiplier))
        om.risk.ladder = Ladder(grid.levels[0], grid.levels[-1], len(grid.levels), grid.mode, self.rules.tick_size)
        om.risk.arm(self.risk.trigger_price, first)
        # A grid waiting for its trigger holds the funds it will need when laid out at the trigger price.
        _, plan = initial_plan(grid, first if om.risk.triggered else om.risk.trigger)
        funds = funds_needed(grid, plan)
        if self.reserve:
            funds[grid.base] = funds.get(grid.base, ZERO) + self.reserve
        base0, quote0 = funds.get(grid.base, ZERO), funds.get(grid.quote, ZERO)
        t0 = _parse_start(candles[0].start)
        step_us = 60_000_000
        if len(candles) > 1:
            step_us = max(1, int((_parse_start(candles[1].start) - t0).total_seconds() * 1_000_000))
        base_us = int(t0.timestamp()) * 1_000_000
        self.now_us = base_us
        # A buy pays its fee in the base asset it receives, and its counter-sell sells the full
        # quantity: the difference comes from spare base on the account, as it does live. The account
        # holds a reserve for that, enough for every buy the candles could fill (one per level at each
        # point of each candle's path), so a long run is never cut short by it; the figures below are the
        # grid's own: its funds plus its flows.
        reserve = {grid.base: grid.quantity * len(grid.levels) * (1 + 4 * len(candles) * self.maker_fee)}
        # Trailing up places each new buy higher than the buy it cancels: the account is assumed to hold
        # that extra quote (plan shows how much). Trailing down swaps a sell for a lower one: no extra.
        reserve[grid.quote] = trail_needs(self.risk, om.risk.ladder, grid.quantity)[2]
        balances = {a: v + reserve.get(a, ZERO) for a, v in funds.items()}
        ex = Book(self.rules, first, dict(balances), maker_fee=self.maker_fee, taker_fee=self.maker_fee,
                  now_ms=base_us // 1000)
        events = self.events = []   # (candle, kind, text) of this run: the trigger, trail moves, the exit
        self.base0 = base0
        gr = GridRisk(self.risk)
        if om.risk.triggered:
            om.start(first)
            om.risk.start = start_funds(grid.levels, grid.quantity, first, base_us // 1000, self.reserve)
        self._step(ex, om, gr, first)
        bid, ask = ex.resting_extremes()
        waits = om.waiting_ranges(self.now_us // 1000)
        base_total, quote_total = base0, quote0
        start_equity = base0 * first + quote0
        peak, max_dd = start_equity, ZERO
        in_range = 0
        closes: list = []
        equity_series: list = []
        exit_candle = None
        for i, c in enumerate(candles):
            lo, hi = c.low, c.high
            self.candle = i
            busy = (bid is not None and lo < bid) or (ask is not None and hi > ask) or any(
                (a is None or hi >= a) and (b is None or lo <= b) for a, b in waits) or self._busy(om, gr, lo, hi)
            if busy and om.risk.exit is None:
                self.now_us = base_us + i * step_us
                ex.now_ms = self.now_us // 1000
                for price in candle_path(c):
                    for f in ex.set_price(price):
                        self._apply(om, f, i)
                    self._step(ex, om, gr, price)
                    if om.risk.exit is not None:
                        exit_candle = i
                        break
                om.take_events()  # the backtest reports totals, not a line per event
                bid, ask = ex.resting_extremes()
                waits = om.waiting_ranges(self.now_us // 1000)
                base_total, quote_total = base0 + om.ledger.position, quote0 + om.ledger.quote_flow
            close = c.close
            if om.grid.levels[0] <= close <= om.grid.levels[-1]:
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
        exit_info = describe_exit(om, exit_candle, candles)
        moves = [{"candle": i, "time": candles[i].start, "text": text} for i, kind, text in events if kind == "trail"]
        return BacktestResult(
            candles=len(candles), start=candles[0].start, end=candles[-1].start, start_price=first,
            end_price=last, round_trips=st.round_trips, grid_profit=st.grid_profit, fees=st.fees,
            fills=st.fills, start_funds=funds, start_equity=start_equity,
            final_equity=base_total * last + quote_total,
            hold_equity=base0 * last + quote0,
            buy_and_hold_equity=(base0 + quote0 / first) * last,
            max_drawdown=max_dd.quantize(q), time_in_range=(Decimal(in_range) / len(candles)).quantize(q),
            # Per day only over a day or more: two candles' fills are no daily rate.
            fills_per_day=(Decimal(st.fills) / days).quantize(Decimal("0.01")) if days >= 1 else None,
            final_base=base_total, final_quote=quote_total,
            exit=exit_info, trail_moves=moves, trail_offset=om.offset, levels=self.laid_out or self.grid.levels,
            figures=None if om.risk.start is None else figures(
                om.risk.start, om.ledger, last,
                (base_us + len(candles) * step_us - (om.risk.start.time_ms or 0) * 1000) / 1_000_000).to_json(),
            triggered=None if self.risk.trigger_price is None else next(
                ({"candle": i, "time": candles[i].start} for i, kind, _ in events if kind == "trigger"), None),
            series={"close": closes, "equity": equity_series, "fills": self.fill_marks,
                    "start": [c.start for c in candles]} if self.keep_series else {})

    def _apply(self, om: OrderManager, f: Fill, candle: int) -> None:
        om.apply_fill(f)
        if self.keep_series:
            self.fill_marks.append((candle, f.side.value, f.price))

    def _step(self, ex: Book, om: OrderManager, gr: GridRisk, price: Decimal) -> None:
        """What the bot does on a price update: exits and trailing first, then its orders. A trail move
        is one step at a time, each placed after its cancel is confirmed; the live bot makes the next
        one at the next price update, which comes within moments, so the backtest makes it at once."""
        for _ in range(len(om.grid.levels)):
            offset = om.risk.offset
            self._step_once(ex, om, gr, price)
            if om.risk.offset == offset or om.risk.exit is not None:
                return

    def _step_once(self, ex: Book, om: OrderManager, gr: GridRisk, price: Decimal) -> None:
        now_ms = self.now_us // 1000
        decision = gr.decide(om, price, now_ms)
        if isinstance(decision, LayOut):
            self._lay_out(om, gr, price, now_ms)
            decision = gr.decide(om, price, now_ms)
        if isinstance(decision, CarryOutExit):
            if self._exit(ex, om, decision.price, self.base0):
                gr.exit_done()
        elif isinstance(decision, PlaceOrders):
            self._cancel(ex, om, om.trail.take_orphan_cancels())
            self._act(ex, om, price)
        self.events.extend((self.candle, kind, text) for kind, text in gr.take_notes())

    def _lay_out(self, om: OrderManager, gr: GridRisk, price: Decimal, now_ms: int) -> None:
        """The grid laid out at ``price`` (its trigger crossed); the backtest's account holds what an entry
        purchase would buy."""
        if self.recentre is not None:
            om.trail.recentre(self.recentre(price), self.rules.tick_size)
        gr.lay_out(om, price, now_ms)
        self.laid_out = om.grid.levels

    def _cancel(self, ex: Book, om: OrderManager, cancels: Sequence[Any]) -> None:
        now_ms = self.now_us // 1000
        for c in cancels:
            o = ex.cancel(c.order_id)
            if o is not None:
                om.news.cancel_result(c.client_id, c.order_id, o, now_ms)

    def _exit(self, ex: Book, om: OrderManager, price: Decimal, base0: Decimal) -> bool:
        """An exit in the engine: cancel the grid's orders, then sell its base with an IOC at the cap."""
        self._cancel(ex, om, om.request_cancels())
        e = om.risk.exit
        assert e is not None
        if e.on_stop == "sell_base":
            from gridbot.engine.exit_runner import sale_target
            free = ex.balances.get(self.grid.base, ZERO)
            target, note = sale_target(om.outside.grid_base(base0), free, self.rules)
            e.sale = Sale(target, sale_floor(price, self.risk.max_slippage, self.rules.tick_size), note=note)
            if target > 0:
                cid = om.outside.new_sale_order()
                _, fills = ex.submit(Side.ASK, e.sale.floor, target, client_id=cid, post_only=False, ioc=True)
                for f in fills:
                    self._apply(om, f, self.candle)
                if e.sale.left:
                    e.sale.note = e.sale.note or f"no buyer at or above {e.sale.floor} for the rest"
            e.sale.done = True
        e.phase = "done"
        return True

    def _act(self, ex: Book, om: OrderManager, price: Decimal) -> None:
        """What the bot's shell does with the manager's actions, without HTTP: place into the book."""
        now_ms = self.now_us // 1000
        for p in om.take_placements(now_ms, price):
            om.sending(p.client_id, now_ms)
            try:
                o, fills = ex.submit(p.side, p.price, p.quantity, client_id=p.client_id, post_only=self.grid.post_only)
            except BookRefusal as e:
                om.rejected(p.client_id, e.code, e.message, now_ms)
                continue
            om.placed(p.client_id, o, now_ms)
            for f in fills:
                self._apply(om, f, self.candle)


def describe_exit(om: OrderManager, exit_candle: int | None, candles: Sequence[Candle]) -> dict[str, Any] | None:
    """The grid's exit, if it stopped: why, when, at what price, and what its sale (or close) did."""
    if om.risk.exit is None:
        return None
    e, sale = om.risk.exit, om.risk.exit.sale
    return {"reason": e.reason, "detail": e.detail, "price": e.price, "candle": exit_candle,
            "time": candles[exit_candle].start if exit_candle is not None else candles[0].start, "on_stop": e.on_stop,
            "sold": sale.sold if sale else ZERO, "proceeds": sale.proceeds if sale else ZERO,
            "sale_fees": sale.fees if sale else ZERO, "not_sold": sale.left if sale else ZERO,
            "sale_note": sale.note if sale else "", "side": sale.side if sale else None}


def picture(r: BacktestResult, grid: GridSpec) -> Any:
    """The backtest as ``plots.Picture``: candle closes on their dates, the fills, equity against holding."""
    from gridbot.analysis.plots import Picture
    s = r.series
    times = [_parse_start(t) for t in s["start"]]
    base0, quote0 = r.start_funds.get(grid.base, ZERO), r.start_funds.get(grid.quote, ZERO)
    marks = [(times[m["candle"]], "trail move") for m in r.trail_moves]
    if r.exit is not None and r.exit["candle"] is not None:
        marks.append((times[r.exit["candle"]], f"exit: {r.exit['reason']}"))
    if r.triggered is not None:
        marks.append((times[r.triggered["candle"]], "trigger"))
    return Picture(f"backtest {grid.symbol} grid {grid.levels[0]}..{grid.levels[-1]}, {len(grid.levels)} levels: "
                   f"{r.round_trips} round trips, grid profit {r.grid_profit:.4f} {grid.quote}", grid.symbol, grid.quote,
                   times, s["close"], grid.levels, s["equity"], [base0 * c + quote0 for c in s["close"]],
                   [(times[i], side, price) for i, side, price in s["fills"]], marks)


def run_backtest(grid: GridSpec, rules: MarketRules, candles: Sequence[Candle], maker_fee: Decimal,
                 keep_series: bool = False, risk: RiskConfig | None = None, reserve: Decimal = ZERO,
                 recentre: Callable[[Decimal], tuple[Decimal, ...]] | None = None) -> BacktestResult:
    return Backtest(grid, rules, maker_fee=maker_fee, keep_series=keep_series, risk=risk, reserve=reserve,
                    recentre=recentre).run(candles)


def _pct(d: Decimal) -> str:
    return f"{(d * 100).quantize(Decimal('0.01')):f}%"


def _money(d: Decimal, places: str = "0.01") -> str:
    return f"{d.quantize(Decimal(places)):f}"


def _change(value: Decimal, base: Decimal) -> str:
    if not base:
        return ""
    return f"{'+' if value >= base else ''}{_pct((value - base) / base)}"


def perp_lines(r: BacktestResult, quote: str) -> list[str]:
    from gridbot.analysis.perp_backtest import perp_lines as lines
    return lines(r, quote)


def format_result(r: BacktestResult, grid: GridSpec, maker_fee: Decimal) -> list[str]:
    fees = ", ".join(f"{v.normalize():f} {k}" for k, v in sorted(r.fees.items()) if v) or "0"
    q = grid.quote
    return [
        f"backtest: {grid.symbol} {grid.mode.value} grid {grid.levels[0]}..{grid.levels[-1]}, {len(grid.levels)} "
        f"levels, {grid.quantity} {grid.base} per order, maker fee {_pct(maker_fee)}",
        f"candles: {r.candles} from {r.start} to {r.end}; price {r.start_price} -> {r.end_price}",
        f"  round trips     {r.round_trips}",
        f"  grid profit     {_money(r.grid_profit, '0.000001')} {q}",
        f"  fees            {fees}",
        f"  fills           {r.fills}" + (f" ({r.fills_per_day} per day)" if r.fills_per_day is not None
                                              else " (less than a day of candles: no daily rate)"),
        f"  final equity    {_money(r.final_equity)} {q} ({_change(r.final_equity, r.start_equity)} on "
        f"{_money(r.start_equity)} {q} of starting funds: "
        + " + ".join(f"{v.normalize():f} {k}" for k, v in r.start_funds.items()) + ")",
        f"  hold            {_money(r.hold_equity)} {q} (the starting funds untouched; grid "
        f"{_change(r.final_equity, r.hold_equity)} against it)",
        f"  buy-and-hold    {_money(r.buy_and_hold_equity)} {q} (all in {grid.base} at the start; grid "
        f"{_change(r.final_equity, r.buy_and_hold_equity)} against it)",
        f"  max drawdown    {_pct(r.max_drawdown)}",
        f"  time in range   {_pct(r.time_in_range)} of candles closed inside the grid",
        *figure_lines(r, grid),
        *risk_lines(r, grid),
        *perp_lines(r, q),
    ]


def figure_lines(r: BacktestResult, grid: GridSpec) -> list[str]:
    """The live bot's profit figures (accounting.figures), over the grid's own starting funds."""
    f = r.figures
    if f is None:
        return []
    q = grid.quote
    be, ay = f["break_even"], f["annual_yield"]
    return [
        f"  total return    {_pct(Decimal(f['total_return']))} on the grid's starting funds "
        f"({_money(Decimal(f['start_value']))} {q} at {f['start_funds']['price']}); against holding them "
        f"{_money(Decimal(f['vs_hold']), '0.0001')} {q}",
        f"  floating PnL    {_money(Decimal(f['floating_pnl']), '0.0001')} {q}; "
        f"fees {_money(Decimal(f['fees_quote']), '0.0001')} "
        f"{q} in all; break-even {be if be is None else _money(Decimal(be))}; annualised grid yield "
        + (_pct(Decimal(ay)) if ay is not None else "too early (under 30 days)"),
    ]


def risk_lines(r: BacktestResult, grid: GridSpec) -> list[str]:
    """The trigger, the trail and the exit, as the backtest saw them."""
    out = []
    if r.triggered is not None:
        out.append(f"  trigger         crossed in candle {r.triggered['candle']} ({r.triggered['time']})")
    if r.trail_moves:
        out.append(f"  trailing        {len(r.trail_moves)} move(s), {r.trail_offset:+d} step(s) in all; first "
                   f"{r.trail_moves[0]['time']}, last {r.trail_moves[-1]['time']}")
    e = r.exit
    if e is not None:
        out.append(f"  exit            {e['reason']} in candle {e['candle']} ({e['time']}) at {e['price']}: {e['detail']}")
        if e["on_stop"] == "close":
            out.append(f"  close           {'bought back' if e['side'] == 'Bid' else 'sold'} {fmt_amount(e['sold'])} "
                       f"{grid.base} for {fmt_amount(e['proceeds'])} {grid.quote}")
        elif e["on_stop"] == "sell_base":
            out.append(f"  sale            sold {fmt_amount(e['sold'])} {grid.base} for {fmt_amount(e['proceeds'])} "
                       f"{grid.quote}" + (f"; {fmt_amount(e['not_sold'])} {grid.base} not sold: {e['sale_note']}"
                                          if e["not_sold"] else ""))
        elif e["reason"] != "liquidation":
            out.append("  on stop         keep: the orders cancelled, what the grid held kept")
    return out
