"""``status --all`` (or ``list``): every grid on this machine, one line each, with totals.

Grids are found by their configs: every ``*.json`` config in the current folder, in the systemd
template's ``/etc/grid-bot/`` and in each ``--dir``. Each config's state file is where ``status
--config`` reads it (grid_files.py), so the template's instances need no environment variable. Read only:
nothing here takes a lock or writes a file.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from backpack_api import wall_clock_ms
from gridbot.commands.common import bot_running, read_config, saved_grid, state_path
from gridbot.core.errors import EXIT_OK, GridBotError
from gridbot.engine.state_store import StateStore
from gridbot.ops.grid_files import SYSTEM, grid_name
from gridbot.ops.reports import fmt_amount, status_report
from gridbot.paper import paper_path, sim_state_path

LOG_TAIL_BYTES = 256 * 1024    # where the last error is looked for: the end of the grid's log


def config_files(folders: list[str]) -> list[str]:
    """The grid configs in ``folders``, each once: JSON objects with a ``trading`` section (a schema, a
    candle cache or any other JSON file is not a grid)."""
    seen: set[str] = set()
    out = []
    for folder in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if not name.endswith(".json") or name.endswith(".schema.json") or real in seen:
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    data = json.load(fh)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and "trading" in data:
                seen.add(real)
                out.append(path)
    return out


def last_error(log_file: str) -> str | None:
    """The last WARNING or ERROR line of a grid's log (its end only), or None."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in ("WARNING", "ERROR"):
            return line
    return None


@dataclass
class Row:
    name: str
    config: str
    state: str
    symbol: str | None = None
    quote: str | None = None
    up_s: int | None = None
    round_trips: int = 0
    grid_profit: Decimal | None = None
    floating_pnl: Decimal | None = None
    fees: Decimal | None = None
    funding: Decimal | None = None          # perps: funding received (+) or paid (-); None on spot
    last_error: str | None = None
    state_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        def d(x: Decimal | None) -> str | None:
            return None if x is None else f"{x:f}"
        return {"name": self.name, "config": self.config, "state_file": self.state_file, "symbol": self.symbol,
                "quote": self.quote, "state": self.state, "uptime_s": self.up_s, "round_trips": self.round_trips,
                "grid_profit": d(self.grid_profit), "floating_pnl": d(self.floating_pnl), "fees": d(self.fees),
                "funding": d(self.funding), "last_error": self.last_error}


def grid_row(config: str, paper: bool, now_ms: int) -> Row:
    name = grid_name(config)
    try:
        cfg = read_config(config, need_keys=False)
    except GridBotError as e:
        return Row(name, config, "config error", last_error=str(e))
    row = Row(name, config, "never run", symbol=cfg.trading.symbol,
              last_error=last_error(paper_path(cfg.log.file, ".log") if paper else cfg.log.file))
    try:
        path = state_path(cfg, paper)
    except GridBotError as e:
        row.state, row.last_error = "state error", str(e)
        return row
    row.state_file = path
    if not os.path.exists(path):
        return row
    try:
        store = StateStore(path, readonly=True)
        try:
            saved, om = saved_grid(store)
            running = bot_running(path)
            report = status_report(saved, om, path, now_ms, running=running,
                                   paper=("live" if os.path.exists(sim_state_path(cfg)) else "random") if paper else None)
        finally:
            store.close()
    except GridBotError as e:
        row.state, row.last_error = "state error", str(e)
        return row
    row.state, row.symbol, row.quote = report["state"], saved.spec.symbol, saved.spec.quote
    row.round_trips = report["stats"]["round_trips"]
    row.grid_profit = Decimal(report["stats"]["grid_profit"])
    if report["stats"].get("funding") is not None:
        row.funding = Decimal(report["stats"]["funding"])
    fig = report["figures"]
    if fig is not None:
        row.floating_pnl, row.fees = Decimal(fig["floating_pnl"]), Decimal(fig["fees_quote"])
    if running:
        try:   # the bot wrote its pid into the lock file when it started
            row.up_s = max(0, int(time.time() - os.stat(path + ".lock").st_mtime))
        except OSError:
            pass
    return row


def totals(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """Round trips, grid profit, floating PnL and fees summed per quote asset."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.quote is None:
            continue
        t = out.setdefault(r.quote, {"grids": 0, "round_trips": 0, "grid_profit": Decimal(0),
                                     "floating_pnl": Decimal(0), "fees": Decimal(0), "funding": Decimal(0)})
        t["grids"] += 1
        t["round_trips"] += r.round_trips
        for key in ("grid_profit", "floating_pnl", "fees", "funding"):
            t[key] += getattr(r, key) or Decimal(0)
    return out


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    return f"{d}d {h}h" if d else f"{h}h {rest // 60}m" if h else f"{rest // 60}m {rest % 60}s"


def money(x: Decimal | None, quote: str | None) -> str:
    return "-" if x is None else f"{fmt_amount(x, 4)} {quote}"


def print_table(rows: list[Row], sums: dict[str, dict[str, Any]], folders: list[str]) -> None:
    if not rows:
        print(f"no grid configs found in {', '.join(folders)} (add --dir FOLDER)")
        return
    perps = any(r.funding is not None for r in rows)     # the funding column, when a perps grid is listed
    head = ("name", "symbol", "state", "up", "round trips", "grid profit", "floating PnL", "fees") + (
        ("funding",) if perps else ())
    table = [head] + [(r.name, r.symbol or "-", r.state, duration(r.up_s), str(r.round_trips),
                       money(r.grid_profit, r.quote), money(r.floating_pnl, r.quote), money(r.fees, r.quote))
                      + ((money(r.funding, r.quote),) if perps else ()) for r in rows]
    table += [(f"total {q}", "", f"{t['grids']} grid(s)", "", str(t["round_trips"]), money(t["grid_profit"], q),
               money(t["floating_pnl"], q), money(t["fees"], q)) + ((money(t["funding"], q),) if perps else ())
              for q, t in sorted(sums.items())]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for i, line in enumerate(table):
        if i == len(rows) + 1:
            print("  ".join("-" * w for w in widths))
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    for r in rows:
        if r.last_error:
            print(f"{r.name}: last error: {r.last_error}")


def cmd_list(args: argparse.Namespace) -> int:
    folders = [os.getcwd(), SYSTEM.config, *(args.dir or [])]
    now_ms = wall_clock_ms()
    rows = [grid_row(path, args.paper, now_ms) for path in config_files(folders)]
    sums = totals(rows)
    if args.json:
        print(json.dumps({"grids": [r.to_json() for r in rows],
                          "totals": {q: {k: (f"{v:f}" if isinstance(v, Decimal) else v) for k, v in t.items()}
                                     for q, t in sorted(sums.items())}}, indent=2))
    else:
        print_table(rows, sums, folders)
    return EXIT_OK
