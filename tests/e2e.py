"""End-to-end harness: the real bot against a real simulator over loopback, and an independent
recomputation of round trips and profit from the simulator's own fill ledger."""
from __future__ import annotations

import json
import os
import sys
import threading
from collections import defaultdict
from decimal import Decimal
from typing import Any

from backpack_api import Signer, generate_keypair
from gridbot.ops.config import load_config
from gridbot.engine.loop import GridBot, RunResult
from tests.helpers import wait_until

D = Decimal
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def write_config(tmp_path, sim, *, secret: str | None = None, name: str = "config.json",
                 api: dict | None = None, log: dict | None = None, state: dict | None = None,
                 risk: dict | None = None, **trading: Any) -> tuple[str, Signer]:
    secret = secret or generate_keypair()[1]
    signer = Signer(secret)
    t = {"symbol": "SOL_USDC", "grid_lower": "140", "grid_upper": "158", "grid_num": 10,
         "quantity": "0.5", "interval": 1, "use_websocket": True}
    t.update(trading)
    cfg = {"api": {"base_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": signer.api_key,
                   "api_secret": secret, **(api or {})},
           "trading": t,
           "log": {"file": str(tmp_path / "grid_bot.log"), "console": False, "level": "DEBUG", **(log or {})}}
    if state is not None:
        cfg["state"] = state
    if risk is not None:
        cfg["risk"] = risk
    path = tmp_path / name
    path.write_text(json.dumps(cfg, indent=2))
    return str(path), signer


def plan_of(path: str) -> dict:
    """What ``plan --json`` says about the config at ``path`` (with its keys: the account's balances and fees)."""
    import subprocess
    r = subprocess.run([PYTHON, "grid_bot.py", "plan", "--json", "--config", path], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def fund_exactly(control: Any, key: str, report: dict, extra: dict[str, Decimal] | None = None) -> dict[str, Decimal]:
    """Set the account to exactly what ``plan`` says the grid needs (plus ``extra``), nothing more."""
    funds = {asset: Decimal(row["needed"]) + (extra or {}).get(asset, Decimal(0))
             for asset, row in report["funds"].items()}
    for asset, amount in funds.items():
        control.set_balance(key, asset, amount)
    return funds


def assert_clean_books(state: dict, key: str, log_text: str) -> None:
    """The exact-funding checks: no funds refusal in the log, no negative balance (a loan) in the
    simulator's ledger."""
    assert "does not cover it" not in log_text and "INSUFFICIENT_FUNDS" not in log_text
    assert all(Decimal(v["available"]) >= 0 and Decimal(v["locked"]) >= 0 for v in state["accounts"][key].values())
    assert not [e for e in state["journal"] if e.get("type") == "borrow"]


class BotThread:
    """GridBot.run() in a thread, stopped the way a signal stops it."""

    def __init__(self, config_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("stale_after", 1.0)
        self.cfg = load_config(config_path)
        self.bot = GridBot(self.cfg, **kwargs)
        self.result: RunResult | None = None
        self.thread = threading.Thread(target=self._run, name="bot-under-test", daemon=True)

    def _run(self) -> None:
        self.result = self.bot.run()

    def __enter__(self) -> "BotThread":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.thread.is_alive():
            self.stop()

    def stop(self, timeout: float = 60) -> RunResult:
        self.bot.request_stop("test asked to stop")
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the bot did not stop"
        assert self.result is not None
        return self.result

    def wait_polls(self, n: int = 1, timeout: float = 15) -> None:
        """Wait until the bot has finished ``n`` more REST checks."""
        target = self.bot.polls + n
        wait_until(lambda: self.bot.polls >= target, timeout, message=f"{n} more REST check(s)")


# ------------------------------------------------------------------------------------ reading state
def orders_of(state: dict, api_key: str, client_ids: set[int] | None = None) -> list[dict]:
    out = [o for o in state["orders"] if o["account"] == api_key]
    if client_ids is not None:
        out = [o for o in out if o["clientId"] in client_ids]
    return out


def open_orders_of(state: dict, api_key: str) -> list[dict]:
    return [o for o in orders_of(state, api_key) if o["status"] in ("New", "PartiallyFilled")]


def book_of(state: dict, api_key: str) -> list[tuple[str, Decimal, Decimal]]:
    return sorted((o["side"], D(o["price"]), D(o["quantity"])) for o in open_orders_of(state, api_key))


def tagged(state: dict, api_key: str, tag: int) -> list[dict]:
    return [o for o in orders_of(state, api_key) if o["clientId"] is not None and o["clientId"] >> 24 == tag]


def pair_of(order: dict, levels: list[Decimal]) -> int:
    level = levels.index(D(order["price"]))
    return level if order["side"] == "Bid" else level - 1


def ledger_totals(state: dict, orders: list[dict], levels: list[Decimal], base: str) -> dict:
    """Round trips, grid profit, fees and position recomputed from the simulator's ledger alone.

    Each pair of adjacent levels holds one order at a time; its completely filled orders, in the
    order they completed, pair up two by two into round trips.
    """
    ids = {o["id"] for o in orders}
    fills = [f for f in state["fills"] if f["orderId"] in ids]
    by_order: dict[str, list[dict]] = defaultdict(list)
    for f in fills:
        by_order[f["orderId"]].append(f)
    fees: dict[str, Decimal] = defaultdict(Decimal)
    position = D(0)
    for f in fills:
        fees[f["feeSymbol"]] += D(f["fee"])
        q = D(f["quantity"])
        position += q if f["side"] == "Bid" else -q
        if f["feeSymbol"] == base:
            position -= D(f["fee"])
    legs: dict[int, list[tuple[int, str, Decimal, Decimal]]] = defaultdict(list)
    for o in orders:
        if o["status"] != "Filled":
            continue
        fs = by_order[o["id"]]
        quote = sum((D(f["price"]) * D(f["quantity"]) for f in fs), D(0))
        fee_q = sum((D(f["fee"]) * D(f["price"]) if f["feeSymbol"] == base else D(f["fee"]) for f in fs), D(0))
        done = max(f["timestampUs"] for f in fs)
        legs[pair_of(o, levels)].append((done, o["side"], quote, fee_q))
    trips, profit = 0, D(0)
    for pair_legs in legs.values():
        pair_legs.sort()
        for a, b in zip(pair_legs[0::2], pair_legs[1::2]):
            buy, sell = (a, b) if a[1] == "Bid" else (b, a)
            profit += sell[2] - buy[2] - buy[3] - sell[3]
            trips += 1
    return {"round_trips": trips, "grid_profit": profit, "fees": dict(fees), "position": position}


def assert_counter_orders(orders: list[dict], levels: list[Decimal]) -> None:
    """Each pair's orders alternate sides, each placed only after the one before it had filled:
    every fill got exactly one counter-order, at the right level."""
    fills_done = {}
    by_pair: dict[int, list[dict]] = defaultdict(list)
    for o in orders:
        by_pair[pair_of(o, levels)].append(o)
        if o["status"] == "Filled":
            fills_done[o["id"]] = o["closedAtUs"]
    for pair, os_ in by_pair.items():
        os_.sort(key=lambda o: o["createdAtUs"])
        for prev, nxt in zip(os_, os_[1:]):
            assert prev["status"] == "Filled", f"pair {pair}: {prev['id']} ({prev['status']}) was followed by another order"
            assert nxt["side"] != prev["side"], f"pair {pair}: two {prev['side']} orders in a row"
            assert nxt["createdAtUs"] >= fills_done[prev["id"]], f"pair {pair}: counter-order before the fill"
