"""A perps grid's worst case before its first order (gridbot/core/perp_risk.py): the position at each end of
the range, its margin and its liquidation price, against the contract's worked example and against the
simulator, which liquidates by its own code at the price computed here."""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import pytest

from gridbot.core.perp_risk import MarginFunctions, end_states, liquidation_price
from simulator import running_simulator
from tests.test_sim_perp_positions import Acct

D = Decimal
SOL = MarginFunctions(D("0.02"), D("0.00006"), D("0.0135"), D("0.000036"))   # SOL_USDC_PERP's
LEVELS = tuple(D(x) for x in range(100, 145, 5))                              # 100, 105, ..., 140


def test_the_contracts_liquidation_point():
    """1,000 USDC, 50 SOL long at 120: liquidated at 101.368 (5000 / 49.325)."""
    p = liquidation_price(D(1000), D(50), D(120), SOL)
    assert p is not None and abs(p - D(5000) / D("49.325")) < D("0.000001")
    assert liquidation_price(D(10**6), D(50), D(120), SOL) is None        # collateral covers a fall to zero
    assert liquidation_price(D(1000), D(0), D(120), SOL) is None          # flat
    short = liquidation_price(D(1000), D(-50), D(120), SOL)              # 1000 - 50 (P - 120) = 0.675 P
    assert short is not None and abs(short - D(7000) / D("50.675")) < D("0.000001")


@pytest.mark.parametrize("direction, bottom, top", [
    ("neutral", (D(8), D("107.5")), (D(-8), D("132.5"))),
    ("long", (D(16), D("113.75")), (D(0), D(0))),
    ("short", (D(0), D(0)), (D(-16), D("126.25"))),
])
def test_each_direction_at_each_end(direction, bottom, top):
    """Price 120 between 100 and 140: four buys below (100..115), four sells above (125..140), 2 each."""
    b, t = end_states(LEVELS, D(120), D(2), direction, D(1000), SOL, leverage=D(10))
    assert (b.position, b.entry) == bottom and (t.position, t.entry) == top
    assert (b.price, t.price) == (D(100), D(140))
    for s in (b, t):
        if s.position:
            assert s.initial_margin == D("0.1") * s.notional         # leverage 10: IMF 0.1 at these sizes
            assert s.maintenance_margin == D("0.0135") * s.notional
        else:
            assert s.liquidation_price is None and s.distance() is None


def test_fees_paid_on_the_way_bring_the_liquidation_closer():
    free, _ = end_states(LEVELS, D(120), D(2), "neutral", D(300), SOL)
    paid, _ = end_states(LEVELS, D(120), D(2), "neutral", D(300), SOL, maker_fee=D("0.0002"))
    assert paid.fees == D(2) * (100 + 105 + 110 + 115) * D("0.0002")
    assert paid.liquidation_price > free.liquidation_price


@pytest.mark.parametrize("direction", ["neutral", "short"])
def test_the_simulator_liquidates_where_the_plan_says(direction):
    """The worst case built on the simulator (every level of one side filled as a maker), then the price
    walked toward the computed liquidation price: healthy a tick before it, liquidated at it."""
    collateral, qty, fee = D(300), D(2), D("0.0002")
    with running_simulator(feed="none", maker_fee=fee, taker_fee=fee) as sim:
        a = Acct(sim, usdc=str(collateral))
        bottom, top = end_states(LEVELS, D(120), qty, direction, collateral, SOL, leverage=D(10), maker_fee=fee,
                                 taker_fee=fee)
        state = top if direction == "short" else bottom
        if direction == "short":
            a.price("120.01")
            a.order("Ask", "119", str(qty * 4))                          # the opening sale: a taker at 120.00
            for lv in LEVELS[5:]:
                a.order("Ask", str(lv), str(qty), post_only=True)
            a.price("140.01")                                           # every sell above fills at its level
        else:
            a.price("120")
            for lv in LEVELS[:4]:
                a.order("Bid", str(lv), str(qty), post_only=True)
            a.price("99.99")                                            # every buy below fills at its level
        pos = a.positions()[0]
        assert D(pos["netQuantity"]) == state.position
        liq = state.liquidation_price
        assert liq is not None
        tick = D("0.01")
        if state.position > 0:
            safe, fatal = liq.quantize(tick, ROUND_CEILING) + tick, liq.quantize(tick, ROUND_FLOOR)
        else:
            safe, fatal = liq.quantize(tick, ROUND_FLOOR) - tick, liq.quantize(tick, ROUND_CEILING)
        a.price(str(safe))
        assert a.positions(), f"liquidated before the computed {liq}"
        a.price(str(fatal))
        assert a.positions() == [], f"not liquidated past the computed {liq}"


def _margin_shortfalls(q, direction, leverage=D(3), taker=D(0), maker=D(0)):
    """How far the equity exceeds the initial margin at the start and at each end, for ``q`` per level
    (independently of quantity_for: the positions from end_states, the margin by hand)."""
    bottom, top = end_states(LEVELS, D(120), q, direction, D(1000), SOL, maker_fee=maker, taker_fee=taker)
    below, above = sum(1 for lv in LEVELS if lv < 120), sum(1 for lv in LEVELS if lv > 120)
    start_exposure = (max(below, above) if direction == "neutral" else below + above) * q
    opening = {"neutral": 0, "long": above, "short": below}[direction] * q
    out = [D(1000) - taker * opening * 120 - start_exposure * 120 / leverage]
    for s in (bottom, top):
        out.append(D(1000) - s.fees + s.position * (s.price - s.entry) - abs(s.position) * s.price / leverage)
    return out


@pytest.mark.parametrize("direction", ["neutral", "long", "short"])
def test_the_quantity_per_level_keeps_every_order_within_the_initial_margin_across_the_range(direction):
    from gridbot.core.perp_risk import quantity_for
    step = D("0.01")
    q = quantity_for(LEVELS, D(120), direction, D(1000), D(3), step)
    assert min(_margin_shortfalls(q, direction)) >= 0                     # covered at the start and both ends
    assert min(_margin_shortfalls(q + step, direction)) < 0               # and no step more
    # neutral: its top (4 sells from 125, entry 132.5, at 140: a loss of 30 and a margin of 186.67 per unit);
    # long: its bottom (4 opened at 120 and 4 buys, entry 113.75, at 100); short: its top.
    assert {"neutral": D("4.61"), "long": D("2.65"), "short": D("2.06")}[direction] == q


def test_the_quantity_leaves_room_for_the_fees_and_the_market_imf():
    from gridbot.core.perp_risk import quantity_for
    step = D("0.01")
    q = quantity_for(LEVELS, D(120), "long", D(1000), D(3), step, taker_fee=D("0.001"), maker_fee=D("0.001"))
    assert min(_margin_shortfalls(q, "long", taker=D("0.001"), maker=D("0.001"))) >= 0
    assert min(_margin_shortfalls(q + step, "long", taker=D("0.001"), maker=D("0.001"))) < 0
    # At 50x the market's IMF (2 % at this size) and the bottom's loss bind: 1000 / (110 + 0.02 x 800).
    q50 = quantity_for(LEVELS, D(120), "long", D(1000), D(50), step, fns=SOL)
    assert q50 == D("7.93") and min(_margin_shortfalls(q50, "long", leverage=D(50))) >= 0
    assert min(_margin_shortfalls(q50 + step, "long", leverage=D(50))) < 0


def test_funding_per_day_follows_the_sign_rule():
    from gridbot.core.perp_risk import funding_per_day
    assert funding_per_day(D(2), D(150), D("0.0000125")) == D("-0.09")      # a long pays a positive rate
    assert funding_per_day(D(-2), D(150), D("0.0000125")) == D("0.09")


def test_a_perps_grids_return_counts_its_funding_so_do_its_return_exits():
    from gridbot.core.accounting import Ledger, figures, perp_start_funds, total_return
    from gridbot.core.risk import RiskConfig, RiskGuard, RiskState
    start = perp_start_funds(D(300), D(2), D(150))                  # a long of 2 opened at 150 on 300 USDC
    assert start.value == 300
    lg = Ledger("SOL", "USDC")
    assert total_return(start, lg, D(150)) == 0
    lg.funding = D("-3")                                             # paid 3 USDC of funding
    assert total_return(start, lg, D(150)) == D("-0.01")
    f = figures(start, lg, D(160), 0)
    # against holding its opening (2 x 160 = 320): the funding paid; no grid leg open
    assert (f.equity, f.funding, f.floating_pnl, f.vs_hold) == (D(317), D(-3), D(0), D(-3))
    # A stop-loss by return of -1 % fires on the funding alone, the price unchanged.
    guard = RiskGuard(RiskConfig(stop_loss_return=D("-0.01")))
    st = RiskState(start=start)
    levels = tuple(D(x) for x in range(120, 190, 10))
    assert guard.decide(st, levels, lg, D(150), 0).reason == "stop-loss return"
    lg.funding = D("-2.99")
    assert guard.decide(st, levels, lg, D(150), 0) is None
