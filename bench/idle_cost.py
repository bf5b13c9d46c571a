"""Idle cost over a quiet minute: REST requests per minute and CPU seconds, stream-driven vs polling.

    python bench/idle_cost.py [--seconds 60] [--interval 10]

Runs the bot against a simulator whose price does not move (``--feed none``; the ticker still arrives
every second), once with ``use_websocket: true`` and once with ``use_websocket: false``, both with
``interval`` at its default of 10 s. After the grid is placed (and, stream-driven, the order stream is
verified) it counts the REST requests the simulator receives and the bot process's CPU time over
``--seconds``.
"""
from __future__ import annotations

import argparse
import time

from _harness import BotProcess, SimProcess, wait_for


def measure(sim: SimProcess, seconds: float, **trading) -> tuple[float, float]:
    bot = BotProcess(sim, log_level="INFO", **trading)
    try:
        wait_for(lambda: len(bot.open_orders()) == 9, timeout=30, every=0.1)
        if trading["use_websocket"]:
            wait_for(lambda: "order stream live" in open(bot.dir + "/bot.log").read(), timeout=30, every=0.1)
        time.sleep(1)
        start_us = sim.control.state()["time_us"]
        cpu0 = bot.cpu_seconds()
        time.sleep(seconds)
        cpu = bot.cpu_seconds() - cpu0
        journal = sim.control.state(journal_since_us=start_us)["journal"]
    finally:
        bot.stop()
    requests = [e for e in journal if e["type"] == "request" and not e["path"].startswith("/_sim/")]
    return len(requests) * 60 / seconds, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=10)
    args = ap.parse_args()
    sim = SimProcess("--price", "149.5", "--ticker-interval", "1")
    try:
        stream = measure(sim, args.seconds, use_websocket=True, interval=args.interval)
        polling = measure(sim, args.seconds, use_websocket=False, interval=args.interval)
    finally:
        sim.close()
    print(f"quiet {args.seconds:g} s, interval {args.interval:g} s:")
    print(f"stream-driven: {stream[0]:5.1f} REST requests/min, {stream[1]:.2f} CPU s")
    print(f"polling:       {polling[0]:5.1f} REST requests/min, {polling[1]:.2f} CPU s")
    print(f"stream/polling: requests {stream[0] / polling[0]:.2f}, CPU {stream[1] / max(polling[1], 1e-9):.2f}")


if __name__ == "__main__":
    main()
