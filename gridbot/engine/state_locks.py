"""Who may use a state file, and how a new grid's tag is chosen beside others: one process per state file
(``StateLock``), one tag choice at a time per folder (``TagLock``), and the tags of the running grids in
the other state files of a folder (``tags_beside``). Locks are ``flock``s the kernel releases whenever a
process ends, so a ``kill -9`` never leaves a stale one.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from typing import Any

from gridbot.engine.state_store import StateError


class StateLock:
    """One process per state file: an exclusive ``flock`` on ``<state file>.lock``, held for the life of
    ``run`` (and ``--reset``). The kernel releases it when the process ends, however it ends, so a
    ``kill -9`` never leaves a stale lock. ``status`` and ``plan`` only read and never take it."""

    def __init__(self, state_path: str) -> None:
        self.state_path = state_path
        self.path = state_path + ".lock"
        self.fd: int | None = None

    def acquire(self) -> "StateLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except (OSError, ValueError) as e:
            raise StateError(f"cannot create the lock file {self.path}: {getattr(e, 'strerror', e)} "
                             f"(set state.file)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateError(f"another grid_bot (pid {pid}) is running on the state file {self.state_path}: "
                             f"stop it first (status and plan work while it runs)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class TagLock:
    """Grids whose state files share a folder choose their tags one at a time: an exclusive ``flock`` on
    ``<folder>/.grid-bot-tags.lock``, held from choosing a new grid's tag until its row is saved, so two
    grids started together (two ``grid-bot@`` units at boot) never draw the same one."""

    def __init__(self, state_path: str) -> None:
        self.path = os.path.join(os.path.dirname(os.path.abspath(state_path)), ".grid-bot-tags.lock")
        self.fd: int | None = None

    def __enter__(self) -> "TagLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StateError(f"cannot create the lock file {self.path}: {e.strerror} (set state.file)") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)   # closing releases the lock
            self.fd = None


def tags_beside(state_path: str, symbol: str) -> set[int]:
    """The tags of the running grids on ``symbol`` saved in the other state files of this one's folder
    (``*.db``). A file that is not a readable state file is skipped."""
    folder = os.path.dirname(os.path.abspath(state_path))
    out: set[int] = set()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return out
    for name in names:
        path = os.path.join(folder, name)
        if not name.endswith(".db") or os.path.abspath(path) == os.path.abspath(state_path):
            continue
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                out.update(r[0] for r in conn.execute(
                    "SELECT tag FROM grids WHERE status = 'running' AND symbol = ?", (symbol,)))
            finally:
                conn.close()
        except sqlite3.Error:
            continue
    return out
