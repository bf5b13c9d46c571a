"""Exits and trailing (risk.py), tier 3: the real bot against the simulator over real HTTP and WebSocket,
on scripted price paths. Every figure is checked against the simulator's own ledger."""
from __future__ import annotations

import json
import logging
import time
from decimal import Decimal

import grid_bot
from gridbot.core.errors import InputError
from simulator import SimControl
from gridbot.engine.state_store import StateStore
from tests.e2e import BotThread, book_of, ledger_totals, open_orders_of, orders_of, write_config
from tests.helpers import wait_until

D = Decimal
GRID = dict(grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5")   # levels 140, 142 .. 158
START = [("Ask", D(p), D("0.5")) for p in ("152", "154", "156", "158")] + \
        [("Bid", D(p), D("0.5")) for p in ("140", "142", "144", "146", "148")]


def settled(b: BotThread, control: SimControl, price: str):
    """The bot has seen ``price`` and every fill of ours, and has nothing waiting it could place."""
    def check() -> bool:
        st = control.state(journal_since_us=10**18)
        om = b.bot.om
        if b.bot.price != D(price) or om is None:
            return False
        fills = [f for f in st["fills"] if f["account"] == b.bot.cfg.api.api_key]
        try:
            waiting = om.waiting_ranges(b.bot.wall_ms())
            live = list(om.live.values())
        except RuntimeError:
            return False
        return (om.ledger.fill_count == len(fills)
                and all(o.state.value == "open" and b.bot.om.trail.in_grid(o) for o in live)
                and not any((lo is None or D(price) >= lo) and (hi is None or D(price) <= hi) for lo, hi in waiting))
    return check


def move(b: BotThread, control: SimControl, price: str) -> None:
    control.set_price(price)
    wait_until(settled(b, control, price), timeout=15, message=f"the bot settled at {price}")


def finished(b: BotThread, timeout: float = 30) -> None:
    b.thread.join(timeout)
    assert not b.thread.is_alive(), "the bot did not stop after its exit"


def stored(path: str) -> BotThread:
    """The bot with its state file (kept beside the config), as ``grid_bot.py run`` has it."""
    b = BotThread(path, store=StateStore(str(_state_path(path))))
    return b


def _state_path(config_path: str):
    import os
    return os.path.join(os.path.dirname(config_path), "grid_state.db")


def saved_grid(path) -> object:
    store = StateStore(str(path), readonly=True)
    try:
        return store.latest_grid()
    finally:
        store.close()


def test_a_trigger_price_places_nothing_before_and_the_usual_grid_after(tmp_path, quiet_sim, capsys):
    path, signer = write_config(tmp_path, quiet_sim, trigger_price="145", **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    with stored(path) as b:
        b.wait_polls(2)
        assert orders_of(control.state(), key) == []          # nothing before the trigger
        assert grid_bot.main(["status", "--config", path]) == 0
        assert "waiting for the price to fall to the trigger price 145: nothing is placed until then" in \
            capsys.readouterr().out
        control.set_price("146.1")
        b.wait_polls(1)
        assert orders_of(control.state(), key) == []          # not crossed yet
        assert not b.bot.om.risk.triggered
        control.set_price("144.9")
        # As a fresh grid started at 144.9: level 2 (144) stays empty.
        want = sorted([("Ask", D(p), D("0.5")) for p in range(146, 160, 2)] +
                      [("Bid", D(p), D("0.5")) for p in ("140", "142")])
        wait_until(lambda: book_of(control.state(), key) == want, timeout=15, message="the grid laid out at 144.9")
        assert b.bot.om.risk.start.price == D("144.9")
        result = b.stop()
    assert result.error is None
    assert len(orders_of(control.state(), key)) == 9          # nothing placed twice


def test_stop_loss_by_price_with_keep_cancels_the_grid_and_a_restart_refuses(tmp_path, quiet_sim, capsys):
    path, signer = write_config(tmp_path, quiet_sim, risk={"stop_loss_price": "139"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    with stored(path) as b:
        wait_until(lambda: book_of(control.state(), key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "143.9")                       # three buys fill, their sells are placed
        control.set_price("138.9")
        finished(b)
    result = b.result
    assert result.error is None and "stop-loss price" in result.reason
    st = control.state()
    assert open_orders_of(st, key) == []
    assert not any(o["timeInForce"] == "IOC" for o in orders_of(st, key))   # keep: nothing sold
    ours = orders_of(st, key)
    ledger = ledger_totals(st, ours, [D(x) for x in range(140, 160, 2)], "SOL")
    assert (result.stats.round_trips, result.stats.grid_profit, result.stats.position) == \
        (ledger["round_trips"], ledger["grid_profit"], ledger["position"])
    saved = saved_grid(tmp_path / "grid_state.db")
    assert saved.status == "stopped" and saved.risk.exit.reason == "stop-loss price"
    assert saved.risk.exit.price == D("138.9") and saved.risk.exit.phase == "done"
    code = grid_bot.main(["status", "--config", path])
    out = capsys.readouterr().out
    assert code == 0 and "finished: stopped by the stop-loss price" in out and "at price 138.90" in out \
        and "--reset starts a new one" in out
    # A stopped grid is finished: a restart says why and refuses; --reset starts a new one.
    again = stored(path)
    with again:
        again.thread.join(30)
    assert isinstance(again.result.error, InputError)   # exit 2: --reset is the user's to run
    assert "is finished" in again.result.reason and "stop-loss price" in again.result.reason \
        and "138.9" in again.result.reason and "--reset" in again.result.reason
    assert len(orders_of(control.state(), key)) == len(ours)   # nothing placed


def test_stop_loss_with_sell_base_sells_the_grids_base_within_the_cap(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"stop_loss_price": "139", "on_stop": "sell_base",
                                                            "max_slippage": "0.005"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    with stored(path) as b:
        wait_until(lambda: book_of(control.state(), key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "147.9")
        control.set_price("138.9")
        finished(b)
    result = b.result
    assert result.error is None and "stop-loss price" in result.reason
    st = control.state()
    sale = [o for o in orders_of(st, key) if o["timeInForce"] == "IOC"]
    floor = D("138.21")                                  # 138.9 x 0.995 = 138.2055, up to the tick
    assert sale and all(o["side"] == "Ask" and D(o["price"]) == floor and not o["postOnly"] for o in sale)
    sale_fills = [f for f in st["fills"] if f["orderId"] in {o["id"] for o in sale}]
    assert all(D(f["price"]) >= floor for f in sale_fills)
    grid_orders = [o for o in orders_of(st, key) if o["timeInForce"] != "IOC"]
    ledger = ledger_totals(st, grid_orders, [D(x) for x in range(140, 160, 2)], "SOL")
    sold = sum((D(f["quantity"]) for f in sale_fills), D(0))
    # Exactly the grid's own base: what it took (2 SOL for the four sells) plus what it bought, to the step.
    grid_base = D(2) + ledger["position"]
    assert sold == grid_base.quantize(D("0.01"), rounding="ROUND_DOWN")
    saved = saved_grid(tmp_path / "grid_state.db")
    assert saved.risk.exit.sale.sold == sold and saved.risk.exit.sale.left == 0
    assert result.stats.position == ledger["position"] - sold


def test_a_sale_the_book_cannot_take_within_the_cap_reports_the_remainder(tmp_path, quiet_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer = write_config(tmp_path, quiet_sim, risk={"stop_loss_price": "139", "on_stop": "sell_base",
                                                            "max_slippage": "0.005"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    with stored(path) as b:
        wait_until(lambda: book_of(control.state(), key) == sorted(START), timeout=15, message="the grid")
        control.set_depth("0.05")       # 69 ticks from 138.89 down to the cap 138.21: 3.45 SOL in all
        control.set_price("138.9")
        finished(b)
    st = control.state()
    sale = {o["id"] for o in orders_of(st, key) if o["timeInForce"] == "IOC"}
    fills = [f for f in st["fills"] if f["orderId"] in sale]
    sold = sum((D(f["quantity"]) for f in fills), D(0))
    assert sold == D("3.45") and min(D(f["price"]) for f in fills) == D("138.21")
    saved = saved_grid(tmp_path / "grid_state.db")
    s = saved.risk.exit.sale
    assert s.sold == sold and s.left > 0 and s.note
    assert f"not sold: {s.note}" in caplog.text


def test_take_profit_by_price(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"take_profit_price": "160"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    with BotThread(path) as b:
        wait_until(lambda: book_of(control.state(), signer.api_key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "155.1")
        assert b.thread.is_alive()
        control.set_price("160")
        finished(b)
    assert b.result.error is None and "take-profit price" in b.result.reason
    assert open_orders_of(control.state(), signer.api_key) == []


def test_take_profit_by_return_uses_the_return_status_shows(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"take_profit_return": "0.01"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: book_of(control.state(), key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "152.1")       # +0.77 %: not yet
        assert b.thread.is_alive()
        control.set_price("155.1")      # +1.36 %
        finished(b)
    assert b.result.error is None and "take-profit return" in b.result.reason
    st = control.state()
    ours = orders_of(st, key)
    fills = [f for f in st["fills"] if f["account"] == key]
    # The return recomputed from the ledger: 2 SOL + 360 USDC at 149.5 to start, valued at the exit's price
    # (the last price the bot had: the ticker's, or its own latest fill's).
    at = b.bot.om.risk.exit.price
    base, quote = D(2), D(360)
    for f in fills:
        q, amount = D(f["quantity"]), D(f["price"]) * D(f["quantity"])
        base, quote = (base + q, quote - amount) if f["side"] == "Bid" else (base - q, quote + amount)
        if f["feeSymbol"] == "SOL":
            base -= D(f["fee"])
        else:
            quote -= D(f["fee"])
    ret = (base * at + quote) / (D(2) * D("149.5") + D(360)) - 1
    assert ret >= D("0.01")
    assert f"{ret.quantize(D('0.0001')):%}" in b.result.reason
    assert open_orders_of(st, key) == [] and len(ours) > 9


def test_stop_delay_a_short_wick_stops_nothing(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"stop_loss_price": "145", "stop_delay": 20}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    with BotThread(path) as b:
        wait_until(lambda: book_of(control.state(), signer.api_key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "144.5")
        move(b, control, "146.5")       # back above well within the 20 s
        b.wait_polls(2)
        assert b.thread.is_alive() and b.bot.om.risk.exit is None
        assert "stop-loss price" not in b.bot.risk.guard.since
        result = b.stop()
    assert result.error is None and "test asked to stop" in result.reason


def test_stop_delay_a_longer_wick_stops_once_it_has_lasted(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"stop_loss_price": "145", "stop_delay": 2}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    with BotThread(path) as b:
        wait_until(lambda: book_of(control.state(), signer.api_key) == sorted(START), timeout=15, message="the grid")
        set_ms = int(time.time() * 1000)
        control.set_price("144.5")
        finished(b)
    assert b.result.error is None and "(for 2 s)" in b.result.reason
    assert b.bot.om.risk.exit.time_ms - set_ms >= 2000


def test_out_of_range_stop(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"out_of_range": "stop"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    with BotThread(path) as b:
        wait_until(lambda: book_of(control.state(), signer.api_key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "157.9")       # inside: the sells up to 156 fill, nothing stops
        assert b.thread.is_alive()
        control.set_price("158.5")
        finished(b)
    assert b.result.error is None and "out of range" in b.result.reason
    assert open_orders_of(control.state(), signer.api_key) == []


def ladder(lo: int, hi: int) -> list[Decimal]:
    return [D(x) for x in range(lo, hi + 1, 2)]


def assert_maker_only_and_one_order_per_level(st: dict, key: str) -> None:
    fills = [f for f in st["fills"] if f["account"] == key]
    assert fills and all(f["isMaker"] for f in fills)                  # trailing never takes liquidity
    prices = [D(o["price"]) for o in open_orders_of(st, key)]
    assert len(prices) == len(set(prices))                              # never two orders at one level


def test_trailing_up_follows_the_price_step_by_step_up_to_the_limit(tmp_path, quiet_sim, caplog, capsys):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer = write_config(tmp_path, quiet_sim, risk={"out_of_range": "trail", "trail_up_limit": "164"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    buys = lambda lo, hi: [("Bid", p, D("0.5")) for p in ladder(lo, hi)]  # noqa: E731
    with stored(path) as b:
        wait_until(lambda: book_of(control.state(), key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "159.9")       # every sell fills; the grid holds only buys; within one step: no move
        assert b.bot.om.offset == 0 and book_of(control.state(), key) == buys(140, 156)
        move(b, control, "161")         # more than one step above the top (158 + 2): one step up
        assert b.bot.om.offset == 1 and b.bot.om.grid.levels == tuple(ladder(142, 160))
        assert book_of(control.state(), key) == buys(142, 158)
        move(b, control, "165.5")       # two more steps: 144..162, then 146..164; the next would pass 164
        assert b.bot.om.offset == 3 and b.bot.om.grid.levels == tuple(ladder(146, 164))
        assert book_of(control.state(), key) == buys(146, 162)
        move(b, control, "170")         # at the limit: waits
        assert b.bot.om.offset == 3 and book_of(control.state(), key) == buys(146, 162)
        assert "trail_up_limit 164" in caplog.text
        assert grid_bot.main(["status", "--config", path]) == 0
        assert "trailed +3 step(s) in 3 move(s); levels now 146.00..164.00" in capsys.readouterr().out
        assert grid_bot.main(["status", "--config", path, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)["levels"]
        assert [(r["level"], r["price"], r["side"]) for r in rows if r["side"]] == \
            [(i, f"{p}.00", "Bid") for i, p in enumerate(range(146, 164, 2))]
        move(b, control, "159.1")       # back down: the buys at 162 and 160 fill, their sells go one level up
        result = b.stop()
    st = control.state()
    assert_maker_only_and_one_order_per_level(st, key)
    ledger = ledger_totals(st, orders_of(st, key), ladder(140, 164), "SOL")
    assert (result.stats.round_trips, result.stats.grid_profit) == (ledger["round_trips"], ledger["grid_profit"])
    assert [(m.direction, m.lower, m.upper) for m in saved_grid(tmp_path / "grid_state.db").risk.moves] == \
        [("up", D(142), D(160)), ("up", D(144), D(162)), ("up", D(146), D(164))]


def test_trailing_down_follows_the_price_to_the_limit(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, risk={"out_of_range": "trail", "trail_down_limit": "134"}, **GRID)
    control = SimControl(quiet_sim.rest_url)
    key = signer.api_key
    sells = lambda lo, hi: [("Ask", p, D("0.5")) for p in ladder(lo, hi)]  # noqa: E731
    with stored(path) as b:
        wait_until(lambda: book_of(control.state(), key) == sorted(START), timeout=15, message="the grid")
        move(b, control, "139")         # every buy fills: only sells, 142..158
        assert b.bot.om.offset == 0 and book_of(control.state(), key) == sells(142, 158)
        move(b, control, "137.5")       # more than a step below 140: one step down, the sell at 158 goes
        assert b.bot.om.offset == -1 and book_of(control.state(), key) == sells(140, 156)
        move(b, control, "131")         # 136..154, then 134..152; 132 would pass the limit
        assert b.bot.om.offset == -3 and b.bot.om.grid.levels == tuple(ladder(134, 152))
        assert book_of(control.state(), key) == sells(136, 152)
        move(b, control, "137.1")       # back up: the sells at 136 fill, a buy goes one level down
        result = b.stop()
    st = control.state()
    assert_maker_only_and_one_order_per_level(st, key)
    ledger = ledger_totals(st, orders_of(st, key), ladder(134, 158), "SOL")
    assert (result.stats.round_trips, result.stats.grid_profit) == (ledger["round_trips"], ledger["grid_profit"])
