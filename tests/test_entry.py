"""Investment mode and the entry purchase (entry.py), tier 3: the real bot against the simulator."""
from __future__ import annotations

import random
import signal
import time
from decimal import Decimal

import pytest

from simulator import SimControl, running_simulator
from state_store import StateStore
from tests.e2e import BotThread, open_orders_of, orders_of, write_config
from tests.helpers import wait_until
from tests.test_restart import spawn, status_json, stop

D = Decimal
INVEST = dict(grid_lower="140", grid_upper="158", grid_num=10, investment="1000", quantity=None)
# 1000 USDC at 149.5: buys 140..148 (720 per unit), 4 sells and a fee reserve of 9 x 0.001 (at 149.5):
# 1000 / 1319.3455 = 0.75 SOL per order; the sells and reserve need 3 + 0.00675 SOL: 3.01 to buy.
QTY, NEED = D("0.75"), D("3.00675")


def stored(path: str) -> BotThread:
    import os
    return BotThread(path, store=StateStore(os.path.join(os.path.dirname(path), "grid_state.db")))


def entry_orders(st, key):
    return [o for o in orders_of(st, key) if o["timeInForce"] == "IOC"]


def test_a_quote_only_account_buys_exactly_the_shortfall_then_lays_the_grid(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, **INVEST)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_balance(key, "SOL", "0")
    with stored(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        result = b.stop()
    assert result.exit_code == 0
    st = control.state()
    ours = sorted(orders_of(st, key), key=lambda o: o["createdAtUs"])
    buys = entry_orders(st, key)
    # Before the grid: the IOC buys and nothing else, capped at 149.5 x 1.005 = 150.2475 -> 150.24.
    assert ours[:len(buys)] == buys and len(buys) == 1
    assert buys[0]["side"] == "Bid" and D(buys[0]["price"]) == D("150.24") and D(buys[0]["executedQuantity"]) == D("3.01")
    assert all(D(o["quantity"]) == QTY for o in ours[len(buys):])
    saved = StateStore(str(tmp_path / "grid_state.db"), readonly=True)
    g = saved.latest_grid()
    saved.close()
    assert g.risk.entry["done"] and D(g.risk.entry["bought"]) == D("3.01")
    assert g.risk.start.base == 4 * QTY + QTY * D("0.001") * 9       # the sells and the fee reserve
    assert g.params["investment"] == "1000" and "quantity" not in g.params


def test_an_account_holding_enough_base_buys_nothing(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, **INVEST)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_balance(key, "SOL", "3.1")
    with stored(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        b.stop()
    assert entry_orders(control.state(), key) == []


def test_a_price_that_runs_past_the_cap_refuses_the_start_and_reports_the_partial_purchase(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, **INVEST)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_balance(key, "SOL", "0")
    control.set_depth("0.02")           # 150.24 - 149.51 = 74 ticks of 0.02: 1.48 SOL within the cap
    b = stored(path)
    with b:
        b.thread.join(60)
    assert b.result.exit_code == 2
    assert "the entry purchase bought 1.48 of 3.01 SOL" in b.result.reason and "nothing was placed" in b.result.reason
    st = control.state()
    assert all(o["timeInForce"] == "IOC" for o in orders_of(st, key))   # no grid order
    assert all(D(f["price"]) <= D("150.24") for f in st["fills"] if f["account"] == key)
    # The next start (the price calm again) buys only what is still missing.
    control.set_depth(None)
    control.set_price("149.5")
    with stored(path) as b2:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        b2.stop()
    bought = sum((D(o["executedQuantity"]) for o in entry_orders(control.state(), key)), D(0))
    # 1.48 (1.47852 after its fee in SOL), then the 1.52823 still missing, up to the step: 1.53.
    assert bought == D("3.01")


@pytest.mark.slow
def test_kill9_during_the_purchase_never_buys_twice(tmp_path):
    rng = random.Random(2026112714)
    with running_simulator(feed="none", ticker_interval=0.1, price=D("149.5")) as sim:
        control = SimControl(sim.rest_url)
        path, signer = write_config(tmp_path, sim, **INVEST)
        key = signer.api_key
        control.set_balance(key, "SOL", "0")
        control.fault(kind="delay", method="POST", path="/api/v1/order", seconds=0.8, count=3)
        control.fault(kind="drop_response", method="POST", path="/api/v1/order")
        p = spawn(path, tmp_path)
        wait_until(lambda: (tmp_path / "grid_bot.log").exists() and "entry: IOC buy" in
                   (tmp_path / "grid_bot.log").read_text(), timeout=30, message="the purchase under way")
        time.sleep(rng.uniform(0, 0.8))
        stop(p, signal.SIGKILL)
        control.clear_faults()
        p = spawn(path, tmp_path)
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=60, message="the grid")
        assert stop(p) == 0
        st = control.state()
    bought = sum((D(o["executedQuantity"]) for o in entry_orders(st, key)), D(0))
    assert bought == D("3.01")          # once, whatever the moment of the kill
    assert "the entry purchase was under way" in (tmp_path / "grid_bot.log").read_text()
    assert status_json(path, tmp_path)["grid"]["status"] == "stopped"
