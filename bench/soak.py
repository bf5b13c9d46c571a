"""Fault-storm soak: the real bot through N minutes of a random price and everything a network and an
operator can do to it, then a graceful stop, and every violation found.

    python bench/soak.py [--minutes 10] [--seed 1]

The simulator (its own process) walks the price through a 10-level grid with a random feed. While the
bot trades on it, a storm of faults is injected at random: HTTP errors (500, 502, 503, 429 with
Retry-After) on any path, accepted placements whose answer is lost, requests held for seconds, replayed
placements (a twin order with one of the bot's clientIds, as a POST delivered twice would leave),
WebSocket drops and silences, and ``kill -9`` of the bot followed by a restart. The simulator's state is
sampled all along. At the end the bot is stopped with SIGTERM and the run is judged:

- two orders of the grid at one price at any sampled moment (twins the storm injected excepted: those
  must be cancelled by the bot);
- more orders resting than the grid holds (9);
- orders left open after the graceful stop (orphans);
- a pair whose orders do not alternate, or a counter-order placed before its fill (a fill without its
  counter-order, or one countered twice);
- the bot's statistics (``status --json``) differing from the same figures recomputed from the
  simulator's own fill ledger.

Not part of the test suite (it runs for minutes); the suite tests each fault on its own.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal

from _harness import ROOT, BotProcess, SimProcess, wait_for
from tests.e2e import assert_counter_orders, ledger_totals
from tests.helpers import order_body, signed_request

D = Decimal
LEVELS = [D(x) for x in range(140, 160, 2)]
PATHS = ["/api/v1/order", "/api/v1/orders", "/wapi/v1/history/fills", "/api/v1/ticker", "*"]


class Storm:
    def __init__(self, sim: SimProcess, bot: BotProcess, rng: random.Random) -> None:
        self.sim, self.bot, self.rng = sim, bot, rng
        self.twins: set[str] = set()
        self.counts: dict[str, int] = {}

    def strike(self) -> None:
        kind = self.rng.choice(["http", "http", "lost", "held", "replay", "ws_drop", "ws_silent", "kill"])
        self.counts[kind] = self.counts.get(kind, 0) + 1
        c, rng = self.sim.control, self.rng
        if kind == "http":
            status = rng.choice([500, 502, 503, 429])
            c.fault(kind="http_status", path=rng.choice(PATHS), status=status, count=rng.randint(1, 4),
                    retry_after=rng.choice([0, 1]))
        elif kind == "lost":
            c.fault(kind="drop_response", method="POST", path=rng.choice(["/api/v1/order", "/api/v1/orders"]))
        elif kind == "held":
            c.fault(kind="delay", path=rng.choice(PATHS), seconds=rng.uniform(0.5, 3), count=rng.randint(1, 3))
        elif kind == "replay":
            mine = [o for o in self.bot.open_orders()]
            if mine:
                o = rng.choice(mine)
                r = signed_request(self.sim.urls["rest"], self.bot.signer, "POST", "/api/v1/order",
                                   body=order_body(f"{o.price:f}", f"{o.quantity:f}", side=o.side.value,
                                                   client_id=o.client_id))
                if r.status_code == 200:
                    self.twins.add(r.json()["id"])
        elif kind == "ws_drop":
            c.fault(kind="ws_drop", seconds=rng.uniform(0, 3))
        elif kind == "ws_silent":
            c.fault(kind="ws_silent", seconds=rng.uniform(2, 8))
        else:
            self.bot.proc.send_signal(signal.SIGKILL)
            self.bot.proc.wait(timeout=30)
            time.sleep(rng.uniform(0, 2))
            self.bot.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "grid_bot.py"), "--config",
                                              self.bot.config], cwd=self.bot.dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    # A random walk that stays around the grid: a move every 0.3 s, pulled back toward the middle.
    sim = SimProcess("--feed", "random", "--price", "149.5", "--seed", str(args.seed), "--volatility", "0.004",
                     "--tick-seconds", "0.3", "--reversion", "0.02")
    violations: list[str] = []
    samples = 0
    bot = BotProcess(sim, log_level="INFO", interval=1, quantity="0.1")
    storm = Storm(sim, bot, rng)
    try:
        wait_for(lambda: len(bot.open_orders()) >= 7, timeout=60, every=0.1)
        deadline = time.monotonic() + args.minutes * 60
        next_strike = time.monotonic() + rng.uniform(1, 4)
        while time.monotonic() < deadline:
            time.sleep(0.3)
            st = sim.control.state()
            samples += 1
            mine = [o for o in st["orders"] if o["account"] == bot.api_key and o["status"] in ("New", "PartiallyFilled")
                    and o["id"] not in storm.twins]
            prices = [(o["side"], o["price"]) for o in mine]
            if len(prices) != len(set(prices)):
                violations.append(f"two orders at one price at {st['time_us']}: {sorted(prices)}")
            if len(mine) > len(LEVELS) - 1:
                violations.append(f"{len(mine)} orders resting at {st['time_us']} (the grid holds {len(LEVELS) - 1})")
            if time.monotonic() >= next_strike:
                sim.control.clear_faults()
                storm.strike()
                next_strike = time.monotonic() + rng.uniform(1, 4)
        sim.control.clear_faults()
        # The last word: a bot that is running (restarted if the storm had just killed it), stopped gracefully.
        time.sleep(5)
        bot.proc.send_signal(signal.SIGTERM)
        code = bot.proc.wait(timeout=120)
        if code != 0:
            violations.append(f"the graceful stop exited {code}")
        st = sim.control.state()
    finally:
        if bot.proc.poll() is None:
            bot.proc.kill()
        sim.proc.terminate()
        sim.proc.wait(timeout=10)
    ours = [o for o in st["orders"] if o["account"] == bot.api_key and o["id"] not in storm.twins]
    left = [o for o in st["orders"] if o["account"] == bot.api_key and o["status"] in ("New", "PartiallyFilled")]
    if left:
        violations.append(f"{len(left)} order(s) left open after the graceful stop: {[o['id'] for o in left]}")
    twins_open = [o for o in st["orders"] if o["id"] in storm.twins and o["status"] != "Cancelled"
                  and o["status"] != "Filled"]
    if twins_open:
        violations.append(f"{len(twins_open)} replayed twin(s) not cancelled")
    try:
        assert_counter_orders(ours, LEVELS)
    except AssertionError as e:
        violations.append(f"counter-orders: {e}")
    status = json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "grid_bot.py"), "status", "--json",
                                        "--config", bot.config], capture_output=True, text=True).stdout)
    want = ledger_totals(st, [o for o in st["orders"] if o["account"] == bot.api_key], LEVELS, "SOL")
    got = status["stats"]
    if (got["round_trips"], D(got["grid_profit"]), {k: D(v) for k, v in got["fees"].items()}, D(got["position"])) != \
            (want["round_trips"], want["grid_profit"], want["fees"], want["position"]):
        violations.append(f"statistics differ from the ledger: bot {got}, ledger {want}")
    fills = [f for f in st["fills"] if f["account"] == bot.api_key]
    print(f"soak: {args.minutes:g} min, seed {args.seed}: {len(fills)} fills, {want['round_trips']} round trips, "
          f"{samples} samples; storm: {', '.join(f'{k} {v}' for k, v in sorted(storm.counts.items()))}")
    print(f"violations: {len(violations)}")
    for v in violations[:20]:
        print(f"  - {v}")


if __name__ == "__main__":
    main()
