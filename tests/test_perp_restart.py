"""A perps grid survives ``kill -9`` where it moves money: the bot as a process, killed while the opening of a
long position is under way and while a close is under way, then started again. The restart looks the
order up by clientId and finishes what was started; nothing is bought or sold twice."""
from __future__ import annotations

import signal
from decimal import Decimal

import pytest
import requests

from simulator import SimControl, running_simulator
from tests.e2e import open_orders_of, orders_of, write_config
from tests.helpers import wait_until
from tests.test_perp_grid_e2e import GRID, SYM, sim_position
from tests.test_restart import spawn, status_json, stop

D = Decimal


def ioc_orders(st, key):
    return [o for o in orders_of(st, key) if o["timeInForce"] == "IOC"]


def held_then_killed(sim, control, p, fault_id) -> None:
    """Wait until the fault holds the bot's request at the exchange, kill the bot there (-9), then wait for
    the held request to be processed after the bot died."""
    def hit() -> bool:
        faults = requests.get(sim.rest_url + "/_sim/faults", timeout=5).json()["faults"]
        return not any(f["id"] == fault_id and f["hits"] == 0 for f in faults)
    wait_until(hit, timeout=30, message="the request held at the exchange")
    stop(p, signal.SIGKILL)


def perp_sim():
    return running_simulator(feed="none", ticker_interval=0.1, maker_fee=D("0.0002"), taker_fee=D("0.0005"))


def funded(tmp_path, sim, **extra):
    path, signer = write_config(tmp_path, sim, **{**GRID, "direction": "long", **extra})
    control = SimControl(sim.rest_url)
    control.set_price("150", symbol=SYM)
    for asset, amount in (("USDC", D(GRID["investment"])), ("SOL", 0), ("BTC", 0), ("ETH", 0)):
        control.set_balance(signer.api_key, asset, amount)
    return path, signer.api_key, control


@pytest.mark.slow
def test_kill9_during_the_opening_of_a_long_never_opens_twice(tmp_path):
    with perp_sim() as sim:
        path, key, control = funded(tmp_path, sim)
        held = control.fault(kind="delay", method="POST", path="/api/v1/order", seconds=3, count=1)
        p = spawn(path, tmp_path)
        held_then_killed(sim, control, p, held["id"])
        assert ioc_orders(control.state(), key) == []                    # not yet at the exchange when killed
        wait_until(lambda: ioc_orders(control.state(), key), timeout=30, message="the held opening processed")
        opened = sim_position(control.state(), key)
        assert opened > 0
        p = spawn(path, tmp_path)
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=60, message="the grid")
        assert stop(p) == 0
        st = control.state()
    # Found by clientId and counted: one opening order, and the position the grid's sells close, once.
    assert len(ioc_orders(st, key)) == 1 and sim_position(st, key) == opened
    log = (tmp_path / "grid_bot.log").read_text()
    assert "the entry purchase was under way" in log
    q = D(status_json(path, tmp_path)["grid"]["quantity"])
    assert opened == 5 * q


def margin_fraction(q: Decimal, mark: Decimal) -> Decimal:
    """A long grid's margin fraction at ``mark`` with its opening (5 levels, bought at 150) and its 4 buys
    resting (its sells are reduce-only): equity over the exposure (9 levels) at the mark."""
    return (D(GRID["investment"]) + 5 * q * (mark - 150)) / (9 * q * mark)


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["stop-loss", "margin stop"])
def test_kill9_during_the_close_of_a_stop_never_closes_twice_and_the_restart_finishes_it(tmp_path, stop):
    """The close is the only order the stop sends, held at the exchange while the bot is killed. The stop-loss:
    a long grid at 150 with a stop-loss at 147, the price to 146.9 (no level fills: 146.67 is the empty one).
    The margin stop: the mark alone set to 143, below the margin fraction the config stops at (halfway between
    the fractions at 150 and at 143)."""
    from tests.e2e import plan_of
    with perp_sim() as sim:
        path, key, control = funded(tmp_path, sim)
        if stop == "stop-loss":
            risk = {"stop_loss_price": "147", "on_stop": "close"}
        else:
            q = D(plan_of(path)["quantity"])
            risk = {"stop_margin_fraction": f"{(margin_fraction(q, D(150)) + margin_fraction(q, D(143))) / 2:.6f}"}
        path, key, control = funded(tmp_path, sim, risk=risk, secret=None)
        p = spawn(path, tmp_path)
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=60, message="the grid")
        opened = sim_position(control.state(), key)
        held = control.fault(kind="delay", method="POST", path="/api/v1/order", seconds=3, count=1)
        if stop == "stop-loss":
            control.set_price("146.9", symbol=SYM)
        else:
            requests.post(sim.rest_url + "/_sim/perp", json={"symbol": SYM, "markPrice": "143"},
                          timeout=10).raise_for_status()
        held_then_killed(sim, control, p, held["id"])
        wait_until(lambda: len(ioc_orders(control.state(), key)) == 2, timeout=30, message="the held close processed")
        p = spawn(path, tmp_path)
        assert p.wait(timeout=90) == 0          # the restart finishes the exit, and the bot stops
        p.stderr.close()
        st = control.state()
    closes = ioc_orders(st, key)[1:]
    assert len(closes) == 1 and closes[0]["reduceOnly"] and closes[0]["side"] == "Ask"
    assert D(closes[0]["executedQuantity"]) == opened and sim_position(st, key) == 0
    assert open_orders_of(st, key) == []
    status = status_json(path, tmp_path)
    ex = status["risk"]["exit"]
    assert status["grid"]["status"] == "stopped" and ex["phase"] == "done" and ex["on_stop"] == "close"
    assert ex["reason"] == ("stop-loss price" if stop == "stop-loss" else "margin stop")
    assert D(ex["sale"]["sold"]) == opened and ex["sale"]["side"] == "Ask"
    assert "exit was under way" in (tmp_path / "grid_bot.log").read_text()


def test_a_perps_grid_stopped_with_its_orders_kept_resumes_and_its_position_still_matches(tmp_path):
    """on_exit keep: the orders and the position stay; the next start resumes the grid (no new opening, no
    second grid), its position check agrees with the exchange, and it trades on."""
    import os

    from gridbot.engine.state_store import StateStore
    from tests.e2e import BotThread, tagged
    with perp_sim() as sim:
        path, key, control = funded(tmp_path, sim, on_exit="keep")
        db = os.path.join(os.path.dirname(path), "grid_state.db")
        with BotThread(path, store=StateStore(db)) as b:
            wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=30, message="the grid")
            control.set_price("132", symbol=SYM)                   # two buys fill: the long grows
            wait_until(lambda: b.bot.view is not None and b.bot.view.position == 7 * b.bot.om.grid.quantity,
                       timeout=20, message="two buys")
            first = b.stop()
            b.bot.store.close()
        tag = b.bot.tag
        before = {o["id"] for o in tagged(control.state(), key, tag)}
        assert len(open_orders_of(control.state(), key)) == 9 and first.error is None
        with BotThread(path, store=StateStore(db)) as b2:
            wait_until(lambda: b2.bot.perp is not None and b2.bot.perp.checks >= 2, timeout=30,
                       message="two position checks after the restart")
            assert b2.bot.tag == tag and b2.bot.perp.pending is None           # the same grid, no difference
            control.set_price("150", symbol=SYM)                              # the two sells fill: round trips
            wait_until(lambda: b2.bot.view.round_trips == 2, timeout=20, message="two round trips")
            result = b2.stop()
            b2.bot.store.close()
        st = control.state()
    assert result.error is None and result.stats.position == sim_position(st, key) == 5 * b2.bot.om.grid.quantity
    opening = [o for o in tagged(st, key, tag) if o["timeInForce"] == "IOC"]
    assert len(opening) == 1 and before <= {o["id"] for o in tagged(st, key, tag)}   # opened once, resumed
