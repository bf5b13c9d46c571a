"""Signed order placements plus cancels per second against a running simulator.

    python bench/simulator_throughput.py [--seconds 10] [--clients 2]

Starts ``python -m simulator`` as its own process, pinned to one core when the OS allows it, and
drives it from this process with the bot's own signed client: each operation is one signed
POST /api/v1/order followed by one signed DELETE /api/v1/order. Prints operations (requests) per
second, and, measured in the same run, unsigned GET /api/v1/ping per second as the server's floor,
so the ratio shows what signing, matching and JSON cost. Goal: at least 500 signed requests/s. The same
on the perp market SOL_USDC_PERP (every order margin-checked): goal at least 0.8 of spot.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import requests  # noqa: E402

from backpack_api import BackpackClient, OrderRequest, Signer, generate_keypair  # noqa: E402
from gridbot.exchange.wire import Side  # noqa: E402


def start_simulator() -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "simulator", "--feed", "none", "--rate-limit", "0",
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    urls = json.loads(proc.stdout.readline())
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {0})
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    return proc, urls


def run_for(seconds: float, clients: int, work) -> int:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        state = work(i)
        while time.monotonic() < stop:
            counts[i] += state()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=2, help="concurrent client threads")
    args = ap.parse_args()
    proc, urls = start_simulator()
    try:
        def ping_worker(i: int):
            s = requests.Session()
            return lambda: (s.get(urls["rest"] + "/api/v1/ping", timeout=10).raise_for_status(), 1)[1]

        def worker(symbol: str):
            def order_worker(i: int):
                client = BackpackClient(urls["rest"], Signer(generate_keypair()[1]))
                cid = [i * 10_000_000]

                def one() -> int:
                    cid[0] += 1
                    o = client.place_order(OrderRequest(symbol, Side.BID, Decimal("140.00"),
                                                        Decimal("0.10"), cid[0]))
                    client.cancel_order(symbol, o.id)
                    return 2
                return one
            return order_worker

        order_worker, perp_worker = worker("SOL_USDC"), worker("SOL_USDC_PERP")

        run_for(1.0, args.clients, order_worker)  # warm-up: connections, accounts
        run_for(1.0, args.clients, perp_worker)
        pings = run_for(args.seconds, args.clients, ping_worker) / args.seconds
        signed = run_for(args.seconds, args.clients, order_worker) / args.seconds
        perp = run_for(args.seconds, args.clients, perp_worker) / args.seconds
        print(f"simulator on 1 core, {args.clients} client threads, {args.seconds:.0f} s each")
        print(f"unsigned GET /api/v1/ping:           {pings:8.0f} requests/s (floor)")
        print(f"signed place + cancel (2 requests):  {signed:8.0f} requests/s "
              f"= {signed / 2:.0f} place+cancel pairs/s")
        print(f"ratio signed/unsigned:               {signed / pings:8.2f}")
        print(f"goal >= 500 signed requests/s:       {'met' if signed >= 500 else 'NOT met'}")
        print(f"perp (SOL_USDC_PERP, margin-checked): {perp:8.0f} requests/s; ratio perp/spot {perp / signed:.2f} "
              f"(goal >= 0.80: {'met' if perp >= 0.8 * signed else 'NOT met'})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
