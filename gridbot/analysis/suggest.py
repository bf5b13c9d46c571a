"""``suggest``: grid parameters chosen on one window of candles and judged on the next, which the choice has not
seen, rolled forward over the folds (walk-forward), on the sweep engine (sweep.py: the exact engine's figures).

A **candidate** is a rule, not a price: where to put the range from a window's candles (between two of its
close quantiles, its low and high, or its last close ± a multiple of its average true range), how many levels
and which mode. Each fold instantiates every rule on its **in-sample** window only (``InSample``: the type
holds those candles and nothing else), backtests it there, then lays the same grid out at the start of the
**held-out** window and backtests it there. No rule can read a held-out candle while it is being drawn or
ranked: ``instantiate`` is given an ``InSample``, and the ranking reads only figures of finished folds.

Ranking, by the held-out figures summed over the folds: the return against holding (the grid's final equity
less the starting funds held untouched, over the starting funds), then the worst drawdown, the round trips
and the share of candles closed in range. A candidate whose held-out return is less than half its in-sample
return (when that is positive) is **flagged** as fitted to its window and left out of the top. The
recommended grid is the best rule instantiated on the most recent window.

No candidate's step is below two maker fees plus a margin of one maker fee (``MIN_STEP_FEES`` = 3 fees): a
round trip that only pays its fees is no grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Callable, Sequence

from grid_calculator import GridError, GridMode, GridSpec, build_grid, size_for_investment
from gridbot.analysis.backtest import BacktestResult, run_backtest
from gridbot.analysis.sweep import Candidate, sweep
from gridbot.core.errors import InputError
from gridbot.core.models import MarketRules
from gridbot.core.risk import RiskConfig
from gridbot.marketdata.candles import Candle

ZERO = Decimal(0)
MIN_STEP_FEES = 3           # a step must pay two maker fees and one more as a margin
QUANTILES = ((5, 95), (10, 90), (20, 80), (30, 70))
ATR_MULTIPLES = (4, 8, 16, 32)
LEVELS = (5, 8, 12, 16, 20, 25, 30, 40, 50, 60, 80, 100)
MODES = ("arithmetic", "geometric")


class InSample:
    """A fold's in-sample candles, and nothing else: what a rule may be drawn and judged on."""

    def __init__(self, candles: Sequence[Candle]) -> None:
        self._candles = tuple(candles)
        self._closes: list[Decimal] | None = None
        self._atr: Decimal | None = None

    @property
    def candles(self) -> tuple[Candle, ...]:
        return self._candles

    def closes(self) -> list[Decimal]:
        """Its closes, sorted (computed once)."""
        if self._closes is None:
            self._closes = sorted(c.close for c in self._candles)
        return self._closes

    def quantile(self, pct: int) -> Decimal:
        xs = self.closes()
        return xs[min(len(xs) - 1, len(xs) * pct // 100)]

    def atr(self) -> Decimal:
        """The average true range of its candles (computed once)."""
        if self._atr is None:
            prev = self._candles[0].open
            total = ZERO
            for c in self._candles:
                total += max(c.high - c.low, abs(c.high - prev), abs(c.low - prev))
                prev = c.close
            self._atr = total / len(self._candles)
        return self._atr


@dataclass(frozen=True)
class Rule:
    """Where a candidate puts its range (``kind`` quantile, extremes or atr, with its ``arg``), its levels and
    its mode; on perps its direction and leverage too."""
    kind: str
    arg: int
    levels: int
    mode: str
    direction: str | None = None
    leverage: Decimal | None = None

    def describe(self) -> str:
        where = {"quantile": f"closes' {self.arg}-{100 - self.arg}% band", "extremes": "low..high",
                 "atr": f"last close +-{self.arg} ATR"}[self.kind]
        perp = f", {self.direction} at {self.leverage:f}x" if self.direction is not None and self.leverage else ""
        return f"{where}, {self.levels} levels {self.mode}{perp}"

    def bounds(self, s: InSample, tick: Decimal) -> tuple[Decimal, Decimal]:
        """The range this rule draws from ``s``, widened to the tick."""
        if self.kind == "quantile":
            lo, hi = s.quantile(self.arg), s.quantile(100 - self.arg)
        elif self.kind == "extremes":
            lo, hi = min(c.low for c in s.candles), max(c.high for c in s.candles)
        else:
            last, atr = s.candles[-1].close, s.atr()
            lo, hi = last - atr * self.arg, last + atr * self.arg
        return lo.quantize(tick, ROUND_FLOOR), hi.quantize(tick, ROUND_CEILING)


PERP_KINDS = (("quantile", 10), ("atr", 16), ("extremes", 0), ("quantile", 20), ("atr", 8))
PERP_LEVELS = (20, 10, 30)
PERP_LEVERAGE = (Decimal(2), Decimal(3), Decimal(1), Decimal(5))
DIRECTIONS = ("neutral", "long", "short")


def rules_to_try(count: int, perp: bool = False) -> list[Rule]:
    """Up to ``count`` rules, in a fixed order (the same arguments, the same rules). On perps every range rule
    comes in each direction, at leverages 2, 3, 1 and 5, arithmetic (each runs on the exact engine)."""
    if perp:
        return [Rule(k, a, n, "arithmetic", d, lev) for lev in PERP_LEVERAGE for k, a in PERP_KINDS
                for n in PERP_LEVELS for d in DIRECTIONS][:count]
    kinds = ([("quantile", lo) for lo, _ in QUANTILES] + [("extremes", 0)] + [("atr", k) for k in ATR_MULTIPLES])
    out = [Rule(k, a, n, m) for n in LEVELS for k, a in kinds for m in MODES]
    return out[:count]


def instantiate_perp(rule: Rule, s: InSample, rules: MarketRules, t: Any, risk: RiskConfig, *,
                     price: Decimal) -> tuple[Any, Any] | None:
    """A perps rule's grid (engine/perp_grid.py) sized at ``price``, with the config's trading keys ``t`` for the
    rest, and those keys: None when it is no valid grid, its step is below ``MIN_STEP_FEES`` maker fees, or the
    perps rules refuse it (its worst case liquidated within ``risk.liquidation_buffer`` of its range)."""
    from gridbot.engine.perp_grid import perp_grid
    lo, hi = rule.bounds(s, rules.tick_size)
    if lo <= 0 or hi <= lo:
        return None
    t2 = replace(t, grid_lower=lo, grid_upper=hi, grid_num=rule.levels, grid_mode=rule.mode, auto_price=False,
                 price_range=None, direction=rule.direction, leverage=rule.leverage, trigger_price=None)
    try:
        pg = perp_grid(rules, t2, risk, price)
    except (GridError, InputError):
        return None
    if pg.refused or min(b / a for a, b in zip(pg.grid.levels, pg.grid.levels[1:])) - 1 < MIN_STEP_FEES * t.maker_fee:
        return None
    return pg, t2


def instantiate(rule: Rule, s: InSample, rules: MarketRules, *, maker_fee: Decimal, price: Decimal,
                investment: Decimal | None, quantity: Decimal | None) -> GridSpec | None:
    """The grid a rule draws from in-sample candles, laid out at ``price`` (None: no valid grid, or a step
    below ``MIN_STEP_FEES`` maker fees)."""
    lo, hi = rule.bounds(s, rules.tick_size)
    if lo <= 0 or hi <= lo:
        return None
    try:
        probe, _ = build_grid(rules, mode=GridMode(rule.mode), grid_num=rule.levels, quantity=rules.min_quantity,
                              post_only=True, lower=lo, upper=hi, auto_price=False, price_range=None, price=None)
        ratio = min(b / a for a, b in zip(probe.levels, probe.levels[1:]))
        if ratio - 1 < MIN_STEP_FEES * maker_fee:
            return None
        qty = quantity if quantity is not None else size_for_investment(probe.levels, price, investment or ZERO,
                                                                        maker_fee, rules).quantity
        grid, _ = build_grid(rules, mode=GridMode(rule.mode), grid_num=rule.levels, quantity=qty, post_only=True,
                             lower=lo, upper=hi, auto_price=False, price_range=None, price=None)
    except GridError:
        return None
    return grid


@dataclass
class Figures:
    """A grid's figures on one window: returns on its starting funds."""
    ret: Decimal                 # final equity / starting funds - 1
    vs_hold: Decimal             # (final equity - the starting funds held) / starting funds
    drawdown: Decimal
    round_trips: int
    in_range: Decimal

    @classmethod
    def of(cls, r: BacktestResult) -> "Figures":
        base = r.start_equity or Decimal(1)
        return cls(r.final_equity / base - 1, (r.final_equity - r.hold_equity) / base, r.max_drawdown, r.round_trips,
                   r.time_in_range)

    def to_json(self) -> dict[str, Any]:
        q = Decimal("0.000001")
        return {"return": f"{self.ret.quantize(q):f}", "vs_hold": f"{self.vs_hold.quantize(q):f}",
                "max_drawdown": f"{self.drawdown:f}", "round_trips": self.round_trips, "in_range": f"{self.in_range:f}"}


@dataclass
class Fold:
    in_start: str
    in_end: str
    out_start: str
    out_end: str
    inside: dict[Rule, Figures] = field(default_factory=dict)
    held_out: dict[Rule, Figures] = field(default_factory=dict)
    grids: dict[Rule, GridSpec] = field(default_factory=dict)


def windows(candles: Sequence[Candle], folds: int) -> list[tuple[Sequence[Candle], Sequence[Candle]]]:
    """``folds`` (in-sample, held-out) pairs of consecutive equal windows: fold i learns on window i and is
    judged on window i + 1."""
    size = len(candles) // (folds + 1)
    if size < 2:
        raise ValueError(f"{len(candles)} candles are too few for {folds} folds: fetch more days, or fewer folds")
    w = [candles[i * size:(i + 1) * size] for i in range(folds + 1)]
    return [(w[i], w[i + 1]) for i in range(folds)]


def walk_forward(candles: Sequence[Candle], rules: MarketRules, to_try: Sequence[Rule], *, folds: int,
                 maker_fee: Decimal, investment: Decimal | None, quantity: Decimal | None,
                 progress: Callable[[int, int], None] | None = None, risk: RiskConfig | None = None,
                 perp: Any = None, funding: Sequence[tuple[int, Decimal]] = ()) -> list[Fold]:
    """Every rule on every fold, in-sample and held-out (see the module's docstring), with the config's exits
    (``risk``; a trigger is left out: a candidate starts at once). ``perp``: a perps market's trading keys (the
    rules then carry a direction and a leverage, run on the perps backtest with ``funding``)."""
    out = []
    pairs = windows(candles, folds)
    for i, (inside, after) in enumerate(pairs):
        s = InSample(inside)
        fold = Fold(inside[0].start, inside[-1].start, after[0].start, after[-1].start)
        # Drawn on the in-sample candles only, and sized at a price of that window too: its first open for
        # its in-sample run, its last close (the moment of the choice) for the held-out run.
        for label, window, sized_at in (("in", inside, inside[0].open), ("out", after, inside[-1].close)):
            grids: dict[Rule, Any] = {}
            for rule in to_try:
                if perp is not None:
                    made = instantiate_perp(rule, s, rules, perp, risk or RiskConfig(), price=sized_at)
                    if made is not None:
                        grids[rule] = made
                    continue
                g = instantiate(rule, s, rules, maker_fee=maker_fee, price=sized_at, investment=investment,
                                quantity=quantity)
                if g is not None:
                    grids[rule] = g
            if perp is not None:
                found = run_perp_grids(list(grids.values()), rules, window, risk or RiskConfig(), funding)
                grids = {rule: pg.grid for rule, (pg, _) in grids.items()}
            else:
                found = run_grids(list(grids.values()), rules, window, maker_fee, risk)
            figs = {rule: Figures.of(r) for rule, r in zip(grids, found)}
            if label == "in":
                fold.inside = figs
            else:
                fold.held_out, fold.grids = figs, grids
        out.append(fold)
        if progress is not None:
            progress(i + 1, len(pairs))
    return out


def run_grids(grids: Sequence[GridSpec], rules: MarketRules, candles: Sequence[Candle], maker_fee: Decimal,
              risk: RiskConfig | None = None) -> list[BacktestResult]:
    """Grids over the same candles on the sweep engine (the exact engine for any it cannot take), or, with
    exits or a range policy in ``risk``, all on the exact engine."""
    if risk is not None and not plain(risk):
        bare = replace(risk, trigger_price=None)
        return [run_backtest(g, rules, candles, maker_fee, risk=bare) for g in grids]
    cands = [Candidate(g.levels, g.quantity, maker_fee) for g in grids]
    by = dict(zip(cands, grids))
    return sweep(cands, rules, candles, exact=lambda c: run_backtest(by[c], rules, candles, maker_fee))


def run_perp_grids(made: Sequence[tuple[Any, Any]], rules: MarketRules, candles: Sequence[Candle], risk: RiskConfig,
                   funding: Sequence[tuple[int, Decimal]]) -> list[BacktestResult]:
    """Perps grids over the same candles, on the perps backtest (the exact engine: funding, margin, liquidation)."""
    from gridbot.analysis.perp_backtest import PerpBacktest
    bare = replace(risk, trigger_price=None)
    return [PerpBacktest(pg, rules, t2, bare, funding).run(candles) for pg, t2 in made]


def plain(r: RiskConfig) -> bool:
    """No exit and no range policy: what the sweep engine models."""
    return (r.stop_loss_price is None and r.take_profit_price is None and r.stop_loss_return is None
            and r.take_profit_return is None and r.out_of_range == "wait")


@dataclass
class Ranked:
    rule: Rule
    inside: Figures            # summed over the folds (returns added; the worst drawdown)
    held_out: Figures
    folds: int
    flagged: bool


def rank(folds: Sequence[Fold]) -> list[Ranked]:
    """The rules by their held-out figures over every fold (only rules with a grid in every fold): best first;
    the flagged (held-out return under half the in-sample return) after the rest."""
    every = set.intersection(*(set(f.held_out) & set(f.inside) for f in folds)) if folds else set()
    out = []
    for rule in every:
        def total(which: str) -> Figures:
            xs = [getattr(f, which)[rule] for f in folds]
            return Figures(sum((x.ret for x in xs), ZERO), sum((x.vs_hold for x in xs), ZERO),
                           max(x.drawdown for x in xs), sum(x.round_trips for x in xs),
                           sum((x.in_range for x in xs), ZERO) / len(xs))
        inside, held = total("inside"), total("held_out")
        flagged = inside.ret > 0 and held.ret < inside.ret / 2
        out.append(Ranked(rule, inside, held, len(folds), flagged))
    out.sort(key=lambda r: (r.flagged, -r.held_out.vs_hold, r.held_out.drawdown, -r.held_out.round_trips,
                            -r.held_out.in_range, r.rule.kind, r.rule.arg, r.rule.levels, r.rule.mode))
    return out
