"""``grid_bot.py report``: what a grid did, from its saved state (running or stopped), figures a user can
check against the exchange: every fill with its fill id, order id and clientId, and the round trip it
belongs to; ``--csv`` one row per fill; ``--plot`` price, levels and fills over equity against holding.

Read only: the state file is opened read-only, so a report works while the bot runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Sequence

from gridbot.core.accounting import figures
from gridbot.commands.common import open_store, read_config, saved_grid
from gridbot.core.errors import EXIT_OK, InputError
from gridbot.core.models import Fill, FundingPayment, Side
from order_manager import OrderManager
from gridbot.core.order_state import OrderState
from gridbot.ops.reports import describe_exit, describe_params, fmt_amount, fmt_price, format_duration, iso, pct, signed
from gridbot.engine.state_store import SavedGrid

ZERO = Decimal(0)
CSV_COLUMNS = ("time", "trade_id", "order_id", "client_id", "kind", "side", "price", "quantity", "fee", "fee_asset",
               "round_trip", "level")


def round_trips_of(om: OrderManager, fills: list[Fill]) -> dict[int, int]:
    """Order clientId -> the number of the round trip it opened or closed, as the ledger counts them: a
    pair's completed orders pair up two by two in the order they completed; round trips are numbered by
    when their closing order completed."""
    done_at: dict[int, int] = {}
    for f in fills:
        if f.client_id is not None:
            done_at[f.client_id] = max(done_at.get(f.client_id, 0), f.timestamp_ms)
    by_pair: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for o in om.orders.values():
        if o.state is OrderState.FILLED:
            by_pair[o.pair].append((done_at.get(o.client_id, o.closed_ms or 0), o.client_id))
    closes: list[tuple[int, int, int]] = []
    for legs in by_pair.values():
        legs.sort()
        for (_, a), (t, b) in zip(legs[0::2], legs[1::2]):
            closes.append((t, a, b))
    out: dict[int, int] = {}
    for n, (_, a, b) in enumerate(sorted(closes), start=1):
        out[a] = out[b] = n
    return out


def fill_rows(saved: SavedGrid, om: OrderManager, fills: list[Fill]) -> list[dict[str, Any]]:
    trips = round_trips_of(om, fills)
    sale = set(om.risk.exit.sale.orders) if om.risk.exit is not None and om.risk.exit.sale is not None else set()
    rows = []
    for f in fills:
        o = om.orders.get(f.client_id) if f.client_id is not None else None
        rows.append({"time": iso(f.timestamp_ms), "time_ms": f.timestamp_ms, "trade_id": f.trade_id,
                     "order_id": f.order_id, "client_id": f.client_id,
                     "kind": "sale" if f.client_id in sale else "grid", "side": f.side.value, "price": f"{f.price:f}",
                     "quantity": f"{f.quantity:f}", "fee": f"{f.fee:f}", "fee_asset": f.fee_symbol,
                     "round_trip": trips.get(f.client_id) if f.client_id is not None else None,
                     "level": o.level if o is not None else None})
    return rows


def build_report(saved: SavedGrid, om: OrderManager, fills: list[Fill], prices: list[tuple[int, Decimal]],
                 now_ms: int, funding: Sequence[FundingPayment] = ()) -> dict[str, Any]:
    st, spec = om.risk, saved.spec
    rows = fill_rows(saved, om, fills)
    price = st.last_price if st.last_price is not None else (fills[-1].price if fills else None)
    start_ms = st.start.time_ms if st.start is not None and st.start.time_ms else saved.created_ms
    until = st.exit.time_ms if st.exit is not None else (saved.stopped_ms or now_ms)
    fig = figures(st.start, om.ledger, price, max(0.0, (until - start_ms) / 1000)) \
        if st.start is not None and price is not None else None
    entry = st.entry
    return {
        "grid": {"id": saved.id, "status": saved.status, "symbol": spec.symbol, "mode": spec.mode.value,
                 "levels": [f"{x:f}" for x in spec.levels], "quantity": f"{spec.quantity:f}", "base": spec.base,
                 "quote": spec.quote, "params": saved.params, "created": iso(saved.created_ms),
                 "started": iso(start_ms), "stopped": iso(saved.stopped_ms), "age_s": (until - start_ms) // 1000},
        "figures": None if fig is None else {**fig.to_json(), "price_time": iso(st.last_price_ms)},
        "round_trips": om.ledger.round_trips,
        "fills_count": len(rows),
        # a perps grid keeps its collateral there even with no opening (neutral): no purchase to show then
        "entry": None if entry is None or not Decimal(entry.get("target", "0")) else {
            k: entry.get(k) for k in ("target", "ceiling", "orders", "bought", "spent", "fees", "done", "note", "side")},
        "exit": None if st.exit is None else describe_exit(st.exit, spec),
        "trail_offset": st.offset, "trail_moves": len(st.moves),
        "fills": rows,
        "prices": len(prices),
        # perps: the exchange's funding history rows the grid counted, oldest first
        "funding": [{"time": iso(p.interval_end_ms), "time_ms": p.interval_end_ms, "symbol": p.symbol,
                     "rate": f"{p.rate:f}", "quantity": f"{p.quantity:f}"} for p in funding],
    }


def print_report(r: dict[str, Any], show_fills: bool) -> None:
    g, f = r["grid"], r["figures"]
    q, b = g["quote"], g["base"]
    print(f"grid {g['id']} ({g['status']}) {g['symbol']} {g['mode']}, {len(g['levels'])} levels {g['levels'][0]}.."
          f"{g['levels'][-1]}, {g['quantity']} {b} per order")
    print(f"  parameters: {describe_params(g['params'])}")
    print(f"  started {g['started']}" + (f", stopped {g['stopped']}" if g["stopped"] else "")
          + f"; age {format_duration(g['age_s'])}")
    if r["entry"] is not None:
        e = r["entry"]
        sold = e.get("side") == "Ask"
        print(f"  {'opening' if g['symbol'].endswith('_PERP') else 'entry purchase'}: {'sold' if sold else 'bought'} "
              f"{fmt_amount(Decimal(e['bought']))} of {fmt_amount(Decimal(e['target']))} {b} "
              f"for {fmt_amount(Decimal(e['spent']))} {q} (at {'least' if sold else 'most'} {e['ceiling']}; clientIds "
              f"{', '.join(str(c) for c in e['orders'])})")
    if r["exit"] is not None:
        print(f"  {r['exit']}")
    if r["trail_moves"]:
        print(f"  trailed {r['trail_offset']:+d} step(s) in {r['trail_moves']} move(s)")
    if f is None:
        print("figures: none yet (the grid has not started, or no price has been recorded)")
    else:
        s = f["start_funds"]
        fees = ", ".join(f"{fmt_amount(Decimal(v))} {k}" for k, v in f["fees"].items() if Decimal(v)) or f"0 {q}"
        print()
        print(f"  starting funds      {fmt_amount(Decimal(s['base']))} {b} + {fmt_amount(Decimal(s['quote']), 6)} {q} "
              f"at {s['price']} = {fmt_amount(Decimal(f['start_value']), 6)} {q}")
        print(f"  price               {f['price']} ({f['price_time'] or 'the last fill'})")
        print(f"  equity              {fmt_amount(Decimal(f['equity']), 6)} {q}")
        print(f"  total return        {pct(Decimal(f['total_return']))} on the starting funds")
        print(f"  against holding     {fmt_amount(Decimal(f['vs_hold']), 6)} {q} (the starting funds untouched: "
              f"{fmt_amount(Decimal(f['hold_value']), 6)} {q})")
        print(f"  grid profit         {fmt_amount(Decimal(f['grid_profit']), 6)} {q} from {r['round_trips']} round "
              f"trip(s), net of both fees")
        if g["symbol"].endswith("_PERP"):
            print(f"  funding             {signed(Decimal(f['funding']))} {q} in {len(r['funding'])} payment(s), "
                  f"from the exchange's funding history (+ received, - paid)")
        print(f"  floating PnL        {fmt_amount(Decimal(f['floating_pnl']), 6)} {q}")
        print(f"  fees                {fees} ({fmt_amount(Decimal(f['fees_quote']), 6)} {q} in all)")
        be = f["break_even"]
        print(f"  break-even price    "
              f"{fmt_price(Decimal(be), Decimal(g['levels'][0])) if be is not None else 'none: the grid holds no base'}")
        ay = f["annual_yield"]
        print(f"  annual grid yield   {pct(Decimal(ay)) if ay is not None else 'too early (under 30 days)'}")
    print(f"  fills               {r['fills_count']}")
    if show_fills and r["funding"]:
        print()
        print(f"{'funding interval end':<23}  {'rate':>12}  {'paid (-) / received (+)':>24}")
        for x in r["funding"]:
            print(f"{x['time']:<23}  {x['rate']:>12}  {x['quantity']:>24}")
    if show_fills:
        print()
        print(f"{'time':<23}  {'fill id':>10}  {'order id':>12}  {'clientId':>11}  {'kind':<4}  {'side':<4}  "
              f"{'price':>10}  {'quantity':>10}  {'fee':>12}  {'asset':<5}  round trip")
        for x in r["fills"]:
            print(f"{x['time']:<23}  {x['trade_id']:>10}  {x['order_id']:>12}  {str(x['client_id']):>11}  "
                  f"{x['kind']:<4}  {x['side']:<4}  {x['price']:>10}  {x['quantity']:>10}  {x['fee']:>12}  "
                  f"{x['fee_asset']:<5}  {x['round_trip'] if x['round_trip'] is not None else '-'}")


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    try:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for row in rows:
                w.writerow(row)
    except OSError as e:
        raise InputError(f"cannot write the CSV {path}: {e.strerror}") from None


def picture(saved: SavedGrid, om: OrderManager, fills: list[Fill], prices: list[tuple[int, Decimal]],
            funding: Sequence[FundingPayment] = ()) -> Any:
    """The grid's life as ``plots.Picture``: its price samples (and fills) on their dates, with its equity
    and the starting funds held, each replayed from the fills (and a perp's funding) up to that moment."""
    from gridbot.analysis.plots import Picture
    st, spec = om.risk, saved.spec
    if st.start is None:
        raise InputError("--plot: this grid has not started yet (or was saved by a version that did not record its "
                         "starting funds): nothing to draw")
    points = sorted([(t, p, None) for t, p in prices] + [(f.timestamp_ms, f.price, f) for f in fills],
                    key=lambda x: (x[0], x[2] is None))
    if not points:
        raise InputError("--plot: no price has been recorded for this grid yet (one comes with each statistics line)")
    base, quote = st.start.base, st.start.quote
    times, px, eq, hold = [], [], [], []
    paid = sorted(funding, key=lambda x: x.interval_end_ms)
    for t, p, f in points:
        while paid and paid[0].interval_end_ms <= t:
            quote += paid.pop(0).quantity
        if f is not None:
            moved = f.quantity if f.side is Side.BID else -f.quantity
            base += moved - (f.fee if f.fee_symbol == spec.base else ZERO)
            quote += -moved * f.price - (f.fee if f.fee_symbol == spec.quote else ZERO)
        times.append(datetime.fromtimestamp(t / 1000, tz=timezone.utc))
        px.append(p)
        eq.append(base * p + quote)
        hold.append(st.start.base * p + st.start.quote)
    marks = [(datetime.fromtimestamp(m.time_ms / 1000, tz=timezone.utc), "trail move") for m in st.moves]
    if st.exit is not None:
        marks.append((datetime.fromtimestamp(st.exit.time_ms / 1000, tz=timezone.utc), f"exit: {st.exit.reason}"))
    return Picture(f"grid {saved.id} {spec.symbol} {spec.levels[0]}..{spec.levels[-1]}, {len(spec.levels)} levels: "
                   f"{om.ledger.round_trips} round trips, grid profit {om.ledger.grid_profit:.4f} {spec.quote}",
                   spec.symbol, spec.quote, times, px, spec.levels, eq, hold,
                   [(datetime.fromtimestamp(f.timestamp_ms / 1000, tz=timezone.utc), f.side.value, f.price)
                    for f in fills], marks)


def cmd_report(args: argparse.Namespace) -> int:
    from backpack_api import wall_clock_ms
    cfg = read_config(args.config, need_keys=False)
    if args.plot:
        from gridbot.analysis.plots import require_matplotlib
        require_matplotlib()
    store = open_store(cfg, args.paper, readonly=True)
    try:
        saved, om = saved_grid(store, full=True)
        fills, prices, funding = store.fills(saved.id), store.prices(saved.id), store.funding(saved.id)
    finally:
        store.close()
    report = build_report(saved, om, fills, prices, wall_clock_ms(), funding)
    if args.csv:
        write_csv(args.csv, report["fills"])
    if args.plot:
        from gridbot.analysis.plots import draw
        try:
            draw(picture(saved, om, fills, prices, funding), args.plot)
        except OSError as e:
            raise InputError(f"cannot write the plot {args.plot}: {e.strerror}") from None
    if args.json:
        print(json.dumps(report, indent=2))   # the fills always (--fills lists them in the text report)
    else:
        print_report(report, args.fills)
        for what, path in (("CSV", args.csv), ("plot", args.plot)):
            if path:
                print(f"{what} written to {os.path.abspath(path)}")
    return EXIT_OK
