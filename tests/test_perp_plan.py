"""``plan`` of a perps grid (gridbot/analysis/perp_plan.py): its sizing from investment and leverage, and its
worst case at each end with the liquidation price, before any order; a grid liquidated inside its range (or
within the buffer) refused with that price named. Against the paper market and against the simulator with
keys (its mark and the account's available equity). ``run`` and ``backtest`` refuse a perps grid."""
from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from grid_calculator import nearest_level
from gridbot.core.perp_risk import MarginFunctions, end_states, quantity_for
from simulator import running_simulator
from tests.test_sim_perp_positions import Acct

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
SOL = MarginFunctions(D("0.02"), D("0.00006"), D("0.0135"), D("0.000036"))


def perp_config(tmp_path, sim=None, secret=None, **trading) -> str:
    cfg = json.loads((ROOT / "config.json").read_text())
    cfg["risk"] = trading.pop("_risk", {})
    t = cfg["trading"]
    del t["quantity"]
    t.update({"symbol": "SOL_USDC_PERP", "investment": "300", "leverage": "3", "auto_price": False,
              "grid_lower": "120", "grid_upper": "180", "grid_num": 10, "maker_fee": "0.0002",
              "taker_fee": "0.0005", **trading})
    cfg["log"]["console"] = False
    if sim is not None:
        cfg["api"].update({"base_url": sim.rest_url, "ws_url": sim.ws_url})
    if secret is not None:
        from backpack_api import Signer
        cfg["api"].update({"api_key": Signer(secret).api_key, "api_secret": secret})
    path = tmp_path / "perp.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def bot(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "grid_bot.py"), *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=120)


def test_plan_sizes_a_neutral_grid_and_names_its_liquidation_prices(tmp_path):
    r = bot("plan", "--paper", "--json", "--config", perp_config(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    every = tuple(D(x) for x in p["levels"])
    levels = [lv for i, lv in enumerate(every) if i != nearest_level(every, D(150))]   # the empty level: none
    assert len(levels) == 9 and sum(1 for lv in levels if lv < 150) == 4
    q = quantity_for(levels, D(150), "neutral", D(300), D(3), D("0.01"), SOL, D("0.0005"), D("0.0002"))
    assert D(p["quantity"]) == q == D("0.81")
    bottom, top = end_states(levels, D(150), q, "neutral", D(300), SOL, leverage=D(3), maker_fee=D("0.0002"),
                             taker_fee=D("0.0005"))
    assert D(p["bottom"]["position"]) == bottom.position == 4 * q and D(p["top"]["position"]) == -5 * q
    # to the tick, rounded toward the range: the side that warns earlier
    assert D(p["bottom"]["liquidation_price"]) - bottom.liquidation_price < D("0.01")
    assert D(p["bottom"]["liquidation_price"]) >= bottom.liquidation_price
    assert D(p["top"]["liquidation_price"]) <= top.liquidation_price
    assert p["refused"] == [] and not p["bottom"]["too_close"] and not p["top"]["too_close"]
    assert [o["side"] for o in p["orders"]] == ["Bid"] * 4 + ["Ask"] * 5 and not any(o["reduce_only"] for o in p["orders"])
    text = bot("plan", "--paper", "--config", perp_config(tmp_path), cwd=tmp_path).stdout
    assert f"liquidated at {p['bottom']['liquidation_price']}" in text


def test_a_long_grid_opens_its_position_and_its_sells_only_reduce_it(tmp_path):
    r = bot("plan", "--paper", "--json", "--config", perp_config(tmp_path, direction="long"), cwd=tmp_path)
    p = json.loads(r.stdout)
    assert D(p["opening_position"]) == 5 * D(p["quantity"]) and D(p["top"]["position"]) == 0
    assert all(o["reduce_only"] == (o["side"] == "Ask") for o in p["orders"])
    assert p["top"]["liquidation_price"] is None


def test_a_grid_too_leveraged_for_its_range_is_refused_with_the_price_named(tmp_path):
    r = bot("plan", "--paper", "--json", "--config", perp_config(tmp_path, leverage="20"), cwd=tmp_path)
    assert r.returncode == 2
    p = json.loads(r.stdout)
    # Sized to keep its initial margin across the range, a grid is liquidated beyond it: at 20x only just.
    assert len(p["refused"]) == 1 and p["top"]["too_close"] and not p["bottom"]["too_close"]
    assert f"liquidated at {p['top']['liquidation_price']}, only 3.6% beyond it" in p["refused"][0]
    text = bot("plan", "--paper", "--config", perp_config(tmp_path, leverage="20"), cwd=tmp_path)
    assert text.returncode == 2 and "REFUSED: at the top (180.00) the grid is short" in text.stdout


def test_plan_reads_the_mark_and_the_accounts_available_equity_with_keys(tmp_path):
    with running_simulator(feed="none") as sim:
        a = Acct(sim, usdc="250")
        requests.post(sim.rest_url + "/_sim/perp", json={"symbol": "SOL_USDC_PERP", "premium": "0.01"}, timeout=10)
        r = bot("plan", "--json", "--config", perp_config(tmp_path, sim, a.secret), cwd=tmp_path)
        p = json.loads(r.stdout)
        assert p["price"]["mark"] == "151.50" and p["price"]["index"] == "150.00"
        assert D(p["available"]) == D(250)
        assert r.returncode == 2 and "less than trading.investment 300" in p["refused"][-1]
        a.control.set_balance(a.signer.api_key, "USDC", "1000")
        assert bot("plan", "--config", perp_config(tmp_path, sim, a.secret), cwd=tmp_path).returncode == 0


def test_a_quantity_instead_of_an_investment_plans_the_collateral_it_needs(tmp_path):
    from grid_calculator import nearest_level
    from gridbot.core.perp_risk import collateral_for
    r = bot("plan", "--paper", "--json", "--config", perp_config(tmp_path, investment=None, quantity="0.5"),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    every = tuple(D(x) for x in p["levels"])
    levels = [lv for i, lv in enumerate(every) if i != nearest_level(every, D(150))]
    need = collateral_for(levels, D(150), "neutral", D("0.5"), D(3), SOL, D("0.0005"), D("0.0002"))
    assert p["sized_by"] == "quantity" and D(p["quantity"]) == D("0.5") and D(p["investment"]) == need
    # the investment that sizes the same grid gives it the same quantity, at most a step more
    assert D("0.5") <= quantity_for(levels, D(150), "neutral", need, D(3), D("0.01"), SOL, D("0.0005"),
                                    D("0.0002")) <= D("0.51")
    text = bot("plan", "--paper", "--config", perp_config(tmp_path, investment=None, quantity="0.5"), cwd=tmp_path)
    assert f"collateral needed {p['investment']} USDC at leverage 3" in text.stdout


@pytest.mark.parametrize("trading, words", [
    ({"symbol": "SOL_USDC", "direction": "long"}, "trading.direction and trading.leverage are for perpetual futures"),
    ({"quantity": "1"}, "set exactly one of trading.quantity"),
    ({"_risk": {"on_stop": "sell_base"}}, "risk.on_stop sell_base is for spot"),
    ({"leverage": "60"}, "trading.leverage must be from 1 to 50"),
])
def test_perps_keys_are_checked(tmp_path, trading, words):
    r = bot("plan", "--paper", "--config", perp_config(tmp_path, **trading), cwd=tmp_path)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("direction", ["neutral", "short"])
def test_run_paper_trades_a_perps_grid_on_the_random_walk(tmp_path, direction):
    r = bot("run", "--paper", "--config", perp_config(tmp_path, direction=direction, duration=4, interval=1),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "perp.paper.log").read_text()
    assert f"placing the initial {direction} perps grid at leverage 3" in log and "Traceback" not in log
    assert log.count("placing Bid") + log.count("placing Ask") >= 9 and "| funding " in log
    if direction == "short":
        assert "entry: IOC sell" in log and "entry: sold" in log
