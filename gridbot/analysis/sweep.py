"""The sweep engine: many spot grids over the same candles at once, compiled (numba), in exact integers, with
the results of the exact engine (``backtest.py``: the bot's own ``OrderManager`` on ``book.py``).

Why it can be fast. A grid laid out at a price has exactly one empty level, the one nearest the price; every
level below it holds a buy, every level above it a sell. A fill never breaks that: when the price trades
below the buys at levels m..e-1 they fill, their counter-sells go one level up, and the empty level becomes
m (mirrored upward). So a grid's whole state is one index, and a price point costs two comparisons (and a
binary search when it crosses a level). Each pair's round trips all make the same profit (a buy at its
lower level, a sell at its upper one, each with its own fee), so the books follow from how many orders each
pair completed.

Exactly the exact engine's conventions: prices in ticks and quantities in steps as integers, the maker fee
as a decimal fraction, a buy's fee in base (the quantity times the rate) and a sell's in quote (the notional
times the rate); money in integer units of ``tick × step × 10^-fee_places`` (quote) and ``step ×
10^-fee_places`` (base), so every figure is the exact engine's Decimal to the last digit. The candle's path
is ``candles.candle_path``; a resting order fills when the price trades through it, at its own price.

What it does not model, and hands to the exact engine instead (``needs_exact``), a candidate at a time:
exits, trailing and a trigger (the config's risk keys), a price off the tick, an order that fills although
it lay outside the exchange's price band at the point before (the exact engine would have kept it waiting),
a placement the grid's funds would not cover, and amounts too large for 64-bit integers. ``sweep`` runs
those on ``backtest.run_backtest`` and the rest here: the caller gets one list of results either way.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Sequence

import numpy as np

from gridbot.marketdata.candles import Candle, candle_path

# numba caches the compiled kernel beside this file; a checkout the user cannot write (the service's, owned
# by root) caches it in a folder of the temporary directory instead.
if "NUMBA_CACHE_DIR" not in os.environ and not os.access(os.path.dirname(os.path.abspath(__file__)), os.W_OK):
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"grid-bot-numba-{os.getuid()}")

try:   # numba compiles the kernel; without it the same function runs as plain Python (slowly)
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is in requirements.txt
    def njit(*a: Any, **k: Any) -> Any:
        return (lambda f: f) if not a or not callable(a[0]) else a[0]
    prange = range

ZERO = Decimal(0)
OK, NEEDS_EXACT = 0, 1
LIMIT = 2 ** 60             # a running total this large hands the candidate to the exact engine


def _places(d: Decimal) -> int:
    exp = d.normalize().as_tuple().exponent
    return max(0, -int(exp)) if isinstance(exp, int) else 0


@njit(cache=True)
def _nearest(lv: np.ndarray, n: int, p: int) -> int:
    best = 0
    for i in range(n):
        if abs(lv[i] - p) < abs(lv[best] - p):
            best = i
    return best


@njit(cache=True)
def _first_above(lv: np.ndarray, n: int, p: int) -> int:
    """The lowest index whose level is above ``p`` (n when none)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if lv[mid] > p:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _run_one(pts: np.ndarray, ends: np.ndarray, closes: np.ndarray, first: int, lv: np.ndarray, cum: np.ndarray,
             n: int, q: int, rn: int, reserve: int, scale: int, mult_num_hi: int, mult_num_lo: int, mult_den: int,
             counts: np.ndarray, out: np.ndarray) -> None:
    """One grid through the path. ``counts``: completed orders per pair (written). ``out``: status, fills,
    position (base units), quote flow (quote units), base fees, quote fees, candles in range, equity at the
    last close (quote units), base0, quote0, the buys' summed prices (ticks), the buys, and the peak and
    trough of the largest drawdown (quote units)."""
    e = _nearest(lv, n, first)
    # What the grid holds at the start (its funds, investment mode's fee reserve in base included).
    base0 = (n - 1 - e) * q * scale + reserve
    quote0 = (cum[e] - cum[0]) * q * scale
    # the sells' own base is locked in them; the exact engine's account holds spare base for every buy's fee
    base_free = q * n * scale + reserve + q * n * 4 * ends.shape[0] * rn
    buy_ticks = 0
    quote_free = 0
    pos = 0
    flow = 0
    fee_b = 0
    fee_q = 0
    fills = 0
    in_range = 0
    status = 0
    prev = first
    peak = base0 * first + quote0
    worst = 0.0
    d_peak = peak
    d_low = peak
    buys = 0
    fb = q * rn                                     # a buy's fee, in base units
    k0 = 0
    for c in range(ends.shape[0]):
        k1 = ends[c]
        for j in range(k0, k1):
            p = pts[j]
            if e >= 1 and p < lv[e - 1]:
                m = _first_above(lv, n, p)          # buys at m..e-1 fill
                if lv[m] * mult_den < prev * mult_num_lo:
                    status = 1                      # it lay outside the band at the point before
                cnt = e - m
                for k in range(m, e):
                    counts[k] += 1
                fills += cnt
                buys += cnt
                notional = (cum[e] - cum[m]) * q
                buy_ticks += cum[e] - cum[m]
                pos += cnt * (q * scale - fb)
                flow -= notional * scale
                fee_b += cnt * fb
                # the quote they locked is spent; their counter-sells at m+1..e lock a whole quantity each,
                # of which the buys brought all but their fee
                base_free -= cnt * fb
                if base_free < 0:
                    status = 1
                e = m
            elif e + 1 < n and p > lv[e + 1]:
                mm = _first_above(lv, n, p - 1) - 1  # the highest index whose level is below p
                if lv[mm] * mult_den > prev * mult_num_hi:
                    status = 1
                cnt = mm - e
                for k in range(e, mm):
                    counts[k] += 1
                fills += cnt
                notional = (cum[mm + 1] - cum[e + 1]) * q
                fee = notional * rn
                pos -= cnt * q * scale
                flow += notional * scale - fee
                fee_q += fee
                if abs(flow) > LIMIT or fee_q > LIMIT:
                    status = 1                      # nearing 64 bits: the exact engine's Decimals instead
                # the base they locked is sold; their counter-buys at e..mm-1 lock quote at their prices
                quote_free += notional * scale - fee - (cum[mm] - cum[e]) * q * scale
                if quote_free < 0:
                    status = 1
                e = mm
            prev = p
        k0 = k1
        close = closes[c]
        if lv[0] <= close <= lv[n - 1]:
            in_range += 1
        eq = (base0 + pos) * close + quote0 + flow
        if eq > peak:
            peak = eq
        elif peak > 0:
            dd_now = (peak - eq) / float(peak)
            if dd_now > worst:
                worst = dd_now
                d_peak = peak
                d_low = eq
    last = closes[closes.shape[0] - 1]
    out[0] = status
    out[1] = fills
    out[2] = pos
    out[3] = flow
    out[4] = fee_b
    out[5] = fee_q
    out[6] = in_range
    out[7] = (base0 + pos) * last + quote0 + flow
    out[8] = base0
    out[9] = quote0
    out[10] = buy_ticks
    out[11] = buys
    out[12] = d_peak
    out[13] = d_low


@njit(parallel=True, cache=True)
def _run_all(pts: np.ndarray, ends: np.ndarray, closes: np.ndarray, first: int, levels: np.ndarray, cums: np.ndarray,
             ns: np.ndarray, qs: np.ndarray, rns: np.ndarray, reserves: np.ndarray, scale: int, hi: int, lo: int,
             den: int, counts: np.ndarray, outs: np.ndarray) -> None:
    for i in prange(levels.shape[0]):
        _run_one(pts, ends, closes, first, levels[i], cums[i], ns[i], qs[i], rns[i], reserves[i], scale, hi, lo,
                 den, counts[i], outs[i])


@dataclass(frozen=True)
class Candidate:
    """One spot grid to sweep: its levels (ascending), quantity, maker fee, and investment mode's fee reserve
    in base (what ``backtest`` is given as ``reserve``)."""
    levels: tuple[Decimal, ...]
    quantity: Decimal
    maker_fee: Decimal
    reserve: Decimal = ZERO


@dataclass(frozen=True)
class Path:
    """Candles as the kernel reads them: every point of every candle's path in ticks, where each candle's
    points end, and its close. None from ``Path.of`` when a price lies off the tick."""
    pts: np.ndarray
    ends: np.ndarray
    closes: np.ndarray
    candles: Sequence[Candle]

    @classmethod
    def of(cls, candles: Sequence[Candle], tick: Decimal) -> "Path | None":
        pts: list[int] = []
        ends: list[int] = []
        closes: list[int] = []
        for c in candles:
            for p in candle_path(c):
                t = p / tick
                if t != t.to_integral_value():
                    return None
                pts.append(int(t))
            ends.append(len(pts))
            t = c.close / tick
            if t != t.to_integral_value():
                return None
            closes.append(int(t))
        return cls(np.array(pts, dtype=np.int64), np.array(ends, dtype=np.int64), np.array(closes, dtype=np.int64),
                   candles)


def sweep(candidates: Sequence[Candidate], rules: Any, candles: Sequence[Candle], *,
          exact: Callable[[Candidate], Any], progress: Callable[[int, int], None] | None = None,
          path: Path | None = None) -> list[Any]:
    """A ``BacktestResult`` for each candidate, in order: the kernel's where it can, ``exact(candidate)`` (the
    exact engine) where it cannot (see the module's docstring). Equal, figure for figure, to running the exact
    engine on every one."""
    tick, step = rules.tick_size, rules.step_size
    path = path if path is not None else Path.of(candles, tick)
    fee_places = max((_places(c.maker_fee) for c in candidates), default=0)
    scale = 10 ** fee_places
    fast: list[int] = []
    if path is not None:
        top = int(path.pts.max(initial=0))
        for i, c in enumerate(candidates):
            on_grid = all((lv / tick) == (lv / tick).to_integral_value() for lv in c.levels)
            if on_grid and (c.quantity / step) == (c.quantity / step).to_integral_value() and len(c.levels) >= 2 \
                    and (c.reserve * scale / step) == (c.reserve * scale / step).to_integral_value() \
                    and _fits(c, top, tick, step, scale):
                fast.append(i)
    results: list[Any] = [None] * len(candidates)
    done = 0
    if fast:
        nmax = max(len(candidates[i].levels) for i in fast)
        levels = np.zeros((len(fast), nmax), dtype=np.int64)
        cums = np.zeros((len(fast), nmax + 1), dtype=np.int64)
        ns = np.zeros(len(fast), dtype=np.int64)
        qs = np.zeros(len(fast), dtype=np.int64)
        rns = np.zeros(len(fast), dtype=np.int64)
        reserves = np.zeros(len(fast), dtype=np.int64)
        for row, i in enumerate(fast):
            c = candidates[i]
            ticks = [int(lv / tick) for lv in c.levels]
            levels[row, :len(ticks)] = ticks
            cums[row, 1:len(ticks) + 1] = np.cumsum(ticks)
            ns[row], qs[row] = len(ticks), int(c.quantity / step)
            rns[row] = int(c.maker_fee * scale)
            reserves[row] = int(c.reserve * scale / step)
        hi, lo, den = _band(rules)
        counts = np.zeros((len(fast), nmax), dtype=np.int64)
        outs = np.zeros((len(fast), 14), dtype=np.int64)
        first = candles[0].open
        _run_all(path.pts, path.ends, path.closes, int(first / tick), levels, cums, ns, qs, rns, reserves, scale,
                 hi, lo, den, counts, outs)
        for row, i in enumerate(fast):
            if outs[row, 0] == OK:
                results[i] = _result(candidates[i], rules, candles, counts[row], outs[row], scale)
                done += 1
                if progress is not None:
                    progress(done, len(candidates))
    for i, c in enumerate(candidates):
        if results[i] is None:
            results[i] = exact(c)
            done += 1
            if progress is not None:
                progress(done, len(candidates))
    return results


def _band(rules: Any) -> tuple[int, int, int]:
    """The price band's multipliers as integers over one denominator (none: a band that refuses nothing)."""
    mx = rules.max_multiplier if rules.max_multiplier is not None else Decimal(10 ** 6)
    mn = rules.min_multiplier if rules.min_multiplier is not None else ZERO
    den = 10 ** max(_places(mx), _places(mn))
    return int(mx * den), int(mn * den), den


def _fits(c: Candidate, top: int, tick: Decimal, step: Decimal, scale: int) -> bool:
    """Whether one price point's amounts (every level filling at the highest price) stay far inside 64 bits.
    The running totals are bounded by the grid's inventory and its profit; the kernel checks them as it goes
    (``LIMIT``) and hands a candidate that nears it to the exact engine."""
    top = max(top, int(c.levels[-1] / tick))
    return top * int(c.quantity / step) * scale * max(1, len(c.levels)) * 8 < 2 ** 44


def _result(c: Candidate, rules: Any, candles: Sequence[Candle], counts: np.ndarray, out: np.ndarray,
            scale: int) -> Any:
    """The exact engine's ``BacktestResult``, from the kernel's integers."""
    from gridbot.analysis.backtest import BacktestResult
    from gridbot.core.accounting import Ledger, StartFunds, figures
    from gridbot.marketdata.history import _parse_start
    tick, step = rules.tick_size, rules.step_size
    unit_q = tick * step / scale
    unit_b = step / scale
    q, rate, lv = c.quantity, c.maker_fee, c.levels
    fee_buy = _fee(q * rate)
    trips = [int(x) // 2 for x in counts[:len(lv) - 1]]
    profit = sum(((lv[k + 1] - lv[k]) * q - fee_buy * lv[k] - _fee(lv[k + 1] * q * rate)) * t
                 for k, t in enumerate(trips) if t)
    fills = int(out[1])
    position, flow = int(out[2]) * unit_b, int(out[3]) * unit_q
    # As the ledger keeps them: an asset's entry from its first fee on (a zero fee too)
    fees: dict[str, Decimal] = {}
    if out[11]:
        fees[rules.base] = int(out[4]) * unit_b
    if fills - int(out[11]):
        fees[rules.quote] = int(out[5]) * unit_q
    base0, quote0 = int(out[8]) * unit_b, int(out[9]) * unit_q
    first, last = candles[0].open, candles[-1].close
    t0 = _parse_start(candles[0].start)
    step_us = 60_000_000
    if len(candles) > 1:
        step_us = max(1, int((_parse_start(candles[1].start) - t0).total_seconds() * 1_000_000))
    base_us = int(t0.timestamp()) * 1_000_000
    ledger = Ledger(rules.base, rules.quote, fees, position, flow, profit if profit else ZERO, sum(trips), fills, 0,
                    fee_buy * int(out[10]) * tick + int(out[5]) * unit_q)
    start = StartFunds(base0, quote0, first, base_us // 1000)
    days = Decimal(max(1, len(candles)) * step_us) / Decimal(86_400_000_000)
    peak, low = int(out[12]), int(out[13])
    dd = ((Decimal(peak - low) * unit_q) / (Decimal(peak) * unit_q) if peak > low else ZERO).quantize(
        Decimal("0.000001"))
    return BacktestResult(
        candles=len(candles), start=candles[0].start, end=candles[-1].start, start_price=first, end_price=last,
        round_trips=sum(trips), grid_profit=ledger.grid_profit, fees=fees, fills=fills,
        start_funds={rules.quote: quote0, rules.base: base0}, start_equity=base0 * first + quote0,
        final_equity=(base0 + position) * last + quote0 + flow, hold_equity=base0 * last + quote0,
        buy_and_hold_equity=(base0 + quote0 / first) * last, max_drawdown=dd,
        time_in_range=(Decimal(int(out[6])) / len(candles)).quantize(Decimal("0.000001")),
        fills_per_day=(Decimal(fills) / days).quantize(Decimal("0.01")) if days >= 1 else None,
        final_base=base0 + position, final_quote=quote0 + flow, levels=lv,
        figures=figures(start, ledger, last, (base_us + len(candles) * step_us - (start.time_ms or 0) * 1000)
                        / 1_000_000).to_json())


def _fee(amount: Decimal) -> Decimal:
    return amount.normalize() if amount else ZERO

