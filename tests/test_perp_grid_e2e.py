"""Tier 3 on perps: the real bot running a perps grid against the simulator over real HTTP and WebSocket,
funded with exactly its investment (USDC only), with Backpack's tier-1 futures fees (taker above maker).

For each direction: the initial orders and which are reduce-only, counter-orders as the price moves, the
grid's position equal to the simulator's at every settled step, and the books (round trips, grid profit,
fees, position, funding) equal to the simulator's ledger to the last decimal. Then what stops a perps grid:
its own margin stop (closing before the simulator would liquidate), a liquidation it could not prevent, and a
grid too leveraged for its range.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from simulator.server import SimControl
from tests.e2e import BotThread, ledger_totals, open_orders_of, tagged, write_config
from tests.helpers import wait_until

D = Decimal
SYM = "SOL_USDC_PERP"
LEVELS = [D("120.00"), D("126.67"), D("133.33"), D("140.00"), D("146.67"), D("153.33"), D("160.00"), D("166.67"),
          D("173.33"), D("180.00")]
GRID = dict(symbol=SYM, grid_lower="120", grid_upper="180", grid_num=10, quantity=None, investment="300",
            leverage="3", maker_fee="0.0002", taker_fee="0.0005")


def funded(tmp_path, sim, *, risk=None, **trading):
    """A config for a perps grid on ``sim`` and its account holding exactly the investment, in USDC only."""
    path, signer = write_config(tmp_path, sim, risk=risk, **{**GRID, **trading})
    control = SimControl(sim.rest_url)
    for asset, amount in (("USDC", D(GRID["investment"])), ("SOL", 0), ("BTC", 0), ("ETH", 0)):
        control.set_balance(signer.api_key, asset, amount)
    return path, signer, control


def sim_position(state: dict, key: str) -> Decimal:
    p = state["perp_accounts"].get(key, {}).get("positions", {}).get(SYM)
    return D(p["netQuantity"]) if p else D(0)


def grid_orders(state: dict, key: str, tag: int) -> list[dict]:
    """Our grid's limit orders (not the opening's or a close's IOC orders)."""
    return [o for o in tagged(state, key, tag) if o["timeInForce"] == "GTC"]


@pytest.mark.parametrize("direction,opening", [("neutral", 0), ("long", 5), ("short", -4)])
def test_each_direction_trades_and_its_books_equal_the_simulators_ledger(tmp_path, perp_sim, direction, opening,
                                                                        caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer, control = funded(tmp_path, perp_sim, direction=direction)
    key = signer.api_key
    with BotThread(path) as b:
        def settled():
            v = b.bot.view
            return len(open_orders_of(control.state(), key)) == 9 and v is not None and not v.waiting

        wait_until(settled, timeout=20, message="the initial grid")
        st = control.state()
        q = b.bot.om.grid.quantity
        assert sim_position(st, key) == opening * q      # a long's or a short's opening, filled by IOC
        book = sorted((o["side"], D(o["price"]), bool(o["reduceOnly"])) for o in open_orders_of(st, key))
        reduce = {"neutral": None, "long": "Ask", "short": "Bid"}[direction]
        assert book == sorted([("Bid", lv, reduce == "Bid") for lv in LEVELS[:4]]
                              + [("Ask", lv, reduce == "Ask") for lv in LEVELS[5:]])
        start = b.bot.om.risk.start.base
        # Two buys, back up through them (two round trips), two sells, back down through one (a third).
        for price in ("139", "132", "147", "161", "152", "150"):
            control.set_price(price, symbol=SYM)
            wait_until(settled, timeout=20, message=f"counter-orders after the move to {price}")
            checked = b.bot.perp.checks
            wait_until(lambda: b.bot.perp.checks >= checked + 2, timeout=15, message="two position checks")
            # The grid's position (its opening and its fills) is the simulator's at every settled step.
            assert b.bot.view.position == sim_position(control.state(), key), price
        requests.post(perp_sim.rest_url + "/_sim/perp", json={"symbol": SYM, "fundingRate": "0.0001",
                                                               "fundingDue": True}, timeout=10).raise_for_status()
        rows = control.state()["perp_accounts"][key]["funding"]
        paid = sum((D(r["quantity"]) for r in rows), D(0))
        assert rows and paid != 0
        wait_until(lambda: b.bot.view.funding == paid, timeout=15, message=f"the funding {paid} in the bot's books")
        result = b.stop()
    assert result.error is None
    st = control.state()
    ours = grid_orders(st, key, b.bot.tag)
    expect = ledger_totals(st, ours, LEVELS, "SOL")
    s = result.stats
    assert expect["round_trips"] >= 3
    assert (s.round_trips, s.grid_profit, s.fees, s.position, s.funding) == (
        expect["round_trips"], expect["grid_profit"], expect["fees"], start + expect["position"], paid)
    assert s.position == sim_position(st, key)          # its opening and its fills
    log = caplog.text
    assert "INSUFFICIENT_MARGIN" not in log and "does not cover" not in log      # exactly funded, never short
    assert not [e for e in st["journal"] if e.get("type") == "liquidation"]


def test_a_move_toward_liquidation_stops_the_grid_and_closes_before_the_simulator_would(tmp_path, perp_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    # Short 4.05 SOL (5 levels from 153.33 up) at the top; the plan says the simulator liquidates it at 237.50.
    # With risk.stop_margin_fraction 0.25 the grid stops at 195 and closes.
    path, signer, control = funded(tmp_path, perp_sim, risk={"stop_margin_fraction": "0.25"})
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the initial grid")
        for price in ("170", "182", "190", "195", "200", "205"):
            control.set_price(price, symbol=SYM)
            checked = b.bot.perp.checks
            wait_until(lambda: b.bot.perp.checks > checked or b.bot.perp.pending, timeout=15,
                       message="a margin check")
            if b.bot.perp.pending:
                break
        assert price == "195"                                  # a margin fraction of 0.2344 there
        wait_until(lambda: not b.thread.is_alive(), timeout=30, message="the margin stop")
        result = b.result
    assert result is not None and result.error is None and "margin stop" in result.reason
    st = control.state()
    assert sim_position(st, key) == 0                                    # closed by the bot
    assert not [e for e in st["journal"] if e.get("type") == "liquidation"]
    closes = [o for o in tagged(st, key, b.bot.tag) if o["timeInForce"] == "IOC"]
    assert closes and all(o["reduceOnly"] and o["side"] == "Bid" for o in closes)
    assert all(D(o["price"]) == D("195.97") for o in closes)               # 195 x 1.005, down to the tick
    assert open_orders_of(st, key) == []
    log = caplog.text
    assert "EXIT: margin stop" in log and "exit: bought back" in log


def test_a_gap_past_liquidation_is_noticed_reported_and_nothing_is_placed_after(tmp_path, perp_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer, control = funded(tmp_path, perp_sim)
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the initial grid")
        control.set_price("240", symbol=SYM)      # every sell fills, and the short is liquidated at once
        wait_until(lambda: not b.thread.is_alive(), timeout=30, message="the bot stops on the liquidation")
        result = b.result
    assert result is not None and "liquidation" in result.reason
    st = control.state()
    started = [e["t"] for e in st["journal"] if e.get("type") == "liquidation" and e.get("state") == "started"]
    assert started
    after = [o for o in tagged(st, key, b.bot.tag) if o["createdAtUs"] > started[0]]
    assert after == [], f"placed after the liquidation: {after}"
    assert open_orders_of(st, key) == []
    log = caplog.text
    assert "EXIT: liquidation" in log and "LIQUIDATION_AUTOCLOSE" in log


def test_run_refuses_a_grid_too_leveraged_for_its_range_naming_the_price(tmp_path, perp_sim):
    path, signer, control = funded(tmp_path, perp_sim, leverage="20")
    with BotThread(path) as b:
        wait_until(lambda: not b.thread.is_alive(), timeout=20, message="the refusal")
    assert b.result is not None and b.result.error is not None
    text = str(b.result.error)
    assert "is liquidated at" in text and "beyond it (risk.liquidation_buffer 5%)" in text
    assert tagged(control.state(), signer.api_key, 0) == [] and control.state()["orders"] == []


def test_funding_made_due_shows_to_the_decimal_in_the_stats_status_and_report(tmp_path, perp_sim, caplog):
    import json
    import subprocess
    import sys

    from gridbot.engine.state_store import StateStore
    from gridbot.ops.reports import format_stats
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer, control = funded(tmp_path, perp_sim, direction="short")
    key = signer.api_key
    with BotThread(path, store=StateStore(str(tmp_path / "grid_state.db"))) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the initial grid")
        for rate in ("0.0001", "-0.00025"):      # the short receives, then pays
            requests.post(perp_sim.rest_url + "/_sim/perp", json={"symbol": SYM, "fundingRate": rate,
                                                                   "fundingDue": True}, timeout=10).raise_for_status()
        rows = control.state()["perp_accounts"][key]["funding"]
        paid = sum((D(r["quantity"]) for r in rows), D(0))
        assert len(rows) == 2 and D(rows[0]["quantity"]) > 0 > D(rows[1]["quantity"])
        wait_until(lambda: b.bot.view.funding == paid, timeout=15, message=f"the funding {paid} in the bot's books")
        digest = format_stats(b.bot.view, b.bot.grid, 1.0)     # the line the digest and the stop message carry
        result = b.stop()
        b.bot.store.close()
    assert f"| funding {'+' if paid > 0 else ''}{paid.normalize():f} USDC |" in digest
    assert result.stats.funding == paid
    assert "funding: +" in caplog.text and "funding: -" in caplog.text      # each payment logged as it came

    def cli(*args):
        r = subprocess.run([sys.executable, "grid_bot.py", *args, "--config", path], capture_output=True, text=True,
                           timeout=60, cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
        assert r.returncode == 0, r.stderr
        return r.stdout

    status = json.loads(cli("status", "--json"))
    assert D(status["stats"]["funding"]) == paid and D(status["figures"]["funding"]) == paid
    report = json.loads(cli("report", "--json"))
    assert [D(x["quantity"]) for x in report["funding"]] == [D(r["quantity"]) for r in rows]
    assert D(report["figures"]["funding"]) == paid
    text = cli("report", "--fills")
    assert f"funding             {'+' if paid > 0 else ''}{paid.normalize():f} USDC in 2 payment(s)" in text
    listed = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "grid_bot.py"), "list",
                             "--json"], cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    grids = json.loads(listed.stdout)
    assert [D(g["funding"]) for g in grids["grids"]] == [paid] and D(grids["totals"]["USDC"]["funding"]) == paid


def _external_ioc(sim, signer, side: str, qty) -> None:
    """Another client on the grid's subaccount trades at the market (the bot must not take it for its own)."""
    from tests.helpers import order_body, signed_request
    price = "140" if side == "Ask" else "160"
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body(price, f"{qty:f}", side=side, symbol=SYM, post_only=False, timeInForce="IOC"))
    assert r.status_code == 200 and r.json()["status"] == "Filled", r.text


@pytest.mark.parametrize("direction,side,part,words", [
    ("neutral", "Bid", 1, "position change: the exchange's position is"),
    ("long", "Ask", D("0.5"), "shrank our reduce-only order"),
    ("long", "Ask", 1, "expired our reduce-only order"),
])
def test_a_position_changed_behind_the_grids_back_stops_it_with_an_alert(tmp_path, perp_sim, caplog, direction, side,
                                                                       part, words):
    """Neutral: another client buys on the subaccount; the position check finds the difference. Long: another
    client sells part of the position, and the exchange shrinks a reduce-only sell (``orderModified``), or,
    sold a whole level, expires one (``ReduceOnlyNotReduced``)."""
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer, control = funded(tmp_path, perp_sim, direction=direction)
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the initial grid")
        ours_before = {o["id"] for o in tagged(control.state(), key, b.bot.tag)}
        _external_ioc(perp_sim, signer, side, (b.bot.om.grid.quantity * part).quantize(D("0.01")))
        wait_until(lambda: not b.thread.is_alive(), timeout=30, message="the grid stopped")
        result = b.result
    assert result is not None and result.error is None
    assert words in caplog.text and "EXIT: " in caplog.text
    st = control.state()
    assert open_orders_of(st, key) == []                                      # its orders cancelled
    assert {o["id"] for o in tagged(st, key, b.bot.tag)} == ours_before      # and nothing placed after


def test_a_long_grid_with_a_trigger_opens_and_lays_out_only_once_the_price_crosses_it(tmp_path, perp_sim):
    path, signer, control = funded(tmp_path, perp_sim, direction="long", trigger_price="146")
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: b.bot.polls >= 2, timeout=20, message="two checks while waiting")
        assert control.state()["orders"] == [] and sim_position(control.state(), key) == 0    # nothing yet
        control.set_price("145.5", symbol=SYM)
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid laid out")
        q = b.bot.om.grid.quantity
        st = control.state()
        # laid out at 145.5: 146.67 stays empty; the long opens the five sells above it, no more
        assert sim_position(st, key) == 5 * q == b.bot.om.risk.start.base
        assert sorted(D(o["price"]) for o in open_orders_of(st, key) if o["side"] == "Ask") == LEVELS[5:]
        result = b.stop()
    assert result.error is None and result.stats.position == 5 * q


def test_a_neutral_grid_trails_up_as_on_spot_and_its_position_stays_the_exchanges(tmp_path, perp_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer, control = funded(tmp_path, perp_sim, risk={"out_of_range": "trail", "trail_up_limit": "200"})
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the initial grid")
        control.set_price("188", symbol=SYM)          # every sell fills; more than a step above the top
        wait_until(lambda: b.bot.om.offset >= 1 and not b.bot.view.waiting, timeout=20, message="a trail move up")
        checked = b.bot.perp.checks
        wait_until(lambda: b.bot.perp.checks >= checked + 2, timeout=15, message="two position checks")
        st = control.state()
        buys = sorted(D(o["price"]) for o in open_orders_of(st, key) if o["side"] == "Bid")
        levels = b.bot.om.grid.levels
        assert levels[0] > LEVELS[0] and buys[-1] == levels[-2]        # the ladder moved up; a buy under its top
        assert b.bot.view.position == sim_position(st, key) == -5 * b.bot.om.grid.quantity
        result = b.stop()
    assert result.error is None and "moved it one step up" in caplog.text
    assert "INSUFFICIENT_MARGIN" not in caplog.text


def test_the_leverage_is_changed_only_on_an_idle_subaccount(tmp_path, perp_sim):
    """A spot order resting on the subaccount: the leverage (10 there) is not changed to 3, and the start is
    refused, naming the market. The simulator lists orders by market type as Backpack does."""
    from tests.helpers import order_body, signed_request
    path, signer, control = funded(tmp_path, perp_sim)
    control.set_balance(signer.api_key, "USDC", "1000")
    r = signed_request(perp_sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("130", "1"))
    assert r.status_code == 200, r.text

    def listed(**params):
        return [o["symbol"] for o in signed_request(perp_sim.rest_url, signer, "GET", "/api/v1/orders",
                                                    params=params or None).json()]
    assert listed() == listed(marketType="SPOT") == ["SOL_USDC"] and listed(marketType="PERP") == []
    with BotThread(path) as b:
        wait_until(lambda: not b.thread.is_alive(), timeout=20, message="the refusal")
    text = str(b.result.error)
    assert "the subaccount's leverage is 10, not trading.leverage 3" in text and "(SOL_USDC)" in text
    assert control.state()["perp_accounts"] == {} or all(
        a["leverageLimit"] == "10" for a in control.state()["perp_accounts"].values())
