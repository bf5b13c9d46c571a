"""Reaction latency: from a fill to the arrival of its counter-order, stream-driven vs polling.

    python bench/reaction_latency.py [--moves 60] [--interval 1] [--perp]

Starts the simulator (``--feed none``) and the bot, each in its own process, then moves the price
``--moves`` times, in two patterns: across one level and back (each move fills one order), and in bursts
that jump across three levels at once (each move fills three orders within the same instant; their
counter-orders should leave in one batch request). The latency is read from the simulator's own
microsecond timestamps: the fill's time to the creation time of the counter-order that followed it at the
next level. In the same run it measures the round trip of a bare signed order placement to the same
simulator: the floor no bot can beat, since a counter-order is itself one placement. The floor is timed
two ways: back to back (everything hot), and each placement after the same kind of quiet pause the moves
leave (0.1 to 0.25 s), as a bot's reaction comes after a wait; the goals are judged on the second, the
like-for-like floor, and both are printed. Prints p50 and p99
for the stream-driven bot (``use_websocket: true``) in both patterns and for polling (``use_websocket:
false``, checks every ``--interval`` s), each as a ratio to the bare round trip.
Goals: single-level p50 <= 1.5x and p99 <= 3x the bare round trip; bursts p50 <= 1.5x. ``--perp`` runs
the same on SOL_USDC_PERP: a neutral perps grid of the same levels (sized from an investment at leverage
3), whose every placement passes the bot's margin check and the simulator's.
"""
from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal

from _harness import BotProcess, SimProcess, bare_place_rtt, percentile, wait_for

D = Decimal


# (price, counter-orders that must appear) for each pattern, alternating. The grid: 140..158 step 2 with the
# price at 149.5, so buys rest at 140..148 and sells at 152..158 (150 is the empty level).
SINGLE = [("147.50", [("Ask", D(150))]), ("150.50", [("Bid", D(148))])]
BURST = [("143.50", [("Ask", D(146)), ("Ask", D(148)), ("Ask", D(150))]),
         ("150.50", [("Bid", D(144)), ("Bid", D(146)), ("Bid", D(148))])]


SYMBOL = "SOL_USDC"
PERP = dict(symbol="SOL_USDC_PERP", quantity=None, investment="2000", leverage="3", maker_fee="0.0002",
            taker_fee="0.0005")


def run_mode(sim: SimProcess, moves: int, rng: random.Random, pattern=SINGLE, notify: dict | None = None,
             **trading) -> list[float]:
    bot = BotProcess(sim, notify=notify, **trading)
    interval = float(trading["interval"])
    polling = not trading["use_websocket"]
    try:
        wait_for(lambda: len(bot.open_orders()) == 9, timeout=30)
        for i in range(moves):
            price, wanted = pattern[i % 2]
            # A random pause first, so fills do not fall in step with the bot's REST checks.
            time.sleep(rng.uniform(0, interval) if polling else rng.uniform(0.05, 0.2))
            sim.control.set_price(price, symbol=trading.get("symbol", SYMBOL))
            # Stay off the simulator while the bot reacts: its placement must not queue behind ours.
            time.sleep(0.05)
            wait_for(lambda: all(w in {(o.side.value, o.price) for o in bot.open_orders()} for w in wanted),
                     timeout=30, every=0.02)
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
    ap.add_argument("--perp", action="store_true", help="on SOL_USDC_PERP: a neutral perps grid")
    args = ap.parse_args()
    sim = SimProcess("--price", "149.5", "--ticker-interval", "1")
    market = PERP if args.perp else {}
    if args.perp:
        sim.control.set_price("149.5", symbol=PERP["symbol"])
        print("on SOL_USDC_PERP: a neutral perps grid, 140..158 x 10, investment 2000 USDC at leverage 3")
    try:
        on = market.get("symbol", SYMBOL)
        bare = bare_place_rtt(sim, 200, symbol=on)
        rng = random.Random(1)
        paused = bare_place_rtt(sim, 100, pause=lambda: rng.uniform(0.1, 0.25), symbol=on)
        stream = run_mode(sim, args.moves, rng, use_websocket=True, interval=10, **market)
        burst = run_mode(sim, args.moves // 2, rng, pattern=BURST, use_websocket=True, interval=10, **market)
        polling = run_mode(sim, args.moves // 2, rng, use_websocket=False, interval=args.interval, **market)
        bare_after = bare_place_rtt(sim, 200, symbol=on)
        paused += bare_place_rtt(sim, 100, pause=lambda: rng.uniform(0.1, 0.25), symbol=on)
    finally:
        sim.close()
    hot = percentile(bare + bare_after, 50)
    floor = percentile(paused, 50)
    p99 = percentile(bare + bare_after, 99)
    print(f"bare signed placement round trip, back to back: p50 {hot:.2f} ms, p99 {p99:.2f} ms "
          f"({len(bare) + len(bare_after)} samples, before and after the bot runs)")
    print(f"bare signed placement round trip after a pause like the moves': p50 {floor:.2f} ms, p99 "
          f"{percentile(paused, 99):.2f} ms ({len(paused)} samples): the floor the ratios below use "
          f"(against the back-to-back floor, multiply them by {floor / hot:.2f})")
    for name, lat in (("stream-driven, one level a move", stream),
                      ("stream-driven, bursts of three levels", burst),
                      (f"polling every {args.interval:g} s (use_websocket: false)", polling)):
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(f"{name}: fill -> counter-order p50 {p50:.2f} ms ({p50 / floor:.2f}x bare), "
              f"p99 {p99:.2f} ms ({p99 / floor:.2f}x bare), {len(lat)} fills")
    s50, s99 = percentile(stream, 50) / floor, percentile(stream, 99) / floor
    b50 = percentile(burst, 50) / floor
    print(f"goals: single p50 <= 1.5x {'met' if s50 <= 1.5 else 'NOT met'}, single p99 <= 3x "
          f"{'met' if s99 <= 3 else 'NOT met'}, bursts p50 <= 1.5x {'met' if b50 <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
