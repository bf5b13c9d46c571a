"""What the commands share: reading the config (its file named in errors), opening the state file, the
saved grid that ``status`` and ``report`` show, whether a bot runs on a state file, the key check, the public
client of ``plan`` and ``backtest``. Errors are raised, never printed: only ``grid_bot.main()`` turns them
into one line and an exit code.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from backpack_api import BackpackClient, Signer
from gridbot.ops.config import PLACEHOLDER, Config, ConfigError, check_keys, load_config
from gridbot.core.errors import InputError
from order_manager import OrderManager
from gridbot.paper import paper_path
from gridbot.engine.state_locks import StateLock
from gridbot.engine.state_store import SavedGrid, StateStore
from gridbot.ops.grid_files import LegacyStateError, legacy_state, move_state


def read_config(path: str, **kwargs: Any) -> Config:
    """``load_config`` with the file named in its errors."""
    try:
        return load_config(path, **kwargs)
    except ConfigError as e:
        named = not e.from_file or str(e).startswith(path)  # already says where it came from
        raise ConfigError(str(e) if named else f"{path}: {e}") from None


def grid_title(cfg: Config, paper: bool) -> str:
    """How notifications name a grid: its config's name and its market (``sol (SOL_USDC grid)``), so two
    grids on one symbol are told apart."""
    return f"{'[paper] ' if paper else ''}{cfg.name} ({cfg.trading.symbol} grid)"


def own_state_path(cfg: Config, paper: bool) -> str:
    """The config's own state file (paper mode's beside it)."""
    return paper_path(cfg.state_file, ".db") if paper else cfg.state_file


def state_path(cfg: Config, paper: bool) -> str:
    """The state file the commands read: the config's, or (until ``run`` moves it) the file an earlier
    version kept this config's running grid in (grid_files.legacy_state)."""
    if paper:
        return own_state_path(cfg, paper)
    if not cfg.state_named:
        try:
            old = legacy_state(cfg.path, cfg.trading.symbol, cfg.state_file)
        except LegacyStateError as e:
            raise InputError(str(e)) from None
        if old is not None:
            return old
    return cfg.state_file


def open_store(cfg: Config, paper: bool, *, readonly: bool = False) -> StateStore:
    return StateStore(state_path(cfg, paper) if readonly else own_state_path(cfg, paper), readonly=readonly)


def take_state(cfg: Config, paper: bool) -> tuple[StateLock, str | None]:
    """``run``'s hold on its state file: the lock, after moving this config's running grid from where an
    earlier version kept it (under that file's lock too, so never while an old bot still runs on it).
    Returns the lock and the old path when a move happened (for the log)."""
    path = own_state_path(cfg, paper)
    old = None if paper or cfg.state_named else state_path(cfg, paper)
    if old == path:
        old = None
    if old is None:
        return StateLock(path).acquire(), None
    old_lock = StateLock(old).acquire()
    try:
        lock = StateLock(path).acquire()
        try:
            move_state(old, path)
        except BaseException:
            lock.release()
            raise
    finally:
        old_lock.release()
    return lock, old


def saved_grid(store: StateStore, *, full: bool = False) -> tuple[SavedGrid, OrderManager]:
    """The grid ``status`` and ``report`` show: the running one, else the latest; with its manager (``full``:
    with every order it ever had, as ``report`` needs for its round trips)."""
    saved = store.active_grid() or store.latest_grid()
    if saved is None:
        raise InputError(f"no grid saved in {store.path} yet")
    return saved, OrderManager.from_snapshot(saved.spec, saved.tag, store.load(saved, full=full))


def bot_running(state_path: str) -> bool:
    """Is a bot running on this state file now? Read, never taken: the lock file holds the pid of the
    bot that took it last (a probe that took the lock, even for an instant, could make a starting bot
    refuse to start). Running = that process is alive and is a grid_bot."""
    try:
        with open(state_path + ".lock") as fh:
            pid = int(fh.read(32).strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"grid_bot" in fh.read()
    except OSError:
        return True  # no /proc: an alive pid is the best answer


def keys_set(cfg: Config) -> bool:
    """Are API keys configured (not left as placeholders)? Malformed ones are an error to fix."""
    if PLACEHOLDER.fullmatch(cfg.api.api_key.strip()) or PLACEHOLDER.fullmatch(cfg.api.api_secret.strip()):
        return False
    check_keys(cfg.api.api_key, cfg.api.api_secret, key_from=cfg.api.key_from, secret_from=cfg.api.secret_from)
    return True


def public_client(cfg: Config, signer: Signer | None = None) -> BackpackClient:
    # plan and backtest answer a person at a terminal: fail fast when the exchange is unreachable,
    # and show the client's retry warnings as plain lines.
    logging.basicConfig(format="grid_bot: %(message)s", level=logging.WARNING)
    return BackpackClient(cfg.api.base_url, signer, timeout=(5.0, 15.0), max_attempts=2)
