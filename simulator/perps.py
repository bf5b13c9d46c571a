"""Perpetual futures in the simulator: the markets' parameters, the margin functions, and each perp market's
index price, mark price, funding rate and open interest (docs/exchange.md "Perpetual futures").

The rules this module follows, and where they come from, are in docs/exchange.md; in short:

- **IMF and MMF** of a position: ``max(base, factor × sqrt(notional))``, the IMF also at least
  ``1 / leverageLimit``; notional in USDC at the mark price.
- **Index and mark.** Backpack's index is a weighted mean of other exchanges' prices and its mark is the
  index plus a one-minute EWMA of the premium, bounded to the index ± a per-market threshold. The
  simulator has no other exchanges: its **index is the market's own price** (the feed's), and its **mark is
  the index** (a zero premium). The control API sets either apart (``POST /_sim/perp``): an index of its own,
  a mark of its own, or a premium; the mark is then bounded to the index ± ``mark_threshold``. Every
  change is recorded with its time, so the Mark and Index klines of any past interval follow the rule as it
  stood then.
- **Funding** every ``funding_interval_ms`` (an hour), on the hour of the simulator's clock. The rate of
  the running interval is the market's ``funding_rate`` (settable; by default 0.0000125, the neutral hourly
  rate seen on Backpack), clamped to the market's bounds (±100 basis points). Each interval that ends is a
  row of ``GET /api/v1/fundingRates``, with the rate that stood at its end.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

D = Decimal
BPS = D("0.0001")
NEUTRAL_FUNDING_RATE = D("0.0000125")


@dataclass(frozen=True)
class PerpParams:
    """What makes a market a perp: its margin functions, funding and limits (the ``Market`` object's perp
    fields)."""
    imf_base: Decimal
    imf_factor: Decimal
    mmf_base: Decimal
    mmf_factor: Decimal
    funding_interval_ms: int = 3_600_000
    funding_upper_bps: Decimal = D("100")
    funding_lower_bps: Decimal = D("-100")
    open_interest_limit: Decimal = D("4000000")
    position_limit_weight: Decimal = D("1")
    premium_tolerance: Decimal = D("0.05")          # filters.price.meanPremiumBand.tolerancePct
    mark_threshold: Decimal = D("0.05")             # the mark stays within the index ± this fraction


def position_imf(p: PerpParams, notional: Decimal, leverage_limit: Decimal | None = None) -> Decimal:
    """The initial margin fraction of a position of ``notional`` USDC: ``max(base, 1/leverageLimit,
    factor × sqrt(notional))``."""
    floor = p.imf_base if leverage_limit is None else max(p.imf_base, 1 / leverage_limit)
    return max(floor, p.imf_factor * abs(notional).sqrt())


def position_mmf(p: PerpParams, notional: Decimal) -> Decimal:
    """The maintenance margin fraction: ``max(base, factor × sqrt(notional))``."""
    return max(p.mmf_base, p.mmf_factor * abs(notional).sqrt())


def interval_end_ms(now_ms: int, interval_ms: int) -> int:
    """The end of the funding interval running at ``now_ms`` (the next multiple of the interval)."""
    return (now_ms // interval_ms + 1) * interval_ms


def naive_utc(ms: int) -> str:
    """``2025-09-11T12:00:00``: how ``/fundingRates`` writes an interval's end."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class PerpMarket:
    """One perp market's index, mark and funding state. ``overrides`` is the history of the control API's
    settings, ``(ts_us, index or None, mark or None, premium or None)``, oldest first."""
    symbol: str
    params: PerpParams
    funding_rate: Decimal = NEUTRAL_FUNDING_RATE
    overrides: list[tuple[int, Decimal | None, Decimal | None, Decimal | None]] = field(default_factory=list)
    rates: list[tuple[int, Decimal]] = field(default_factory=list)   # (ts_ms, rate) each time it was set
    funding_rows: list[tuple[int, Decimal]] = field(default_factory=list)  # (interval end ms, rate), oldest first
    rolled_to_ms: int = 0                       # intervals ending at or before this are rows already
    open_interest: Decimal = D(0)
    upcoming: list[Decimal] = field(default_factory=list)   # the rates of the next intervals, in order

    def _override_at(self, ts_us: int) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        i = bisect.bisect_right([o[0] for o in self.overrides], ts_us)
        return (None, None, None) if i == 0 else self.overrides[i - 1][1:]

    def index_at(self, last: Decimal, ts_us: int) -> Decimal:
        index, _, _ = self._override_at(ts_us)
        return last if index is None else index

    def mark_at(self, last: Decimal, ts_us: int) -> Decimal:
        index, mark, premium = self._override_at(ts_us)
        idx = last if index is None else index
        raw = mark if mark is not None else idx * (1 + premium) if premium is not None else idx
        band = idx * self.params.mark_threshold
        return min(max(raw, idx - band), idx + band)

    def set(self, ts_us: int, *, index: Decimal | None = None, mark: Decimal | None = None,
            premium: Decimal | None = None) -> None:
        """Set the index, the mark or the premium apart (None: follow the rule again). Settings older than the
        klines' 25 hours leave, but for the one in force then (a live feed sets them every second for weeks)."""
        self.overrides.append((ts_us, index, mark, premium))
        if len(self.overrides) > 4096:
            horizon = ts_us - 25 * 3600 * 1_000_000
            cut = bisect.bisect_left([o[0] for o in self.overrides], horizon)
            del self.overrides[:max(0, cut - 1)]

    def clamped(self, rate: Decimal) -> Decimal:
        p = self.params
        out = min(max(rate, p.funding_lower_bps * BPS), p.funding_upper_bps * BPS)
        return out.normalize() if out != out.to_integral_value() else out.quantize(D(1))

    def set_rate(self, now_ms: int, rate: Decimal) -> None:
        """The running interval's rate from now on (the caller rolls the intervals that ended first)."""
        self.rates.append((now_ms, rate))
        self.funding_rate = rate

    def rate_at(self, ts_ms: int) -> Decimal:
        """The rate that stood at ``ts_ms`` (an interval ending at ``ts_ms`` pays the rate set before it)."""
        i = bisect.bisect_left([r[0] for r in self.rates], ts_ms)
        return self.clamped(self.rates[i - 1][1] if i else NEUTRAL_FUNDING_RATE)

    def roll(self, now_ms: int) -> list[int]:
        """Every funding interval that has ended since the last roll becomes a row; returns their ends."""
        step = self.params.funding_interval_ms
        if not self.rolled_to_ms:
            self.rolled_to_ms = now_ms // step * step   # the simulator's first interval ends at the next hour
            return []
        ended = []
        end = self.rolled_to_ms + step
        while end <= now_ms:
            self._end_interval(end)
            ended.append(end)
            end += step
        return ended

    def due_now(self, now_ms: int) -> int:
        """End the running interval now (the control API's "funding due", as tests cannot wait an hour): its
        row is written with the end it would have had, and that end will not pay again. Returns the end."""
        self.roll(now_ms)
        end = self.rolled_to_ms + self.params.funding_interval_ms
        self._end_interval(end)
        return end

    def _end_interval(self, end: int) -> None:
        self.funding_rows.append((end, self.rate_at(end)))
        self.rolled_to_ms = end
        if self.upcoming:            # a scheduled series: the next interval's rate from this end on
            self.set_rate(end, self.upcoming.pop(0))

    # -- payloads
    def mark_price_json(self, last: Decimal, now_us: int, tick: Decimal) -> dict:
        now_ms = now_us // 1000
        step = self.params.funding_interval_ms
        return {"fundingRate": f"{self.clamped(self.funding_rate):f}",
                "indexPrice": f"{self.index_at(last, now_us).quantize(tick):f}",
                "markPrice": f"{self.mark_at(last, now_us).quantize(tick):f}",
                # the end of the running interval (one ended early by the control API moves it on)
                "nextFundingTimestamp": max(interval_end_ms(now_ms, step), self.rolled_to_ms + step),
                "symbol": self.symbol}

    def mark_price_event(self, last: Decimal, now_us: int, tick: Decimal) -> dict:
        r = self.mark_price_json(last, now_us, tick)
        return {"E": now_us, "T": now_us, "e": "markPrice", "f": r["fundingRate"], "i": r["indexPrice"],
                "n": r["nextFundingTimestamp"], "p": r["markPrice"], "s": self.symbol}

    def open_interest_json(self, now_ms: int) -> dict:
        return {"openInterest": f"{self.open_interest:f}", "symbol": self.symbol, "timestamp": now_ms}

    def open_interest_event(self, now_us: int) -> dict:
        return {"e": "openInterest", "E": now_us, "s": self.symbol, "o": f"{self.open_interest:f}"}

    def funding_rate_rows(self) -> list[dict]:
        """Realized funding rates, newest first."""
        return [{"fundingRate": f"{rate:f}", "intervalEndTimestamp": naive_utc(end), "symbol": self.symbol}
                for end, rate in reversed(self.funding_rows)]

    def to_json(self) -> dict:
        return {"fundingRate": f"{self.clamped(self.funding_rate):f}", "openInterest": f"{self.open_interest:f}",
                "overrides": [[t, *(None if x is None else f"{x:f}" for x in rest)] for t, *rest in self.overrides],
                "fundingRows": [[end, f"{rate:f}"] for end, rate in self.funding_rows]}
