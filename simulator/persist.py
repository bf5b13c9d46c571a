"""An exchange's accounts, orders and fills to a JSON file and back: paper mode on live prices keeps its
simulated account across restarts, so a restarted bot resumes its paper grid as it resumes a real one.

What is kept: every account's balances, every order (open ones go back on the book), every fill, each
market's next trade id and the next order id (ids never repeat: the bot de-duplicates fills by trade
id); on perps each account's positions (open and closed), leverage limit and funding and settlement
ledgers. What is not: the price (the live feed brings the market's own), the journal, the event streams.
The file is written whole to a temporary file and renamed into place, mode 0600.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

from .engine import Exchange
from .positions import Position
from .records import Account, Balance, Fill, Order

VERSION = 1
_DECIMAL_FIELDS = {f.name for cls in (Order, Fill, Position) for f in fields(cls)
                   if "Decimal" in str(f.type)}


def _plain(d: dict) -> dict:
    return {k: (f"{v:f}" if isinstance(v, Decimal) else v) for k, v in d.items()}


def _typed(d: dict) -> dict:
    return {k: (Decimal(v) if k in _DECIMAL_FIELDS and v is not None else v) for k, v in d.items()}


def dump(ex: Exchange, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exchange's accounts as JSON-able data; ``extra`` keys are saved beside them (paper mode's key)."""
    with ex.lock:
        return {
            "version": VERSION,
            "accounts": {k: {"created_us": a.created_us,
                             "balances": {s: [f"{b.available:f}", f"{b.locked:f}"] for s, b in a.balances.items()},
                             "leverage_limit": f"{a.leverage_limit:f}",
                             "positions": [_plain(asdict(p)) for p in a.positions.values()],
                             "closed_positions": [_plain(asdict(p)) for p in a.closed_positions],
                             "funding_rows": a.funding_rows, "settlements": a.settlements}
                         for k, a in ex.accounts.items()},
            "orders": [_plain(asdict(o)) for o in ex.orders.values()],
            "fills": [_plain(asdict(f)) for f in ex.fills],
            "next_trade_ids": {s: m.next_trade_id for s, m in ex.markets.items()},
            "next_order_id": ex._next_order_id,
            **(extra or {}),
        }


def restore(ex: Exchange, data: dict[str, Any]) -> None:
    """Put a dump back into a fresh exchange of the same markets."""
    if data.get("version") != VERSION:
        raise ValueError(f"unknown simulator state version {data.get('version')!r}")
    with ex.lock:
        for key, a in data["accounts"].items():
            acct = Account(key, {s: Balance(Decimal(av), Decimal(lk)) for s, (av, lk) in a["balances"].items()},
                           a["created_us"])
            acct.leverage_limit = Decimal(a.get("leverage_limit", acct.leverage_limit))
            acct.positions = {p.symbol: p for p in (Position(**_typed(d)) for d in a.get("positions", []))}
            acct.closed_positions = [Position(**_typed(d)) for d in a.get("closed_positions", [])]
            acct.funding_rows, acct.settlements = list(a.get("funding_rows", [])), list(a.get("settlements", []))
            ex.accounts[key] = acct
        for d in data["orders"]:
            o = Order(**_typed(d))
            ex.orders[o.id] = o
            if o.is_open and o.symbol in ex.open_by_symbol:
                ex.open_by_symbol[o.symbol][o.id] = o
        ex.fills = [Fill(**_typed(d)) for d in data["fills"]]
        for sym, nxt in data["next_trade_ids"].items():
            if sym in ex.markets:
                ex.markets[sym].next_trade_id = max(ex.markets[sym].next_trade_id, int(nxt))
        ex._next_order_id = max(ex._next_order_id, int(data["next_order_id"]))
        for m in ex.markets.values():
            ex._book_changed(m)


def save(ex: Exchange, path: str, extra: dict[str, Any] | None = None) -> None:
    data = json.dumps(dump(ex, extra), separators=(",", ":"))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sim-", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(ex: Exchange, path: str) -> None:
    with open(path) as fh:
        restore(ex, json.load(fh))
