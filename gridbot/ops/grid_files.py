"""Every grid is named by its config: where its state file and log are when the config does not say.

``sol.json`` is the grid ``sol``: its state is ``sol.state.db`` and its log ``sol.log``, beside the config.
A config named ``config.json`` keeps the names every earlier version used (``grid_state.db``,
``grid_bot.log``), so an existing install and ``tail -f grid_bot.log`` carry on. A config in
``/etc/grid-bot/`` (the systemd template's folder, read-only to the service) keeps its state in
``/var/lib/grid-bot/`` and its log in ``/var/log/grid-bot/``, the unit's ``StateDirectory=`` and
``LogsDirectory=``: so ``status --config /etc/grid-bot/sol.json`` finds the running ``grid-bot@sol``
without any environment variable.

Earlier versions kept one state file per folder (``grid_state.db`` whatever the config's name) and, under
the template, ``/var/lib/grid-bot/NAME/grid_state.db``. ``legacy_state`` finds such a file that holds this
config's running grid, so that ``run`` moves it to its new name and ``status`` reads it meanwhile.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass

DEFAULT_CONFIG_NAME = "config"
LEGACY_STATE = "grid_state.db"
LEGACY_LOG = "grid_bot.log"
STATE_SUFFIXES = ("", "-wal", "-shm")   # SQLite's files of one database


@dataclass(frozen=True)
class SystemDirs:
    """The systemd layout: configs in ``config``, states in ``state``, logs in ``logs``."""
    config: str = "/etc/grid-bot"
    state: str = "/var/lib/grid-bot"
    logs: str = "/var/log/grid-bot"


SYSTEM = SystemDirs()


def grid_name(config_path: str) -> str:
    """``/etc/grid-bot/sol.json`` -> ``sol``: the name a grid is shown and notified by."""
    base = os.path.basename(config_path)
    root, ext = os.path.splitext(base)
    return root if ext.lower() == ".json" and root else base


def default_files(config_path: str, system: SystemDirs = SYSTEM) -> tuple[str, str]:
    """(state file, log file) of the config at ``config_path`` when neither the config nor the environment
    names them."""
    path = os.path.abspath(config_path)
    folder = os.path.dirname(path)
    name = grid_name(path)
    if folder == os.path.abspath(system.config):
        state_dir, log_dir = system.state, system.logs
    else:
        state_dir = log_dir = folder
    if name == DEFAULT_CONFIG_NAME:
        return os.path.join(state_dir, LEGACY_STATE), os.path.join(log_dir, LEGACY_LOG)
    return os.path.join(state_dir, f"{name}.state.db"), os.path.join(log_dir, f"{name}.log")


def _running_symbol(db_path: str) -> str | None:
    """The symbol of the running grid saved in ``db_path`` (read-only; None when there is none, or the
    file is not a state file)."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT symbol FROM grids WHERE status = 'running' ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _symbol_of_config(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return str(data["trading"]["symbol"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class LegacyStateError(Exception):
    """An older state file holds a running grid that more than one config could own."""


def legacy_state(config_path: str, symbol: str, new_state: str, system: SystemDirs = SYSTEM) -> str | None:
    """The state file an earlier version kept this config's running grid in, when it must move to
    ``new_state`` (which does not exist yet); else None.

    - A config in the template's folder: ``<state dir>/NAME/grid_state.db`` was its own.
    - A config elsewhere, not ``config.json``: the folder's ``grid_state.db`` was shared by every config
      there. It is this config's when it holds a running grid on this config's symbol and no other
      config of the folder trades that symbol; when another does, ``LegacyStateError`` says how to choose.
    """
    if os.path.exists(new_state):
        return None
    path = os.path.abspath(config_path)
    folder, name = os.path.dirname(path), grid_name(path)
    if name == DEFAULT_CONFIG_NAME:
        return None
    if folder == os.path.abspath(system.config):
        old = os.path.join(system.state, name, LEGACY_STATE)
        return old if os.path.exists(old) and _running_symbol(old) is not None else None
    old = os.path.join(folder, LEGACY_STATE)
    if not os.path.exists(old) or _running_symbol(old) != symbol:
        return None
    others = sorted(f for f in os.listdir(folder)
                    if f.endswith(".json") and f != os.path.basename(path) and not f.endswith(".schema.json")
                    and _symbol_of_config(os.path.join(folder, f)) == symbol)
    if others:
        raise LegacyStateError(
            f"{old} holds a running {symbol} grid saved by an earlier version, which kept one state file per "
            f"folder, and {', '.join(others)} trades {symbol} too: if the grid is {os.path.basename(path)}'s, "
            f"stop every bot in this folder and rename it (mv {old} {new_state}, with its -wal and -shm files); "
            f"if it is another config's, set state.file in {os.path.basename(path)} to start a grid of its own")
    return old


def move_state(old: str, new: str) -> None:
    """Rename a state file (the caller holds its lock, so no bot writes it). Its WAL is folded into the
    database first, so the one rename moves everything and a crash at any moment leaves the whole state at
    one of the two names."""
    conn = sqlite3.connect(old, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    os.makedirs(os.path.dirname(new) or ".", exist_ok=True)
    os.replace(old, new)
    for suffix in STATE_SUFFIXES[1:]:
        try:
            os.remove(old + suffix)
        except FileNotFoundError:
            pass
