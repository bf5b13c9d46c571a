"""systemd's notify protocol, with the standard library's socket: ``READY=1`` once the grid is placed or
resumed and reconciled, ``WATCHDOG=1`` from the main loop while it turns, ``STOPPING=1`` when it stops.

Under ``Type=notify`` with ``WatchdogSec=``, systemd kills and restarts a bot whose loop has not sent
``WATCHDOG=1`` for that long (a deadlock, a call stuck for ever): the restart reconciles with the exchange
as after a crash, rather than leaving a frozen bot with orders on the book that looks alive. Outside
systemd (no ``NOTIFY_SOCKET``) every call does nothing.

The protocol: one datagram of ``KEY=value`` lines to the Unix socket named by ``NOTIFY_SOCKET`` (a path,
or an abstract socket when it starts with ``@``); ``WATCHDOG_USEC`` is the timeout, and ``WATCHDOG_PID``,
when set, the process it is meant for.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

log = logging.getLogger("grid_bot")


class SystemdNotify:
    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + addr[1:] if addr.startswith("@") else addr
        self.clock = clock
        self.interval: float | None = None   # seconds between two WATCHDOG=1 (half the timeout)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if self.address and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.interval = int(usec) / 2e6
        self.last_kick: float | None = None
        self.failed = False

    @property
    def active(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as e:
            if not self.failed:   # said once: the service manager is gone or the socket is wrong
                log.warning("cannot notify systemd at NOTIFY_SOCKET (%s)", e.strerror or type(e).__name__)
                self.failed = True
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")
        self.kick(force=True)

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def kick(self, force: bool = False) -> None:
        """``WATCHDOG=1`` about four times per timeout, however often it is called: from every turn of the main
        loop."""
        if self.interval is None:
            return
        now = self.clock()
        if force or self.last_kick is None or now - self.last_kick >= self.interval / 2:
            self.send("WATCHDOG=1")
            self.last_kick = now
