"""Tier 1: exits and trailing in the core (risk.py, TrailMoves.shift), the ladder, the config's risk keys
and the simulator's taker depth, driven with plain values."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gridbot.core.accounting import Ledger
from gridbot.ops.config import ConfigError, load_config
from gridbot.core.errors import InputError
from grid_calculator import GridMode, GridSpec, Ladder, grid_levels
from gridbot.core.models import Fill, Order, OrderStatus, Side
from order_manager import OrderManager
from gridbot.core.order_state import Cancel, Settings
from gridbot.core.risk import (Move, RiskConfig, RiskGuard, RiskState, StartFunds, StopNow, TrailMove, Trigger, exit_notes,
                  sale_floor, start_funds, total_return, trail_needs)
from simulator.engine import Exchange
from simulator.markets import DEFAULT_MARKETS
from simulator.records import OrderRequest
from gridbot.engine.state_store import StateStore

D = Decimal
LADDER = Ladder(D(140), D(158), 10, GridMode.ARITHMETIC, D("0.01"))
LEVELS = LADDER.window(0)


def guard_state(**cfg) -> tuple[RiskGuard, RiskState]:
    st = RiskState(ladder=LADDER, start=start_funds(LEVELS, D("0.5"), D("149.5")))
    return RiskGuard(RiskConfig(**cfg)), st


def test_the_ladder_continues_a_grid_by_its_step_or_its_ratio():
    for mode in GridMode:
        ladder = Ladder(D(140), D(158), 10, mode, D("0.01"))
        assert ladder.window(0) == grid_levels(D(140), D(158), 10, mode, D("0.01"))
        assert ladder.window(3)[:7] == ladder.window(0)[3:]          # a move keeps the levels it keeps
    geo = Ladder(D(100), D(200), 5, GridMode.GEOMETRIC, D("0.01"))
    ratio = (D(200) / D(100)) ** (D(1) / 4)
    assert abs(geo.price(6) - D(200) * ratio * ratio) <= D("0.01")   # the same ratio beyond the top
    assert not Ladder(D(1), D(9), 5, GridMode.ARITHMETIC, D("0.01")).usable(-1, D(0))   # level 0 reached


def test_the_trigger_fires_when_the_price_crosses_it_from_either_side():
    g, st = guard_state()
    st.arm(D(145), D("149.5"))
    assert st.trigger_from == "above" and not st.triggered
    assert g.decide(st, LEVELS, Ledger("SOL", "USDC"), D("145.01"), 0) is None
    assert g.decide(st, LEVELS, Ledger("SOL", "USDC"), D(145), 0) == Trigger(D(145))
    st2 = RiskState()
    st2.arm(D(150), D(140))
    assert st2.trigger_from == "below" and RiskGuard.crossed(st2, D("150.2")) and not RiskGuard.crossed(st2, D("149"))
    st3 = RiskState()
    st3.arm(D(150), D(150))
    assert st3.triggered                                                  # at the price: at once


def test_precedence_stop_loss_then_take_profit_then_range():
    g, st = guard_state(stop_loss_price=D(139), take_profit_return=D("-0.5") + 1, out_of_range="stop")
    # 138 is below the stop-loss and outside the range: the stop-loss wins.
    assert g.decide(st, LEVELS, Ledger("SOL", "USDC"), D(138), 0).reason == "stop-loss price"
    g, st = guard_state(stop_loss_return=D("-0.01"), take_profit_price=D(160))
    lg = Ledger("SOL", "USDC", position=D(0), quote_flow=D(-50))        # down 50 USDC: -7.6 %
    assert g.decide(st, LEVELS, lg, D(161), 0).reason == "stop-loss return"
    g, st = guard_state(take_profit_price=D(160), out_of_range="stop")
    assert g.decide(st, LEVELS, Ledger("SOL", "USDC"), D(161), 0).reason == "take-profit price"


def test_total_return_is_equity_against_the_starting_value():
    funds = StartFunds(D(2), D(360), D("149.5"))                       # 659 USDC
    lg = Ledger("SOL", "USDC", position=D("-0.5"), quote_flow=D("75.94"))
    assert total_return(funds, lg, D(152)) == (D("1.5") * 152 + D("435.94")) / D(659) - 1
    assert total_return(None, lg, D(152)) is None


def test_stop_delay_needs_the_condition_without_a_break():
    g, st = guard_state(stop_loss_price=D(145), stop_delay=10)
    lg = Ledger("SOL", "USDC")
    assert g.decide(st, LEVELS, lg, D(144), 0) is None
    assert g.decide(st, LEVELS, lg, D(144), 9_999) is None
    assert g.decide(st, LEVELS, lg, D(146), 10_500) is None             # the wick ended: the clock restarts
    assert g.decide(st, LEVELS, lg, D(144), 11_000) is None
    assert g.decide(st, LEVELS, lg, D(144), 20_999) is None
    d = g.decide(st, LEVELS, lg, D(144), 21_000)
    assert isinstance(d, StopNow) and d.detail.endswith("(for 10 s)")


def test_trailing_moves_only_beyond_one_step_and_within_the_limits():
    g, st = guard_state(out_of_range="trail", trail_up_limit=D(162), trail_down_limit=D(138))
    lg = Ledger("SOL", "USDC")
    assert g.decide(st, LEVELS, lg, D(160), 0) is None                  # not more than one step above 158
    assert g.decide(st, LEVELS, lg, D("160.01"), 0) == Move(True)
    st.offset = 2                                                       # 144..162: the next top, 164, passes the limit
    assert g.decide(st, LADDER.window(2), lg, D(170), 0) is None
    assert "above trail_up_limit 162" in g.trail_limits_reached(st, LADDER.window(2), D(170))
    st.offset = 0
    assert g.decide(st, LEVELS, lg, D("137.99"), 0) == Move(False)
    st.offset = -1                                                      # 138..156: 136 would pass the limit
    assert g.decide(st, LADDER.window(-1), lg, D(130), 0) is None
    assert trail_needs(RiskConfig(out_of_range="trail", trail_up_limit=D(162), trail_down_limit=D(138)), LADDER,
                       D("0.5")) == (2, 1, (D(158) - D(140) + D(160) - D(142)) * D("0.5"))


def om_at(price: str) -> OrderManager:
    grid = GridSpec("SOL_USDC", "SOL", "USDC", LEVELS, D("0.5"), GridMode.ARITHMETIC)
    om = OrderManager(grid, tag=9, settings=Settings())
    om.risk = RiskState(ladder=LADDER)
    om.start(D(price))
    for i, p in enumerate(om.take_placements(0, D(price))):
        om.sending(p.client_id, 0)
        om.placed(p.client_id, Order(f"o{p.client_id}", p.client_id, "SOL_USDC", p.side, p.price, p.quantity,
                                     D(0), D(0), OrderStatus.NEW, 0, True), 1)
    return om


def test_a_move_up_drops_the_lowest_pair_cancels_its_buy_and_adds_a_buy_at_the_old_top():
    om = om_at("170")                                                   # above the range: nine buys
    assert om.trail.can_shift(True) and not om.trail.can_shift(False)
    lowest = next(o for o in om.live.values() if o.level == 0)
    om.trail.shift(True, LADDER.window(1))
    assert om.grid.levels == LADDER.window(1) and om.offset == 1
    actions = om.take_actions(10, D(170))
    # Cancel, confirm, then place: the new buy waits for the dropped buy's funds, and no second move
    # starts before the cancel is confirmed.
    assert actions == [Cancel(lowest.client_id, lowest.order_id)]
    assert not om.trail.can_shift(True)
    om.news.cancel_result(lowest.client_id, lowest.order_id,
                     Order(lowest.order_id, lowest.client_id, "SOL_USDC", Side.BID, D(140), D("0.5"), D(0), D(0),
                           OrderStatus.CANCELLED, 0, True), 20)
    places = om.take_actions(30, D(170))
    assert [(p.level, p.side, p.price) for p in places] == [(9, Side.BID, D(158))]
    assert all(type(p).__name__ == "Place" for p in places)


def test_a_fill_that_raced_a_moves_cancel_is_accounted_without_a_counter_order():
    om = om_at("170")
    lowest = next(o for o in om.live.values() if o.level == 0)
    om.trail.shift(True, LADDER.window(1))
    assert om.take_actions(10, D(170)) == [Cancel(lowest.client_id, lowest.order_id)]
    # The dropped buy filled before the cancel reached it: accounted, and no counter-order (its pair is
    # gone); the new top buy goes out now that the dropped order is settled.
    om.apply_fill(Fill(1, lowest.order_id, lowest.client_id, "SOL_USDC", Side.BID, D(140), D("0.5"), D(0), "SOL",
                       True, 5))
    assert om.ledger.position == D("0.5")
    places = om.take_placements(10, D(170))
    assert [(p.level, p.side) for p in places] == [(9, Side.BID)]


def test_a_move_and_its_orphan_survive_a_restart_and_the_cancel_is_sent_again(tmp_path):
    om = om_at("170")
    store = StateStore(str(tmp_path / "s.db"))
    gid = store.create_grid({}, om.grid, 9, 0, om.risk)
    store.save(gid, om.take_changes(), 0)
    om.trail.shift(True, LADDER.window(1))
    om.risk.moves.append(TrailMove(1, "up", 1, D(142), D(160), D(170)))   # as GridRisk.move records it
    cancels = om.trail.take_orphan_cancels()                                   # sent, then the process died
    store.save(gid, om.take_changes(), 1)
    saved = store.grid(gid)
    assert saved.risk.offset == 1 and saved.spec.levels == LADDER.window(1)
    again = OrderManager.from_snapshot(saved.spec, 9, store.load(saved), Settings())
    assert again.offset == 1 and [p.index for p in again.pairs] == list(range(1, 10))
    assert again.trail.take_orphan_cancels() == cancels                        # asked again: "not found" is fine
    store.close()


CONFIG = {"api": {"api_key": "", "api_secret": ""}, "log": {"console": False},
          "trading": {"symbol": "SOL_USDC", "grid_lower": "140", "grid_upper": "158", "grid_num": 10, "quantity": "1"}}


@pytest.mark.parametrize("risk,words", [
    ({"stop_loss_price": "150", "take_profit_price": "150"},
     "risk.stop_loss_price (150) must be below risk.take_profit_price"),
    ({"stop_loss_return": "0.1"}, "risk.stop_loss_return must be a loss between -1 and 0"),
    ({"take_profit_return": "-0.1"}, "risk.take_profit_return must be a gain above 0"),
    ({"out_of_range": "trail"}, "both risk.trail_up_limit and risk.trail_down_limit are null"),
    ({"out_of_range": "trail", "trail_up_limit": "150"}, "risk.trail_up_limit (150) must be above trading.grid_upper"),
    ({"out_of_range": "follow"}, "risk.out_of_range must be one of wait, stop, trail"),
    ({"on_stop": "sell"}, "risk.on_stop must be one of keep, sell_base"),
    ({"max_slippage": "0.2"}, "risk.max_slippage must be below 0.1"),
    ({"stop_delay": -1}, "risk.stop_delay must be a number of seconds from 0 to 86,400"),
    ({"stop_los_price": "1"}, "did you mean risk.stop_loss_price?"),
])
def test_the_risk_keys_are_checked_with_one_line_each(tmp_path, risk, words):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({**CONFIG, "risk": risk}))
    with pytest.raises(ConfigError) as e:
        load_config(str(f), need_keys=False)
    assert words in str(e.value)


def test_a_stop_that_would_fire_at_once_is_refused_one_inside_the_range_is_a_warning():
    cfg = RiskConfig(stop_loss_price=D(150))
    with pytest.raises(InputError, match="at or above the price 149.5: the grid would stop at once"):
        exit_notes(cfg, LEVELS, D("149.5"))
    with pytest.raises(InputError, match="not below the grid's range"):
        exit_notes(RiskConfig(stop_loss_price=D(158)), LEVELS, D(160))
    assert "lies inside the grid's range" in exit_notes(RiskConfig(stop_loss_price=D(145)), LEVELS, D("149.5"))[0]
    assert "can never trail up" in exit_notes(RiskConfig(out_of_range="trail", trail_up_limit=D(159)), LEVELS,
                                              D("149.5"), LADDER)[0]
    assert exit_notes(RiskConfig(stop_loss_price=D(150)), LEVELS, D("149.5"), fresh=False) == [
        "risk.stop_loss_price 150 lies inside the grid's range 140.00..158.00: the grid stops before its lowest "
        "levels can trade"]


def test_the_cap_rounds_toward_the_safe_side():
    assert sale_floor(D("138.9"), D("0.005"), D("0.01")) == D("138.21")   # 138.2055 up
    assert sale_floor(D("100"), D("0.005"), D("0.01")) == D("99.50")


def test_the_simulator_taker_depth_walks_the_book_to_the_limit():
    spec = next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC")
    ex = Exchange([spec], maker_fee=D("0.001"), taker_fee=D("0.001"), starting_balances={"SOL": D(10), "USDC": D(0)},
                  prices={"SOL_USDC": D(100)})
    ex.set_taker_depth("SOL_USDC", D("0.5"))
    o = ex.submit("k", OrderRequest("SOL_USDC", "Ask", "Limit", D(3), D("99.97"), tif="IOC"))
    assert [(f.price, f.quantity) for f in ex.fills] == [(D("99.99"), D("0.5")), (D("99.98"), D("0.5")),
                                                         (D("99.97"), D("0.5"))]
    assert o.status == "Expired" and o.executed == D("1.5") and ex.markets["SOL_USDC"].price == D("99.97")
    fok = ex.submit("k", OrderRequest("SOL_USDC", "Ask", "Limit", D(3), D("99.95"), tif="FOK"))
    assert fok.status == "Expired" and fok.executed == 0                 # 2 ticks x 0.5 < 3: nothing
    ex.set_taker_depth("SOL_USDC", None)
    full = ex.submit("k", OrderRequest("SOL_USDC", "Ask", "Limit", D(3), D("90"), tif="IOC"))
    assert full.status == "Filled" and ex.fills[-1].price == D("99.96")  # unlimited at the touch, as before
