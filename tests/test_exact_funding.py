"""The exact-funding tier: the paths that move money, run on exactly the balances ``plan`` says the grid
needs and nothing more, with no maker fee and a taker fee above it. No funds refusal may appear in the
log, no balance may go negative in the simulator's ledger, and the bot's books must equal the ledger."""
from __future__ import annotations

import logging
from decimal import Decimal

from simulator import SimControl
from tests.e2e import (assert_clean_books, book_of, fund_exactly, ledger_totals, orders_of, plan_of,
                       write_config)
from tests.test_exits import GRID, START, ladder, move, stored

D = Decimal


def test_trailing_up_on_exactly_the_extra_quote_plan_names(tmp_path, exact_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer = write_config(tmp_path, exact_sim, maker_fee="0",
                                risk={"out_of_range": "trail", "trail_up_limit": "164"}, **GRID)
    control, key = SimControl(exact_sim.rest_url), signer.api_key
    report = plan_of(path)
    fund_exactly(control, key, report, {"USDC": D(report["exits"]["trail"]["extra_quote_up"])})
    with stored(path) as b:
        move(b, control, "149.5")
        assert book_of(control.state(), key) == sorted(START)
        move(b, control, "159.9")       # every sell fills; their buys go one level down
        move(b, control, "165.5")       # three moves up, one at a time
        assert b.bot.om.offset == 3
        moves = b.bot.om.risk.moves
        result = b.stop()
    st = control.state()
    assert_clean_books(st, key, caplog.text)
    assert len({m.time_ms for m in moves}) == 3            # never two moves at once
    ledger = ledger_totals(st, orders_of(st, key), ladder(140, 164), "SOL")
    assert (result.stats.round_trips, result.stats.grid_profit) == (ledger["round_trips"], ledger["grid_profit"])


def test_a_stop_loss_that_sells_the_base_on_exactly_the_planned_balances(tmp_path, exact_sim, caplog):
    caplog.set_level(logging.INFO, logger="grid_bot")
    path, signer = write_config(tmp_path, exact_sim, maker_fee="0",
                                risk={"stop_loss_price": "145", "on_stop": "sell_base"}, **GRID)
    control, key = SimControl(exact_sim.rest_url), signer.api_key
    fund_exactly(control, key, plan_of(path))
    with stored(path) as b:
        move(b, control, "149.5")
        assert book_of(control.state(), key) == sorted(START)
        control.set_price("144.5")      # the buys at 148 and 146 fill, then the stop-loss: cancel, sell it all
        b.thread.join(60)
        assert not b.thread.is_alive(), "the bot did not stop after its exit"
    st = control.state()
    assert_clean_books(st, key, caplog.text)
    assert b.result.error is None and "stop-loss" in b.result.reason
    sale = b.bot.om.risk.exit.sale
    assert sale.done and sale.sold == sale.target > 0
    assert D(st["accounts"][key]["SOL"]["available"]) + D(st["accounts"][key]["SOL"]["locked"]) == 0


def test_two_grids_on_one_key_on_exactly_the_sum_of_their_plans(tmp_path, exact_sim, caplog):
    from backpack_api import generate_keypair
    from gridbot.engine.state_store import StateStore
    from tests.e2e import BotThread
    from tests.test_ownership import assert_apart, grid_configs
    caplog.set_level(logging.INFO, logger="grid_bot")
    a, b_, signer = grid_configs(tmp_path, exact_sim, generate_keypair()[1])
    control, key = SimControl(exact_sim.rest_url), signer.api_key
    plans = [plan_of(a), plan_of(b_)]
    for asset in ("USDC", "SOL"):
        control.set_balance(key, asset, sum(D(p["funds"][asset]["needed"]) for p in plans))
    with BotThread(a, store=StateStore(str(tmp_path / "a.db"))) as bot_a, \
            BotThread(b_, store=StateStore(str(tmp_path / "b.db"))) as bot_b:
        from tests.helpers import wait_until
        wait_until(lambda: bot_a.bot.polls >= 1 and bot_b.bot.polls >= 1, timeout=30, message="both running")
        for price in ("143.50", "153.00", "149.50"):  # through a's buys, then b's sells and a's counters
            control.set_price(price)
            bot_a.wait_polls(2)
            bot_b.wait_polls(2)
        assert_apart(control, key, bot_a, bot_b)
        bot_a.stop()
        bot_b.stop()
    assert_clean_books(control.state(), key, caplog.text)
    assert len(bot_a.bot.om.seen_trades) >= 2 and len(bot_b.bot.om.seen_trades) >= 1
