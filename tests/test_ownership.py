"""Tier 3: two grids on one account and one symbol. A clientId alone never makes an order ours: a grid
takes an order, an order update or a fill as its own only with its side, price and quantity, and a new
grid's tag avoids every tag on the book, in recent history and in the state files beside its own. The
grids here share a key and a symbol, with the tag forced equal or with every tag but one taken."""
from __future__ import annotations

from decimal import Decimal

from backpack_api import generate_keypair
from gridbot.engine.state_store import StateStore
from simulator import SimControl
from tests.e2e import BotThread, open_orders_of, orders_of, write_config
from tests.helpers import signed_request, wait_until

D = Decimal


def grid_configs(tmp_path, sim, secret):
    """Two grids, disjoint ranges (140..148 below the price, 150..158 above it), one key, one folder."""
    a, signer = write_config(tmp_path, sim, secret=secret, name="a.json", grid_lower="140", grid_upper="148",
                             grid_num=5, state={"file": str(tmp_path / "a.db")},
                             log={"file": str(tmp_path / "a.log")})
    b, _ = write_config(tmp_path, sim, secret=secret, name="b.json", grid_lower="150", grid_upper="158", grid_num=5,
                        state={"file": str(tmp_path / "b.db")}, log={"file": str(tmp_path / "b.log")})
    return a, b, signer


def in_range(o: dict, lo: int, hi: int) -> bool:
    return lo <= D(o["price"]) <= hi


def assert_apart(control, key, bot_a, bot_b, earlier=frozenset()):
    """Each grid's live orders are exactly the exchange's open orders in its range, and each grid's fills
    are exactly the simulator's fills of the orders in its range."""
    state = control.state()
    book = open_orders_of(state, key)
    for bot, lo, hi in ((bot_a, 140, 148), (bot_b, 150, 158)):
        mine = {o["id"] for o in book if in_range(o, lo, hi)}
        live = {o.order_id for o in bot.bot.g.om.live_orders()}
        assert live == mine
        ids = {o["id"] for o in orders_of(state, key) if in_range(o, lo, hi) and o["id"] not in earlier}
        sim_fills = sorted(f["tradeId"] for f in state["fills"] if f["orderId"] in ids)
        assert sorted(bot.bot.g.om.seen_trades) == sim_fills


def cancels_by(log_text: str) -> int:
    return log_text.count("cancelled order") + log_text.count("cancelling it")


def test_two_grids_with_one_tag_on_one_key_never_touch_each_other(tmp_path, quiet_sim):
    secret = generate_keypair()[1]
    control = SimControl(quiet_sim.rest_url)
    for run in range(3):                                 # repeated simultaneous starts
        a, b, signer = grid_configs(tmp_path, quiet_sim, secret)
        key = signer.api_key
        control.set_price("149.50")
        earlier = {o["id"] for o in orders_of(control.state(), key)}   # the orders of the earlier runs
        with BotThread(a, tag=7, store=StateStore(str(tmp_path / "a.db"))) as bot_a, \
                BotThread(b, tag=7, store=StateStore(str(tmp_path / "b.db"))) as bot_b:   # the same tag: the same clientIds
            wait_until(lambda: bot_a.bot.polls >= 1 and bot_b.bot.polls >= 1, timeout=30, message="both running")
            bot_a.wait_polls(2)
            bot_b.wait_polls(2)
            assert_apart(control, key, bot_a, bot_b, earlier)
            # Fills on both sides: each grid books its own fills and counter-orders, nothing else.
            control.set_price("143.50")                  # a's buys at 146, 144 fill (148 is its empty level)
            wait_until(lambda: len(bot_a.bot.g.om.seen_trades) >= 2, timeout=30, message="a's fills")
            control.set_price("153.00")                  # a's counter sells fill; b's sell at 152 fills
            wait_until(lambda: len(bot_b.bot.g.om.seen_trades) >= 1, timeout=30, message="b's fill")
            bot_a.wait_polls(2)
            bot_b.wait_polls(2)
            assert_apart(control, key, bot_a, bot_b, earlier)
            ra, rb = bot_a.stop(), bot_b.stop()
        assert ra.error is None and rb.error is None
        assert open_orders_of(control.state(), key) == []     # each cancelled its own at the stop
        for p in tmp_path.glob("*.db*"):
            p.unlink()


def test_a_new_grid_never_draws_a_tag_on_the_book_in_history_or_beside_it(tmp_path, quiet_sim):
    """Every tag but one is on the book: the first grid takes that one; the second, started together,
    finds it taken in the state file beside its own and falls back to a tag it tells apart by terms."""
    control = SimControl(quiet_sim.rest_url)
    a, b, signer = grid_configs(tmp_path, quiet_sim, generate_keypair()[1])
    key = signer.api_key
    free = 77
    blockers = [{"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": "120.00", "quantity": "0.01",
                 "timeInForce": "GTC", "postOnly": True, "clientId": (t << 24) | 1}
                for t in range(1, 256) if t != free]
    for i in range(0, len(blockers), 50):
        r = signed_request(quiet_sim.rest_url, signer, "POST", "/api/v1/orders", body=blockers[i:i + 50])
        assert r.status_code == 200, r.text
    control.set_price("149.50")
    with BotThread(a, store=StateStore(str(tmp_path / "a.db"))) as bot_a, \
            BotThread(b, store=StateStore(str(tmp_path / "b.db"))) as bot_b:
        wait_until(lambda: bot_a.bot.polls >= 1 and bot_b.bot.polls >= 1, timeout=30, message="both running")
        tags = {bot_a.bot.g.om.tag, bot_b.bot.g.om.tag}
        assert len(tags) == 2 and free in tags                # one took the free tag, never both
        control.set_price("145.00")
        wait_until(lambda: len(bot_a.bot.g.om.seen_trades) >= 1, timeout=30, message="a's fill")
        bot_a.wait_polls(2)
        bot_b.wait_polls(2)
        assert_apart(control, key, bot_a, bot_b)
        bot_a.stop()
        bot_b.stop()
    left = open_orders_of(control.state(), key)
    assert len(left) == 254 and all(D(o["price"]) == 120 for o in left)   # the blockers untouched
