"""Building a grid before its first order, and the checks around it: what identifies a grid across
restarts (``grid_params``), the market's rules, the grid a config asks for at a price (``make_grid``) and
what it cannot do there, the funds it needs against the balances, the log lines that describe it, and the
signed reads of the start-up (a refused key is the user's to fix; an unreachable exchange is fatal).
Used by the start-up, ``plan`` and ``backtest``.
"""
from __future__ import annotations

import difflib
import logging
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Callable, Collection, TypeVar

from backpack_api import BackpackClient, RequestRejected, TransientError
from gridbot.core.errors import FatalError, InputError, StartRefused
from grid_calculator import (GridError, GridMode, GridSpec, build_grid, funds_needed, initial_plan, size_for_investment,
                             summarize)
from gridbot.core.models import MarketRules, Side
from gridbot.core.order_state import Settings
from gridbot.ops.reports import fmt_amount

log = logging.getLogger("grid_bot")

Balances = dict[str, tuple[Decimal, Decimal]]
T = TypeVar("T")


def grid_params(t: Any) -> dict[str, Any]:
    """What identifies a grid across restarts: what decides its levels and orders. (Levels are not
    compared directly: an auto-price grid's levels depend on the price when it was created.)"""
    params: dict[str, Any] = {"symbol": t.symbol, "grid_mode": t.grid_mode, "grid_num": t.grid_num,
                              "auto_price": t.auto_price}
    if t.investment is not None:
        params["investment"] = f"{t.investment:f}"
    else:
        params["quantity"] = f"{t.quantity:f}"
    if t.is_perp:
        params["direction"], params["leverage"] = t.direction, f"{t.leverage:f}"
    if t.auto_price:
        params["price_range"] = f"{t.price_range:f}"
    else:
        params["grid_lower"] = f"{t.grid_lower:f}"
        params["grid_upper"] = f"{t.grid_upper:f}"
    return params


def market_rules(client: BackpackClient, symbol: str, base_url: str) -> MarketRules:
    """The market's rules from the exchange; an unknown symbol is the user's to fix."""
    try:
        markets = client.markets()
    except TransientError as e:
        raise FatalError(f"cannot reach the exchange at {base_url}: {e}") from None
    except RequestRejected as e:
        raise FatalError(f"the exchange at {base_url} refused to list its markets ({e}); check api.base_url, "
                         f"and whether this machine may reach it") from None
    by_symbol = {m.symbol: m for m in markets}
    rules = by_symbol.get(symbol)
    if rules is None:
        close = difflib.get_close_matches(symbol, list(by_symbol), n=3, cutoff=0.7)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise InputError(f"unknown symbol {symbol} on {base_url}{hint} (set trading.symbol)")
    if rules.order_book_state in ("Closed", "CancelOnly"):
        raise StartRefused(f"{rules.symbol} is not trading now (order book {rules.order_book_state})")
    return rules


def make_grid(rules: MarketRules, t: Any, price: Decimal, size_at: Decimal | None = None) -> tuple[GridSpec, list[str]]:
    """The grid the config asks for on this market at this price (and notes worth a warning). With
    ``investment`` the quantity is sized at ``size_at`` (default: the price; a grid that waits for its
    trigger is sized at the trigger price, where it will be laid out; ``grid_calculator.size_for_investment``).
    A grid of which no order could be placed now is refused (exit 2)."""
    def build(quantity: Decimal) -> tuple[GridSpec, list[str]]:
        return build_grid(rules, mode=GridMode(t.grid_mode), grid_num=t.grid_num, quantity=quantity,
                          post_only=t.post_only, lower=t.grid_lower, upper=t.grid_upper,
                          auto_price=t.auto_price, price_range=t.price_range, price=price)
    try:
        if t.investment is None:
            grid, notes = build(t.quantity)
        else:
            levels = build(rules.min_quantity)[0].levels
            sizing = size_for_investment(levels, size_at or price, t.investment, t.maker_fee, rules)
            grid, notes = build(sizing.quantity)
    except GridError as e:
        raise InputError(str(e)) from None
    return grid, notes + placement_notes(grid, rules, price)


def placement_notes(grid: GridSpec, rules: MarketRules, price: Decimal) -> list[str]:
    """What a grid cannot do at this price, said before it starts: the price outside the range (which
    side the grid starts with, and what it needs), a range far from the price (a typo?), and levels
    outside the exchange's price band around the last price (named; refused when that is every one).
    """
    notes: list[str] = []
    lo, hi = grid.levels[0], grid.levels[-1]
    q = rules.tick_size
    if price < lo or price > hi:
        below = price < lo
        gap = (lo - price if below else price - hi) / price
        needs = "margin" if grid.symbol.endswith("_PERP") else grid.base if below else grid.quote
        notes.append(f"the price {price} is {'below' if below else 'above'} the grid ({lo}..{hi}): it starts with "
                     f"{'sells' if below else 'buys'} only and needs {needs} for "
                     f"all of them, and trades only once the price {'rises' if below else 'falls'} into the range"
                     + (f"; the range is {gap:.0%} away from the price: a typo?" if gap > Decimal("0.2") else ""))
    elif hi / lo > 10:
        notes.append(f"the range {lo}..{hi} spans more than 10x: a typo? (each step is "
                     f"{(hi - lo) / (len(grid.levels) - 1)} wide)")
    elif (hi - lo) / price < Decimal("0.002"):
        notes.append(f"the range {lo}..{hi} is only {(hi - lo) / price:.2%} of the price {price} wide: a typo? "
                     f"(the price leaves it with the smallest move)")
    mx, mn = rules.max_multiplier, rules.min_multiplier
    if mx is None and mn is None:
        return notes
    # Checked as the exchange checks (exact); shown at the tick, rounded inward.
    band_hi = price * mx if mx is not None else None
    band_lo = price * mn if mn is not None else None
    empty, planned = initial_plan(grid, price)
    outside = [o.price for o in planned
               if (band_hi is not None and o.price > band_hi) or (band_lo is not None and o.price < band_lo)]
    if not outside:
        return notes
    shown_lo = band_lo.quantize(q, ROUND_CEILING) if band_lo is not None else 0
    shown_hi = band_hi.quantize(q, ROUND_FLOOR) if band_hi is not None else "inf"
    band = (f"{mn if mn is not None else 0}x..{mx if mx is not None else 'inf'}x the last price {price}: "
            f"{shown_lo}..{shown_hi}")
    which = ", ".join(str(p) for p in outside[:8]) + (", ..." if len(outside) > 8 else "")
    if len(outside) == len(planned):
        raise StartRefused(f"no order of this grid can be placed now: every level ({lo}..{hi}) lies outside the "
                         f"exchange's price band ({band}); set trading.grid_lower and trading.grid_upper around "
                         f"the price")
    notes.append(f"{len(outside)} of the grid's {len(planned)} orders ({which}) lie outside the exchange's price "
                 f"band ({band}): they wait until the price comes near enough")
    return notes


def keys_refused(e: RequestRejected) -> InputError:
    """A signed request refused: the keys (or the clock) are the user's to fix."""
    return InputError(f"the exchange refused our signed request ({e.code}: {e.message}): check "
                      f"api.api_key and api.api_secret, and the machine's clock")


def signed_read(read: Callable[[], T], what: str) -> T:
    """A signed read before the first order: refused is the keys', unreachable is fatal."""
    try:
        return read()
    except RequestRejected as e:
        raise keys_refused(e) from None
    except TransientError as e:
        raise FatalError(f"cannot {what}: {e}") from None


def read_balances(client: BackpackClient) -> Balances:
    return signed_read(client.balances, "read balances")


def check_funds(grid: GridSpec, price: Decimal, balances: Balances, maker_fee: Decimal,
                adopted: Collection[int] = ()) -> dict[str, Decimal]:
    """What the initial orders lock against what the account has free (the pairs in ``adopted`` already
    have their orders on the book, their funds already locked)."""
    _, plan = initial_plan(grid, price)
    plan = [o for o in plan if (o.level if o.side is Side.BID else o.level - 1) not in adopted]
    need = funds_needed(grid, plan)
    zero = (Decimal(0), Decimal(0))
    missing = [f"{fmt_amount(amount - balances.get(asset, zero)[0])} {asset} (needs {fmt_amount(amount)}, "
               f"{fmt_amount(balances.get(asset, zero)[0])} available)"
               for asset, amount in need.items() if amount > balances.get(asset, zero)[0]]
    if missing:
        raise InputError("not enough balance for this grid: missing " + " and ".join(missing) +
                         "; deposit it, or lower trading.quantity or trading.grid_num")
    # A buy pays its maker fee in the base it receives; its counter-sell sells the full quantity.
    per_trip = grid.quantity * maker_fee
    spare = balances.get(grid.base, zero)[0] - need.get(grid.base, Decimal(0))
    if per_trip > 0 and spare < per_trip * (len(grid.levels) - 1):
        log.warning("little spare %s: buys pay their fee in %s, so each round trip uses %s %s beyond what "
                    "the grid locks; the %s spare covers %d round trip(s), then counter-sells are refused "
                    "until you add %s", grid.base, grid.base, fmt_amount(per_trip), grid.base,
                    fmt_amount(spare), int(spare / per_trip), grid.base)
    return need


def log_grid(grid: GridSpec, symbol: str, price: Decimal, need: dict[str, Decimal], maker_fee: Decimal) -> None:
    empty, plan = initial_plan(grid, price)
    s = summarize(grid, maker_fee)
    step = (f"step {fmt_amount(s.step_min)}" if s.step_min == s.step_max
            else f"steps {fmt_amount(s.step_min)}..{fmt_amount(s.step_max)}")
    pct = f"{s.step_pct_min}%" if s.step_pct_min == s.step_pct_max else f"{s.step_pct_min}%..{s.step_pct_max}%"
    buys = sum(1 for o in plan if o.side is Side.BID)
    log.info("grid: %s %d levels %s..%s %s, %s (%s); price %s, empty level %d (%s); %d buys and %d sells "
             "of %s %s", symbol, len(grid.levels), grid.levels[0], grid.levels[-1], grid.mode.value, step, pct,
             price, empty, grid.levels[empty], buys, len(plan) - buys, fmt_amount(grid.quantity), grid.base)
    log.info("grid: locks %s; net profit per round trip %s..%s %s after two maker fees of %s%%",
             " + ".join(f"{fmt_amount(v)} {k}" for k, v in need.items()), fmt_amount(s.profit_min),
             fmt_amount(s.profit_max), grid.quote, fmt_amount(maker_fee * 100))
    for o in plan:
        log.debug("grid: level %d %s %s @ %s", o.level, o.side.value, o.quantity, o.price)
    if s.profit_min <= 0:
        log.warning("grid step too small: the narrowest step (%s%%) does not cover two maker fees of "
                    "%s%%, so a round trip there loses money; widen the range or lower grid_num",
                    s.step_pct_min, fmt_amount(maker_fee * 100))


def manager_settings(client: BackpackClient, rules: MarketRules) -> Settings:
    # An order whose answer was lost is looked up once neither its signature window nor our read
    # timeout can still let it arrive.
    window = max(client.window_ms, int(client.timeout[1] * 1000))
    return Settings(window_ms=window, max_multiplier=rules.max_multiplier, min_multiplier=rules.min_multiplier)
