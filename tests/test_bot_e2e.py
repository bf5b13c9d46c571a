"""Tier 3: the real bot against the simulator over real HTTP and WebSocket: the grid it lays out,
fills and counter-orders, and its books against the simulator's ledger."""
from __future__ import annotations

from decimal import Decimal

import pytest

from simulator import SimControl
from tests.e2e import (BotThread, assert_counter_orders, book_of, ledger_totals, open_orders_of, tagged,
                       write_config)
from tests.helpers import wait_until

D = Decimal


def levels(*xs):
    return [D(x) for x in xs]


@pytest.mark.parametrize("trading,expected", [
    (dict(grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5"),
     [("Ask", "152.00"), ("Ask", "154.00"), ("Ask", "156.00"), ("Ask", "158.00"),
      ("Bid", "140.00"), ("Bid", "142.00"), ("Bid", "144.00"), ("Bid", "146.00"), ("Bid", "148.00")]),
    (dict(grid_lower="120", grid_upper="180", grid_num=5, quantity="0.5", grid_mode="geometric"),
     [("Ask", "162.65"), ("Ask", "180.00"), ("Bid", "120.00"), ("Bid", "132.80")]),
    (dict(auto_price=True, price_range="0.04", grid_num=7, quantity="0.5", grid_lower=None, grid_upper=None),
     # 149.5 * (1 -/+ 0.04) = 143.52 .. 155.48, step 1.99333..., 149.50 stays empty
     [("Ask", "151.49"), ("Ask", "153.49"), ("Ask", "155.48"), ("Bid", "143.52"), ("Bid", "145.51"),
      ("Bid", "147.51")]),
    (dict(auto_price=True, price_range="0.1", grid_num=3, quantity="0.5", grid_mode="geometric",
          grid_lower=None, grid_upper=None),
     # 134.55 .. 164.45, middle sqrt(134.55 * 164.45) = 148.75 stays empty
     [("Ask", "164.45"), ("Bid", "134.55")]),
], ids=["fixed-arithmetic", "fixed-geometric", "auto-arithmetic", "auto-geometric"])
def test_initial_grid_is_exact(tmp_path, quiet_sim, trading, expected):
    path, signer = write_config(tmp_path, quiet_sim, **trading)
    control = SimControl(quiet_sim.rest_url)
    with BotThread(path) as b:
        want = [(side, D(price), D("0.5")) for side, price in expected]
        wait_until(lambda: book_of(control.state(), signer.api_key) == want, timeout=15,
                   message=f"the grid {want}")
        result = b.stop()
    assert result.error is None
    st = control.state()
    assert open_orders_of(st, signer.api_key) == []
    assert len(tagged(st, signer.api_key, b.bot.tag)) == len(expected)  # nothing placed twice


def test_down_then_up_each_fill_gets_one_counter_order_and_the_books_match(tmp_path, quiet_sim):
    path, signer = write_config(tmp_path, quiet_sim, grid_lower="140", grid_upper="158", grid_num=10)
    control = SimControl(quiet_sim.rest_url)
    grid = levels(*range(140, 160, 2))
    with BotThread(path) as b:
        key = signer.api_key

        def settled(n_open=9):
            # The bot's own figures through its published view (the manager belongs to its thread).
            return lambda: (len(open_orders_of(control.state(), key)) == n_open
                            and b.bot.view is not None and not b.bot.view.waiting)

        wait_until(settled(), timeout=15, message="the initial grid")
        # Down one level at a time, then three levels in one jump, then back up past the start.
        for price in ("147.50", "145.50", "139.50", "141.00", "145.00", "147.00", "149.00", "151.00",
                      "153.50"):
            control.set_price(price)
            wait_until(settled(), timeout=15, message=f"counter-orders after the move to {price}")
        result = b.stop()
    st = control.state()
    ours = tagged(st, signer.api_key, b.bot.tag)
    assert_counter_orders(ours, grid)
    expect = ledger_totals(st, ours, grid, "SOL")
    stats = result.stats
    assert stats is not None and result.error is None
    assert expect["round_trips"] >= 4, "the path should have completed several round trips"
    assert stats.round_trips == expect["round_trips"]
    assert stats.grid_profit == expect["grid_profit"]
    assert stats.fees == expect["fees"]
    assert stats.position == expect["position"]
    assert open_orders_of(st, signer.api_key) == []
