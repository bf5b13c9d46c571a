"""Exits and trailing in the backtester (the same core as the live bot): the report, and the proof that a
backtest of a scripted path agrees with the live bot's run on the simulator's replay of it: the same fills,
the same exit (candle and price), the same final balances."""
from __future__ import annotations

from decimal import Decimal

import pytest

from gridbot.paper import rules_from_spec
from gridbot.analysis.backtest import format_result, run_backtest
from grid_calculator import GridMode, GridSpec, grid_levels
from gridbot.core.risk import RiskConfig
from simulator import SimControl, running_simulator
from gridbot.marketdata.candles import Candle, read_klines_csv
from simulator.markets import DEFAULT_MARKETS
from tests.e2e import BotThread, ledger_totals, orders_of, write_config
from tests.helpers import wait_until

D = Decimal
SPEC = rules_from_spec(next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC"))
FEE = D("0.0008")
GRID = GridSpec("SOL_USDC", "SOL", "USDC", grid_levels(D(140), D(158), 10, GridMode.ARITHMETIC, D("0.01")),
                D("0.5"), GridMode.ARITHMETIC)


def walk(*prices) -> list[Candle]:
    return [Candle(f"2025-01-01 {i // 60:02d}:{i % 60:02d}:00", *(D(str(p)),) * 4) for i, p in enumerate(prices)]


def test_a_backtest_stop_loss_with_sell_base_reports_when_where_and_what_the_sale_brought():
    r = run_backtest(GRID, SPEC, walk(149.5, 147.9, 143.9, 138.5, 150, 160), FEE,
                     risk=RiskConfig(stop_loss_price=D(139), on_stop="sell_base"))
    e = r.exit
    assert e["reason"] == "stop-loss price" and e["candle"] == 3 and e["price"] == D("138.5")
    assert e["time"] == "2025-01-01 00:03:00"
    # Every buy filled (140..148: 2.5 SOL) on top of the 2 SOL the sells took, less the buys' fees in SOL.
    assert e["sold"] == D("4.49") and e["not_sold"] == 0
    assert e["proceeds"] == D("4.49") * D("138.49")             # the touch below 138.5, within the cap
    assert r.final_base == D("4.5") - D("2.5") * FEE - D("4.49")  # nothing traded after the exit
    assert r.fills == 6                                          # five buys and the sale
    text = "\n".join(format_result(r, GRID, FEE))
    assert "exit            stop-loss price in candle 3 (2025-01-01 00:03:00) at 138.5" in text
    assert "sold 4.49 SOL for 621.8201 USDC" in text


def test_a_backtest_waits_for_the_trigger_then_trades_as_usual():
    path = walk(149.5, 151, 146.1, 144.9, 143.1, 146.5)
    r = run_backtest(GRID, SPEC, path, FEE, risk=RiskConfig(trigger_price=D(145)))
    assert r.triggered == {"candle": 3, "time": "2025-01-01 00:03:00"}
    # As a grid laid out at 144.9 would from there.
    usual = run_backtest(GRID, SPEC, path[3:], FEE)
    assert (r.fills, r.round_trips, r.grid_profit) == (usual.fills, usual.round_trips, usual.grid_profit)
    assert r.final_base == usual.final_base and r.final_quote == usual.final_quote


def test_a_backtest_trails_up_to_its_limit_and_says_so():
    r = run_backtest(GRID, SPEC, walk(149.5, 159.9, 161, 167, 170), FEE,
                     risk=RiskConfig(out_of_range="trail", trail_up_limit=D(164)))
    assert r.trail_offset == 3 and [m["candle"] for m in r.trail_moves] == [2, 3, 3]
    assert "trailing        3 move(s), +3 step(s) in all" in "\n".join(format_result(r, GRID, FEE))
    assert r.exit is None


def test_a_stop_delay_in_a_backtest_counts_candle_time():
    wick = walk(149.5, 144.5, 146, 144.5, 144.4, 144.3, 146)   # one-minute candles
    assert run_backtest(GRID, SPEC, wick, FEE, risk=RiskConfig(stop_loss_price=D(145), stop_delay=120)).exit["candle"] == 5
    assert run_backtest(GRID, SPEC, wick, FEE, risk=RiskConfig(stop_loss_price=D(145), stop_delay=180)).exit is None


PATHS = {
    "stop-loss-sell": ([149.5, 147.9, 145.1, 146.9, 143.1, 141.9, 144.5, 138.5, 150, 155],
                       {"stop_loss_price": "139", "on_stop": "sell_base"}),
    "stop-loss-keep": ([149.5, 147.9, 143.1, 146.9, 141.9, 138.9, 150], {"stop_loss_price": "139"}),
    "take-profit-price": ([149.5, 152.1, 150.9, 155.1, 157.5, 160.1, 150], {"take_profit_price": "160"}),
    "take-profit-return": ([149.5, 151.1, 148.9, 153.1, 155.1, 157.1, 150],
                           {"take_profit_return": "0.012"}),
    "trigger-then-range-stop": ([149.5, 151.1, 146.9, 145.1, 144.9, 147.1, 150.9, 153.1, 157.1, 158.9, 150],
                                {"out_of_range": "stop"}),
    "trail": ([149.5, 152.5, 155.5, 159.9, 161, 163.5, 167, 165, 161.5, 158.5, 163.1, 155.5, 149.9, 145.5, 141.1,
               139.1, 137.5, 135.1, 131, 133.5, 136.9, 139.9, 144.1],
              {"out_of_range": "trail", "trail_up_limit": "164", "trail_down_limit": "134"}),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_a_backtest_and_the_live_bot_on_the_replay_of_a_scripted_path_agree(tmp_path, name):
    prices, risk = PATHS[name]
    klines = tmp_path / "path.csv"
    klines.write_text("start,open,high,low,close,end,volume,quoteVolume,trades\n" + "\n".join(
        f"2025-01-01 00:{i:02d}:00,{p},{p},{p},{p},,1,1,1" for i, p in enumerate(prices)) + "\n")
    with running_simulator(feed=f"replay:{klines}", replay_speed=0, ticker_interval=0.05, maker_fee=FEE,
                           taker_fee=FEE) as sim:
        control = SimControl(sim.rest_url)
        trigger = {"trigger_price": "145"} if name.startswith("trigger") else {}
        path, signer = write_config(tmp_path, sim, risk=risk, grid_lower="140", grid_upper="158", grid_num=10,
                                    quantity="0.5", maker_fee=str(FEE), **trigger)
        key = signer.api_key
        with BotThread(path) as b:
            if trigger:
                b.wait_polls(1)        # waiting for its trigger: nothing placed
            else:
                wait_until(lambda: len([o for o in control.state()["orders"] if o["account"] == key]) == 9,
                           timeout=20, message="the initial grid")
            bot, stepped, exit_at = b.bot, 0, None

            def settled() -> bool:
                if not b.thread.is_alive():
                    return True
                st = control.state(journal_since_us=10**18)
                price = D(st["markets"]["SOL_USDC"]["price"])
                fills = len([f for f in st["fills"] if f["account"] == key])
                try:
                    waits = bot.om.waiting_ranges(bot.wall_ms())
                    live = list(bot.om.live.values())
                except RuntimeError:
                    return False
                if bot.om.risk.triggered and not bot.om.pairs:
                    return False
                return (bot.price == price and bot.om.ledger.fill_count == fills
                        and all(o.state.value == "open" and b.bot.om.trail.in_grid(o) for o in live)
                        and not any((lo is None or price >= lo) and (hi is None or price <= hi) for lo, hi in waits))

            while b.thread.is_alive() and control.step_points(1)["stepped"]:
                stepped += 1
                wait_until(settled, timeout=20, message=f"the bot settled after point {stepped}")
                if not b.thread.is_alive() or bot.om.risk.exit is not None:
                    exit_at = stepped
                    b.thread.join(30)
                    break
            live = b.stop() if b.thread.is_alive() else b.result
        st = control.state()
    r = run_backtest(b.bot.grid if not bot.om.offset else GRID, SPEC, list(read_klines_csv(str(klines))), FEE,
                     keep_series=True, risk=b.bot.cfg.risk)
    sim_fills = [(f["side"], D(f["price"]), D(f["quantity"])) for f in sorted(st["fills"], key=lambda f: f["tradeId"])
                 if f["account"] == key]
    assert [(side, price) for side, price, _ in sim_fills] == [(side, price) for _, side, price in r.series["fills"]]
    assert (live.stats.round_trips, live.stats.grid_profit, live.stats.fees) == (r.round_trips, r.grid_profit, r.fees)
    assert (live.stats.position, live.stats.quote_flow) == (r.final_base - r.start_funds["SOL"],
                                                            r.final_quote - r.start_funds["USDC"])
    if trigger:
        assert r.triggered is not None and r.triggered["candle"] == 4 and bot.om.risk.start.price == D("144.9")
    if name == "trail":
        assert r.exit is None and bot.om.offset == r.trail_offset
        moves = [m.direction for m in bot.om.risk.moves]
        assert "up" in moves and "down" in moves and len(moves) == len(r.trail_moves)
        ledger = ledger_totals(st, orders_of(st, key), [D(x) for x in range(130, 172, 2)], "SOL")
        assert (ledger["round_trips"], ledger["grid_profit"]) == (r.round_trips, r.grid_profit)
    else:
        assert r.exit is not None and exit_at is not None
        ex = bot.om.risk.exit
        # The same candle and price: the live bot stopped on the point the backtest stopped on.
        assert (ex.reason, ex.price) == (r.exit["reason"], r.exit["price"])
        # (The replay's first step is the first candle: step k is candle k - 1.)
        assert D(str(prices[r.exit["candle"]])) == ex.price and exit_at - 1 == r.exit["candle"]
        if ex.sale is not None:
            assert (ex.sale.sold, ex.sale.proceeds) == (r.exit["sold"], r.exit["proceeds"])


# ------------------------------------------------------------------------------- plan and backtest CLI
import json  # noqa: E402

import grid_bot  # noqa: E402


@pytest.fixture
def quiet():
    with running_simulator(feed="none", ticker_interval=0.1, price=D("149.5")) as s:
        yield s


def cli(capsys, *argv):
    code = grid_bot.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def path_file(tmp_path, prices) -> str:
    f = tmp_path / "path.csv"
    f.write_text("start,open,high,low,close,end,volume,quoteVolume,trades\n" + "\n".join(
        f"2025-01-01 00:{i:02d}:00,{p},{p},{p},{p},,1,1,1" for i, p in enumerate(prices)) + "\n")
    return str(f)


def test_backtest_sweeps_the_risk_keys_and_reports_each_exit(tmp_path, quiet, capsys):
    path, _ = write_config(tmp_path, quiet, risk={"on_stop": "sell_base"}, **dict(grid_lower="140", grid_upper="158",
                                                                                  grid_num=10, quantity="0.5"))
    klines = path_file(tmp_path, [149.5, 147.9, 143.9, 138.5, 136, 150])
    code, out, err = cli(capsys, "backtest", "--config", path, "--klines", klines, "--json",
                         "--sweep", "stop_loss_price=139,137", "--sweep", "trigger_price=148")
    assert code == 0, err
    rows = {r["settings"]["stop_loss_price"]: r for r in json.loads(out)}
    assert rows["139"]["exit"]["candle"] == 3 and rows["137"]["exit"]["candle"] == 4
    assert rows["139"]["exit"]["reason"] == "stop-loss price" and D(rows["139"]["exit"]["sold"]) > 0
    assert rows["139"]["triggered"] == {"candle": 1, "time": "2025-01-01 00:01:00"}
    code, out, _ = cli(capsys, "backtest", "--config", path, "--klines", klines, "--sweep", "stop_loss_price=139,137")
    assert code == 0 and "stop-loss price" in out.splitlines()[1] and "exit" in out.splitlines()[0]
    code, _, err = cli(capsys, "backtest", "--config", path, "--klines", klines, "--sweep", "on_stop=keep,sell_all")
    assert code == 2 and "--sweep on_stop must be one of keep, sell_base" in err
    code, _, err = cli(capsys, "backtest", "--config", path, "--klines", klines, "--sweep", "stop_delay=10,x")
    assert code == 2 and "--sweep stop_delay must be a number of seconds" in err


def test_backtest_plot_marks_the_exit_and_trail_moves(tmp_path, quiet, capsys):
    pytest.importorskip("matplotlib")
    path, _ = write_config(tmp_path, quiet, risk={"out_of_range": "trail", "trail_up_limit": "170",
                                                  "stop_loss_price": "139"},
                           **dict(grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5"))
    png = tmp_path / "bt.png"
    klines = path_file(tmp_path, [149.5, 159.9, 163, 166, 150, 138])
    code, out, err = cli(capsys, "backtest", "--config", path, "--klines", klines, "--plot", str(png))
    assert code == 0, err
    assert "trailing        3 move(s)" in out and "exit            stop-loss price in candle 5" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_shows_each_exit_walked_on_the_engine_and_warns(tmp_path, quiet, capsys):
    path, _ = write_config(tmp_path, quiet, risk={"stop_loss_price": "135", "take_profit_price": "156",
                                                  "take_profit_return": "0.5", "out_of_range": "trail",
                                                  "trail_up_limit": "159", "trail_down_limit": "130"},
                           trigger_price="150.5", **dict(grid_lower="140", grid_upper="158", grid_num=10,
                                                         quantity="0.5"))
    code, out, err = cli(capsys, "plan", "--config", path, "--json")
    assert code == 0, err
    r = json.loads(out)
    e = r["exits"]
    assert r["price"] == "150.5" and r["price_now"] == "149.50"     # laid out at the trigger price
    assert e["stop_loss"]["keep"]["fired"] == "stop-loss price" and e["stop_loss"]["keep"]["at"] == "135"
    keep, sell = e["stop_loss"]["keep"], e["stop_loss"]["sell_base"]
    assert D(sell["base"]) < D("0.01") and D(keep["base"]) > 4 and D(sell["quote"]) > D(keep["quote"])
    assert e["take_profit"]["keep"]["fired"] == "take-profit price"
    assert e["trail"]["moves_up"] == 0 and e["trail"]["moves_down"] == 5
    assert any("take_profit_price 156 lies inside the grid's range" in w for w in r["warnings"])
    assert any("can never trail up" in w for w in r["warnings"])
    code, out, _ = cli(capsys, "plan", "--config", path)
    assert "the grid waits for the price (149.50" in out and "crosses" not in out
    assert "stop-loss at 135, on_stop sell_base: the stop-loss price fires at 135" in out
    assert "take-profit at a total return of 50%" in out and "trailing: up to 159: 0 move(s)" in out
