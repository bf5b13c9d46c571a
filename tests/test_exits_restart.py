"""Exits and trailing survive ``kill -9`` at any moment: the bot as a process, killed during a stop with
``sell_base`` and during trail moves, then started again. It finishes the exit (or the move), never sells
twice, never resumes a stopped grid, never places an order twice."""
from __future__ import annotations

import random
import signal
import time
from decimal import ROUND_DOWN, Decimal

import pytest

from simulator import SimControl, running_simulator
from tests.e2e import ledger_totals, open_orders_of, tagged, write_config
from tests.helpers import wait_until
from tests.test_restart import spawn, status_json, stop

D = Decimal
GRID = dict(grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5")
LEVELS = [D(x) for x in range(140, 160, 2)]


def reconciled(tmp_path) -> int:
    log = tmp_path / "grid_bot.log"
    return log.read_text().count("reconciled: ") if log.exists() else 0


@pytest.mark.slow
def test_kill9_during_a_stop_with_sell_base_never_sells_twice_nor_resumes_the_grid(tmp_path):
    rng = random.Random(202611271)
    with running_simulator(feed="none", ticker_interval=0.1, price=D("149.5")) as sim:
        control = SimControl(sim.rest_url)
        path, signer = write_config(tmp_path, sim, risk={"stop_loss_price": "139", "on_stop": "sell_base"}, **GRID)
        key = signer.api_key
        for round_ in range(4):
            control.clear_faults()
            control.set_depth(None)
            control.set_price("149.5")
            before = {o["id"] for o in control.state()["orders"]}
            p = spawn(path, tmp_path, *(["--reset"] if round_ else []))
            wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=30, message="the grid")
            # Slow the cancels and the sale down, and lose the answer to one sale order, so that a kill at a
            # random moment lands in the middle of the exit.
            control.fault(kind="delay", method="DELETE", path="/api/v1/order", seconds=0.15, count=20)
            control.fault(kind="delay", method="POST", path="/api/v1/order", seconds=0.3, count=5)
            if round_ % 2:
                control.fault(kind="drop_response", method="POST", path="/api/v1/order")
                control.set_depth("0.4")   # the first IOC takes part; later ones find the book at the cap
            control.set_price("138.9")
            time.sleep(rng.uniform(0.05, 2.5))
            stop(p, signal.SIGKILL)
            control.clear_faults()
            p = spawn(path, tmp_path)
            assert p.wait(timeout=90) in (0, 2)   # 2: the first run had finished the exit before the kill
            p.stderr.close()
            st = control.state()
            new = [o for o in st["orders"] if o["id"] not in before and o["account"] == key]
            tag = new[0]["clientId"] >> 24
            assert all(o["clientId"] >> 24 == tag for o in new)
            sale = [o for o in new if o["timeInForce"] == "IOC"]
            grid_orders = [o for o in new if o["timeInForce"] != "IOC"]
            fills = [f for f in st["fills"] if f["orderId"] in {o["id"] for o in sale}]
            sold = sum((D(f["quantity"]) for f in fills), D(0))
            ledger = ledger_totals(st, grid_orders, LEVELS, "SOL")
            grid_base = D(2) + ledger["position"]
            status = status_json(path, tmp_path)
            ex = status["risk"]["exit"]
            assert status["grid"]["status"] == "stopped" and ex["phase"] == "done", status["situation"]
            assert ex["reason"] == "stop-loss price"
            assert open_orders_of(st, key) == []
            # Never more than the grid's own base, and all of it unless the book ran out within the cap.
            assert sold <= grid_base
            assert D(ex["sale"]["sold"]) == sold
            if not ex["sale"]["note"]:
                assert sold == grid_base.quantize(D("0.01"), ROUND_DOWN)
            assert all(D(f["price"]) >= D("138.21") for f in fills)
            # No grid order after the exit fired: the grid was not resumed.
            assert all(o["createdAtUs"] // 1000 <= ex["time_ms"] for o in grid_orders)
            assert len(grid_orders) == len({o["clientId"] for o in grid_orders})
            assert "finished" in status["situation"]
            assert len(tagged(st, key, tag)) == len(new)
    log = (tmp_path / "grid_bot.log").read_text()
    assert "exit was under way" in log     # at least one kill landed in the middle of an exit


@pytest.mark.slow
def test_kill9_during_trail_moves_finishes_them_without_a_duplicate(tmp_path):
    rng = random.Random(202611272)
    with running_simulator(feed="none", ticker_interval=0.1, price=D("149.5")) as sim:
        control = SimControl(sim.rest_url)
        path, signer = write_config(tmp_path, sim, risk={"out_of_range": "trail", "trail_up_limit": "170"}, **GRID)
        key = signer.api_key
        for round_ in range(3):
            control.clear_faults()
            control.set_price("149.5")
            before = {o["id"] for o in control.state()["orders"]}
            p = spawn(path, tmp_path)
            wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=30, message="the grid")
            control.set_price("159.9")
            want = [("Bid", p_) for p_ in LEVELS[:-1]]
            wait_until(lambda: sorted((o["side"], D(o["price"])) for o in open_orders_of(control.state(), key)) == want,
                       timeout=30, message="only buys")
            control.fault(kind="delay", method="DELETE", path="/api/v1/order", seconds=0.2, count=10)
            control.fault(kind="delay", method="POST", path="/api/v1/order", seconds=0.2, count=10)
            control.set_price("167")      # four moves: 148..166, buys at 148..164
            time.sleep(rng.uniform(0.05, 2.0))
            stop(p, signal.SIGKILL)
            control.clear_faults()
            settled_before = reconciled(tmp_path)
            p = spawn(path, tmp_path)
            # The restarted bot has resumed the grid and settled it with the exchange (then it finishes the moves).
            wait_until(lambda: reconciled(tmp_path) > settled_before, timeout=60, message="the restarted bot at work")
            want = [("Bid", D(x)) for x in range(148, 166, 2)]
            wait_until(lambda: sorted((o["side"], D(o["price"])) for o in open_orders_of(control.state(), key)) == want,
                       timeout=60, message="the grid moved up four steps")
            status = status_json(path, tmp_path)
            assert status["risk"]["trail_offset"] == 4
            assert [m["upper"] for m in status["risk"]["trail_moves"]] == ["160.00", "162.00", "164.00", "166.00"]
            assert status["grid"]["levels"][0] == "148.00" and status["grid"]["levels"][-1] == "166.00"
            assert stop(p) == 0
            st = control.state()
            new = [o for o in st["orders"] if o["id"] not in before and o["account"] == key]
            # 9 to start, a counter-buy for each of the 4 sells, one buy per move: never an order placed twice.
            assert len(new) == 17, sorted((o["side"], o["price"], o["status"]) for o in new)
            assert len({(o["side"], o["price"]) for o in new}) == 17
            assert all(f["isMaker"] for f in st["fills"] if f["account"] == key)
    log = (tmp_path / "grid_bot.log").read_text()
    assert "the grid has trailed" in log   # at least one kill landed after a move and before the last


def test_a_resumed_sale_waits_its_signature_window_once_not_once_per_order(quiet_sim):
    """A restarted bot settles an exit sale of three IOC orders: it waits once for the last one's window
    (any of them may still arrive), then looks each up and applies its fills."""
    import time as _time
    from backpack_api import BackpackClient, OrderRequest, Signer, generate_keypair
    from grid_calculator import GridMode, GridSpec
    from gridbot.core.models import Side
    from gridbot.core.risk import Exit, RiskConfig, Sale
    from gridbot.engine.executor import ActiveGrid, Executor
    from gridbot.engine.exit_runner import ExitRunner
    from gridbot.paper import rules_from_spec
    from order_manager import OrderManager
    from simulator.markets import DEFAULT_MARKETS
    signer = Signer(generate_keypair()[1])
    client = BackpackClient(quiet_sim.rest_url, signer)
    rules = rules_from_spec(next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC"))
    om = OrderManager(GridSpec("SOL_USDC", "SOL", "USDC", (D(140), D(150)), D("0.5"), GridMode.ARITHMETIC), tag=3)
    now = int(_time.time() * 1000)
    om.risk.exit = Exit("stop-loss price", "test", D("149.5"), now, "sell_base", phase="selling",
                        sale=Sale(D("1.5"), D("148.75")))
    for _ in range(3):                                   # three sale orders, recorded, then sent
        cid = om.outside.new_sale_order()
        client.place_order(OrderRequest("SOL_USDC", Side.ASK, D("148.75"), D("0.5"), cid, post_only=False,
                                        time_in_force="IOC"))
    sleeps: list[float] = []
    runner = ExitRunner(client, Executor(client, post_only=True, wall_ms=lambda: now, clock=_time.monotonic,
                                         sleep=sleeps.append), rules, RiskConfig(), window_ms=5000,
                        sleep=sleeps.append, wall_ms=lambda: now)
    g = ActiveGrid(om, None, None, now, lambda: now)
    assert runner.sell(g)                                # a resumed sale: every order looked up, nothing sold again
    assert sleeps == [6.0]                               # one window (and a second), not three
    assert om.risk.exit.sale.sold == D("1.5")
