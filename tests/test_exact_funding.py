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
