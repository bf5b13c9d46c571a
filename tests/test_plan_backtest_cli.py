"""``grid_bot.py plan`` and ``grid_bot.py backtest`` from the command line, against the simulator."""
from __future__ import annotations

import json
import sys
from decimal import Decimal

import pytest

import grid_bot
from gridbot.marketdata.history import cached_history, fetch_klines
from backpack_api import BackpackClient
from simulator import SimControl, running_simulator
from gridbot.marketdata.candles import read_klines_csv
from gridbot.engine.state_store import StateStore
from tests.e2e import BotThread, open_orders_of, write_config
from tests.helpers import wait_until
from tests.test_backtest import price_path

D = Decimal


@pytest.fixture
def sim():
    with running_simulator(feed="none", ticker_interval=0.1, price=D("149.5")) as s:
        yield s


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = grid_bot.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def plan_json(capsys, *argv: str) -> dict:
    code, out, err = run_cli(capsys, "plan", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------------------ plan
def test_plan_shows_the_grid_funds_and_what_ifs_and_places_nothing(tmp_path, sim, capsys):
    path, signer = write_config(tmp_path, sim, grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5",
                                maker_fee="0.001")
    r = plan_json(capsys, "--config", path)
    assert (r["price"], r["empty_level"], r["buys"], r["sells"]) == ("149.50", 5, 5, 4)
    assert [(x["side"], x["price"], x["quantity"], x["notional"]) for x in r["levels"]][4:7] == [
        ("Bid", "148.00", "0.50", "74.0000"), (None, "150.00", None, None), ("Ask", "152.00", "0.50", "76.0000")]
    assert r["step"] == {"min": "2.00", "max": "2.00", "pct_min": "1.2821", "pct_max": "1.4286"}
    # 2 * 0.5 - 0.5 * 0.001 * buy - 0.001 * sell * 0.5, narrowest at the top pair (156/158)
    assert D(r["profit_per_round_trip"]["min"]) == 1 - D("0.0005") * 156 - D("0.0005") * 158
    assert r["warnings"] == []
    buys = sum(D(x["notional"]) for x in r["levels"] if x["side"] == "Bid")
    assert buys == 360 and r["funds"]["USDC"] == {"needed": f"{buys:f}", "available": "100000", "missing": "0"}
    assert D(r["funds"]["SOL"]["needed"]) == D("2.00") and r["balances_source"] == "exchange"
    # Falling through the bottom fills the five buys: 2 + 2.5 SOL less 0.0005 SOL of fee each, no USDC left.
    bottom, top = r["if_price_ends"]["bottom"], r["if_price_ends"]["top"]
    assert (D(bottom["base"]), D(bottom["quote"]), bottom["fills"]) == (D("4.4975"), 0, 5)
    assert D(bottom["value"]) == D("4.4975") * 140
    # Rising through the top sells the four: 2 SOL for 152+154+156+158 halves, less 0.1% in USDC.
    assert (D(top["base"]), top["fills"]) == (0, 4)
    assert D(top["quote"]) == buys + D(310) * D("0.999")
    assert r["saved_grid"] is None
    assert SimControl(sim.rest_url).state()["orders"] == []  # nothing placed


def test_plan_text_and_a_warning_when_a_round_trip_loses(tmp_path, sim, capsys):
    path, _ = write_config(tmp_path, sim, grid_lower="149", grid_upper="150", grid_num=11, quantity="0.5",
                           maker_fee="0.001")
    code, out, _ = run_cli(capsys, "plan", "--config", path)
    assert code == 0
    # 0.1 * 0.5 - 0.0005 * 149.9 - 0.0005 * 150 at the top pair
    assert "level  side" in out and "net profit per round trip -0.09995..-0.09905 USDC" in out
    assert "WARNING: the narrowest step (0.0667%) does not cover two maker fees of 0.1%" in out
    assert "USDC   needs" in out and "available (exchange): ok" in out


def test_plan_in_paper_mode_needs_no_keys(tmp_path, capsys):
    cfg = {"trading": {"symbol": "SOL_USDC", "auto_price": True, "price_range": "0.1", "grid_num": 5,
                       "quantity": "1", "grid_mode": "geometric"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    r = plan_json(capsys, "--config", str(tmp_path / "config.json"), "--paper")
    # The paper market starts at 150: 135 .. 165 geometric, the middle level sqrt(135 * 165) = 149.25.
    assert [x["price"] for x in r["levels"]] == ["135.00", "141.95", "149.25", "156.93", "165.00"]
    assert (r["empty_level"], r["balances_source"], r["mode"], r["auto_price"]) == (2, "paper", "geometric", True)
    assert r["funds"]["SOL"]["missing"] == "0"


def test_plan_without_keys_does_not_check_balances(tmp_path, sim, capsys):
    path, _ = write_config(tmp_path, sim, api={"api_key": "YOUR_API_KEY", "api_secret": "YOUR_API_SECRET"})
    code, out, err = run_cli(capsys, "plan", "--config", path)
    assert code == 0, err
    assert "balances not checked: no API keys set" in out
    assert plan_json(capsys, "--config", path)["funds"]["USDC"]["available"] is None


def test_plan_with_malformed_keys_or_an_unknown_symbol_is_an_input_error(tmp_path, sim, capsys):
    path, _ = write_config(tmp_path, sim, api={"api_key": "bm90IGEga2V5", "api_secret": "bm90IGEga2V5"})
    code, _, err = run_cli(capsys, "plan", "--config", path)
    assert code == 2 and "api.api_secret" in err
    path, _ = write_config(tmp_path, sim, symbol="SOL_USDT", name="other.json")
    code, _, err = run_cli(capsys, "plan", "--config", path)
    assert code == 2 and "unknown symbol SOL_USDT" in err and "SOL_USDC" in err


def test_plan_compares_with_the_saved_running_grid(tmp_path, sim, capsys):
    path, signer = write_config(tmp_path, sim, grid_lower="140", grid_upper="158", grid_num=10, on_exit="keep")
    control = SimControl(sim.rest_url)
    store = StateStore(str(tmp_path / "grid_state.db"))
    with BotThread(path, store=store) as b:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=15,
                   message="the grid placed")
        b.stop()
    store.close()
    same = plan_json(capsys, "--config", path)["saved_grid"]
    assert same["same_parameters"] and same["changed"] == {} and same["open_orders"] == 9
    assert same["levels"] == []  # a fresh plan at this price places what is resting
    cfg = json.loads(open(path).read())
    cfg["trading"]["grid_num"] = 7
    open(path, "w").write(json.dumps(cfg))
    diff = plan_json(capsys, "--config", path)["saved_grid"]
    assert diff["changed"] == {"grid_num": {"saved": 10, "config": 7}}
    rows = {r["price"]: (r["saved"], r["config"]) for r in diff["levels"]}
    assert rows["142.00"] == ("Bid", None) and rows["143.00"] == (None, "Bid")
    code, out, _ = run_cli(capsys, "plan", "--config", path)
    assert "differs: grid_num 10 -> 7" in out and "--reset, which cancels its 9 open order(s)" in out
    assert len(open_orders_of(control.state(), signer.api_key)) == 9  # plan touched nothing


# -------------------------------------------------------------------------------------- backtest
@pytest.fixture
def klines(tmp_path):
    f = tmp_path / "path.csv"
    f.write_text("start,open,high,low,close,end,volume,quoteVolume,trades\n" + "\n".join(price_path(60, 3)) + "\n")
    return str(f)


def test_backtest_prints_the_figures_and_json(tmp_path, sim, klines, capsys):
    path, _ = write_config(tmp_path, sim, grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5",
                           maker_fee="0.0008")
    code, out, _ = run_cli(capsys, "backtest", "--config", path, "--klines", klines)
    assert code == 0
    for label in ("round trips", "grid profit", "fees", "final equity", "hold", "buy-and-hold", "max drawdown",
                  "time in range", "fills"):
        assert label in out
    assert "(less than a day of candles: no daily rate)" in out   # an hour of candles: no "per day"
    r = json.loads(run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--json")[1])
    assert r["fills_per_day"] is None
    assert all(len(v.partition(".")[2]) <= 8 for v in r.values() if isinstance(v, str) and v[:1].isdigit())
    assert list(r)[:6] == ["round_trips", "grid_profit", "fees", "final_equity", "hold_equity", "max_drawdown"]
    assert r["candles"] == 60 and r["round_trips"] > 0 and len(r["grid"]["levels"]) == 10
    assert f"round trips     {r['round_trips']}\n" in out
    # Flags override the config.
    r5 = json.loads(run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--json", "--grid-num", "5",
                            "--grid-mode", "geometric")[1])
    assert len(r5["grid"]["levels"]) == 5 and r5["grid"]["mode"] == "geometric"


def test_backtest_sweep_prints_one_table_best_first(tmp_path, sim, klines, capsys):
    path, _ = write_config(tmp_path, sim, grid_lower="140", grid_upper="158", grid_num=10)
    code, out, _ = run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--sweep", "grid_num=4,7,10",
                           "--sweep", "quantity=0.5,1")
    assert code == 0
    lines = out.splitlines()
    assert "grid_num" in lines[0] and "quantity" in lines[0] and "return" in lines[0]
    assert len(lines) == 1 + 6 + 1
    rows = json.loads(run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--sweep",
                              "grid_num=4,7,10", "--sweep", "quantity=0.5,1", "--json")[1])
    returns = [D(r["final_equity"]) / D(r["start_equity"]) for r in rows]
    assert returns == sorted(returns, reverse=True)
    assert sorted((r["settings"]["grid_num"], r["settings"]["quantity"]) for r in rows) == [
        (4, "0.5"), (4, "1"), (7, "0.5"), (7, "1"), (10, "0.5"), (10, "1")]
    best = rows[0]["settings"]
    assert lines[1].split()[:2] == [str(best["grid_num"]), best["quantity"]]
    code, _, err = run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--sweep", "grid_num=1,5")
    assert code == 2 and err.strip() == "grid_bot: --sweep grid_num must be at least 2 (got 1)"  # named by its flag


def test_backtest_plot_draws_a_png(tmp_path, sim, klines, capsys):
    pytest.importorskip("matplotlib")
    path, _ = write_config(tmp_path, sim)
    png = tmp_path / "bt.png"
    code, _, err = run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    code, _, err = run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--plot",
                           str(tmp_path / "no-such-dir" / "bt.png"))
    assert code == 2 and "cannot write the plot" in err


def test_backtest_plot_without_matplotlib_says_so_and_does_nothing(tmp_path, sim, klines, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it now fails
    path, _ = write_config(tmp_path, sim)
    png = tmp_path / "bt.png"
    code, out, err = run_cli(capsys, "backtest", "--config", path, "--klines", klines, "--plot", str(png))
    assert code == 2 and out == ""
    assert "--plot needs matplotlib, which is not installed: pip install matplotlib" in err
    assert not png.exists()


def test_backtest_bad_klines_file_is_named(tmp_path, sim, capsys):
    path, _ = write_config(tmp_path, sim)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,open,high,low,close\n2025-01-01,1,2,0.5,1\n")
    code, _, err = run_cli(capsys, "backtest", "--config", path, "--klines", str(bad))
    assert code == 2 and "missing column(s) start" in err


# ------------------------------------------------------------------------------ fetching history
@pytest.fixture
def moving_sim():
    with running_simulator(feed="random", tick_seconds=0.02, volatility=0.002, price=D("149")) as s:
        control = SimControl(s.rest_url)
        wait_until(lambda: control.state()["feed"]["ticks"] >= 100, timeout=20, message="100 price ticks")
        yield s


def test_fetch_pages_through_short_pages(moving_sim):
    client = BackpackClient(moving_sim.rest_url)
    now = int(client.server_time_ms() // 1000)
    everything = [r for r in client.klines("SOL_USDC", "1s", now - 60, now) if r["open"] is not None]
    calls = []

    def capped(a: int, b: int) -> list[dict]:  # an exchange that answers at most 2 candles a request
        calls.append((a, b))
        return client.klines("SOL_USDC", "1s", a, b)[:2]

    got = fetch_klines(capped, 1, now - 60, now, pace_s=0)
    assert len(everything) >= 2 and [r["start"] for r in got] == [r["start"] for r in everything]
    assert len(calls) >= len(everything) // 2
    assert all(b > a for a, b in calls) and [a for a, _ in calls] == sorted({a for a, _ in calls})


def test_fetch_caches_and_asks_only_for_what_is_new(tmp_path, moving_sim):
    client = BackpackClient(moving_sim.rest_url)
    now = int(client.server_time_ms() // 1000)
    calls = []

    def get(a: int, b: int) -> list[dict]:
        calls.append((a, b))
        return client.klines("SOL_USDC", "1s", a, b)

    cache = str(tmp_path / "k.csv")
    first = cached_history(cache, get, 1, now - 30, now - 1, pace_s=0)
    assert calls == [(now - 30, now - 1)] and first
    assert [c.start for c in read_klines_csv(cache)] == [c.start for c in first]
    again = cached_history(cache, get, 1, now - 30, now - 1, pace_s=0)
    assert again == first and len(calls) == 1  # all from the cache
    more = cached_history(cache, get, 1, now - 30, now, pace_s=0)
    assert calls[1:] == [(now - 1, now)] and more[:len(first)] == first


def test_backtest_fetch_from_the_exchange(tmp_path, moving_sim, capsys):
    path, _ = write_config(tmp_path, moving_sim, grid_lower="140", grid_upper="158", grid_num=10)
    code, out, err = run_cli(capsys, "backtest", "--config", path, "--fetch", "--days", "0.005", "--interval",
                             "1s", "--json")
    assert code == 0, err
    assert "fetching SOL_USDC 1s klines [" in err and "1/1 requests" in err
    cached = list(read_klines_csv(str(tmp_path / "klines_SOL_USDC_1s.csv")))
    r = json.loads(out)
    assert r["candles"] == len(cached) > 0
    assert D(r["start_price"]) == cached[0].open
