"""Tier 1: grid maths, no mocks needed."""
from __future__ import annotations

from decimal import Decimal

import pytest

from grid_calculator import (GridError, GridMode, GridSpec, auto_bounds, build_grid, funds_needed,
                             grid_levels, initial_plan, max_levels, nearest_level, round_trip_profit,
                             summarize, to_step)
from gridbot.core.models import MarketRules, Side

D = Decimal
SOL = MarketRules("SOL_USDC", "SOL", "USDC", D("0.01"), D("0.01"), D("0.01"), None, D("0.01"), None,
                  D("1.25"), D("0.75"), "Open")
ETH = MarketRules("ETH_USDC", "ETH", "USDC", D("0.01"), D("0.0001"), D("0.001"), None, D("0.01"), None,
                  None, None, "Open")


def test_arithmetic_levels_are_equal_steps_rounded_to_the_tick():
    levels = grid_levels(D(100), D(150), 10, GridMode.ARITHMETIC, D("0.01"))
    assert [str(x) for x in levels] == ["100.00", "105.56", "111.11", "116.67", "122.22", "127.78",
                                        "133.33", "138.89", "144.44", "150.00"]


def test_geometric_levels_are_equal_ratios():
    levels = grid_levels(D(100), D(200), 3, GridMode.GEOMETRIC, D("0.01"))
    assert levels == (D("100.00"), D("141.42"), D("200.00"))
    five = grid_levels(D(100), D(1600), 5, GridMode.GEOMETRIC, D("0.01"))
    assert five == (D("100.00"), D("200.00"), D("400.00"), D("800.00"), D("1600.00"))


def test_colliding_levels_are_an_error_that_says_how_many_fit():
    with pytest.raises(GridError, match=r"grid_num 30 is too many .* use at most 11 levels"):
        grid_levels(D("100.0"), D("101.0"), 30, GridMode.ARITHMETIC, D("0.1"))
    assert max_levels(D("100.0"), D("101.0"), GridMode.ARITHMETIC, D("0.1")) == 11
    grid_levels(D("100.0"), D("101.0"), 11, GridMode.ARITHMETIC, D("0.1"))


def test_bounds_must_be_ordered_and_positive():
    with pytest.raises(GridError, match="grid_lower 150 must be below grid_upper 100"):
        grid_levels(D(150), D(100), 5, GridMode.ARITHMETIC, D("0.01"))


def test_auto_bounds_round_inward():
    assert auto_bounds(D("150.00"), D("0.05"), D("0.01")) == (D("142.50"), D("157.50"))
    assert auto_bounds(D("123.45"), D("0.1"), D("0.01")) == (D("111.11"), D("135.79"))


def test_nearest_level_prefers_the_lower_on_a_tie():
    levels = (D(100), D(110), D(120))
    assert nearest_level(levels, D(104)) == 0
    assert nearest_level(levels, D(105)) == 0
    assert nearest_level(levels, D(106)) == 1
    assert nearest_level(levels, D(500)) == 2


def test_initial_plan_leaves_the_nearest_level_empty():
    grid = GridSpec("SOL_USDC", "SOL", "USDC", grid_levels(D(100), D(150), 6, GridMode.ARITHMETIC, D("0.01")),
                    D("0.5"), GridMode.ARITHMETIC)
    empty, plan = initial_plan(grid, D("121"))
    assert empty == 2  # 120
    assert [(o.level, o.side, o.price) for o in plan] == [
        (0, Side.BID, D("100.00")), (1, Side.BID, D("110.00")), (3, Side.ASK, D("130.00")),
        (4, Side.ASK, D("140.00")), (5, Side.ASK, D("150.00"))]
    assert funds_needed(grid, plan) == {"USDC": D("105.0000"), "SOL": D("1.5")}


def test_round_trip_profit_subtracts_both_fees():
    # buy 2 @ 100 (fee 0.002 base = 0.2 quote), sell 2 @ 101 (fee 0.202 quote)
    assert round_trip_profit(D(100), D(101), D(2), D("0.001")) == D("1.598")
    assert round_trip_profit(D(100), D("100.1"), D(1), D("0.001")) < 0


def test_build_grid_fixed_bounds():
    grid, notes = build_grid(SOL, mode=GridMode.ARITHMETIC, grid_num=5, quantity=D("0.123"),
                             post_only=True, lower=D("140"), upper=D("160"), auto_price=False,
                             price_range=None, price=None)
    assert grid.levels == (D("140.00"), D("145.00"), D("150.00"), D("155.00"), D("160.00"))
    assert grid.quantity == D("0.12") and notes == ["quantity 0.123 rounded down to 0.12 (SOL_USDC stepSize 0.01)"]


@pytest.mark.parametrize("kwargs,message", [
    (dict(lower=D("140.005"), upper=D("160")), r"grid_lower 140.005 is off SOL_USDC's price tick 0.01: "
     r"use 140.00 or 140.01"),
    (dict(lower=D("140"), upper=D("160.123")), r"grid_upper 160.123 is off .* use 160.12 or 160.13"),
    (dict(lower=D("140"), upper=D("160"), quantity=D("0.009")), r"quantity 0.009 is below "
     r"SOL_USDC's minimum order quantity 0.01"),
    (dict(lower=D("0.001"), upper=D("160")), r"off SOL_USDC's price tick"),
])
def test_build_grid_refuses_what_the_market_would_refuse(kwargs, message):
    args = dict(mode=GridMode.ARITHMETIC, grid_num=5, quantity=D("0.1"), post_only=True,
                auto_price=False, price_range=None, price=None)
    args.update(kwargs)
    with pytest.raises(GridError, match=message):
        build_grid(SOL, **args)


def test_build_grid_min_quantity_above_step():
    with pytest.raises(GridError, match="minimum order quantity 0.001"):
        build_grid(ETH, mode=GridMode.ARITHMETIC, grid_num=5, quantity=D("0.0009"), post_only=True,
                   lower=D(3000), upper=D(4000), auto_price=False, price_range=None, price=None)


def test_build_grid_auto_price_and_geometric():
    grid, _ = build_grid(SOL, mode=GridMode.GEOMETRIC, grid_num=3, quantity=D("1"), post_only=True,
                         lower=None, upper=None, auto_price=True, price_range=D("0.1"), price=D("150"))
    assert grid.levels == (D("135.00"), D("149.25"), D("165.00"))  # sqrt(135 * 165)
    assert grid.mode is GridMode.GEOMETRIC


def test_summary_reports_step_and_net_profit():
    grid = GridSpec("SOL_USDC", "SOL", "USDC", (D(100), D(110), D(120)), D(1), GridMode.ARITHMETIC)
    s = summarize(grid, D("0.001"))
    assert s.step_min == s.step_max == D(10)
    assert s.step_pct_max == D("10.0000") and s.step_pct_min == D("9.0909")
    assert s.profit_min == round_trip_profit(D(110), D(120), D(1), D("0.001"))


def test_to_step_handles_ticks_that_are_not_powers_of_ten():
    assert to_step(D("100.37"), D("0.25")) == D("100.25")
    assert to_step(D("100.38"), D("0.25")) == D("100.50")
