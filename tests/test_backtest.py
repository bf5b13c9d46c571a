"""The backtester: its fill model on hand-made candles, and the proof that a backtest and a paper run
of the real bot on the simulator's replay of the same prices trade the same."""
from __future__ import annotations

import random
from decimal import Decimal


from gridbot.paper import rules_from_spec
from gridbot.analysis.backtest import run_backtest
from grid_calculator import GridMode, GridSpec, grid_levels
from gridbot.core.order_state import OrderState
from simulator import SimControl, running_simulator
from gridbot.marketdata.candles import Candle, read_klines_csv
from simulator.markets import DEFAULT_MARKETS
from tests.e2e import BotThread, ledger_totals, open_orders_of, orders_of, write_config
from tests.helpers import wait_until

D = Decimal
SPEC = rules_from_spec(next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC"))
FEE = D("0.001")
GRID = GridSpec("SOL_USDC", "SOL", "USDC", grid_levels(D(140), D(158), 10, GridMode.ARITHMETIC, D("0.01")),
                D("0.5"), GridMode.ARITHMETIC)


def candles(*rows: tuple) -> list[Candle]:
    return [Candle(f"2025-01-01 00:{i:02d}:00", *(D(str(x)) for x in row)) for i, row in enumerate(rows)]


def bt(*rows: tuple, grid: GridSpec = GRID, keep_series: bool = False):
    return run_backtest(grid, SPEC, candles(*rows), FEE, keep_series=keep_series)


# A round trip on the pair 148/150 of 0.5 SOL, fees in the received asset (base on the buy, valued at
# the buy price, as the bot accounts them): 75 - 74 - 0.0005 * 148 - 0.075.
ONE_TRIP = D("0.851")


def test_a_level_fills_only_when_the_price_trades_through_it():
    # The grid starts at 149.2 (empty level 150; buys 140..148). Touching 148 fills nothing.
    touched = bt((149.2, 149.2, 148, 148.5), (148.5, 149, 148, 148.8))
    assert (touched.fills, touched.round_trips) == (0, 0)
    through = bt((149.2, 149.2, 147.99, 148.5))
    assert (through.fills, through.round_trips) == (1, 0)
    assert through.final_base == through.start_funds["SOL"] + D("0.5") - D("0.0005")


def test_within_a_candle_the_nearer_extreme_comes_first():
    # Low nearer than high: the buy at 148 fills, its counter-sell at 150 is placed and the high
    # reaches it later in the same candle.
    low_first = bt((149.2, 151, 147.5, 149))
    assert (low_first.fills, low_first.round_trips, low_first.grid_profit) == (2, 1, ONE_TRIP)
    # Same extremes, high nearer: the high comes before there is a sell at 150 to reach.
    high_first = bt((149.2, 149.2, 149.2, 149.2), (149.9, 151, 147.5, 149))
    assert (high_first.fills, high_first.round_trips) == (1, 0)


def test_a_single_price_candle_is_one_price_and_a_gap_trades_through():
    # o = h = l = c: the path is that price alone, reached from the previous close.
    r = bt((149.2, 149.2, 149.2, 149.2), (145.5, 145.5, 145.5, 145.5), (151, 151, 151, 151))
    # Down through 148 and 146, then up through their counter-sells at 148 and 150.
    assert (r.fills, r.round_trips, r.grid_profit) == (4, 2, ONE_TRIP + D("0.853"))
    assert r.fees == {"SOL": D("0.001"), "USDC": D("0.149")}


def test_equity_hold_drawdown_and_time_in_range():
    r = bt((149.2, 149.2, 149.2, 149.2), (149.2, 149.2, 143, 143), (143, 143, 135, 135), (135, 152, 135, 151),
           keep_series=True)
    start, end = D("149.2"), D("151")
    assert r.start_equity == r.start_funds["SOL"] * start + r.start_funds["USDC"]
    assert r.hold_equity == r.start_funds["SOL"] * end + r.start_funds["USDC"]
    assert r.buy_and_hold_equity == (r.start_funds["SOL"] + r.start_funds["USDC"] / start) * end
    assert r.final_equity == r.final_base * end + r.final_quote
    assert r.series["equity"][-1] == r.final_equity
    peak, worst = r.start_equity, D(0)
    for e in r.series["equity"]:
        peak = max(peak, e)
        worst = max(worst, (peak - e) / peak)
    assert r.max_drawdown == worst.quantize(D("0.000001")) and worst > 0
    assert r.time_in_range == D("0.75")  # the close at 135 is below the grid
    summary = r.summary()
    assert list(summary)[:6] == ["round_trips", "grid_profit", "fees", "final_equity", "hold_equity",
                                 "max_drawdown"]
    assert D(summary["final_equity"]) == r.final_equity


def test_an_order_beyond_the_price_band_waits_until_the_price_comes_near():
    # Levels 100, 110 .. 400 around 149: Backpack refuses prices beyond 1.25x the last price, so of the
    # sells only 160, 170 and 180 rest at first. A jump to 260 fills those three; at 260 the sells
    # from 260 to 320 are placed (those below 260 would cross), and the rise to 300 fills 260..290.
    wide = GridSpec("SOL_USDC", "SOL", "USDC", grid_levels(D(100), D(400), 31, GridMode.ARITHMETIC, D("0.01")),
                    D("0.5"), GridMode.ARITHMETIC)
    r = bt((149, 149, 149, 149), (149, 260, 149, 260), (260, 300, 260, 300), grid=wide)
    assert r.start_funds["SOL"] == D("0.5") * 25  # what the whole grid needs, waiting orders included
    assert (r.fills, r.round_trips) == (7, 0)


# ----------------------------------------------------------------------------------- the proof
def price_path(n: int, seed: int) -> list[str]:
    """Candles wandering over 138..160 (the grid is 140..158, step 2), some flat, some gapping."""
    rng = random.Random(seed)
    rows, t, price = [], 0, D("149.20")
    for i in range(n):
        o = price if i % 7 else price + D(rng.choice([-150, 150])) / 100  # a gap now and then
        c = min(D(160), max(D(138), o + D(rng.randint(-400, 400)) / 100))
        if i % 9 == 4:
            h = lo = c = o  # a single-price candle
        else:
            h = max(o, c) + D(rng.randint(0, 150)) / 100
            lo = min(o, c) - D(rng.randint(0, 150)) / 100
        rows.append(f"2025-01-01 {t // 60:02d}:{t % 60:02d}:00,{o},{h},{lo},{c},,1,1,1")
        t += 1
        price = c
    return rows


def test_a_backtest_and_a_paper_run_on_the_replay_of_the_same_prices_trade_the_same(tmp_path):
    klines = tmp_path / "path.csv"
    klines.write_text("start,open,high,low,close,end,volume,quoteVolume,trades\n" +
                      "\n".join(price_path(40, seed=11)) + "\n")
    fee = D("0.0008")
    with running_simulator(feed=f"replay:{klines}", replay_speed=0, ticker_interval=0.05,
                           maker_fee=fee) as sim:
        control = SimControl(sim.rest_url)
        path, signer = write_config(tmp_path, sim, grid_lower="140", grid_upper="158", grid_num=10,
                                    quantity="0.5")
        key, sym = signer.api_key, "SOL_USDC"
        with BotThread(path) as b:
            wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20,
                       message="the initial grid")
            bot = b.bot
            points = 0

            def settled() -> bool:
                # The bot has seen every fill and the price, and placed everything it would place at it.
                st = control.state(journal_since_us=10**18)
                price = D(st["markets"][sym]["price"])
                if bot.price != price or bot.om.ledger.fill_count != len([f for f in st["fills"] if f["account"] == key]):
                    return False
                try:
                    live = list(bot.om.live.values())
                    waits = bot.om.waiting_ranges(bot.wall_ms())
                except RuntimeError:  # the bot thread changed them while we looked
                    return False
                if any(o.state is not OrderState.OPEN for o in live):
                    return False
                return not any((lo is None or price >= lo) and (hi is None or price <= hi) for lo, hi in waits)

            while control.step_points(1)["stepped"]:
                points += 1
                wait_until(settled, timeout=15, message=f"the bot settled after point {points}")
            paper = b.stop()
        st = control.state()
    grid = b.bot.grid
    result = run_backtest(grid, SPEC, list(read_klines_csv(str(klines))), fee, keep_series=True)
    ours = orders_of(st, key)
    ledger = ledger_totals(st, ours, list(grid.levels), grid.base)
    assert points > 100
    assert result.round_trips >= 5  # the path is worth comparing
    assert (paper.stats.round_trips, paper.stats.grid_profit) == (result.round_trips, result.grid_profit)
    assert (ledger["round_trips"], ledger["grid_profit"]) == (result.round_trips, result.grid_profit)
    assert paper.stats.fees == result.fees
    sim_fills = [(f["side"], D(f["price"])) for f in sorted(st["fills"], key=lambda f: f["tradeId"])
                 if f["account"] == key]
    assert sim_fills == [(side, price) for _, side, price in result.series["fills"]]
    assert open_orders_of(st, key) == []
