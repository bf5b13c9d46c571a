"""``backtest --sweep``: the settings it sweeps (every combination of the values given) and its table, best
return first. The runs themselves are the sweep engine's (sweep.py) or the exact engine's."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Iterable

from gridbot.analysis.backtest import BacktestResult, _change, _money, _pct
from gridbot.ops.config import check_flag

ZERO = Decimal(0)


def iter_pairs(values: Iterable[str]) -> list[tuple[str, list[str]]]:
    """``grid_num=10,20,40`` -> ("grid_num", ["10", "20", "40"])."""
    out = []
    for v in values:
        key, sep, rest = v.partition("=")
        if not sep or not rest:
            raise ValueError(f"--sweep takes KEY=V1,V2,... (got {v!r})")
        out.append((key.strip(), [x.strip() for x in rest.split(",") if x.strip()]))
    return out


# ------------------------------------------------------------------------------ sweeps and output
SWEEP_KEYS = ("grid_num", "grid_lower", "grid_upper", "quantity", "investment", "price_range", "maker_fee",
              "trigger_price", "direction", "leverage")
RISK_SWEEP_KEYS = ("stop_loss_price", "take_profit_price", "stop_loss_return", "take_profit_return", "stop_delay",
                   "on_stop", "out_of_range", "trail_up_limit", "trail_down_limit", "max_slippage",
                   "stop_margin_fraction", "liquidation_buffer")


def sweep_settings(pairs: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """Every combination of the swept values, as trading-key overrides (grid_num as a whole number
    when it is one; the config's checks judge every value)."""
    combos: list[dict[str, Any]] = [{}]
    for key, values in pairs:
        if key not in SWEEP_KEYS + RISK_SWEEP_KEYS:
            raise ValueError(f"--sweep {key}: the keys that can be swept are {', '.join(SWEEP_KEYS + RISK_SWEEP_KEYS)}")
        if not values:
            raise ValueError(f"--sweep {key}: give values, e.g. {key}=10,20,40")
        typed: list[Any] = [int(v) if key == "grid_num" and v.isdigit() else v for v in values]
        if key == "stop_delay":
            typed = [Decimal(v) if _NUMBER.fullmatch(v) else v for v in values]   # seconds are numbers
        for v in typed:
            # named by the flag, not the config file
            check_flag(f"--sweep {key}", key, v, section="risk" if key in RISK_SWEEP_KEYS else "trading")
        combos = [{**c, key: v} for c in combos for v in typed]
    return combos


_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


def sweep_order(r: BacktestResult) -> Decimal:
    """What "best" means in a sweep: the return on the starting funds (the runs need different
    funds, so their final equities alone do not compare)."""
    return -(r.final_equity / r.start_equity) if r.start_equity else ZERO


def format_sweep(rows: list[tuple[dict[str, Any], BacktestResult]], quote: str) -> list[str]:
    """One line per run, best return first."""
    keys = list(rows[0][0]) if rows else []
    head = "  ".join(f"{k:>12}" for k in keys)
    out = [f"{head}  {'return':>8}  {'final equity':>14}  {'vs hold':>8}  {'grid profit':>12}  {'round trips':>11}  "
           f"{'fills/day':>9}  {'max drawdown':>12}  {'exit':>18}"]
    for settings, r in sorted(rows, key=lambda x: sweep_order(x[1])):
        cells = "  ".join(f"{str(settings[k]):>12}" for k in keys)
        out.append(f"{cells}  {_change(r.final_equity, r.start_equity):>8}  {_money(r.final_equity):>14}  "
                   f"{_change(r.final_equity, r.hold_equity):>8}  "
                   f"{_money(r.grid_profit, '0.0001'):>12}  {r.round_trips:>11}  "
                   f"{str(r.fills_per_day if r.fills_per_day is not None else '-'):>9}  "
                   f"{_pct(r.max_drawdown):>12}  {(r.exit['reason'] if r.exit else '-'):>18}")
    out.append(f"(return on the starting funds, best first; equity in {quote})")
    return out
