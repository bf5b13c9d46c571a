"""Reaction latency: from a fill to the arrival of its counter-order, stream-driven vs polling.

    python bench/reaction_latency.py [--moves 60] [--interval 1]

Starts the simulator (``--feed none``) and the bot, each in its own process, then moves the price
across one level and back, ``--moves`` times. Each move fills one order; the latency is read from the
simulator's own microsecond timestamps: the fill's time to the creation time of the counter-order that
followed it at the next level. In the same run it measures the round trip of a bare signed order
placement to the same simulator: the floor no bot can beat, since a counter-order is itself one
placement. Prints p50 and p99 for the stream-driven bot (``use_websocket: true``) and for polling
(``use_websocket: false``, checks every ``--interval`` s), each as a ratio to the bare round trip.
Goal: stream-driven p50 within 2x the bare round trip (stretch 1.5x), p99 within 5x.
"""
from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal

from _harness import BotProcess, SimProcess, bare_place_rtt, percentile, wait_for

D = Decimal


def run_mode(sim: SimProcess, moves: int, rng: random.Random, **trading) -> list[float]:
    bot = BotProcess(sim, **trading)
    interval = float(trading["interval"])
    polling = not trading["use_websocket"]
    try:
        wait_for(lambda: len(bot.open_orders()) == 9, timeout=30)
        # Down through the buy at 148 (its counter: a sell at 150), then up through that sell (its
        # counter: a buy at 148 again), and so on: one fill and one counter-order per move.
        for i in range(moves):
            down = i % 2 == 0
            # A random pause first, so fills do not fall in step with the bot's REST checks.
            time.sleep(rng.uniform(0, interval) if polling else rng.uniform(0.05, 0.2))
            sim.control.set_price("147.50" if down else "150.50")
            want = ("Ask", D("150")) if down else ("Bid", D("148"))
            # Stay off the simulator while the bot reacts: its placement must not queue behind ours.
            time.sleep(0.05)
            wait_for(lambda: any((o.side.value, o.price) == want for o in bot.open_orders()), timeout=30,
                     every=0.02)
        state = sim.control.state()
    finally:
        bot.stop()
    orders = sorted((o for o in state["orders"] if o["account"] == bot.api_key), key=lambda o: o["createdAtUs"])
    fills = {f["orderId"]: f["timestampUs"] for f in state["fills"] if f["account"] == bot.api_key}
    latencies = []
    for o in orders:
        if o["id"] not in fills:
            continue
        level = D(o["price"])
        counter_price, counter_side = (level + 2, "Ask") if o["side"] == "Bid" else (level - 2, "Bid")
        filled_at = fills[o["id"]]
        nxt = next((x for x in orders if x["createdAtUs"] >= filled_at and x["side"] == counter_side
                    and D(x["price"]) == counter_price), None)
        if nxt is not None:
            latencies.append((nxt["createdAtUs"] - filled_at) / 1000)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moves", type=int, default=60)
    ap.add_argument("--interval", type=float, default=1, help="polling mode: seconds between checks")
    args = ap.parse_args()
    sim = SimProcess("--price", "149.5", "--ticker-interval", "1")
    try:
        bare = bare_place_rtt(sim, 200)
        rng = random.Random(1)
        stream = run_mode(sim, args.moves, rng, use_websocket=True, interval=10)
        polling = run_mode(sim, args.moves // 2, rng, use_websocket=False, interval=args.interval)
        bare_after = bare_place_rtt(sim, 200)
    finally:
        sim.close()
    floor = percentile(bare + bare_after, 50)
    print(f"bare signed placement round trip: p50 {floor:.2f} ms, p99 {percentile(bare + bare_after, 99):.2f} ms "
          f"({len(bare) + len(bare_after)} samples, before and after the bot runs)")
    for name, lat in (("stream-driven (use_websocket: true)", stream),
                      (f"polling every {args.interval:g} s (use_websocket: false)", polling)):
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(f"{name}: fill -> counter-order p50 {p50:.2f} ms ({p50 / floor:.2f}x bare), "
              f"p99 {p99:.2f} ms ({p99 / floor:.2f}x bare), {len(lat)} fills")
    s50, s99 = percentile(stream, 50) / floor, percentile(stream, 99) / floor
    print(f"goal p50 <= 2x: {'met' if s50 <= 2 else 'NOT met'} (stretch 1.5x: {'met' if s50 <= 1.5 else 'not met'}); "
          f"p99 <= 5x: {'met' if s99 <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
