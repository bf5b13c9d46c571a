"""Tier 1: the grid state machine, driven with plain values (it does no I/O)."""
from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from grid_calculator import GridMode, GridSpec
from gridbot.core.models import Fill, Order, OrderStatus, OrderUpdate, Side
from gridbot.core.events import (ClosedByExchange, CounterOrderDecided, DuplicateOnBook, FillApplied, OrderRefused,
                    RoundTripCompleted, TransitionRefused)
from order_manager import OrderManager
from gridbot.core.order_state import Cancel, Lookup, OrderState, Place, Settings

D = Decimal
LEVELS = (D("100"), D("110"), D("120"), D("130"), D("140"))
GRID = GridSpec("SOL_USDC", "SOL", "USDC", LEVELS, D("1"), GridMode.ARITHMETIC)
_trade = itertools.count(1)
_oid = itertools.count(1000)


def new_om(price="121", **settings) -> tuple[OrderManager, list[Place]]:
    om = OrderManager(GRID, tag=7, settings=Settings(**settings))
    om.start(D(price))
    places = om.take_actions(0, D(price))
    for p in places:
        om.sending(p.client_id, 0)
        om.placed(p.client_id, order_of(p), 1)
    return om, places


def order_of(p: Place, status=OrderStatus.NEW, executed="0") -> Order:
    oid = str(next(_oid))
    return Order(oid, p.client_id, "SOL_USDC", p.side, p.price, p.quantity, D(executed),
                 D(executed) * p.price, status, 0, True)


def fill(om: OrderManager, level: int, qty="1", fee=None, trade_id=None) -> Fill:
    o = next(o for o in om.orders.values() if o.level == level and o.state is OrderState.OPEN)
    qty = D(qty)
    if fee is None:
        fee = qty * D("0.001") if o.side is Side.BID else o.price * qty * D("0.001")
    return Fill(trade_id or next(_trade), o.order_id, o.client_id, "SOL_USDC", o.side, o.price, qty,
                D(fee), "SOL" if o.side is Side.BID else "USDC", True, 0)


def book(om: OrderManager) -> dict[int, str]:
    return {o.level: o.side.value for o in om.orders.values() if o.state.live}


def test_start_places_n_minus_one_orders_around_the_empty_level():
    om, places = new_om("121")
    assert [(p.level, p.side, p.price) for p in places] == [
        (0, Side.BID, D(100)), (1, Side.BID, D(110)), (3, Side.ASK, D(130)), (4, Side.ASK, D(140))]
    assert len({p.client_id for p in places}) == 4
    assert all(p.client_id >> 24 == 7 for p in places)
    assert om.take_actions(2, D("121")) == []  # nothing more to do


def test_buy_fill_gets_a_sell_one_level_up_and_the_round_trip_is_exact():
    om, _ = new_om("121")
    om.apply_fill(fill(om, 1))  # buy at 110 filled
    acts = om.take_actions(10, D("109"))
    assert [(a.level, a.side, a.price) for a in acts] == [(2, Side.ASK, D(120))]
    om.sending(acts[0].client_id, 10)
    om.placed(acts[0].client_id, order_of(acts[0]), 11)
    assert book(om) == {0: "Bid", 2: "Ask", 3: "Ask", 4: "Ask"}
    om.apply_fill(fill(om, 2))  # the counter sell at 120 fills: one round trip
    st = om.stats(D("121"))
    # (120 - 110) * 1 - buy fee 0.001 SOL valued at 110 - sell fee 0.12 USDC
    assert st.round_trips == 1 and st.grid_profit == D("10") - D("0.110") - D("0.120")
    assert st.fees == {"SOL": D("0.001"), "USDC": D("0.120")}
    assert st.position == D("-0.001") and st.quote_flow == D("10") - D("0.120")
    assert st.floating_pnl == st.position * D("121") + st.quote_flow - st.grid_profit
    acts = om.take_actions(20, D("121"))
    assert [(a.level, a.side) for a in acts] == [(1, Side.BID)]


def test_a_counter_order_that_fills_opens_the_next_trip_not_a_second_one():
    om, _ = new_om("121")
    for step in range(3):  # buy 110, sell 120, buy 110 -> one round trip, one open leg
        level = 1 if step % 2 == 0 else 2
        om.apply_fill(fill(om, level))
        for a in om.take_actions(step * 10 + 5, D("115")):
            om.sending(a.client_id, 0)
            om.placed(a.client_id, order_of(a), 0)
    assert om.ledger.round_trips == 1
    assert om.pairs[1].opener is not None and om.pairs[1].side is Side.ASK


def test_sell_fill_gets_a_buy_one_level_down():
    om, _ = new_om("121")
    om.apply_fill(fill(om, 3))  # sell at 130
    acts = om.take_actions(5, D("131"))
    assert [(a.level, a.side, a.price) for a in acts] == [(2, Side.BID, D(120))]


def test_partial_fills_wait_for_completion():
    om, _ = new_om("121")
    om.apply_fill(fill(om, 1, qty="0.4"))
    assert om.take_actions(5, D("109")) == []
    om.apply_fill(fill(om, 1, qty="0.6"))
    assert [(a.level, a.side) for a in om.take_actions(6, D("109"))] == [(2, Side.ASK)]


def test_a_fill_is_counted_once_whichever_path_brings_it():
    om, _ = new_om("121")
    f = fill(om, 1, qty="0.5")
    assert om.apply_fill(f) is True
    assert om.apply_fill(f) is False
    update = OrderUpdate("orderFill", "SOL_USDC", f.order_id, f.client_id, f.side,
                         OrderStatus.PARTIALLY_FILLED, f.price, D(1), D("0.5"), D(55), f, None, 0, 0)
    om.news.apply_update(update, 5)
    assert om.ledger.fill_count == 1 and om.orders[f.client_id].executed == D("0.5")


def test_foreign_fills_and_orders_are_ignored():
    om, _ = new_om("121")
    foreign = Fill(next(_trade), "999", 123, "SOL_USDC", Side.BID, D(100), D(1), D(0), "SOL", True, 0)
    assert om.apply_fill(foreign) is False
    snap = [Order("999", 123, "SOL_USDC", Side.BID, D(90), D(1), D(0), D(0), OrderStatus.NEW, 0, True)]
    assert om.news.apply_open_orders(snap + [order_for_snapshot(o) for o in om.live_orders()], 10) == 1
    assert om.ledger.fill_count == 0


def order_for_snapshot(o) -> Order:
    return Order(o.order_id, o.client_id, "SOL_USDC", o.side, o.price, o.quantity, o.executed, D(0),
                 OrderStatus.NEW, 0, True)


def test_a_level_never_holds_two_orders():
    om, _ = new_om("121")
    om.apply_fill(fill(om, 1, qty="0.5"))        # buy at 110 half filled: still on the book
    om.apply_fill(fill(om, 0))                   # buy at 100 filled: wants a sell at 110
    assert om.take_actions(5, D("99")) == []          # level 1 is taken by the partial buy
    om.apply_fill(fill(om, 1, qty="0.5"))        # now it completes: sell at 120, and 110 is free
    acts = om.take_actions(6, D("99"))
    assert sorted((a.level, a.side.value) for a in acts) == [(1, "Ask"), (2, "Ask")]


def test_post_only_orders_wait_until_they_would_not_cross():
    om, _ = new_om("121")
    om.apply_fill(fill(om, 1))                   # buy at 110; wants a sell at 120
    assert om.take_actions(5, D("125")) == []         # a sell at 120 would take at 125
    assert [a.price for a in om.take_actions(6, D("119"))] == [D(120)]


def test_price_band_keeps_far_orders_back():
    om = OrderManager(GRID, tag=1, settings=Settings(max_multiplier=D("1.1"), min_multiplier=D("0.9")))
    om.start(D("121"))
    assert sorted(a.price for a in om.take_actions(0, D("121"))) == [D(110), D(130)]


def test_rejection_backs_off_then_retries_with_a_new_client_id():
    om = OrderManager(GRID, tag=1, settings=Settings(retry_base_ms=1000))
    om.start(D("121"))
    first = {a.level: a for a in om.take_actions(0, D("121"))}
    om.rejected(first[4].client_id, "INVALID_ORDER", "Price is out of band", 100)
    refused = om.take_events()[-1]
    assert isinstance(refused, OrderRefused) and refused.level == 4 and refused.code == "INVALID_ORDER"
    assert refused.retry_in_ms == 1000
    assert all(a.level != 4 for a in om.take_actions(500, D("121")))
    again = om.take_actions(1100, D("121"))
    assert [a.level for a in again] == [4] and again[0].client_id != first[4].client_id
    om.rejected(again[0].client_id, "INVALID_ORDER", "x", 1100)
    assert om.take_actions(2500, D("121")) == []       # the second backoff is 2 s
    assert [a.level for a in om.take_actions(3100, D("121"))] == [4]
    assert om.held_for_funds() == []                   # refused, not held back for funds


def test_an_order_held_back_for_funds_is_its_own_outcome_with_its_own_backoff():
    om = OrderManager(GRID, tag=1, settings=Settings(retry_base_ms=1000, funds_retry_ms=5000))
    om.start(D("121"))
    first = {a.level: a for a in om.take_actions(0, D("121"))}
    om.rejected(first[4].client_id, "INSUFFICIENT_FUNDS", "Insufficient funds", 100)
    assert om.take_events()[-1].retry_in_ms == 5000
    assert len(om.held_for_funds()) == 1
    assert om.take_actions(5000, D("121")) == []
    again = om.take_actions(5100, D("121"))
    om.rejected(again[0].client_id, "INSUFFICIENT_FUNDS", "Insufficient funds", 5100)
    assert om.take_events()[-1].retry_in_ms == 10_000  # doubling
    third = om.take_actions(15_100, D("121"))
    om.placed(third[0].client_id, order_of(third[0]), 15_200)
    assert om.held_for_funds() == []                   # placed: it has recovered


def test_unknown_outcome_is_looked_up_only_after_the_window():
    om = OrderManager(GRID, tag=1, settings=Settings(window_ms=5000, lookup_margin_ms=1000))
    om.start(D("121"))
    acts = om.take_actions(0, D("121"))
    p = acts[0]
    om.sending(p.client_id, 1000)
    om.unknown(p.client_id, 1000)
    assert om.orders[p.client_id].state is OrderState.UNKNOWN
    assert not [a for a in om.take_actions(6999, D("121")) if isinstance(a, Lookup)]
    lookups = [a for a in om.take_actions(7000, D("121")) if isinstance(a, Lookup)]
    assert [x.client_id for x in lookups] == [p.client_id]
    # Not found after the window: it never reached the book; the pair places a fresh order.
    om.news.resolve(p.client_id, None, [], 7100)
    assert om.orders[p.client_id].state is OrderState.LOST
    redo = [a for a in om.take_actions(7200, D("121")) if isinstance(a, Place)]
    assert [(a.level, a.side) for a in redo] == [(p.level, p.side)] and redo[0].client_id != p.client_id


def test_unknown_outcome_found_on_the_book_is_adopted():
    om = OrderManager(GRID, tag=1)
    om.start(D("121"))
    p = om.take_actions(0, D("121"))[0]
    om.sending(p.client_id, 0)
    om.unknown(p.client_id, 0)
    om.news.resolve(p.client_id, order_of(p), [], 7000)
    assert om.orders[p.client_id].state is OrderState.OPEN
    assert not [a for a in om.take_actions(8000, D("121")) if isinstance(a, Place)]


def test_order_missing_from_snapshot_is_looked_up_then_replaced_if_cancelled_by_hand():
    om, _ = new_om("121")
    gone = next(o for o in om.orders.values() if o.level == 0)
    om.news.apply_open_orders([order_for_snapshot(o) for o in om.live_orders() if o is not gone], 50)
    lk = [a for a in om.take_actions(60, D("121")) if isinstance(a, Lookup)]
    assert [a.client_id for a in lk] == [gone.client_id]
    cancelled = Order(gone.order_id, gone.client_id, "SOL_USDC", Side.BID, gone.price, gone.quantity,
                      D(0), D(0), OrderStatus.CANCELLED, 0, True)
    om.news.resolve(gone.client_id, cancelled, [], 70)
    assert gone.state is OrderState.CANCELLED
    closed = om.take_events()[-1]
    assert isinstance(closed, ClosedByExchange) and not closed.by_us and closed.level == 0
    redo = [a for a in om.take_actions(2000, D("121")) if isinstance(a, Place)]
    assert [(a.level, a.side) for a in redo] == [(0, Side.BID)]


def test_stale_snapshot_cannot_revive_a_filled_order():
    om, _ = new_om("121")
    o = next(o for o in om.orders.values() if o.level == 1)
    om.apply_fill(fill(om, 1))
    assert o.state is OrderState.FILLED
    om.news.resolve(o.client_id, Order(o.order_id, o.client_id, "SOL_USDC", o.side, o.price, o.quantity, D(0),
                                  D(0), OrderStatus.NEW, 0, True), [], 10)
    assert o.state is OrderState.FILLED


def test_allowed_transitions_table_refuses_with_an_event():
    om, _ = new_om("121")
    o = next(iter(om.orders.values()))
    assert om._move(o, OrderState.INTENDED) is False
    assert om.take_events()[-1] == TransitionRefused(o.client_id, o.level, "open", "intended")


def test_shutdown_cancels_only_our_open_orders():
    om, places = new_om("121")
    acts = om.request_cancels()
    assert sorted(a.client_id for a in acts) == sorted(p.client_id for p in places)
    assert all(isinstance(a, Cancel) for a in acts)
    assert om.request_cancels() == []  # not twice
    om.cancel_failed(acts[0].client_id)
    assert [a.client_id for a in om.request_cancels()] == [acts[0].client_id]  # unless it failed


def test_partially_filled_order_cancelled_is_accounted_but_not_a_trip():
    om, _ = new_om("121")
    o = next(o for o in om.orders.values() if o.level == 1)
    om.apply_fill(fill(om, 1, qty="0.3"))
    om.request_cancels()
    om.news.cancel_result(o.client_id, o.order_id, Order(o.order_id, o.client_id, "SOL_USDC", o.side, o.price, o.quantity,
                                        D("0.3"), D(33), OrderStatus.CANCELLED, 0, True), 11)
    assert o.state is OrderState.CANCELLED
    st = om.stats(D("110"))
    assert st.round_trips == 0 and st.position == D("0.3") - D("0.0003")
    assert st.quote_flow == -D(33)


def test_order_stream_cancel_with_unseen_fills_triggers_a_lookup_first():
    om, _ = new_om("121")
    o = next(o for o in om.orders.values() if o.level == 1)
    upd = OrderUpdate("orderCancelled", "SOL_USDC", o.order_id, o.client_id, o.side, OrderStatus.CANCELLED,
                      o.price, o.quantity, D("0.5"), D(55), None, None, 0, 0)
    om.news.apply_update(upd, 5)
    assert o.state is OrderState.OPEN and o.missing
    assert [a.client_id for a in om.take_actions(6, D("121")) if isinstance(a, Lookup)] == [o.client_id]


@pytest.mark.parametrize("price", ["99", "100", "145", "125"])
def test_every_start_price_gives_one_order_per_pair(price):
    om = OrderManager(GRID, tag=3)
    om.start(D(price))
    acts = om.take_actions(0, None)
    assert len(acts) == len(LEVELS) - 1
    assert len({a.level for a in acts}) == len(acts)


def test_a_snapshot_older_than_a_fill_does_not_make_a_zombie():
    om, _ = new_om("121")
    o = next(o for o in om.orders.values() if o.level == 1)
    snapshot = [order_for_snapshot(x) for x in om.live_orders()]  # taken while it was still open
    om.apply_fill(fill(om, 1))                                     # fill history, read after it
    om.news.apply_open_orders(snapshot, 10)
    assert o.state is OrderState.FILLED and om.zombies == {}
    assert not [e for e in om.take_events() if isinstance(e, DuplicateOnBook)]


def test_an_order_written_off_as_lost_that_shows_up_is_cancelled():
    om = OrderManager(GRID, tag=1, settings=Settings(window_ms=5000, lookup_margin_ms=0))
    om.start(D("121"))
    p = om.take_placements(0, D("121"))[0]
    om.sending(p.client_id, 0)
    om.unknown(p.client_id, 0)
    om.news.resolve(p.client_id, None, [], 6000)                        # not found: LOST
    again = [a for a in om.take_placements(6001, D("121")) if a.level == p.level][0]
    om.sending(again.client_id, 6001)
    om.placed(again.client_id, order_of(again), 6002)
    late = order_of(p)                                             # the lost one arrives after all
    om.news.apply_open_orders([late] + [order_for_snapshot(x) for x in om.live_orders()], 7000)
    assert [(c.client_id, c.order_id) for c in om.take_actions(7001, D("121")) if isinstance(c, Cancel)] == [
        (p.client_id, late.id)]


@pytest.mark.parametrize("side", [Side.BID, Side.ASK])
def test_placeable_range_is_the_placeable_rule_as_an_interval(side):
    om = OrderManager(GRID, tag=1, settings=Settings(max_multiplier=D("1.25"), min_multiplier=D("0.75")))
    lo, hi = om.placeable_range(side, D(120))
    for market in [D(x) / 4 for x in range(300, 800)]:  # 75.00 .. 199.75
        inside = (lo is None or market >= lo) and (hi is None or market <= hi)
        assert om.placeable(side, D(120), market) == inside, market


def test_a_round_trip_is_told_as_typed_events_in_order():
    om, _ = new_om("121")
    om.take_events()
    buy = next(o for o in om.orders.values() if o.level == 1)
    om.apply_fill(fill(om, 1))                   # buy at 110 filled
    applied, counter = om.take_events()
    assert isinstance(applied, FillApplied) and applied.client_id == buy.client_id and applied.level == 1
    assert applied.executed == applied.order_quantity == D(1) and applied.fee_symbol == "SOL"
    assert counter == CounterOrderDecided(Side.BID, 1, Side.ASK, D(120), D(1), 2)
    for a in om.take_actions(10, D("109")):
        om.sending(a.client_id, 10)
        om.placed(a.client_id, order_of(a), 11)
    om.apply_fill(fill(om, 2))                   # the counter-sell fills
    kinds = [type(e) for e in om.take_events()]
    assert kinds == [FillApplied, RoundTripCompleted, CounterOrderDecided]
    assert om.take_events() == []                # taken once


def test_a_snapshot_restores_an_equal_manager():
    om, _ = new_om("121")
    om.apply_fill(fill(om, 1, qty="0.4"))
    snap = om.snapshot()
    again = OrderManager.from_snapshot(GRID, 7, snap)
    assert again.snapshot() == snap
    om.apply_fill(fill(om, 1, qty="0.6"))        # the snapshot is a value: later changes leave it alone
    assert snap.ledger.fill_count == 1 and again.ledger.fill_count == 1


def test_a_second_order_with_our_client_id_is_cancelled_and_its_fill_never_completes_ours():
    om, _ = new_om("121")
    om.take_events()
    o = next(o for o in om.orders.values() if o.level == 1)
    twin = Order("twin-1", o.client_id, "SOL_USDC", o.side, o.price, o.quantity, D(0), D(0), OrderStatus.NEW, 5, True)
    om.news.apply_open_orders([order_for_snapshot(x) for x in om.live_orders()] + [twin], 10)
    assert [(c.client_id, c.order_id) for c in om.take_actions(11, D("121")) if isinstance(c, Cancel)] == [
        (o.client_id, "twin-1")]
    assert isinstance(om.take_events()[-1], DuplicateOnBook)
    # The twin filled before our cancel reached it: the money is accounted, our order is still open.
    om.apply_fill(Fill(9001, "twin-1", o.client_id, "SOL_USDC", o.side, o.price, o.quantity, D("0.001"), "SOL", True, 12))
    assert o.state is OrderState.OPEN and o.executed == 0
    assert om.ledger.position == o.quantity - D("0.001") and om.ledger.fill_count == 1
    assert om.pairs[o.pair].order == o.client_id              # the pair did not flip
    om.news.cancel_result(o.client_id, "twin-1", None, 13)         # the twin's cancel says nothing about ours
    assert o.state is OrderState.OPEN and not o.missing
    om.apply_fill(fill(om, 1))                                # our own order fills: now the pair flips
    assert o.state is OrderState.FILLED and om.pairs[o.pair].side is Side.ASK


def test_of_two_orders_with_one_client_id_the_older_is_kept_when_neither_is_known():
    om = OrderManager(GRID, tag=1)
    om.start(D("121"))
    p = om.take_placements(0, D("121"))[0]
    om.sending(p.client_id, 0)
    om.unknown(p.client_id, 0)                                # the answer was lost, and the POST replayed
    older = Order("a-older", p.client_id, "SOL_USDC", p.side, p.price, p.quantity, D(0), D(0), OrderStatus.NEW, 1, True)
    newer = Order("b-newer", p.client_id, "SOL_USDC", p.side, p.price, p.quantity, D(0), D(0), OrderStatus.NEW, 2, True)
    om.news.apply_open_orders([newer, older], 10)
    assert om.orders[p.client_id].order_id == "a-older"
    assert [c.order_id for c in om.take_zombie_cancels()] == ["b-newer"]


def test_the_twins_own_events_and_lookups_say_nothing_about_our_order():
    om, _ = new_om("121")
    o = next(o for o in om.orders.values() if o.level == 1)
    om.news.apply_update(OrderUpdate("orderAccepted", "SOL_USDC", "twin-2", o.client_id, o.side, OrderStatus.NEW,
                                o.price, o.quantity, D(0), D(0), None, None, 0, 0), 5)
    assert "twin-2" in om.duplicates
    om.news.apply_update(OrderUpdate("orderCancelled", "SOL_USDC", "twin-2", o.client_id, o.side, OrderStatus.CANCELLED,
                                o.price, o.quantity, D(0), D(0), None, None, 0, 0), 6)
    assert o.state is OrderState.OPEN                        # ours was not cancelled
    o.missing = True
    om.news.resolve(o.client_id, Order("twin-2", o.client_id, "SOL_USDC", o.side, o.price, o.quantity, D(0), D(0),
                                  OrderStatus.CANCELLED, 0, True), [], 7)
    assert o.state is OrderState.OPEN and o.missing          # still to be looked up: the answer was the twin's


# ------------------------------------------------------------------------------ the edges (#23 item 7)
def test_a_cancel_that_never_took_effect_is_sent_again_once_two_snapshots_still_show_the_order():
    om, places = new_om("121")
    (c1, *_) = om.request_cancels()
    o = om.orders[c1.client_id]
    om.news.cancel_result(c1.client_id, c1.order_id, None, 10)    # an empty answer (or a 202): nothing confirmed
    snap = [order_for_snapshot(x) for x in om.live.values()]
    om.news.apply_open_orders(snap, 20)                            # still there: maybe still pending
    assert c1 not in om.request_cancels()
    om.news.apply_open_orders(snap, 30)                            # still there a second time: sent again
    assert Cancel(o.client_id, o.order_id) in om.request_cancels()


def test_an_order_written_off_as_gone_that_reappears_on_the_book_is_cancelled():
    om, places = new_om("121")
    o = next(x for x in om.live.values() if x.level == 0)
    for t in (10, 20, 30):                                    # three lookups find nothing: gone
        om.news.resolve(o.client_id, None, [], t)
    assert o.state is OrderState.CANCELLED
    replacement = om.take_placements(40, D("121"))
    assert [p.level for p in replacement] == [0]              # its level has a new order
    om.news.apply_open_orders([order_for_snapshot(o)], 50)         # ...and the old one is on the book after all
    assert Cancel(o.client_id, o.order_id) in om.take_zombie_cancels()


def test_an_order_fill_event_without_its_fee_is_read_from_fill_history_not_booked_at_zero_fee():
    from gridbot.exchange.wire import parse_order_update
    om, places = new_om("121")
    o = next(x for x in om.live.values() if x.level == 1)
    event = {"e": "orderFill", "E": 1, "s": "SOL_USDC", "i": o.order_id, "c": o.client_id, "S": "Bid",
             "o": "LIMIT", "f": "GTC", "q": "1", "p": "110", "X": "Filled", "t": 77, "L": "110", "l": "1",
             "z": "1", "Z": "110", "m": True, "T": 1000}
    om.news.apply_update(parse_order_update(event), 5)             # no "n"/"N": the fee is not known
    assert o.executed == 0 and o.missing and 77 not in om.seen_trades
    assert [a.client_id for a in om.take_lookups(5)] == [o.client_id]
    om.news.apply_update(parse_order_update({**event, "t": 78, "n": "0.001", "N": "SOL"}), 6)
    assert om.ledger.fees == {"SOL": D("0.001")}


def test_finished_orders_leave_memory_after_retention_and_their_fills_are_never_counted_twice():
    from order_manager import RETAIN_MS
    om, places = new_om("121")
    f = fill(om, 1)                                            # the buy at 110 fills: a sell at 120 follows
    assert om.apply_fill(f)
    done = om.orders[f.client_id]
    done.closed_ms = 1000
    om.take_changes()                                         # saved
    om.take_placements(1000 + RETAIN_MS - 1, D("121"))
    assert f.client_id in om.orders and f.trade_id in om.seen_trades      # within retention: kept
    om.forget_finished(1001 + RETAIN_MS)
    assert f.client_id not in om.orders and f.trade_id not in om.seen_trades
    fills_before = om.ledger.fill_count
    assert not om.apply_fill(f)                               # history read again: not ours any more, not counted
    assert om.ledger.fill_count == fills_before and om.live_orders()  # the live orders stay


def test_a_forgotten_order_takes_its_twins_exchange_id_with_it():
    from order_manager import RETAIN_MS
    om, places = new_om("121")
    o = next(x for x in om.live.values() if x.level == 1)
    twin = Order("twin-1", o.client_id, "SOL_USDC", o.side, o.price, o.quantity, D(0), D(0), OrderStatus.NEW, 5, True)
    om.news.apply_open_orders([order_for_snapshot(o), twin], 10)      # a second order with its clientId
    assert "twin-1" in om.by_order_id
    f = fill(om, 1)
    om.apply_fill(f)
    om.orders[o.client_id].closed_ms = 20
    om.take_changes()
    om.forget_finished(21 + RETAIN_MS)
    assert "twin-1" not in om.by_order_id and o.order_id not in om.by_order_id
    om.news.apply_open_orders([twin], 30 + RETAIN_MS)                 # news of the twin later: not ours, no crash


def test_an_adopted_order_is_dated_when_the_exchange_created_it_so_its_lookup_searches_from_there():
    om = OrderManager(GRID, tag=7)
    om.start(D("121"))
    old = Order("o-old", 7 << 24 | 99, "SOL_USDC", Side.BID, D(100), D(1), D(0), D(0), OrderStatus.NEW, 1_000, True)
    om.adopt({0: old}, 5_000_000)                         # adopted long after it was placed
    o = om.orders[old.client_id]
    o.missing = True                                      # it left the book: looked up
    (lookup,) = om.take_lookups(5_000_000)
    assert lookup.since_ms <= 1_000                       # history is searched back to its creation
