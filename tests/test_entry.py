"""Investment mode and the entry purchase (entry.py), tier 3: the real bot against the simulator."""
from __future__ import annotations

import signal
from decimal import Decimal

import pytest

from simulator import SimControl, running_simulator
from gridbot.engine.state_store import StateStore
from tests.e2e import BotThread, open_orders_of, orders_of, plan_of, write_config
from tests.helpers import wait_until
from gridbot.core.errors import StartRefused, InputError
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
    assert result.error is None
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
    assert isinstance(b.result.error, StartRefused)   # the market's refusal, exit 2
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
@pytest.mark.parametrize("where", ["request held at the exchange", "order placed, answer lost"])
def test_kill9_during_the_purchase_never_buys_twice(tmp_path, where):
    """The kill lands at a known point of the purchase: while its request is held at the exchange (it is
    processed after the bot died), or once the exchange has placed (and filled) the order but the answer
    never reached the bot. Either way the restart finds the order by clientId and buys only the rest."""
    with running_simulator(feed="none", ticker_interval=0.1, price=D("149.5")) as sim:
        control = SimControl(sim.rest_url)
        path, signer = write_config(tmp_path, sim, **INVEST)
        key = signer.api_key
        control.set_balance(key, "SOL", "0")
        log = tmp_path / "grid_bot.log"
        if where == "request held at the exchange":
            held = control.fault(kind="delay", method="POST", path="/api/v1/order", seconds=3, count=1)
        else:
            control.fault(kind="drop_response", method="POST", path="/api/v1/order", count=1)
        p = spawn(path, tmp_path)
        if where == "request held at the exchange":
            import requests

            def arrived() -> bool:                       # the exchange holds the request (the fault was hit)
                faults = requests.get(sim.rest_url + "/_sim/faults", timeout=5).json()["faults"]
                return not any(f["id"] == held["id"] and f["hits"] == 0 for f in faults)   # hit (then gone)
            wait_until(arrived, timeout=30, message="the purchase request at the exchange")
            stop(p, signal.SIGKILL)                      # the request is still held: no order yet
            assert entry_orders(control.state(), key) == []
            wait_until(lambda: entry_orders(control.state(), key), timeout=30,
                       message="the held request processed after the kill")
        else:
            wait_until(lambda: entry_orders(control.state(), key), timeout=30, message="the purchase on the book")
            stop(p, signal.SIGKILL)                      # placed and filled; the bot never heard
        control.clear_faults()
        p = spawn(path, tmp_path)
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=60, message="the grid")
        assert stop(p) == 0
        st = control.state()
    bought = sum((D(o["executedQuantity"]) for o in entry_orders(st, key)), D(0))
    assert bought == D("3.01") and len(entry_orders(st, key)) == 1   # once, found by clientId, never again
    assert "the entry purchase was under way" in log.read_text()
    assert status_json(path, tmp_path)["grid"]["status"] == "stopped"


# ------------------------------------------------------------------------------------- sizing, plan, config
import json  # noqa: E402

import grid_bot  # noqa: E402
from gridbot.paper import rules_from_spec  # noqa: E402
from grid_calculator import GridMode, grid_levels, size_for_investment  # noqa: E402
from simulator.markets import DEFAULT_MARKETS  # noqa: E402

RULES = rules_from_spec(next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC"))


def test_the_investment_is_sized_per_level_with_a_fee_reserve_and_what_is_left_over():
    levels = grid_levels(D(140), D(158), 10, GridMode.ARITHMETIC, D("0.01"))
    sz = size_for_investment(levels, D("149.5"), D(1000), D("0.001"), RULES)
    assert sz.quantity == QTY and sz.quote_for_buys == D("540") and sz.base_for_sells == D(3)
    assert sz.reserve == D("0.00675") and sz.value == D(540) + D("3.00675") * D("149.5")
    assert sz.left_over == D(1000) - sz.value and 0 <= sz.left_over < D("0.01") * D("1319.3455")
    with pytest.raises(InputError, match="trading.investment 1 is too small for this grid"):
        size_for_investment(levels, D("149.5"), D(1), D("0.001"), RULES)


def test_plan_shows_the_sizing_and_the_entry_purchase(tmp_path, quiet_sim, capsys):
    path, signer = write_config(tmp_path, quiet_sim, **INVEST)
    SimControl(quiet_sim.rest_url).set_balance(signer.api_key, "SOL", "1")
    assert grid_bot.main(["plan", "--config", path, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["quantity"] == "0.75" and r["investment"]["reserve"] == "0.00675" and r["investment"]["left_over"]
    assert r["entry"]["buys"] == "2.01" and r["entry"]["at_most"] == "150.24"     # 3.00675 - 1, up to the step
    assert not any("not enough SOL" in w for w in r["warnings"])
    assert grid_bot.main(["plan", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "investment 1000 USDC: 0.75 SOL per order" in out and "it buys 2.01 SOL for at most 301.9824 USDC" in out


@pytest.mark.parametrize("trading,words", [
    (dict(quantity="1", investment="100"), "set exactly one of trading.quantity"),
    (dict(quantity=None), "set exactly one of trading.quantity"),
    (dict(quantity=None, investment="100", entry="later"), "trading.entry must be one of buy, none"),
])
def test_the_investment_keys_are_checked(tmp_path, quiet_sim, capsys, trading, words):
    path, _ = write_config(tmp_path, quiet_sim, **trading)
    assert grid_bot.main(["plan", "--config", path]) == 2
    assert words in capsys.readouterr().err


def test_entry_none_refuses_a_short_account_as_before(tmp_path, quiet_sim, capsys):
    path, signer = write_config(tmp_path, quiet_sim, entry="none", **INVEST)
    control = SimControl(quiet_sim.rest_url)
    control.set_balance(signer.api_key, "SOL", "1")
    b = stored(path)
    with b:
        b.thread.join(30)
    assert isinstance(b.result.error, InputError) and "not enough balance for this grid: missing 2 SOL" in b.result.reason
    assert orders_of(control.state(), signer.api_key) == []


def test_no_order_ever_borrows_even_on_an_account_that_lends(tmp_path, quiet_sim, caplog):
    """The account borrows (the simulator lends, as Backpack does, to an order that allows it): the bot's
    orders say autoBorrow false, so an uncovered counter-order is held back by the bot or refused by the
    exchange, never turned into a loan, and placed once the funds are there."""
    import logging
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer = write_config(tmp_path, quiet_sim, grid_lower="140", grid_upper="158", grid_num=10,
                                quantity="0.5")
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_borrowing(key, "1000")
    # No spare SOL: the four sells lock all 2 SOL; the buy at 148 brings 0.5 SOL less its fee in SOL
    # (0.0005), so its counter-sell of 0.5 SOL at 150 is not covered.
    control.set_balance(key, "SOL", "2")
    with BotThread(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        control.set_price("147.5")
        wait_until(lambda: "does not cover it, and the bot never borrows" in caplog.text
                   or "INSUFFICIENT_FUNDS" in caplog.text, timeout=15, message="the sell held back or refused")
        st = control.state()
        assert not [o for o in open_orders_of(st, key) if o["side"] == "Ask" and D(o["price"]) == 150]
        assert all(D(v["available"]) >= 0 for v in st["accounts"][key].values())
        assert not [e for e in st["journal"] if e.get("type") == "borrow"]
        control.set_balance(key, "SOL", "1")       # funds back: the retry places it
        wait_until(lambda: [o for o in open_orders_of(control.state(), key)
                            if o["side"] == "Ask" and D(o["price"]) == 150], timeout=30, message="the retried sell")
        b.stop()
    st = control.state()
    assert all(D(v["available"]) >= 0 for v in st["accounts"][key].values())
    assert "borrowing on" in caplog.text         # the start says what the account's settings mean


def test_the_simulator_lends_to_an_order_that_allows_it_and_refuses_ours(quiet_sim):
    """What the test above relies on: with borrowing on, an order without autoBorrow false borrows (a
    negative balance); the bot's own order, autoBorrow false on the wire and in the signed string, is
    refused."""
    from backpack_api import OrderRequest, Side, generate_keypair, Signer
    from tests.helpers import order_body, signed_request
    signer = Signer(generate_keypair()[1])
    control = SimControl(quiet_sim.rest_url)
    control.set_balance(signer.api_key, "USDC", "10")
    control.set_borrowing(signer.api_key, "1000")
    ours = OrderRequest("SOL_USDC", Side.BID, D("140"), D("1"), 5).to_wire()
    assert ours["autoBorrow"] is False
    r = signed_request(quiet_sim.rest_url, signer, "POST", "/api/v1/order", body=ours)
    assert r.status_code == 400 and r.json()["code"] == "INSUFFICIENT_FUNDS"
    r = signed_request(quiet_sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140", "1"))
    assert r.status_code == 200, r.text
    usdc = control.state()["accounts"][signer.api_key]["USDC"]
    assert D(usdc["available"]) == -130 and D(usdc["locked"]) == 140    # a loan of 130


def test_with_a_trigger_the_purchase_waits_for_it_then_the_grid_is_laid_out(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, trigger_price="145", **INVEST)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_balance(key, "SOL", "0")
    with stored(path) as b:
        b.wait_polls(2)
        assert orders_of(control.state(), key) == []         # no purchase, no order before the trigger
        control.set_price("144.9")
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        b.stop()
    st = control.state()
    ours = sorted(orders_of(st, key), key=lambda o: o["createdAtUs"])
    # Sized at the trigger price (145: 0.77 SOL per order); at 144.9, 7 sells and the reserve need 5.39693 SOL,
    # bought grossed up for the account's taker fee of 0.1% charged in SOL: 5.40233, up to the step.
    assert [(o["timeInForce"], o["side"], o["price"], o["executedQuantity"]) for o in ours[:1]] == \
        [("IOC", "Bid", "145.62", "5.41")]
    assert all(o["timeInForce"] == "GTC" and D(o["quantity"]) == D("0.77") for o in ours[1:]) and len(ours) == 10


def test_on_exactly_the_balances_plan_names_the_entry_purchase_pays_its_fee_and_the_grid_starts(tmp_path, quiet_sim,
                                                                                               caplog):
    """maker_fee 0 (no fee reserve), a taker fee charged in the base bought, and an account holding only
    the USDC plan says the grid and its purchase need: the purchase buys enough that what it receives
    after its fee covers every sell, and the grid starts whole, with no order held back for funds."""
    import logging
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer = write_config(tmp_path, quiet_sim, maker_fee="0", **INVEST)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_balance(key, "SOL", "0")
    control.set_balance(key, "USDC", "0")
    report = plan_of(path)
    need = D(report["funds"]["USDC"]["needed"]) + D(report["entry"]["costs_at_most"])
    control.set_balance(key, "USDC", need)
    with stored(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        b.wait_polls(2)
        result = b.stop()
    assert result.error is None
    assert "does not cover it" not in caplog.text and "INSUFFICIENT_FUNDS" not in caplog.text
    assert "entry: bought" in caplog.text
    st = control.state()
    bought = sum((D(o["executedQuantity"]) for o in entry_orders(st, key)), D(0))
    sells = D(report["sells"]) * D(report["quantity"])
    assert bought * (1 - D("0.001")) >= sells                 # what it received covers the sells
    assert all(D(v["available"]) >= 0 for v in st["accounts"][key].values())


def test_a_start_refused_after_the_purchase_closes_its_grid_so_the_next_start_buys_only_what_is_missing(
        tmp_path, quiet_sim):
    """The purchase ends short (the price runs past the cap): the start is refused and the grid's row is
    closed, not left running; the next start is a new grid that buys only what is still missing."""
    path, signer = write_config(tmp_path, quiet_sim, maker_fee="0", **INVEST)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    control.set_balance(key, "SOL", "0")
    control.set_depth("0.02")
    b = stored(path)
    with b:
        b.thread.join(60)
    assert isinstance(b.result.error, StartRefused)
    saved = StateStore(str(tmp_path / "grid_state.db"), readonly=True)
    try:
        assert saved.active_grid() is None and saved.latest_grid().status == "stopped"
    finally:
        saved.close()


def klines_csv(path, prices) -> str:
    """One-minute candles whose opens and closes walk through ``prices``."""
    lines = ["start,open,high,low,close,end,volume,quoteVolume,trades"]
    for i, (a, b) in enumerate(zip(prices, prices[1:])):
        lines.append(f"2025-01-01 00:{i:02d}:00,{a},{max(a, b)},{min(a, b)},{b},2025-01-01 00:{i + 1:02d}:00,10,1500,5")
    (path).write_text("\n".join(lines) + "\n")
    return str(path)


def test_plan_and_backtest_size_an_investment_with_a_trigger_as_run_does(tmp_path, quiet_sim, capsys):
    """run sizes a grid that waits for its trigger at the trigger price (0.77 SOL an order above);
    plan and backtest size it there too, not at the price of the moment (0.75)."""
    path, _ = write_config(tmp_path, quiet_sim, trigger_price="145", **INVEST)
    assert D(plan_of(path)["quantity"]) == D("0.77")
    klines = klines_csv(tmp_path / "k.csv", ["149.50", "147.00", "144.90", "146.00"])
    assert grid_bot.main(["backtest", "--json", "--config", path, "--klines", klines]) == 0
    assert D(json.loads(capsys.readouterr().out)["grid"]["quantity"]) == D("0.77")


def test_auto_price_with_a_trigger_centres_the_grid_on_the_price_the_trigger_is_crossed_at(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, grid_lower=None, grid_upper=None, auto_price=True,
                                price_range="0.03", grid_num=10, quantity="0.5", trigger_price="140")
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    with stored(path) as b:
        b.wait_polls(2)
        assert orders_of(control.state(), key) == []
        control.set_price("139.00")                    # crossed at 139: the grid is 139 ± 3%
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        levels = b.bot.g.om.grid.levels
        b.stop()
    assert (levels[0], levels[-1]) == (D("134.83"), D("143.17"))
    prices = sorted(D(o["price"]) for o in orders_of(control.state(), key))
    assert prices[0] >= levels[0] and prices[-1] <= levels[-1]


def test_a_backtest_of_auto_price_with_a_trigger_centres_the_grid_where_it_is_crossed(tmp_path, quiet_sim, capsys):
    path, _ = write_config(tmp_path, quiet_sim, grid_lower=None, grid_upper=None, auto_price=True,
                           price_range="0.03", grid_num=10, quantity="0.5", trigger_price="140")
    klines = klines_csv(tmp_path / "k.csv", ["149.50", "145.00", "139.00", "138.00", "141.00"])
    assert grid_bot.main(["backtest", "--json", "--config", path, "--klines", klines]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["triggered"]["candle"] == 1 and D(r["figures"]["start_funds"]["price"]) == D("139")
    assert (r["grid"]["levels"][0], r["grid"]["levels"][-1]) == ("134.83", "143.17")   # as run lays it out
    assert len(r["figures"]["total_return"].split(".")[-1]) <= 8                       # no 28-digit figures
