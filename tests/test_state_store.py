"""The state store: what a manager saves step by step is exactly what a fresh one loads."""
from __future__ import annotations

import itertools
from decimal import Decimal

from grid_calculator import GridMode, GridSpec
from models import Fill, Order, OrderStatus, Side
from order_manager import OrderManager, OrderState
from state_store import StateStore

D = Decimal
GRID = GridSpec("SOL_USDC", "SOL", "USDC", (D(100), D(110), D(120), D(130), D(140)), D(1), GridMode.ARITHMETIC)
PERSISTED_ORDER = ("client_id", "pair", "level", "side", "price", "quantity", "state", "created_ms", "order_id",
                   "sent_ms", "executed", "executed_quote", "fee_quote", "cancel_requested", "closed_ms")
PERSISTED_PAIR = ("index", "side", "opener", "round_trips", "waiting_since")


def snapshot(om: OrderManager) -> dict:
    return {
        "orders": {cid: tuple(getattr(o, f) for f in PERSISTED_ORDER) for cid, o in om.orders.items()},
        "pairs": [tuple(getattr(p, f) for f in PERSISTED_PAIR) for p in om.pairs],
        "pair_orders": [p.order for p in om.pairs],
        "totals": (om.next_seq, om.wait_seq, om.round_trips, om.grid_profit, om.position, om.quote_flow,
                   om.fees, om.fill_count, om.last_fill_ms, frozenset(om.seen_trades)),
    }


def test_every_step_saved_is_what_a_fresh_manager_loads(tmp_path):
    store = StateStore(str(tmp_path / "s.db"))
    om = OrderManager(GRID, tag=9)
    gid = store.create_grid({"symbol": "SOL_USDC"}, GRID, 9, 0)
    oids, trades = itertools.count(1000), itertools.count(1)
    now = itertools.count(10, 10)

    def check():
        store.save(gid, om, next(now))
        fresh = OrderManager(GRID, tag=9)
        store.load(store.active_grid(), fresh)
        want = snapshot(om)
        got = snapshot(fresh)
        # An INTENDED order becomes an unknown outcome on load (it may have been sent), sent no later
        # than its creation if no send time was saved; nothing else changes.
        for o in om.orders.values():
            if o.state is OrderState.INTENDED:
                row = dict(zip(PERSISTED_ORDER, want["orders"][o.client_id]))
                row["state"] = OrderState.UNKNOWN
                row["sent_ms"] = row["sent_ms"] if row["sent_ms"] is not None else row["created_ms"]
                want["orders"][o.client_id] = tuple(row[f] for f in PERSISTED_ORDER)
        for cid in want["orders"]:
            for f, a, b in zip(PERSISTED_ORDER, got["orders"].get(cid, ()), want["orders"][cid]):
                assert a == b, f"order {cid} field {f}: loaded {a!r}, had {b!r}"
        assert got == want

    def place_all(market="121"):
        for p in om.placements(next(now), D(market)):
            om.sending(p.client_id, next(now))
            check()
            om.placed(p.client_id, Order(str(next(oids)), p.client_id, "SOL_USDC", p.side, p.price, p.quantity,
                                         D(0), D(0), OrderStatus.NEW, 0, True), next(now))

    def fill(level, qty):
        o = next(o for o in om.orders.values() if o.level == level and o.state is OrderState.OPEN)
        fee, sym = (D(qty) * D("0.001"), "SOL") if o.side is Side.BID else (o.price * D(qty) * D("0.001"), "USDC")
        om.apply_fill(Fill(next(trades), o.order_id, o.client_id, "SOL_USDC", o.side, o.price, D(qty), fee, sym,
                           True, next(now)))

    om.start(D(121))
    check()
    place_all()
    check()
    fill(1, "0.4")                                   # partial
    check()
    fill(1, "0.6")                                   # complete: pair 1 flips
    check()
    place_all("119")                                 # the counter-order (a sell at 120 rests below 120 only)
    fill(2, "1")                                     # it fills: a round trip
    check()
    assert om.round_trips == 1
    p = om.placements(next(now), D(121))[0]
    om.sending(p.client_id, next(now))
    om.rejected(p.client_id, "INVALID_ORDER", "x", next(now))
    check()
    p = om.placements(next(now) + 10_000, D(121))[0]
    om.sending(p.client_id, next(now))
    om.unknown(p.client_id, next(now))               # its answer was lost
    check()
    for c in om.cancels():
        om.cancel_result(c.client_id, None, next(now))
    check()
    store.close()
