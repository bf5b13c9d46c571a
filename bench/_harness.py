"""Shared pieces of the benchmarks: a simulator process, a bot process, percentiles.

Each benchmark runs the simulator and the bot as separate processes, as users run them, on loopback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backpack_api import BackpackClient, Signer, generate_keypair  # noqa: E402
from simulator import SimControl  # noqa: E402


class SimProcess:
    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "simulator", "--feed", "none", "--rate-limit", "0",
               "--log-level", "WARNING", *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.urls = json.loads(self.proc.stdout.readline())
        self.control = SimControl(self.urls["rest"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class BotProcess:
    """The bot in its own process, with a fresh key and a config pointing at the simulator."""

    def __init__(self, sim: SimProcess, *, log_level: str = "WARNING", notify: dict | None = None,
                 **trading: Any) -> None:
        self.dir = tempfile.mkdtemp(prefix="gridbench-")
        api_key, secret = generate_keypair()
        self.signer = Signer(secret)
        self.api_key = api_key
        t = {"symbol": "SOL_USDC", "grid_lower": "140", "grid_upper": "158", "grid_num": 10,
             "quantity": "0.1", "interval": 10, "use_websocket": True}
        t.update(trading)
        self.symbol = t["symbol"]
        cfg = {"api": {"base_url": sim.urls["rest"], "ws_url": sim.urls["ws"], "api_key": api_key,
                       "api_secret": secret},
               "trading": t, "log": {"file": os.path.join(self.dir, "bot.log"), "console": False,
                                     "level": log_level}}
        if notify is not None:
            cfg["notify"] = notify
        self.config = os.path.join(self.dir, "config.json")
        with open(self.config, "w") as fh:
            json.dump(cfg, fh)
        self.client = BackpackClient(sim.urls["rest"], self.signer)
        self.started_ns = time.time_ns()
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "grid_bot.py"), "--config",
                                      self.config], cwd=self.dir)

    def open_orders(self) -> list:
        return self.client.open_orders(self.symbol)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the bot process so far (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(every)


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def bare_place_rtt(sim: SimProcess, samples: int, pause: Callable[[], float] | None = None,
                   symbol: str = "SOL_USDC") -> list[float]:
    """Round trips (ms) of a bare signed order placement on ``symbol``, each followed by its cancel; with
    ``pause``, each placement comes after that many seconds of quiet (as a bot's reaction comes after a wait)."""
    from backpack_api import OrderRequest
    from gridbot.core.models import Side
    client = BackpackClient(sim.urls["rest"], Signer(generate_keypair()[1]))
    out = []
    for i in range(samples + 5):
        req = OrderRequest(symbol, Side.BID, Decimal("139.00"), Decimal("0.10"), 5_000_000 + i)
        if pause is not None:
            time.sleep(pause())
        t0 = time.perf_counter()
        o = client.place_order(req)
        rtt = (time.perf_counter() - t0) * 1000
        client.cancel_order(symbol, o.id)
        if i >= 5:  # the first few warm the connection and the account
            out.append(rtt)
    return out
