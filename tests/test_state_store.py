"""The state store: what a manager saves step by step is exactly what a fresh one loads."""
from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from grid_calculator import GridMode, GridSpec
from gridbot.core.models import Fill, Order, OrderStatus, Side
from order_manager import OrderManager
from gridbot.core.order_state import OrderState
from gridbot.engine.state_store import StateError, StateStore

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
        "totals": (om.next_seq, om.wait_seq, om.ledger, frozenset(om.seen_trades)),
    }


def test_every_step_saved_is_what_a_fresh_manager_loads(tmp_path):
    store = StateStore(str(tmp_path / "s.db"))
    om = OrderManager(GRID, tag=9)
    gid = store.create_grid({"symbol": "SOL_USDC"}, GRID, 9, 0)
    oids, trades = itertools.count(1000), itertools.count(1)
    now = itertools.count(10, 10)

    def check():
        store.save(gid, om.take_changes(), next(now))
        fresh = OrderManager.from_snapshot(GRID, 9, store.load(store.active_grid()))
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
        for p in om.take_placements(next(now), D(market)):
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
    assert om.ledger.round_trips == 1
    p = om.take_placements(next(now), D(121))[0]
    om.sending(p.client_id, next(now))
    om.rejected(p.client_id, "INVALID_ORDER", "x", next(now))
    check()
    p = om.take_placements(next(now) + 10_000, D(121))[0]
    om.sending(p.client_id, next(now))
    om.unknown(p.client_id, next(now))               # its answer was lost
    check()
    for c in om.request_cancels():
        om.news.cancel_result(c.client_id, c.order_id, None, next(now))
    check()
    store.close()


def test_two_grids_with_the_same_tag_keep_their_own_orders(tmp_path):
    store = StateStore(str(tmp_path / "s.db"))
    managers = []
    for n in (1, 2):
        gid = store.create_grid({"n": n}, GRID, 5, 0)
        om = OrderManager(GRID, tag=5)
        om.start(D(121))
        om.take_placements(n * 1000, D(121))      # the same clientIds in both grids, created at n * 1000
        store.save(gid, om.take_changes(), 1)
        managers.append((gid, om))
    for gid, om in managers:
        snap = store.load(store.grid(gid))
        assert sorted((o.client_id, o.created_ms) for o in snap.orders) == \
            sorted((o.client_id, o.created_ms) for o in om.orders.values())
    store.close()


def test_a_new_grid_gets_an_unused_tag_then_the_oldest_stopped_one(tmp_path):
    store = StateStore(str(tmp_path / "s.db"))
    for tag in range(1, 256):
        gid = store.create_grid({"tag": tag}, GRID, tag, 0)
        store.set_status(gid, "stopped", 1)
    assert store.free_tag(lambda free: free[0]) == 1           # all used: the one used longest ago
    store.set_status(1, "running", 2)
    assert store.free_tag(lambda free: free[0]) == 2           # never a running grid's
    store.close()


def test_a_version_1_state_file_is_migrated(tmp_path):
    import sqlite3
    path = str(tmp_path / "v1.db")
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_V1_ORDERS)
    conn.execute("INSERT INTO orders VALUES (16777217, 1, 0, 0, 'Bid', '100', '1', 'open', 5, 6, 'x', '0', '0', "
                 "'0', 0, NULL)")
    conn.commit()
    conn.close()
    store = StateStore(path)
    assert store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "4"
    assert [tuple(r) for r in store.conn.execute("SELECT grid_id, client_id, order_id FROM orders")] == [(1, 16777217, "x")]
    store.close()


def test_a_version_2_state_file_gains_the_risk_column_and_its_grid_resumes(tmp_path):
    import sqlite3
    path = str(tmp_path / "v2.db")
    store = StateStore(path)
    gid = store.create_grid({"a": 1}, GRID, 7, 0)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE grids DROP COLUMN risk")   # as version 2 wrote it
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    store = StateStore(path)
    saved = store.grid(gid)
    assert saved.risk.offset == 0 and saved.risk.exit is None and saved.risk.triggered
    assert store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "4"
    store.close()


SCHEMA_V1_ORDERS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE orders (
    client_id INTEGER PRIMARY KEY, grid_id INTEGER NOT NULL, pair INTEGER NOT NULL, level INTEGER NOT NULL,
    side TEXT NOT NULL, price TEXT NOT NULL, quantity TEXT NOT NULL, state TEXT NOT NULL,
    created_ms INTEGER NOT NULL, sent_ms INTEGER, order_id TEXT, executed TEXT NOT NULL,
    executed_quote TEXT NOT NULL, fee_quote TEXT NOT NULL, cancel_requested INTEGER NOT NULL,
    closed_ms INTEGER
);
"""


def test_a_version_3_state_file_keys_its_fills_by_grid_and_keeps_them(tmp_path):
    """Version 3 kept a fill once per (symbol, trade id): the second paper grid's fills, whose simulated
    exchange also began at trade 1, were dropped. Version 4 keys them by grid, and migrates the old file."""
    import sqlite3
    path = str(tmp_path / "v3.db")
    store = StateStore(path)
    gid = store.create_grid({"a": 1}, GRID, 7, 0)
    store.close()
    conn = sqlite3.connect(path)
    conn.executescript("""
        DROP TABLE fills;
        CREATE TABLE fills (
            symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, grid_id INTEGER NOT NULL, client_id INTEGER,
            order_id TEXT NOT NULL, side TEXT NOT NULL, price TEXT NOT NULL, quantity TEXT NOT NULL,
            fee TEXT NOT NULL, fee_symbol TEXT NOT NULL, is_maker INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL,
            PRIMARY KEY (symbol, trade_id));
        INSERT INTO fills VALUES ('SOL_USDC', 1, 1, 5, 'o1', 'Bid', '100', '1', '0.001', 'SOL', 1, 1000);
        UPDATE meta SET value = '3' WHERE key = 'schema_version';""")
    conn.commit()
    conn.close()
    store = StateStore(path)
    gid2 = store.create_grid({"a": 2}, GRID, 8, 0)
    with store.conn:                                      # the second grid's own trade 1 is kept beside the first's
        store.conn.execute("INSERT INTO fills VALUES ('SOL_USDC', 1, ?, 9, 'o9', 'Ask', '110', '1', '0.11', 'USDC', 1, "
                           "2000)", (gid2,))
    assert [f.order_id for f in store.fills(gid)] == ["o1"] and [f.order_id for f in store.fills(gid2)] == ["o9"]
    assert store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "4"
    store.close()


def test_a_state_file_of_a_newer_version_is_refused_with_one_clear_line(tmp_path):
    import sqlite3
    path = str(tmp_path / "new.db")
    StateStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError) as e:
        StateStore(path)
    assert "written by a newer version of the bot (state schema 99" in str(e.value) and "\n" not in str(e.value)


def test_a_resume_loads_live_and_recent_orders_only_and_report_loads_them_all(tmp_path):
    from order_manager import RETAIN_MS
    store = StateStore(str(tmp_path / "s.db"))
    om = OrderManager(GRID, tag=5)
    om.start(D("121"))
    places = om.take_actions(0, D("121"))
    for i, p in enumerate(places):
        om.sending(p.client_id, 0)
        om.placed(p.client_id, Order(f"o{i}", p.client_id, "SOL_USDC", p.side, p.price, p.quantity, D(0), D(0),
                                     OrderStatus.NEW, 0, True), 0)
    gid = store.create_grid({}, GRID, 5, 0)
    first = next(o for o in om.live_orders() if o.side is Side.BID)
    om.apply_fill(Fill(1, first.order_id, first.client_id, "SOL_USDC", Side.BID, first.price, first.quantity,
                       D("0.001"), "SOL", True, 10))
    store.save(gid, om.take_changes(), 10)
    store.save(gid, om.take_changes(), 10 + RETAIN_MS + 1)      # the last save, long after that fill
    saved = store.grid(gid)
    light = OrderManager.from_snapshot(GRID, 5, store.load(saved))
    assert first.client_id not in light.orders and 1 not in light.seen_trades
    assert len(light.live_orders()) == len(om.live_orders()) and light.ledger.fill_count == 1
    full = OrderManager.from_snapshot(GRID, 5, store.load(saved, full=True))
    assert first.client_id in full.orders and 1 in full.seen_trades
    store.close()
