"""systemd's notify protocol and watchdog: the datagrams themselves, and the real bot (a subprocess) telling
a socket of ours READY=1 only once its grid is on the book, WATCHDOG=1 only while its main loop turns, and
STOPPING=1 when it stops."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gridbot.ops.systemd_notify import SystemdNotify
from simulator import SimControl
from tests.e2e import open_orders_of, write_config
from tests.helpers import start_process, wait_until

ROOT = Path(__file__).resolve().parent.parent


class NotifySocket:
    """A datagram socket standing in for systemd's: every message, with the time it arrived."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        with self.lock:
            return [m for _, m in self.messages]

    def kicks(self) -> list[float]:
        with self.lock:
            return [t for t, m in self.messages if "WATCHDOG=1" in m.split("\n")]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    s = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        yield s
    finally:
        s.close()


# ------------------------------------------------------------------------------ the protocol
def test_ready_status_watchdog_and_stopping_are_datagrams_to_the_socket(notify_socket):
    now = [100.0]
    n = SystemdNotify(env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "4000000"}, clock=lambda: now[0])
    assert n.interval == 2.0                      # pinged at least twice per timeout
    n.ready("sol: SOL_USDC grid running")
    n.kick()                                      # too soon after the last: not sent
    now[0] += 1.0
    n.kick()                                      # a quarter of the timeout later: sent
    n.stopping("stopping: SIGTERM received")
    wait_until(lambda: len(notify_socket.texts()) == 4, timeout=5)
    assert notify_socket.texts() == ["READY=1\nSTATUS=sol: SOL_USDC grid running", "WATCHDOG=1", "WATCHDOG=1",
                                     "STOPPING=1\nSTATUS=stopping: SIGTERM received"]


def test_an_abstract_socket_is_named_with_an_at_sign():
    name = f"grid-bot-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        assert SystemdNotify(env={"NOTIFY_SOCKET": "@" + name}).send("READY=1")
        assert s.recv(100) == b"READY=1"


def test_no_watchdog_for_another_process_and_nothing_at_all_outside_systemd(notify_socket, caplog):
    other = SystemdNotify(env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "4000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.interval is None
    other.kick()
    outside = SystemdNotify(env={})
    assert not outside.active and not outside.send("READY=1")
    outside.ready("x")
    outside.kick()
    gone = SystemdNotify(env={"NOTIFY_SOCKET": notify_socket.path + ".gone", "WATCHDOG_USEC": "1000000"})
    with caplog.at_level("WARNING"):
        gone.kick(force=True)
        gone.kick(force=True)
    assert [r.getMessage() for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()] == \
        ["cannot notify systemd at NOTIFY_SOCKET (No such file or directory)"]     # said once
    # A marker sent last arrives after anything the three above could have sent: it must be alone.
    assert SystemdNotify(env={"NOTIFY_SOCKET": notify_socket.path}).send("MARKER=1")
    wait_until(lambda: notify_socket.texts(), timeout=5)
    assert notify_socket.texts() == ["MARKER=1"]


# ------------------------------------------------------------------------------ the real bot
def test_the_bot_is_ready_once_its_grid_is_placed_and_its_watchdog_stops_when_its_loop_does(
        tmp_path, quiet_sim, notify_socket):
    control = SimControl(quiet_sim.rest_url)
    path, signer = write_config(tmp_path, quiet_sim)
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"}
    proc = start_process([sys.executable, "grid_bot.py", "--config", path], cwd=str(ROOT), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: any(t.startswith("READY=1") for t in notify_socket.texts()), timeout=30,
                   message="READY=1")
        # READY comes after the grid is on the book, never before (a start in progress is not ready).
        assert len(open_orders_of(control.state(), signer.api_key)) == 9
        ready = next(t for t in notify_socket.texts() if t.startswith("READY=1"))
        assert ready == "READY=1\nSTATUS=config: SOL_USDC grid running"
        wait_until(lambda: len(notify_socket.kicks()) >= 4, timeout=30, message="watchdog pings while it runs")
        # Freeze the main loop: its next REST check of the open orders is held 6 s by the exchange. The
        # process and its other threads live on, but no WATCHDOG=1 comes (systemd, with WatchdogSec=2,
        # would kill it), and the pings resume when the loop turns again.
        frozen_from = time.monotonic()
        control.fault(kind="delay", method="GET", path="/api/v1/orders", seconds=6, count=1)

        def longest_gap() -> float:
            kicks = [t for t in notify_socket.kicks() if t >= frozen_from]
            return max((b - a for a, b in zip(kicks, kicks[1:])), default=0.0)

        wait_until(lambda: longest_gap() >= 5.5, timeout=60, message="a watchdog gap while the loop is held")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        proc.communicate()
    assert code == 0
    assert any(t.startswith("STOPPING=1\nSTATUS=stopping: SIGTERM received") for t in notify_socket.texts())
