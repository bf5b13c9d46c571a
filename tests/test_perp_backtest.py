"""A perps grid's backtest (analysis/perp_backtest.py) against the live bot on the simulator: one scripted
path, replayed by the paper bot (the real bot on the simulator, over real sockets) and by ``backtest`` from a
klines file of the same prices with a ``funding_rate`` column, must agree on the fills, the funding and the
exit. Then what only a backtest shows: a liquidation, where and when."""
from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import requests

from tests.e2e import BotThread, open_orders_of
from tests.helpers import wait_until
from tests.test_perp_grid_e2e import SYM, funded, sim_position

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
# The path from 150: down through three buys, back up through every sell and past the top, where the margin
# stop (0.25) fires at 195. Funding falls due after 132 (the grid long) and after 167 (short).
PATH = ["145", "139", "132", "141", "154", "161", "167", "176", "182", "190", "195", "200"]
FUNDING = {"132": "0.0001", "167": "-0.0002"}


def klines(path: Path, prices: list[str], funding: dict[str, str]) -> None:
    """One flat one-minute candle per price, from 150; ``funding``: the rate paid at a candle's close."""
    rows = ["start,open,high,low,close,funding_rate"]
    for i, p in enumerate(["150", *prices]):
        rows.append(f"2025-01-01 00:{i:02d}:00,{p},{p},{p},{p},{funding.get(p, '')}")
    path.write_text("\n".join(rows) + "\n")


def backtest(config: str, klines_file: Path) -> dict:
    r = subprocess.run([sys.executable, "grid_bot.py", "backtest", "--json", "--config", config, "--klines",
                        str(klines_file)], cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_backtest_of_a_scripted_path_agrees_with_the_paper_bots_replay(tmp_path, perp_sim):
    path, signer, control = funded(tmp_path, perp_sim, risk={"stop_margin_fraction": "0.25", "on_stop": "close"})
    key = signer.api_key
    with BotThread(path) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the initial grid")
        replayed = []
        for price in PATH:
            control.set_price(price, symbol=SYM)
            replayed.append(price)
            checked = b.bot.perp.checks
            wait_until(lambda: (b.bot.perp.checks >= checked + 2 and not b.bot.view.waiting)
                       or not b.thread.is_alive(), timeout=20, message=f"the grid settled at {price}")
            if not b.thread.is_alive():
                break
            if price in FUNDING:
                requests.post(perp_sim.rest_url + "/_sim/perp", json={"symbol": SYM, "fundingRate": FUNDING[price],
                                                                       "fundingDue": True}, timeout=10)
                paid = sum((D(r["quantity"]) for r in control.state()["perp_accounts"][key]["funding"]), D(0))
                wait_until(lambda: b.bot.view.funding == paid, timeout=15, message="the funding in the books")
        wait_until(lambda: not b.thread.is_alive(), timeout=30, message="the margin stop")
        live = b.result
    assert live is not None and "margin stop" in live.reason and replayed[-1] == "195"
    st = control.state()
    file = tmp_path / "path.csv"
    klines(file, replayed, FUNDING)
    bt = backtest(path, file)
    s = live.stats
    assert (bt["round_trips"], D(bt["grid_profit"]), {k: D(v) for k, v in bt["fees"].items()}, bt["fills"]) == (
        s.round_trips, s.grid_profit, s.fees, s.fills)
    assert D(bt["perp"]["funding"]) == s.funding == sum(
        (D(r["quantity"]) for r in st["perp_accounts"][key]["funding"]), D(0))
    assert [D(p["quantity"]) for p in bt["perp"]["funding_payments"]] == [
        D(r["quantity"]) for r in st["perp_accounts"][key]["funding"]]
    ex = bt["exit"]
    assert ex["reason"] == "margin stop" and D(ex["price"]) == D("195") and ex["side"] == "Bid"
    assert D(ex["sold"]) == 5 * D(bt["grid"]["quantity"]) and D(ex["not_sold"]) == 0     # the short of 5 levels
    closed = sum((D(o["executedQuantity"]) for o in st["orders"] if o["account"] == key
                  and o["timeInForce"] == "IOC"), D(0))
    assert D(ex["sold"]) == closed and sim_position(st, key) == 0 == D(bt["perp"]["position"])


def test_a_backtest_says_where_and_when_a_grid_would_have_been_liquidated(tmp_path):
    cfg = json.loads((ROOT / "config.json").read_text())
    t = cfg["trading"]
    del t["quantity"]
    t.update({"symbol": SYM, "investment": "300", "leverage": "3", "auto_price": False, "grid_lower": "120",
              "grid_upper": "180", "grid_num": 10, "maker_fee": "0.0002", "taker_fee": "0.0005"})
    cfg["log"]["console"] = False
    config = tmp_path / "perp.json"
    config.write_text(json.dumps(cfg))
    file = tmp_path / "gap.csv"
    # Up through every sell and on: the short of 4.05 SOL (plan: liquidated at 237.50) meets its maintenance
    # margin on the way to 250, with no margin stop before (risk.stop_margin_fraction is unset, and the gap
    # from 200 to 250 jumps past it).
    klines(file, ["170", "185", "200", "250", "260"], {})
    bt = backtest(str(config), file)
    liq = bt["perp"]["liquidation"]
    assert liq is not None and bt["exit"]["reason"] == "liquidation"
    assert D(liq["price"]) == D(bt["perp"]["planned_liquidation"]["top"]) == D("237.50")
    assert liq["candle"] == 4 and liq["time"] == "2025-01-01 00:04:00"
    assert D(liq["position"]) == D("-4.05") and D(bt["final_equity"]) == D(liq["equity_left"]) > 0
    text = subprocess.run([sys.executable, "grid_bot.py", "backtest", "--config", str(config), "--klines", str(file)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=120).stdout
    assert "LIQUIDATED      at 237.50 in candle 4 (2025-01-01 00:04:00)" in text


def test_a_bad_funding_rate_cell_is_named(tmp_path):
    bad = "x"
    file = tmp_path / "bad.csv"
    file.write_text(f"start,open,high,low,close,funding_rate\n2025-01-01 00:00:00,150,150,150,150,{bad}\n")
    cfg = json.loads((ROOT / "config.json").read_text())
    del cfg["trading"]["quantity"]
    cfg["trading"].update({"symbol": SYM, "investment": "300", "auto_price": False, "grid_lower": "120",
                           "grid_upper": "180", "grid_num": 10})
    config = tmp_path / "perp.json"
    config.write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "grid_bot.py", "backtest", "--config", str(config), "--klines", str(file)],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "bad.csv:2: funding_rate 'x' is not a number" in r.stderr


def test_funding_history_is_fetched_page_by_page_then_read_from_its_cache(tmp_path):
    from gridbot.marketdata.history import FUNDING_PAGE, cached_funding
    hour = 3_600_000
    history = [(t * hour, D(t) / 10**6) for t in range(1, 2501)]        # 2500 hourly rates, oldest first
    calls = []

    def get(limit, offset):
        calls.append((limit, offset))
        newest_first = history[::-1]
        return newest_first[offset:offset + limit]
    cache = tmp_path / "funding_SOL_USDC_PERP.csv"
    got = cached_funding(str(cache), get, 100 * hour, 2400 * hour + 1, sleep=lambda s: None)
    assert got == [x for x in history if 100 * hour <= x[0] <= 2400 * hour]
    assert calls == [(FUNDING_PAGE, 0), (FUNDING_PAGE, FUNDING_PAGE), (FUNDING_PAGE, 2 * FUNDING_PAGE)]
    calls.clear()
    again = cached_funding(str(cache), get, 200 * hour, 2300 * hour, sleep=lambda s: None)
    assert calls == [] and again == [x for x in history if 200 * hour <= x[0] < 2300 * hour]   # from the cache


def test_backtest_sweeps_the_direction_and_the_leverage(tmp_path):
    cfg = json.loads((ROOT / "config.json").read_text())
    del cfg["trading"]["quantity"]
    cfg["trading"].update({"symbol": SYM, "investment": "300", "auto_price": False, "grid_lower": "120",
                           "grid_upper": "180", "grid_num": 10, "maker_fee": "0.0002", "taker_fee": "0.0005"})
    config = tmp_path / "perp.json"
    config.write_text(json.dumps(cfg))
    file = tmp_path / "path.csv"
    klines(file, PATH[:9], FUNDING)
    r = subprocess.run([sys.executable, "grid_bot.py", "backtest", "--json", "--config", str(config), "--klines",
                        str(file), "--sweep", "direction=neutral,long,short", "--sweep", "leverage=2,3"], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted((x["settings"]["direction"], x["settings"]["leverage"]) for x in rows) == sorted(
        (d, v) for d in ("neutral", "long", "short") for v in ("2", "3"))
    assert all(x["perp"]["direction"] == x["settings"]["direction"] for x in rows)
    # The same path: more leverage, larger levels, more grid profit; the direction decides the funding's sign.
    by = {(x["settings"]["direction"], x["settings"]["leverage"]): x for x in rows}
    assert D(by[("neutral", "3")]["grid_profit"]) > D(by[("neutral", "2")]["grid_profit"]) > 0
    assert D(by[("long", "3")]["perp"]["opening"]) > 0 > D(by[("short", "3")]["perp"]["opening"])


def test_a_backtest_with_a_trigger_lays_the_grid_out_and_opens_it_where_the_trigger_is_crossed(tmp_path):
    cfg = json.loads((ROOT / "config.json").read_text())
    del cfg["trading"]["quantity"]
    cfg["trading"].update({"symbol": SYM, "investment": "300", "leverage": "3", "auto_price": False,
                           "grid_lower": "120", "grid_upper": "180", "grid_num": 10, "maker_fee": "0.0002",
                           "taker_fee": "0.0005", "direction": "short", "trigger_price": "158"})
    config = tmp_path / "perp.json"
    config.write_text(json.dumps(cfg))
    file = tmp_path / "path.csv"
    klines(file, ["152", "157", "158.5", "161", "153"], {})
    bt = backtest(str(config), file)
    assert bt["triggered"] == {"candle": 3, "time": "2025-01-01 00:03:00"}
    # laid out at 158.5 (160 stays empty): the short opens the six buys below it, then 161 fills nothing
    # (no sell below 166.67), and the fall to 153 fills the buy at 153.33: one of the opening's levels closed
    q = D(bt["grid"]["quantity"])
    assert D(bt["perp"]["opening"]) == -6 * q and bt["fills"] == 1 and D(bt["perp"]["position"]) == -5 * q
