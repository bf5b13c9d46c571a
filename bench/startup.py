"""Start-up: from launching the bot to a fully placed 100-level grid, against one bare batch placement.

    python bench/startup.py [--runs 5]

Starts the simulator (``--max-batch 100``, so 99 orders fit one bare batch request) and the bot with a
100-level grid, several times. Reports, from the simulator's own timestamps, the time from the bot's
first request to the creation of the last of its 99 orders, and from the process launch (Python start
and imports included), each as a ratio to one bare signed batch placement of the same 99 orders
measured in the same run, and the placement phase alone: from the bot's first placement request to
its 99th order on the book (goal: within 1.5x the bare batch). The bot sends its grid as batches of at
most 50 orders (``executor.MAX_BATCH``), concurrently, after the market-rules, clock, price and
balance checks and the WebSocket subscription.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from decimal import Decimal

from _harness import BotProcess, SimProcess, wait_for
from backpack_api import BackpackClient, OrderRequest, Signer, generate_keypair
from gridbot.core.models import Side

LEVELS = [Decimal("130") + Decimal("0.5") * i for i in range(100)]  # 130.0 .. 179.5


def bare_batch(sim: SimProcess) -> tuple[float, float]:
    """One signed batch placing the 99 orders the bot places (then cancelled): ms at the client, and ms
    at the simulator from the request's arrival to its 99th order on the book."""
    client = BackpackClient(sim.urls["rest"], Signer(generate_keypair()[1]))
    reqs = [OrderRequest("SOL_USDC", Side.BID if p < Decimal("150") else Side.ASK, p, Decimal("0.1"), 7_000_000 + i)
            for i, p in enumerate(LEVELS) if p != Decimal("150")]
    client.balances()  # the account exists before timing
    before = sim.control.state()["time_us"]
    t0 = time.perf_counter()
    results = client.place_orders(reqs)
    ms = (time.perf_counter() - t0) * 1000
    assert len(results) == 99 and all(not hasattr(r, "code") for r in results), results[:2]
    st = sim.control.state(journal_since_us=before)
    received = min(e["received"] for e in st["journal"] if e["type"] == "request" and e["path"] == "/api/v1/orders")
    done = max(o["createdAtUs"] for o in st["orders"] if o["account"] == client.signer.api_key)
    for r in results:
        client.cancel_order("SOL_USDC", r.id)
    return ms, (done - received) / 1000


def executor_place(sim: SimProcess, tmp: str) -> float:
    """ms for the bot's executor to put the same 99 orders on the book (intents saved to a state file
    first, batches of at most 50 sent concurrently, results applied), measured at the client."""
    import itertools
    import logging
    import os

    from gridbot.engine.executor import ActiveGrid, Executor
    from grid_calculator import GridMode, GridSpec
    from order_manager import OrderManager
    from gridbot.engine.state_store import StateStore

    logging.getLogger("grid_bot").setLevel(logging.WARNING)
    signer = Signer(generate_keypair()[1])
    client = BackpackClient(sim.urls["rest"], signer)
    client.balances()
    grid = GridSpec("SOL_USDC", "SOL", "USDC", tuple(LEVELS), Decimal("0.1"), GridMode.ARITHMETIC)
    store = StateStore(os.path.join(tmp, f"bench-{next(_files)}.db"))
    gid = store.create_grid({}, grid, 9, 0)
    clock = itertools.count()
    ex = Executor(client, post_only=True, wall_ms=lambda: 1_000_000 + next(clock), clock=time.monotonic,
                  sleep=time.sleep)
    g = ActiveGrid(OrderManager(grid, tag=9), store, gid, 0, ex.wall_ms)
    g.om.start(Decimal("150"))
    places = g.om.take_placements(ex.wall_ms(), Decimal("150"))
    t0 = time.perf_counter()
    ex.place(g, places)
    ms = (time.perf_counter() - t0) * 1000
    assert len(g.om.live_orders()) == 99 and all(o.order_id for o in g.om.live_orders())
    ex.cancel(g, g.om.request_cancels())
    ex.close()
    store.close()
    return ms


_files = iter(range(1_000_000))


def one_start(sim: SimProcess) -> tuple[float, float, float]:
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
    placing = min(e["received"] for e in st["journal"] if e["type"] == "request" and e["account"] == bot.api_key
                  and e["path"] in ("/api/v1/orders", "/api/v1/order") and e["method"] == "POST")
    done = max(mine)
    return (done - first) / 1000, (done - bot.started_ns // 1000) / 1000, (done - placing) / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sim = SimProcess("--price", "150", "--max-batch", "100")
    tmp = tempfile.mkdtemp(prefix="gridbench-")
    try:
        bare = []
        placed = []
        for _ in range(args.runs):  # side by side: one of each per round
            bare.append(bare_batch(sim))
            placed.append(executor_place(sim, tmp))
        starts = [one_start(sim) for _ in range(args.runs)]
    finally:
        sim.close()
    b = statistics.median(x[0] for x in bare)
    b_server = statistics.median(x[1] for x in bare)
    from_request = statistics.median(s[0] for s in starts)
    from_launch = statistics.median(s[1] for s in starts)
    placing = statistics.median(s[2] for s in starts)
    ex = statistics.median(placed)
    print(f"one bare batch of the same 99 orders: median {b:.1f} ms at the client, {b_server:.1f} ms at the simulator "
          f"from its arrival to the 99th order on the book ({args.runs} runs)")
    print(f"the bot's executor placing the same 99 orders (intents saved, batches of 50 concurrently): median "
          f"{ex:.1f} ms ({ex / b:.2f}x the bare batch; goal <= 1.5x: {'met' if ex / b <= 1.5 else 'NOT met'})")
    print(f"bot, its first placement request's arrival -> 99th order on the book: median {placing:.1f} ms "
          f"({placing / b_server:.2f}x the bare batch measured the same way; goal <= 1.5x: "
          f"{'met' if placing / b_server <= 1.5 else 'NOT met'})")
    print(f"bot, first request -> 99th order placed: median {from_request:.1f} ms ({from_request / b:.1f}x the bare batch)")
    print(f"bot, process launch -> 99th order placed: median {from_launch:.1f} ms ({from_launch / b:.1f}x the bare batch)")


if __name__ == "__main__":
    main()
