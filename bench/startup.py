"""Start-up: from launching the bot to a fully placed 100-level grid, against one bare batch placement.

    python bench/startup.py [--runs 5]

Starts the simulator (``--max-batch 100``, so 99 orders fit one bare batch request) and the bot with a
100-level grid, several times. Reports, from the simulator's own timestamps, the time from the bot's
first request to the creation of the last of its 99 orders, and from the process launch (Python start
and imports included), each as a ratio to one bare signed batch placement of the same 99 orders
measured in the same run. The bot sends its grid in batches of 20 (Backpack's batch limit is
undocumented), after the market-rules, clock, price and balance checks and the WebSocket connection.
"""
from __future__ import annotations

import argparse
import statistics
import time
from decimal import Decimal

from _harness import BotProcess, SimProcess, wait_for
from backpack_api import BackpackClient, OrderRequest, Signer, generate_keypair
from models import Side

LEVELS = [Decimal("130") + Decimal("0.5") * i for i in range(100)]  # 130.0 .. 179.5


def bare_batch(sim: SimProcess) -> float:
    """ms for one signed batch placing the 99 orders the bot places (then cancelled)."""
    client = BackpackClient(sim.urls["rest"], Signer(generate_keypair()[1]))
    reqs = [OrderRequest("SOL_USDC", Side.BID if p < Decimal("150") else Side.ASK, p, Decimal("0.1"), 7_000_000 + i)
            for i, p in enumerate(LEVELS) if p != Decimal("150")]
    client.balances()  # the account exists before timing
    t0 = time.perf_counter()
    results = client.place_orders(reqs)
    ms = (time.perf_counter() - t0) * 1000
    assert len(results) == 99 and all(not hasattr(r, "code") for r in results), results[:2]
    for r in results:
        client.cancel_order("SOL_USDC", r.id)
    return ms


def one_start(sim: SimProcess) -> tuple[float, float]:
    before = sim.control.state()["time_us"]
    bot = BotProcess(sim, grid_lower="130", grid_upper="179.5", grid_num=100, quantity="0.1")
    try:
        wait_for(lambda: len(bot.open_orders()) == 99, timeout=60, every=0.05)
        st = sim.control.state(journal_since_us=before)
    finally:
        bot.stop()
    mine = [o["createdAtUs"] for o in st["orders"] if o["account"] == bot.api_key]
    # The bot's first request is for the market rules (the benchmark's own polling uses other paths).
    first = min(e["t"] for e in st["journal"] if e["type"] == "request" and e["path"] == "/api/v1/markets"
                and e["t"] >= bot.started_ns // 1000)
    done = max(mine)
    return (done - first) / 1000, (done - bot.started_ns // 1000) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    sim = SimProcess("--price", "150", "--max-batch", "100")
    try:
        bare = [bare_batch(sim) for _ in range(args.runs)]
        starts = [one_start(sim) for _ in range(args.runs)]
    finally:
        sim.close()
    b = statistics.median(bare)
    from_request = statistics.median(s[0] for s in starts)
    from_launch = statistics.median(s[1] for s in starts)
    print(f"one bare batch of the same 99 orders: median {b:.1f} ms ({args.runs} runs)")
    print(f"bot, first request -> 99th order placed: median {from_request:.1f} ms ({from_request / b:.1f}x the bare batch)")
    print(f"bot, process launch -> 99th order placed: median {from_launch:.1f} ms ({from_launch / b:.1f}x the bare batch)")


if __name__ == "__main__":
    main()
