"""Words and numbers for people: log lines for the core's events, the statistics line, and ``status``.

Pure formatting: nothing here sends, saves or decides. The core's typed events become log lines in one
place (``describe``), so the log, and later notifications and reports, read the same values.
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any, Sequence

from gridbot.core.accounting import Stats, figures
from gridbot.core.events import (ClosedByExchange, CounterOrderDecided, DuplicateOnBook, FillApplied, FilledAfterCancel,
                    FilledIncomplete, FilledOffGrid, GridEvent, LookupResolved, OrderRefused, OrphanFound, OutcomeUnknown,
                    RoundTripCompleted, SaleFill, TransitionRefused)
from grid_calculator import GridSpec
from gridbot.core.models import Side
from order_manager import OrderManager

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


def fmt_amount(d: Decimal, places: int = 8) -> str:
    """A decimal for a log line: exact, without trailing zeros beyond what it needs."""
    q = d.quantize(Decimal(1).scaleb(-places)) if d.as_tuple().exponent < -places else d
    text = f"{q:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "") or not q:
        return "0"                 # never "-0": a loss rounded to nothing is nothing
    return text


def fmt_price(d: Decimal, tick_like: Decimal) -> str:
    """A price at the market's tick (``149.50`` on SOL_USDC, whose tick is 0.01), as a trader reads it."""
    exp = tick_like.as_tuple().exponent
    places = max(0, -exp) if isinstance(exp, int) else 2
    return f"{d.quantize(Decimal(1).scaleb(-places)):f}"


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def format_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h}:{m:02d}:{s:02d}"


def iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC"


def describe_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def describe(ev: GridEvent, quote: str) -> tuple[int, str]:
    """One event of the core as (log level, message). Prices and quantities as the exchange writes them
    (at the market's tick and step: ``0.50 @ 148.00``); fees and profits without padding."""
    a = fmt_amount
    if isinstance(ev, FillApplied):
        return INFO, (f"fill: {ev.side.value} {ev.quantity:f} @ {ev.price:f} (level {ev.level}, order "
                      f"{ev.order_id}, {a(ev.executed)}/{a(ev.order_quantity)}), fee {a(ev.fee)} {ev.fee_symbol}")
    if isinstance(ev, CounterOrderDecided):
        return INFO, (f"{ev.filled_side.value} at level {ev.filled_level} filled: counter-order {ev.side.value} "
                      f"{ev.quantity:f} @ {ev.price:f} (level {ev.level})")
    if isinstance(ev, RoundTripCompleted):
        return INFO, f"round trip {ev.number} on levels {ev.pair}-{ev.pair + 1}: profit {a(ev.profit)} {quote}"
    if isinstance(ev, OrderRefused):
        return WARNING, (f"{ev.side.value} {ev.quantity:f} @ {ev.price:f} (level {ev.level}) rejected: "
                         f"{ev.code} {ev.message}; retrying in {ev.retry_in_ms / 1000:.0f} s")
    if isinstance(ev, OutcomeUnknown):
        return WARNING, (f"no answer for {ev.side.value} @ {ev.price:f} (level {ev.level}, clientId "
                         f"{ev.client_id}); will look it up by clientId")
    if isinstance(ev, LookupResolved):
        if ev.outcome == "never placed":
            return INFO, f"clientId {ev.client_id} (level {ev.level}) never reached the book; placing it again"
        return ERROR, (f"order {ev.order_id} (level {ev.level}) is neither on the book nor in history after "
                       f"{ev.lookups} lookups; treating it as gone")
    if isinstance(ev, ClosedByExchange):
        part = f" after {a(ev.executed)} filled" if ev.executed else ""
        if ev.by_us:
            return INFO, f"cancelled order {ev.order_id} (level {ev.level}){part}"
        return WARNING, (f"order {ev.order_id} ({ev.side.value} @ {ev.price:f}, level {ev.level}) was "
                         f"{ev.status} by the exchange or by hand{part}; replacing it")
    if isinstance(ev, FilledIncomplete):
        return WARNING, (f"order {ev.order_id} is filled but only {a(ev.executed)} of {a(ev.quantity)} has "
                         f"been seen in fills; looking again")
    if isinstance(ev, FilledAfterCancel):
        return ERROR, (f"order {ev.order_id} (level {ev.level}) filled completely after it was counted as "
                       f"cancelled; accounting it, but its counter-order is skipped")
    if isinstance(ev, DuplicateOnBook):
        return ERROR, (f"order {ev.order_id} (clientId {ev.client_id}, level {ev.level}) is on the book although "
                       f"it was counted as {ev.counted_as}; cancelling it")
    if isinstance(ev, TransitionRefused):
        return WARNING, (f"refused {ev.old} -> {ev.new} for order {ev.client_id} (level {ev.level}); "
                         f"keeping {ev.old}")
    if isinstance(ev, FilledOffGrid):
        return WARNING, (f"order {ev.order_id} ({ev.side.value} @ {ev.price:f}, level {ev.level}) filled after a "
                         f"trail move had left it outside the grid: accounted, no counter-order")
    if isinstance(ev, OrphanFound):
        what = f"order {ev.order_id} (clientId {ev.client_id}, {ev.side.value} @ {ev.price:f})"
        if ev.outcome == "claimed":
            return WARNING, f"{what} is ours but the saved state had lost it: taken back as its level's order"
        if ev.outcome == "cancelled":
            return WARNING, f"{what} is ours but the saved state had lost it, and no level wants it: cancelling it"
        return ERROR, (f"{what} is ours and filled, but the saved state had lost it and no level wants it: its fills "
                       f"are not in the grid's figures")
    if isinstance(ev, SaleFill):
        return INFO, (f"sale fill: {ev.quantity:f} @ {ev.price:f} (order {ev.order_id}), fee {a(ev.fee)} "
                      f"{ev.fee_symbol}; sold {a(ev.sold)} of {a(ev.target)}")
    raise TypeError(f"no description for {type(ev).__name__}")


def format_stats(st: Stats, grid: GridSpec, uptime: float, source: str = "", final: bool = False) -> str:
    fees = ", ".join(f"{fmt_amount(v)} {k}" for k, v in sorted(st.fees.items())) or f"0 {grid.quote}"
    price = fmt_price(st.price, grid.levels[0]) if st.price is not None else "?"
    floating = f"{fmt_amount(st.floating_pnl, 4)} {grid.quote}" if st.floating_pnl is not None else "?"
    sign = "+" if st.position > 0 else ""
    waiting = f" ({st.waiting} waiting)" if st.waiting and not final else ""
    funding = f" | funding {signed(st.funding)} {grid.quote}" if st.funding is not None else ""
    return (f"stats | price {price}{source} | open {plural(st.open_bids, 'buy')} / {plural(st.open_asks, 'sell')}"
            f"{waiting} | round trips {st.round_trips} | grid profit {fmt_amount(st.grid_profit)} {grid.quote}"
            f"{funding} | fees {fees} | position {sign}{fmt_amount(st.position)} {grid.base} | floating PnL {floating} | "
            f"uptime {format_duration(uptime)}")


def signed(d: Decimal) -> str:
    """An amount with its sign (funding: + received, - paid)."""
    return ("+" if d > 0 else "") + fmt_amount(d)


def pct(d: Decimal | None) -> str:
    return "?" if d is None else f"{'+' if d > 0 else ''}{(d * 100).quantize(Decimal('0.01'))}%".replace("-0.00%", "0.00%")


def format_figures(f: Any, grid: GridSpec) -> str:
    """The profit figures in one line (accounting.Figures)."""
    q, b = grid.quote, grid.base
    fees = ", ".join(f"{fmt_amount(v)} {k}" for k, v in sorted(f.fees.items()) if v) or f"0 {grid.quote}"
    return (f"figures | started with {fmt_amount(f.start.base)} {b} + {fmt_amount(f.start.quote, 4)} {q} at "
            f"{fmt_price(f.start.price, grid.levels[0])} = {fmt_amount(f.start_value, 4)} {q} | equity "
            f"{fmt_amount(f.equity, 4)} {q} | total return {pct(f.total_return)} | against holding "
            f"{fmt_amount(f.vs_hold, 4)} {q} | grid profit {fmt_amount(f.grid_profit, 6)} {q} | "
            + (f"funding {signed(f.funding)} {q} | " if grid.symbol.endswith("_PERP") else "")
            + f"floating PnL {fmt_amount(f.floating_pnl, 4)} {q} | fees {fees} ({fmt_amount(f.fees_quote, 6)} {q}) | "
            + "break-even "
            + (fmt_price(f.break_even, grid.levels[0]) if f.break_even is not None else "none (little or no base held)")
            + " | annualised grid yield "
            + (pct(f.annual_yield) if f.annual_yield is not None else "too early (under 30 days)"))


def start_message(grid: GridSpec, price: Decimal, resumed: bool) -> str:
    """What a phone shows when the bot starts: the grid, its size, the price."""
    levels = grid.levels
    return (f"{'Resumed' if resumed else 'New'} grid {grid.symbol}: {len(levels)} levels "
            f"{fmt_amount(levels[0])}-{fmt_amount(levels[-1])} {grid.quote}, {fmt_amount(grid.quantity)} "
            f"{grid.base} each; price {fmt_amount(price)}.")


def describe_exit(ex: Any, grid: GridSpec) -> str:
    """An exit in one line: why, when, at what price, and what the sale brought (or what was kept)."""
    text = f"exit: stopped by the {ex.reason} {iso(ex.time_ms)} at price {fmt_price(ex.price, grid.levels[0])}: {ex.detail}"
    sale = ex.sale
    if ex.on_stop == "keep":
        return text + "; on_stop keep: the grid's orders were cancelled and what it holds was kept"
    word = "close" if ex.on_stop == "close" else "sale"
    if sale is None:
        return text + f"; the {word} has not started"
    avg = f" at {fmt_price(sale.proceeds / sale.sold, grid.levels[0])} on average" if sale.sold else ""
    buy = sale.side == "Bid"
    text += (f"; {'bought back' if buy else 'sold'} {fmt_amount(sale.sold)} of {fmt_amount(sale.target)} {grid.base}"
             f"{avg} for {fmt_amount(sale.proceeds)} {grid.quote} (fees {fmt_amount(sale.fees)} {grid.quote}), no "
             f"{'higher' if buy else 'lower'} than {sale.floor}")
    if sale.left:
        text += f"; {fmt_amount(sale.left)} {grid.base} not {'bought back' if buy else 'sold'}: {sale.note}"
    elif sale.note:
        text += f" ({sale.note})"
    return text


def wait_reason(om: OrderManager, pair: Any, now_ms: int, market: Decimal | None) -> str:
    """Why a pair has no order on the book now, in words for the log and ``status``."""
    if pair.order is not None:
        return "it has one"
    if now_ms < pair.retry_at_ms:
        return f"the exchange refused it; it is tried again in {(pair.retry_at_ms - now_ms + 999) // 1000} s"
    level = om.grid.pair_level(pair.index, pair.side)
    price = om.level_price(level)
    if level in {o.level for o in om.live_orders()}:
        return "its level still holds the other side's order"
    s = om.settings
    if market is not None and s.max_multiplier is not None and price > market * s.max_multiplier:
        return (f"it lies above the exchange's price band (at most {s.max_multiplier}x the last price {market}); "
                f"it waits until the price rises to {fmt_price(price / s.max_multiplier, price)}")
    if market is not None and s.min_multiplier is not None and price < market * s.min_multiplier:
        return (f"it lies below the exchange's price band (at least {s.min_multiplier}x the last price {market}); "
                f"it waits until the price falls to {fmt_price(price / s.min_multiplier, price)}")
    if market is not None and om.grid.post_only and (price > market if pair.side is Side.BID else price < market):
        return f"a post-only {pair.side.value} at {price} would cross the price {market}; it waits for the price"
    return "it is about to be placed"


class WaitWatch:
    """A level that has waited for its order longer than ``after`` seconds is logged once, with the real
    reason (the price band, crossing the price, a retry after a rejection)."""

    def __init__(self) -> None:
        self.since: dict[int, float] = {}   # pair -> since when it has had no order
        self.told: set[int] = set()

    def check(self, om: OrderManager, now: float, now_ms: int, price: Decimal | None, after: float) -> None:
        for p in om.pairs:
            if p.order is not None:
                self.since.pop(p.index, None)
                self.told.discard(p.index)
                continue
            since = self.since.setdefault(p.index, now)
            if p.index not in self.told and now - since > after:
                self.told.add(p.index)
                level = om.grid.pair_level(p.index, p.side)
                logging.getLogger("grid_bot").warning(
                    "level %d (%s @ %s) has waited %.0f s for its order: %s", level, p.side.value,
                    om.level_price(level), now - since, wait_reason(om, p, now_ms, price))


def level_view(om: OrderManager) -> list[dict]:
    """Each level of the grid as it stands (0 = its lowest now, after any trail moves) with the order resting
    on it (for status and plan output); an order a trail move left outside, still being cancelled, is not
    shown."""
    occupied = {o.level: o for o in om.live_orders()}
    rows = []
    for i, price in enumerate(om.grid.levels):
        o = occupied.get(om.offset + i)
        rows.append({"level": i, "price": price,
                     "side": o.side.value if o else None,
                     "state": o.state.value if o else None,
                     "order_id": o.order_id if o else None,
                     "client_id": o.client_id if o else None,
                     "executed": o.executed if o else None})
    return rows


def grid_state(saved: Any, om: OrderManager, running: bool) -> str:
    """One word for the grid, true whatever the saved status says: ``running`` (a bot works on it now),
    ``finished`` (an exit ended it), ``stopped`` (stopped and its orders cancelled) or ``interrupted``
    (saved as running, but no bot runs it: a kill -9, a crash, a reboot, or on_exit keep)."""
    if om.risk.exit is not None and om.risk.exit.phase == "done":
        return "finished"
    if saved.status in ("stopped", "reset"):
        return "stopped"
    return "running" if running else "interrupted"


def situation(saved: Any, om: OrderManager, running: bool, paper: str | None) -> str:
    """What the grid is doing, truthfully: running, stopped, or interrupted (and what may be open)."""
    live = len(om.live_orders())
    ex = om.risk.exit
    if ex is not None and ex.phase == "done":
        return (f"finished: {describe_exit(ex, om.grid)[len('exit: '):]}. A stopped grid is not resumed: "
                f"--reset starts a new one")
    if ex is not None:
        return (f"stopping: the {ex.reason} fired {iso(ex.time_ms)} at {ex.price} and the exit is under way "
                f"({ex.phase}); " + ("the bot is finishing it" if running else "the next start finishes it"))
    if om.risk.trigger is not None and not om.risk.triggered:
        return (f"waiting for the price to {'rise' if om.risk.trigger_from == 'below' else 'fall'} to the trigger "
                f"price {om.risk.trigger}: nothing is placed until then"
                + ("" if running else " (the bot is not running)"))
    if saved.status == "stopped":
        return (f"stopped {iso(saved.stopped_ms) or ''}: its orders were cancelled; the next start lays out a new "
                f"grid").replace("  ", " ")
    if running:
        return "running: the bot is working on this grid now"
    if paper == "random":
        return ("interrupted: the paper bot is not running and its simulated exchange ended with it, so nothing "
                "is open anywhere; the next paper run starts a new grid")
    if paper == "live":
        return (f"not running: {live} paper order(s) were left on the saved paper account (on_exit keep, a forced "
                f"exit or a crash); the next --paper --live-prices run resumes the grid")
    return (f"not running: {live} order(s) may still be open on the exchange (on_exit keep, a forced exit or a "
            f"crash); the next start settles and resumes them, --reset cancels them")


def status_report(saved: Any, om: OrderManager, state_path: str, now_ms: int, *, running: bool = False,
                  paper: str | None = None) -> dict[str, Any]:
    """The saved state of a grid as plain JSON-able data (decimals as strings). ``running``: a bot holds
    the state file now; ``paper``: ``random`` or ``live`` for paper mode's state."""
    st = om.stats(None)
    spec = saved.spec
    waiting = running and saved.status == "running"
    return {
        "state_file": state_path,
        "situation": situation(saved, om, running, paper),
        "state": grid_state(saved, om, running),
        "bot_running": running,
        "grid": {"id": saved.id, "status": saved.status, "symbol": spec.symbol, "mode": spec.mode.value,
                 "levels": [f"{x:f}" for x in spec.levels], "quantity": f"{spec.quantity:f}",
                 "base": spec.base, "quote": spec.quote, "params": saved.params,
                 "created": iso(saved.created_ms), "last_checkpoint": iso(saved.checkpoint_ms),
                 "last_checkpoint_ms": saved.checkpoint_ms,
                 "last_checkpoint_ago_s": (now_ms - saved.checkpoint_ms) // 1000 if saved.checkpoint_ms else None,
                 "last_saved": iso(saved.updated_ms), "stopped": iso(saved.stopped_ms)},
        "stats": {"round_trips": st.round_trips, "grid_profit": f"{st.grid_profit:f}",
                  "fees": {k: f"{v:f}" for k, v in sorted(st.fees.items())}, "position": f"{st.position:f}",
                  "quote_flow": f"{st.quote_flow:f}", "fills": st.fills, "open_buys": st.open_bids,
                  "open_sells": st.open_asks, "funding": None if st.funding is None else f"{st.funding:f}"},
        "risk": risk_view(om),
        "figures": grid_figures(om, saved.created_ms, now_ms),
        "levels": [{**row, "price": f"{row['price']:f}",
                    "executed": None if row["executed"] is None else f"{row['executed']:f}"}
                   for row in level_view(om)],
        # What each pair of adjacent levels wants now; "waiting" when its order is not on the book.
        # "waiting" only while a bot runs the grid: a stopped grid's orders were cancelled on purpose.
        "pairs": [{"pair": p.index - om.offset, "side": p.side.value,
                   "level": spec.pair_level(p.index, p.side) - om.offset,
                   "waiting": waiting and p.order is None,
                   "why": (wait_reason(om, p, now_ms, None) if now_ms < p.retry_at_ms else
                           "it waits for the price: a post-only order may not cross it, and the exchange takes "
                           "orders only within its band around the last price") if waiting and p.order is None else None,
                   "round_trips": p.round_trips} for p in om.pairs],
    }


def describe_orders(orders: Sequence[Any]) -> str:
    return ", ".join(f"{o.order_id or o.client_id} ({o.side.value} @ {o.price})" for o in orders)


def forced_exit_message(live: list[Any], paper: str | None) -> str:
    """What a forced exit (a second Ctrl+C) leaves: which orders may still be on the book."""
    if paper == "random":
        return "forced exit: the paper simulator ends with this process, so nothing stays open anywhere"
    if paper == "live":
        return (f"forced exit: {len(live)} paper order(s) stay on the saved paper account; the next --paper "
                f"--live-prices run resumes them")
    if live:
        return (f"forced exit: {len(live)} order(s) may still be open: {describe_orders(live)}; the next start "
                f"settles them, or cancel them on Backpack")
    return "forced exit"


def grid_figures(om: OrderManager, created_ms: int, now_ms: int) -> dict[str, Any] | None:
    """The profit figures at the last price the bot logged (None before it has one, or for a grid saved
    by a version that did not record its starting funds)."""
    st = om.risk
    if st.start is None or st.last_price is None:
        return None
    until = now_ms if st.exit is None else st.exit.time_ms
    fig = figures(st.start, om.ledger, st.last_price, max(0.0, (until - (st.start.time_ms or created_ms)) / 1000))
    return {**fig.to_json(), "price_time": iso(st.last_price_ms)}


def risk_view(om: OrderManager) -> dict[str, Any]:
    """The trigger, the trail and an exit, as plain data (status --json)."""
    st = om.risk
    ex = st.exit
    sale = ex.sale if ex is not None else None
    return {
        "trigger_price": None if st.trigger is None else f"{st.trigger:f}", "triggered": st.triggered,
        "start_funds": None if st.start is None else st.start.to_json(),
        "trail_offset": st.offset, "trail_moves": [m.to_json() for m in st.moves],
        "exit": None if ex is None else {
            "reason": ex.reason, "detail": ex.detail, "price": f"{ex.price:f}", "time": iso(ex.time_ms),
            "time_ms": ex.time_ms, "on_stop": ex.on_stop, "phase": ex.phase,
            "sale": None if sale is None else {**sale.to_json(), "left": f"{sale.left:f}"}},
    }


def print_status(r: dict[str, Any]) -> None:
    g, s = r["grid"], r["stats"]
    print(f"grid {g['id']} ({r['state']}) {g['symbol']} {g['mode']}, {len(g['levels'])} levels "
          f"{g['levels'][0]}..{g['levels'][-1]}, {g['quantity']} {g['base']} per order")
    ago = f" ({g['last_checkpoint_ago_s']} s ago)" if g["last_checkpoint_ago_s"] is not None else ""
    print(f"  created {g['created']}; last checkpoint {g['last_checkpoint'] or 'none yet'}{ago}"
          + (f"; stopped {g['stopped']}" if g["stopped"] else ""))
    print(f"  parameters: {describe_params(g['params'])}")
    print(f"  {r['situation']}")
    rk = r["risk"]
    if rk["trail_offset"]:
        last = rk["trail_moves"][-1] if rk["trail_moves"] else None
        print(f"  trailed {int(rk['trail_offset']):+d} step(s) in {len(rk['trail_moves'])} move(s); levels now "
              f"{g['levels'][0]}..{g['levels'][-1]}" + (f" (last move {iso(last['time_ms'])} at price {last['price']})"
                                                       if last else ""))
    print(f"  state file: {r['state_file']}")
    fees = ", ".join(f"{fmt_amount(Decimal(v))} {k}" for k, v in s["fees"].items()) or f"0 {g['quote']}"
    funding = f"funding {signed(Decimal(s['funding']))} {g['quote']} | " if s.get("funding") is not None else ""
    print(f"round trips {s['round_trips']} | grid profit {fmt_amount(Decimal(s['grid_profit']))} {g['quote']} | "
          f"{funding}fees {fees} | position {fmt_amount(Decimal(s['position']))} {g['base']} | fills {s['fills']} | "
          f"open {plural(s['open_buys'], 'buy')} / {plural(s['open_sells'], 'sell')}")
    f = r["figures"]
    if f is not None:
        ret = Decimal(f["total_return"])
        fees_all = (", ".join(f"{fmt_amount(Decimal(v))} {k}" for k, v in f["fees"].items() if Decimal(v))
                    or f"0 {g['quote']}")
        print(f"started with {fmt_amount(Decimal(f['start_funds']['base']))} {g['base']} + "
              f"{fmt_amount(Decimal(f['start_funds']['quote']), 4)} {g['quote']} at {f['start_funds']['price']} = "
              f"{fmt_amount(Decimal(f['start_value']), 4)} {g['quote']}; at {f['price']} ({f['price_time']}): equity "
              f"{fmt_amount(Decimal(f['equity']), 4)} {g['quote']}, total return {pct(ret)}, against holding "
              f"{fmt_amount(Decimal(f['vs_hold']), 4)} {g['quote']}")
        be = f["break_even"]
        yield_ = f["annual_yield"]
        print(f"grid profit {fmt_amount(Decimal(f['grid_profit']), 6)} {g['quote']} | floating PnL "
              f"{fmt_amount(Decimal(f['floating_pnl']), 4)} {g['quote']} | fees {fees_all} "
              f"({fmt_amount(Decimal(f['fees_quote']), 6)} {g['quote']}) | break-even "
              f"{fmt_price(Decimal(be), Decimal(g['levels'][0])) if be is not None else 'none (little or no base held)'} | "
              f"annualised grid yield "
              f"{pct(Decimal(yield_)) if yield_ is not None else 'too early (under 30 days)'}")
    for p in (p for p in r["pairs"] if p["waiting"]):
        print(f"waiting: {p['side']} at level {p['level']}: {p['why']}")
    print("level  price           order")
    for row in reversed(r["levels"]):
        if row["side"] is None:
            order = "-"
        else:
            executed = f", {row['executed']} filled" if row["executed"] not in (None, "0") else ""
            order = f"{row['side']:<3} {row['state']:<8} {row['order_id'] or '(no id yet)'} " \
                    f"clientId {row['client_id']}{executed}"
        print(f"{row['level']:>5}  {row['price']:<14}  {order}")
