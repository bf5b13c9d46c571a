"""All SQL: the saved state of grids, so a restart resumes exactly where the bot was.

stdlib ``sqlite3`` in WAL mode (``status`` reads while the bot writes). Only the main thread writes.
Each ``save`` is one transaction holding everything that changed: order intents, what the exchange
said about each order, new fills (unique by symbol and trade id), the pairs and the accounting. The bot
saves an order's intent, ``clientId`` included, before it sends the order, so after a crash every
``clientId`` that may exist on the exchange is here.

A grid is ``running`` (resumable: it crashed, or stopped with ``on_exit: keep``), ``stopped`` (its orders
were cancelled at a graceful stop) or ``reset`` (replaced by ``--reset``). Its identity is its parameters
(``params``): a running grid with other parameters is refused unless the user resets it.
"""
from __future__ import annotations

import functools
import json
import os
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Collection, Sequence

from gridbot.core.accounting import Leg, Ledger
from gridbot.core.errors import InputError
from grid_calculator import GridMode, GridSpec
from gridbot.core.models import Fill, FundingPayment, Side
from gridbot.core.order_state import Changes, GridOrder, OrderState, Pair, Snapshot
from gridbot.core.risk import RiskState
from order_manager import RETAIN_MS

SCHEMA_VERSION = 4

ORDERS_TABLE = """
CREATE TABLE {name} (
    client_id INTEGER NOT NULL, grid_id INTEGER NOT NULL, pair INTEGER NOT NULL, level INTEGER NOT NULL,
    side TEXT NOT NULL, price TEXT NOT NULL, quantity TEXT NOT NULL, state TEXT NOT NULL,
    created_ms INTEGER NOT NULL, sent_ms INTEGER, order_id TEXT, executed TEXT NOT NULL,
    executed_quote TEXT NOT NULL, fee_quote TEXT NOT NULL, cancel_requested INTEGER NOT NULL,
    closed_ms INTEGER,
    PRIMARY KEY (grid_id, client_id)
);
"""

FILLS_TABLE = """
CREATE TABLE {name} (
    symbol TEXT NOT NULL, trade_id INTEGER NOT NULL, grid_id INTEGER NOT NULL, client_id INTEGER,
    order_id TEXT NOT NULL, side TEXT NOT NULL, price TEXT NOT NULL, quantity TEXT NOT NULL,
    fee TEXT NOT NULL, fee_symbol TEXT NOT NULL, is_maker INTEGER NOT NULL, timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (grid_id, symbol, trade_id)
);
"""

SCHEMA = ORDERS_TABLE.format(name="IF NOT EXISTS orders") + FILLS_TABLE.format(name="IF NOT EXISTS fills") + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grids (
    id INTEGER PRIMARY KEY,
    params TEXT NOT NULL,
    symbol TEXT NOT NULL, base TEXT NOT NULL, quote TEXT NOT NULL,
    levels TEXT NOT NULL, quantity TEXT NOT NULL, mode TEXT NOT NULL, post_only INTEGER NOT NULL,
    tag INTEGER NOT NULL, status TEXT NOT NULL,
    created_ms INTEGER NOT NULL, stopped_ms INTEGER, checkpoint_ms INTEGER, updated_ms INTEGER,
    next_seq INTEGER NOT NULL, wait_seq INTEGER NOT NULL,
    round_trips INTEGER NOT NULL, grid_profit TEXT NOT NULL, position TEXT NOT NULL,
    quote_flow TEXT NOT NULL, fees TEXT NOT NULL, fill_count INTEGER NOT NULL, last_fill_ms INTEGER NOT NULL,
    risk TEXT
);
CREATE TABLE IF NOT EXISTS pairs (
    grid_id INTEGER NOT NULL, idx INTEGER NOT NULL, side TEXT NOT NULL, opener TEXT,
    round_trips INTEGER NOT NULL, waiting_since INTEGER NOT NULL,
    PRIMARY KEY (grid_id, idx)
);
CREATE INDEX IF NOT EXISTS orders_by_grid ON orders (grid_id, state);
CREATE TABLE IF NOT EXISTS prices (
    grid_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, price TEXT NOT NULL,
    PRIMARY KEY (grid_id, ts_ms)
);
CREATE TABLE IF NOT EXISTS funding (
    grid_id INTEGER NOT NULL, symbol TEXT NOT NULL, interval_end_ms INTEGER NOT NULL, quantity TEXT NOT NULL,
    rate TEXT NOT NULL,
    PRIMARY KEY (grid_id, symbol, interval_end_ms)
);
"""



class StateError(InputError):
    """The state file cannot be used; the message says what to do."""


@dataclass(frozen=True)
class SavedGrid:
    id: int
    params: dict
    spec: GridSpec
    tag: int
    status: str
    created_ms: int
    stopped_ms: int | None
    checkpoint_ms: int | None
    updated_ms: int | None
    risk: RiskState = field(default_factory=RiskState)


def _d(text: str) -> Decimal:
    d = Decimal(text)
    if not d.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return d


def _s(value: Decimal) -> str:
    return f"{value:f}"


def _damaged(path: str, detail: str) -> StateError:
    return StateError(f"the state file {path} is damaged ({detail}): move it aside (mv {path} {path}.bad) and "
                      f"start again; with --adopt the new grid takes over this grid's orders still on the book")


def _checked(method: Callable) -> Callable:
    """A read of saved state: a file that is not a database, or rows whose values make no sense, is the
    user's to deal with (one line, exit 2), never a traceback."""
    @functools.wraps(method)
    def read(self: "StateStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StateError:
            raise
        except sqlite3.DatabaseError as e:
            raise StateError(f"cannot read the state file {self.path}: {e}; move it aside (mv {self.path} "
                             f"{self.path}.bad) and start again, with --adopt to take its orders over") from None
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise _damaged(self.path, f"{type(e).__name__}: {e}") from None
    return read


def _private_file(path: str) -> None:
    """Create the database file readable by its owner only (SQLite gives its -wal and -shm files the
    database file's mode), or make an existing one so."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class StateStore:
    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        if "\0" in path:
            raise StateError(f"state.file {path!r} holds a NUL character")
        try:
            if readonly:
                if not os.path.exists(path):
                    raise StateError(f"no saved state at {path}: the bot has not run with this config yet")
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
                self.conn.execute("SELECT count(*) FROM grids").fetchone()
            else:
                _private_file(path)
                # One thread at a time uses a store (the bot's main thread), though not always the
                # thread that opened it: a bot run in a thread, as tests and benchmarks do.
                self.conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                # Durability: see save(). FULL syncs the WAL (and every commit before it) to disk.
                self.conn.execute("PRAGMA synchronous=FULL")
                self._synchronous = "FULL"
                with self.conn:
                    self.conn.executescript(SCHEMA)
                    self._migrate()
        except OSError as e:
            raise StateError(f"cannot open the state file {path}: {e.strerror} (set state.file)") from None
        except sqlite3.DatabaseError as e:
            raise StateError(f"cannot use the state file {path}: {e}; if it is not a state file of this bot, set "
                             f"state.file to another path; if it is damaged, move it aside (mv {path} {path}.bad) "
                             f"and start again, with --adopt to take its orders over") from None
        self.conn.row_factory = sqlite3.Row
        self._saved_risk: dict[int, str | None] = {}

    def _migrate(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StateError(f"the state file {self.path} was written by a newer version of the bot (state schema "
                             f"{row[0]}; this version reads up to {SCHEMA_VERSION}): run that version, or upgrade "
                             f"(see the README's upgrade section)")
        if row is not None and row[0] == "1":
            # Version 1 keyed orders by clientId alone, so two grids whose tags coincided could
            # overwrite each other's rows: key them by (grid, clientId).
            self.conn.execute(ORDERS_TABLE.format(name="orders_v2"))
            self.conn.execute("INSERT INTO orders_v2 SELECT * FROM orders")
            self.conn.execute("DROP TABLE orders")
            self.conn.execute("ALTER TABLE orders_v2 RENAME TO orders")
            self.conn.execute("CREATE INDEX IF NOT EXISTS orders_by_grid ON orders (grid_id, state)")
        pk = [r[1] for r in sorted(self.conn.execute("PRAGMA table_info(fills)"), key=lambda r: r[5]) if r[5]]
        if pk == ["symbol", "trade_id"]:
            # Version 4: fills belong to their grid (two paper grids' simulated exchanges may both have
            # had a trade 1); a fill was kept once per (symbol, trade id) before.
            self.conn.execute(FILLS_TABLE.format(name="fills_v4"))
            self.conn.execute("INSERT INTO fills_v4 SELECT * FROM fills")
            self.conn.execute("DROP TABLE fills")
            self.conn.execute("ALTER TABLE fills_v4 RENAME TO fills")
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(grids)")}
        if "risk" not in columns:
            # Version 3: exits and trailing (risk.py), saved with the grid as JSON.
            self.conn.execute("ALTER TABLE grids ADD COLUMN risk TEXT")
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------------------ grids
    @_checked
    def active_grid(self, symbol: str | None = None) -> SavedGrid | None:
        """The running grid (the one a start resumes), if any."""
        q = "SELECT * FROM grids WHERE status = 'running'"
        args: tuple = ()
        if symbol is not None:
            q += " AND symbol = ?"
            args = (symbol,)
        row = self.conn.execute(q + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return self._grid(row) if row else None

    @_checked
    def grid(self, grid_id: int) -> SavedGrid | None:
        row = self.conn.execute("SELECT * FROM grids WHERE id = ?", (grid_id,)).fetchone()
        return self._grid(row) if row else None

    @_checked
    def latest_grid(self) -> SavedGrid | None:
        row = self.conn.execute("SELECT * FROM grids ORDER BY id DESC LIMIT 1").fetchone()
        return self._grid(row) if row else None

    def _grid(self, row: sqlite3.Row) -> SavedGrid:
        levels = tuple(_d(x) for x in json.loads(row["levels"]))
        if len(levels) < 2 or any(not 0 < a < b for a, b in zip(levels, levels[1:])):
            raise _damaged(self.path, f"grid {row['id']} has no valid list of levels")
        quantity, params = _d(row["quantity"]), json.loads(row["params"])
        if not quantity > 0 or not isinstance(params, dict) or not 1 <= row["tag"] <= 255:
            raise _damaged(self.path, f"grid {row['id']} has an invalid quantity, tag or parameters")
        spec = GridSpec(row["symbol"], row["base"], row["quote"], levels, quantity, GridMode(row["mode"]),
                        bool(row["post_only"]))
        risk = RiskState.from_json(json.loads(row["risk"]) if row["risk"] else None)
        return SavedGrid(row["id"], params, spec, row["tag"], row["status"],
                         row["created_ms"], row["stopped_ms"], row["checkpoint_ms"], row["updated_ms"], risk)

    def free_tag(self, rng: Callable[[Sequence[int]], int], avoid: Collection[int] = ()) -> int:
        """A tag (the top byte of every clientId) for a new grid, never one in ``avoid`` (the tags of the
        orders on the account): one no grid in this file has used, or, after 255 grids, the one used
        longest ago by a grid that is not running. Rows never collide (orders are keyed by grid and
        clientId), and no running grid's orders can share a clientId."""
        used = {r[0]: r[1] for r in self.conn.execute("SELECT tag, MAX(id) FROM grids GROUP BY tag")}
        free = [t for t in range(1, 256) if t not in used and t not in avoid]
        if free:
            return rng(free)
        running = {r[0] for r in self.conn.execute("SELECT tag FROM grids WHERE status = 'running'")}
        reusable = [t for t in used if t not in running and t not in avoid]
        if reusable:
            return min(reusable, key=lambda t: used[t])
        # Every tag is taken somewhere: orders are still told apart by side, price and quantity.
        return rng([t for t in range(1, 256) if t not in running] or list(range(1, 256)))

    def create_grid(self, params: dict, spec: GridSpec, tag: int, now_ms: int, risk: RiskState | None = None) -> int:
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO grids (params, symbol, base, quote, levels, quantity, mode, post_only, tag, "
                "status, created_ms, next_seq, wait_seq, round_trips, grid_profit, position, quote_flow, "
                "fees, fill_count, last_fill_ms, risk) VALUES (?,?,?,?,?,?,?,?,?, 'running', ?, 1, 0, 0, '0', '0', "
                "'0', '{}', 0, 0, ?)",
                (json.dumps(params, sort_keys=True), spec.symbol, spec.base, spec.quote,
                 json.dumps([_s(x) for x in spec.levels]), _s(spec.quantity), spec.mode.value,
                 int(spec.post_only), tag, now_ms, json.dumps((risk or RiskState()).to_json())))
        return int(cur.lastrowid)

    def set_status(self, grid_id: int, status: str, now_ms: int) -> None:
        with self.conn:
            self.conn.execute("UPDATE grids SET status = ?, stopped_ms = ?, updated_ms = ? WHERE id = ?",
                              (status, now_ms if status != "running" else None, now_ms, grid_id))

    def set_checkpoint(self, grid_id: int, now_ms: int) -> None:
        with self.conn:
            self.conn.execute("UPDATE grids SET checkpoint_ms = ? WHERE id = ?", (now_ms, grid_id))

    # ------------------------------------------------------------------------------ saving
    def _sync(self, mode: str) -> None:
        if mode != getattr(self, "_synchronous", None):
            self.conn.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def save(self, grid_id: int, changes: Changes, now_ms: int) -> None:
        """Write what changed (``OrderManager.take_changes``) in one transaction.

        Durability against power loss: a save that changes the grid's decisions (an exit, a trail move, the
        trigger, a purchase or a sale: ``risk``) is synced to disk before it returns (``synchronous=FULL``,
        which also syncs every earlier commit). A save of order intents and fills alone is synced with the
        next such commit or checkpoint (``NORMAL``): a power cut may roll it back, and the restart then
        recovers exactly what it lost from the exchange (``ExchangeNews.recover``: the sequence moves past
        every clientId of the grid's tag, lost orders are taken back, lost fills re-read), so nothing is
        sent twice. That keeps an fsync off every counter-order's path."""
        lg = changes.ledger
        risk = json.dumps(changes.risk, sort_keys=True) if changes.risk is not None else None
        self._sync("FULL" if risk != self._saved_risk.get(grid_id) else "NORMAL")
        self._saved_risk[grid_id] = risk
        with self.conn:
            self.conn.executemany(
                "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(grid_id, client_id) "
                "DO UPDATE SET state = excluded.state, sent_ms = excluded.sent_ms, order_id = excluded.order_id, "
                "executed = excluded.executed, executed_quote = excluded.executed_quote, "
                "fee_quote = excluded.fee_quote, cancel_requested = excluded.cancel_requested, "
                "closed_ms = excluded.closed_ms",
                [(o.client_id, grid_id, o.pair, o.level, o.side.value, _s(o.price), _s(o.quantity),
                  o.state.value, o.created_ms, o.sent_ms, o.order_id, _s(o.executed), _s(o.executed_quote),
                  _s(o.fee_quote), int(o.cancel_requested), o.closed_ms) for o in changes.orders])
            self.conn.executemany(
                "INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(f.symbol, f.trade_id, grid_id, f.client_id, f.order_id, f.side.value, _s(f.price),
                  _s(f.quantity), _s(f.fee), f.fee_symbol, int(f.is_maker), f.timestamp_ms)
                 for f in changes.fills])
            self.conn.executemany(
                "INSERT INTO pairs VALUES (?,?,?,?,?,?) ON CONFLICT(grid_id, idx) DO UPDATE SET "
                "side = excluded.side, opener = excluded.opener, round_trips = excluded.round_trips, "
                "waiting_since = excluded.waiting_since",
                [(grid_id, p.index, p.side.value, _opener_json(p.opener), p.round_trips, p.waiting_since)
                 for p in changes.pairs])
            self.conn.execute(
                "UPDATE grids SET next_seq = ?, wait_seq = ?, round_trips = ?, grid_profit = ?, position = ?, "
                "quote_flow = ?, fees = ?, fill_count = ?, last_fill_ms = ?, updated_ms = ? WHERE id = ?",
                (changes.next_seq, changes.wait_seq, lg.round_trips, _s(lg.grid_profit), _s(lg.position),
                 _s(lg.quote_flow), json.dumps({k: _s(v) for k, v in lg.fees.items()}, sort_keys=True),
                 lg.fill_count, lg.last_fill_ms, now_ms, grid_id))
            if changes.risk is not None:
                # The trail offset and the levels it gives, the trigger, an exit and its sale: with the
                # orders, in one transaction.
                self.conn.execute("UPDATE grids SET risk = ?, levels = ? WHERE id = ?",
                                  (json.dumps(changes.risk), json.dumps([_s(x) for x in changes.levels]), grid_id))

    def add_price(self, grid_id: int, ts_ms: int, price: Decimal) -> None:
        """A price sample (one per statistics line): the price line of ``report --plot``."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO prices VALUES (?,?,?)", (grid_id, ts_ms, _s(price)))

    @_checked
    def prices(self, grid_id: int) -> list[tuple[int, Decimal]]:
        return [(r[0], _d(r[1])) for r in self.conn.execute(
            "SELECT ts_ms, price FROM prices WHERE grid_id = ? ORDER BY ts_ms", (grid_id,))]

    def add_funding(self, grid_id: int, payments: Sequence[FundingPayment]) -> list[FundingPayment]:
        """A perps grid's funding payments, as the exchange's funding history lists them (one per symbol and
        interval). Returns those not saved before: the ledger counts each once."""
        new = []
        with self.conn:
            for p in payments:
                cur = self.conn.execute("INSERT OR IGNORE INTO funding VALUES (?,?,?,?,?)",
                                        (grid_id, p.symbol, p.interval_end_ms, _s(p.quantity), _s(p.rate)))
                if cur.rowcount:
                    new.append(p)
        return new

    @_checked
    def funding(self, grid_id: int) -> list[FundingPayment]:
        """The grid's funding payments, oldest first (none in a state file written before perps grids)."""
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'funding'").fetchone():
            return []
        return [FundingPayment(r[0], _d(r[1]), _d(r[2]), r[3]) for r in self.conn.execute(
            "SELECT symbol, quantity, rate, interval_end_ms FROM funding WHERE grid_id = ? ORDER BY interval_end_ms",
            (grid_id,))]

    # ------------------------------------------------------------------------------ reading
    @_checked
    def fills(self, grid_id: int) -> list[Fill]:
        """Every fill of the grid, in trade order."""
        return [_fill_row(r) for r in self.conn.execute(
            "SELECT * FROM fills WHERE grid_id = ? ORDER BY timestamp_ms, trade_id", (grid_id,))]

    def fees_in_quote(self, saved: SavedGrid) -> Decimal:
        """Every fee of the grid valued in quote (a fee in base at its fill's price), read row by row."""
        total = Decimal(0)
        base, quote = saved.spec.base, saved.spec.quote
        for fee, symbol, price in self.conn.execute("SELECT fee, fee_symbol, price FROM fills WHERE grid_id = ?",
                                                    (saved.id,)):
            if symbol == base:
                total += _d(fee) * _d(price)
            elif symbol == quote:
                total += _d(fee)
        return total

    # ------------------------------------------------------------------------------ loading
    @_checked
    def load(self, saved: SavedGrid, *, full: bool = False) -> Snapshot:
        """The saved state of a grid, for ``OrderManager.from_snapshot``: its live orders and those that
        finished within ``RETAIN_MS`` of its last save, with their trade ids and every trade id of that
        time (``full``: every order, for ``report``). A grid with a year of fills resumes in moments."""
        g = self.conn.execute("SELECT * FROM grids WHERE id = ?", (saved.id,)).fetchone()
        cutoff = (g["updated_ms"] or 0) - RETAIN_MS
        n_pairs = len(saved.spec.levels) - 1
        offset = saved.risk.offset
        # Pairs a trail move dropped stay in the table (history); the grid is its window's pairs.
        pairs = tuple(Pair(index=r["idx"], side=Side(r["side"]), opener=_opener(r["opener"]),
                           round_trips=r["round_trips"], waiting_since=r["waiting_since"])
                      for r in self.conn.execute("SELECT * FROM pairs WHERE grid_id = ? AND idx >= ? AND idx < ? "
                                                 "ORDER BY idx", (saved.id, offset, offset + n_pairs)))
        orders = tuple(GridOrder(client_id=r["client_id"], pair=r["pair"], level=r["level"], side=Side(r["side"]),
                                 price=_d(r["price"]), quantity=_d(r["quantity"]), state=OrderState(r["state"]),
                                 created_ms=r["created_ms"], order_id=r["order_id"], sent_ms=r["sent_ms"],
                                 executed=_d(r["executed"]), executed_quote=_d(r["executed_quote"]),
                                 fee_quote=_d(r["fee_quote"]), cancel_requested=bool(r["cancel_requested"]),
                                 closed_ms=r["closed_ms"])
                       for r in self.conn.execute(
                           "SELECT * FROM orders WHERE grid_id = ?" + ("" if full else
                           " AND (state IN ('intended', 'unknown', 'open') OR closed_ms IS NULL OR closed_ms >= ?)"),
                           (saved.id,) if full else (saved.id, cutoff)))
        by_cid = {o.client_id: o for o in orders}
        since = min([cutoff, *(o.created_ms for o in orders)]) - 60_000 if not full else 0
        recent: set[int] = set()
        for trade_id, client_id, ts in self.conn.execute(
                "SELECT trade_id, client_id, timestamp_ms FROM fills WHERE grid_id = ? AND timestamp_ms >= ? "
                "ORDER BY timestamp_ms, trade_id", (saved.id, since)):
            o = by_cid.get(client_id)
            if o is not None:
                o.trade_ids.append(trade_id)
                recent.add(trade_id)
            elif ts >= cutoff or full:
                recent.add(trade_id)
        trades = frozenset(recent)
        ledger = Ledger(saved.spec.base, saved.spec.quote, {k: _d(v) for k, v in json.loads(g["fees"]).items()},
                        _d(g["position"]), _d(g["quote_flow"]), _d(g["grid_profit"]), g["round_trips"],
                        g["fill_count"], g["last_fill_ms"], self.fees_in_quote(saved),
                        sum((p.quantity for p in self.funding(saved.id)), Decimal(0)))
        all_pairs = self.conn.execute("SELECT count(*) FROM pairs WHERE grid_id = ?", (saved.id,)).fetchone()[0]
        window = range(offset, offset + n_pairs)
        if (sorted(p.index for p in pairs) != list(window) and (pairs or all_pairs)) or any(
                saved.spec.pair_level(o.pair, o.side) != o.level
                # outside the window only when a trail move left it there (being cancelled)
                or (o.pair not in window and not saved.risk.moves)
                or (o.pair in window and saved.spec.levels[o.level - offset] != o.price)
                for o in orders if o.state.live):
            raise _damaged(self.path, f"grid {saved.id}'s pairs or orders do not fit its levels")
        return Snapshot(pairs, orders, trades, g["next_seq"], g["wait_seq"], ledger, saved.risk)


def _fill_row(r: sqlite3.Row) -> Fill:
    return Fill(r["trade_id"], r["order_id"], r["client_id"], r["symbol"], Side(r["side"]), _d(r["price"]),
                _d(r["quantity"]), _d(r["fee"]), r["fee_symbol"], bool(r["is_maker"]), r["timestamp_ms"])


def _opener_json(opener: Leg | None) -> str | None:
    if opener is None:
        return None
    side, qty, quote, fee = opener
    return json.dumps([side.value, _s(qty), _s(quote), _s(fee)])


def _opener(text: str | None) -> Leg | None:
    if text is None:
        return None
    side, qty, quote, fee = json.loads(text)
    return Side(side), _d(qty), _d(quote), _d(fee)
