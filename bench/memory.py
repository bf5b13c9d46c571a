"""A year of fills in bounded memory, and a fast resume of a grid with a long history.

    python bench/memory.py [--fills 100000]

Part 1 drives the grid's core as the running bot does (``OrderManager`` with its ``StateStore``, every
change saved, one fill a second of grid time) through ``--fills`` complete fills, and prints the
process's resident memory (RSS) after 1,000 fills and after all of them (goal: at most 10 MB more).
Finished orders and their trade ids leave memory ``RETAIN_MS`` after they close; the state file keeps
them for the figures and ``report``.

Part 2 times what a restart does with that state file (open it, load the grid, rebuild its manager;
goal: at most 1 s), and checks that the resumed grid carries the same figures.

The state file lives in /dev/shm when there is one (the benchmark measures memory and the load, not the
disk's fsync).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from grid_calculator import GridMode, GridSpec  # noqa: E402
from gridbot.core.models import Fill, Order, OrderStatus, Side  # noqa: E402
from gridbot.engine.state_store import StateStore  # noqa: E402
from order_manager import OrderManager  # noqa: E402

D = Decimal
LEVELS = tuple(D(140) + 2 * i for i in range(10))
GRID = GridSpec("SOL_USDC", "SOL", "USDC", LEVELS, D("0.5"), GridMode.ARITHMETIC)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def drive(store: StateStore, gid: int, om: OrderManager, fills: int, report_at: int) -> tuple[float, float]:
    """Fill the order nearest the price, over and over: the price walks up and down the grid."""
    trade, oid, now = 0, 0, 1_700_000_000_000
    price, direction = D(149), 1
    at_report = 0.0
    for n in range(1, fills + 1):
        for p in om.take_placements(now, price):
            oid += 1
            om.sending(p.client_id, now)
            om.placed(p.client_id, Order(str(oid), p.client_id, GRID.symbol, p.side, p.price, p.quantity, D(0), D(0),
                                         OrderStatus.NEW, now, True), now)
        side = Side.ASK if direction > 0 else Side.BID
        target = [o for o in om.live_orders() if o.side is side]
        if not target:
            direction = -direction
            continue
        o = min(target, key=lambda x: abs(x.price - price))
        price = o.price
        trade += 1
        fee = o.quantity * D("0.0008") if side is Side.BID else o.price * o.quantity * D("0.0008")
        om.apply_fill(Fill(trade, o.order_id or "", o.client_id, GRID.symbol, side, o.price, o.quantity, fee,
                           "SOL" if side is Side.BID else "USDC", True, now))
        store.save(gid, om.take_changes(), now)
        om.take_events()                     # the engine logs and forgets them after every step
        now += 1000
        if price >= LEVELS[-2] or price <= LEVELS[1]:
            direction = -direction
        if n == report_at:
            at_report = rss_mb()
    return at_report, rss_mb()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fills", type=int, default=100_000)
    args = ap.parse_args()
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = os.path.join(tmp, "bench.db")
        store = StateStore(path)
        om = OrderManager(GRID, tag=9)
        om.start(D(149))
        gid = store.create_grid({"bench": 1}, GRID, 9, 1_700_000_000_000, om.risk)
        store.save(gid, om.take_changes(), 1_700_000_000_000)
        t0 = time.perf_counter()
        at_1k, at_end = drive(store, gid, om, args.fills, 1000)
        drive_s = time.perf_counter() - t0
        print(f"part 1: {om.ledger.fill_count} fills, {om.ledger.round_trips} round trips in {drive_s:.1f} s")
        print(f"  RSS after 1,000 fills {at_1k:.1f} MB, after {args.fills:,} fills {at_end:.1f} MB: "
              f"+{at_end - at_1k:.1f} MB (goal: at most +10 MB)")
        print(f"  in memory now: {len(om.orders)} orders, {len(om.seen_trades)} trade ids")
        figures = (om.ledger.fill_count, om.ledger.round_trips, om.ledger.grid_profit, om.ledger.position)
        store.close()
        t0 = time.perf_counter()
        store = StateStore(path)
        saved = store.active_grid()
        assert saved is not None
        resumed = OrderManager.from_snapshot(saved.spec, saved.tag, store.load(saved))
        resume_s = time.perf_counter() - t0
        store.close()
        same = (resumed.ledger.fill_count, resumed.ledger.round_trips, resumed.ledger.grid_profit,
                resumed.ledger.position) == figures
        print(f"part 2: resumed a grid with {resumed.ledger.fill_count:,} fills in {resume_s * 1000:.0f} ms "
              f"(goal: at most 1 s); {len(resumed.orders)} orders loaded; figures {'equal' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
