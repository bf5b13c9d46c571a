"""Idle cost over a quiet minute, and the cost of a fill: REST requests and CPU seconds of the bot.

    python bench/idle_cost.py [--seconds 60] [--interval 10] [--fills 100]

Runs the bot against a simulator whose price does not move (``--feed none``; the ticker still arrives
every second), once with ``use_websocket: true`` and once with ``use_websocket: false``, both with
``interval`` at its default of 10 s. After the grid is placed (and, stream-driven, the order stream is
verified) it counts the REST requests the simulator receives and the bot process's CPU time over
``--seconds``. Then, stream-driven, it moves the price across one level and back ``--fills`` times
and reports the bot's CPU per fill (the fill, its counter-order, the log lines and the state saves),
with the idle CPU of the same stretch of time subtracted. The log is at INFO, as users run it.
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


def per_fill(sim: SimProcess, fills: int, idle_cpu_per_s: float) -> float:
    """The bot's CPU seconds per fill, stream-driven, beyond what it spends idle."""
    from decimal import Decimal
    bot = BotProcess(sim, log_level="INFO", use_websocket=True, interval=10)
    try:
        wait_for(lambda: len(bot.open_orders()) == 9, timeout=30, every=0.1)
        cpu0, t0 = bot.cpu_seconds(), time.monotonic()
        for i in range(fills):
            down = i % 2 == 0
            sim.control.set_price("147.50" if down else "150.50")
            want = ("Ask", Decimal(150)) if down else ("Bid", Decimal(148))
            wait_for(lambda: any((o.side.value, o.price) == want for o in bot.open_orders()), timeout=30, every=0.01)
        cpu, elapsed = bot.cpu_seconds() - cpu0, time.monotonic() - t0
    finally:
        bot.stop()
    return (cpu - idle_cpu_per_s * elapsed) / fills


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--fills", type=int, default=100)
    args = ap.parse_args()
    sim = SimProcess("--price", "149.5", "--ticker-interval", "1")
    try:
        stream = measure(sim, args.seconds, use_websocket=True, interval=args.interval)
        polling = measure(sim, args.seconds, use_websocket=False, interval=args.interval)
        fill_cpu = per_fill(sim, args.fills, stream[1] / args.seconds)
    finally:
        sim.close()
    print(f"quiet {args.seconds:g} s, interval {args.interval:g} s:")
    print(f"stream-driven: {stream[0]:5.1f} REST requests/min, {stream[1]:.2f} CPU s")
    print(f"polling:       {polling[0]:5.1f} REST requests/min, {polling[1]:.2f} CPU s")
    print(f"stream/polling: requests {stream[0] / polling[0]:.2f}, CPU {stream[1] / max(polling[1], 1e-9):.2f}")
    print(f"per fill (stream-driven, {args.fills} fills, log at INFO): {fill_cpu * 1000:.2f} CPU ms beyond idle")


if __name__ == "__main__":
    main()
