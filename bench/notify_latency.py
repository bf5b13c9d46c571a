"""Notifications never slow the grid: reaction latency with a receiver that takes 5 s per request.

    python bench/notify_latency.py [--moves 40] [--rounds 2]

Starts the simulator and, in turn, the bot without notifications and the bot notifying a local HTTP
receiver (Apprise ``json://``) that answers every request after 5 seconds, with every event on (a
message per round trip, a digest every second, the heartbeat every second). Each moves the price
``--moves`` times across one level and back (``reaction_latency.py``'s single-level pattern); the
latency from each fill to its counter-order comes from the simulator's own timestamps. The two
configurations alternate ``--rounds`` times in one run, so both see the same machine. Prints p50 and
p99 of each and their ratio; goal: within noise (ratio of p50 <= 1.2).
"""
from __future__ import annotations

import argparse
import random

from _harness import SimProcess, percentile
from reaction_latency import run_mode
from tests.receiver import Receiver  # the test suite's receiver (_harness puts the project on the path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moves", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sim = SimProcess("--price", "149.5", "--ticker-interval", "1")
    rng = random.Random(1)
    plain: list[float] = []
    notified: list[float] = []
    try:
        with Receiver("slow", delay=5.0) as rx:
            notify = {"urls": [rx.url()], "events": ["start", "stop", "round_trip", "digest", "error", "daily"],
                      "digest_interval": 1, "heartbeat_url": rx.http_url(), "heartbeat_interval": 1}
            for _ in range(args.rounds):
                plain += run_mode(sim, args.moves, rng, use_websocket=True, interval=10)
                notified += run_mode(sim, args.moves, rng, notify=notify, use_websocket=True, interval=10)
            requests_seen = len(rx.received)
    finally:
        sim.close()
    for name, lat in (("without notifications", plain), ("notifying a 5 s receiver", notified)):
        print(f"{name}: fill -> counter-order p50 {percentile(lat, 50):.2f} ms, p99 {percentile(lat, 99):.2f} ms, "
              f"{len(lat)} fills")
    r50 = percentile(notified, 50) / percentile(plain, 50)
    r99 = percentile(notified, 99) / percentile(plain, 99)
    print(f"ratio notified / plain: p50 {r50:.2f}, p99 {r99:.2f}; the receiver got {requests_seen} requests "
          f"(each answered after 5 s)")
    print(f"goal: p50 ratio <= 1.2 {'met' if r50 <= 1.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
