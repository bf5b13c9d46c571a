"""The simulator's perpetual futures, part one: the perp markets and their public data, against real
Backpack payloads (tests/fixtures/backpack_captures.json) and the contract's worked examples
(docs/exchange.md "Perpetual futures"), and read by an independent client (ccxt's Backpack class).

A capture whose recorder stringified numbers (``types_reliable: false``) pins the keys only.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import websocket

from simulator import running_simulator
from simulator.markets import DEFAULT_MARKETS
from simulator.perps import position_imf, position_mmf
from simulator.server import SimControl
from tests.helpers import wait_until

D = Decimal
CAPTURES = json.loads((Path(__file__).parent / "fixtures" / "backpack_captures.json").read_text())["objects"]
HOUR_MS = 3_600_000


def captures(name: str) -> list[dict]:
    return CAPTURES[name]


def shape(x):
    """A payload's keys and value types, all the way down."""
    if isinstance(x, dict):
        return {k: shape(v) for k, v in x.items()}
    return type(x).__name__


def keys(x):
    if isinstance(x, dict):
        return {k: keys(v) for k, v in x.items()}
    return None


def restrict(ours, real):
    """``ours`` cut to the keys ``real`` has, all the way down (a key we lack stays missing: a failure)."""
    if isinstance(real, dict) and isinstance(ours, dict):
        return {k: restrict(ours[k], v) for k, v in real.items() if k in ours}
    return ours


def pin(ours: dict, capture: dict) -> None:
    """Every key of the capture is ours (nested too), with its value type when the capture's types are
    reliable."""
    real = capture["payload"]
    mine = restrict(ours, real)
    if capture.get("types_reliable", True):
        assert shape(mine) == shape(real), capture["source"]
    else:
        assert keys(mine) == keys(real), capture["source"]


@pytest.fixture
def perp_sim():
    with running_simulator(feed="none", ticker_interval=0.1) as s:
        yield s


def get(sim, path, **params):
    r = requests.get(sim.rest_url + path, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_perp_markets_are_backpacks_shape_and_sol_perp_is_its_own_clients_fixture(perp_sim):
    perps = get(perp_sim, "/api/v1/markets", marketType="PERP")
    assert [m["symbol"] for m in perps] == ["SOL_USDC_PERP", "BTC_USDC_PERP"]
    assert {m["marketType"] for m in get(perp_sim, "/api/v1/markets")} == {"SPOT", "PERP"}   # the default: both
    assert {m["marketType"] for m in get(perp_sim, "/api/v1/markets", marketType="SPOT")} == {"SPOT"}
    sol = get(perp_sim, "/api/v1/market", symbol="SOL_USDC_PERP")
    for c in captures("Market (PERP)"):
        pin(sol, c)
    fixture = next(c["payload"] for c in captures("Market (PERP)") if "bpx-api-client" in c["source"])
    assert restrict(sol, fixture) == fixture                           # every value, to the last field
    btc = next(m for m in perps if m["symbol"] == "BTC_USDC_PERP")
    assert keys(restrict(btc, fixture)) == keys(fixture)               # its values are its own (maxQuantity "100")
    assert btc["imfFunction"] == {"base": "0.02", "factor": "0.0000935", "type": "sqrt"}


@pytest.mark.parametrize("notional, imf, imf10, mmf", [
    ("1000", "0.02", "0.10", "0.0135"),
    ("100000", "0.02", "0.10", "0.0135"),
    ("500000", "0.04243", "0.10", "0.02546"),
    ("1000000", "0.06", "0.10", "0.036"),
    ("5000000", "0.13416", "0.13416", "0.08050"),
])
def test_imf_and_mmf_reproduce_the_contracts_table(notional, imf, imf10, mmf):
    """SOL perp's parameters (IMF 0.02 / 0.00006, MMF 0.0135 / 0.000036), each figure to the table's places."""
    p = next(m.perp for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC_PERP")
    n = D(notional)

    def at(x: Decimal, places: str) -> Decimal:
        return x.quantize(D(places))
    assert at(position_imf(p, n), imf) == D(imf)
    assert at(position_imf(p, n, leverage_limit=D(10)), imf10) == D(imf10)
    assert at(position_mmf(p, n), mmf) == D(mmf)
    # where the size term starts to bind: (base / factor)^2
    assert position_imf(p, D("111111")) == D("0.02") < position_imf(p, D("111112"))
    assert position_mmf(p, D("140625")) == D("0.0135") < position_mmf(p, D("140626"))


def test_mark_prices_funding_rates_and_open_interest_are_backpacks_payloads(perp_sim):
    marks = get(perp_sim, "/api/v1/markPrices")
    assert [m["symbol"] for m in marks] == ["BTC_USDC_PERP", "SOL_USDC_PERP"]
    one = get(perp_sim, "/api/v1/markPrices", symbol="SOL_USDC_PERP")
    assert len(one) == 1                                               # an array for one symbol too
    for c in captures("Mark price: /api/v1/markPrices item"):
        pin(one[0], c)
    now_ms = int(requests.get(perp_sim.rest_url + "/api/v1/time", timeout=10).text)
    assert one[0]["nextFundingTimestamp"] == (now_ms // HOUR_MS + 1) * HOUR_MS   # the end of this hour, in ms
    oi = get(perp_sim, "/api/v1/openInterest", symbol="BTC_USDC_PERP")
    for c in captures("Open interest: /api/v1/openInterest item"):
        pin(oi[0], c)
    assert [o["symbol"] for o in get(perp_sim, "/api/v1/openInterest")] == ["BTC_USDC_PERP", "SOL_USDC_PERP"]
    # spot markets have no mark: Backpack's markPrices is for perps
    r = requests.get(perp_sim.rest_url + "/api/v1/markPrices", params={"symbol": "SOL_USDC"}, timeout=10)
    assert r.status_code == 400
    # funding: a row per hour that has ended, newest first, the rate clamped to the market's bounds
    control = SimControl(perp_sim.rest_url)
    assert get(perp_sim, "/api/v1/fundingRates", symbol="SOL_USDC_PERP") == []
    requests.post(perp_sim.rest_url + "/_sim/perp", json={"symbol": "SOL_USDC_PERP", "fundingRate": "0.05"},
                  timeout=10)
    control._call("POST", "/_sim/clock", {"offset_ms": 3 * HOUR_MS})
    r = requests.get(perp_sim.rest_url + "/api/v1/fundingRates", params={"symbol": "SOL_USDC_PERP", "limit": 2},
                     timeout=10)
    rows = r.json()
    assert r.headers["X-TOTAL"] == "3" and r.headers["X-PAGE-COUNT"] == "2" and len(rows) == 2
    for c in captures("Funding rate: /api/v1/fundingRates item"):
        pin(rows[0], c)
    ends = [row["intervalEndTimestamp"] for row in rows]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00", e) for e in ends) and ends == sorted(ends, reverse=True)
    assert {row["fundingRate"] for row in rows} == {"0.01"}            # 0.05 clamped to 100 bps
    assert get(perp_sim, "/api/v1/markPrices", symbol="SOL_USDC_PERP")[0]["fundingRate"] == "0.01"


def test_the_mark_follows_the_index_which_follows_the_price_unless_set_apart_and_stays_in_its_band(perp_sim):
    control = SimControl(perp_sim.rest_url)
    control.set_price("151.00", symbol="SOL_USDC_PERP")

    def mark():
        m = get(perp_sim, "/api/v1/markPrices", symbol="SOL_USDC_PERP")[0]
        return m["indexPrice"], m["markPrice"]

    assert mark() == ("151.00", "151.00")                              # index = the price; mark = index
    url = perp_sim.rest_url + "/_sim/perp"
    requests.post(url, json={"symbol": "SOL_USDC_PERP", "premium": "0.01"}, timeout=10)
    assert mark() == ("151.00", "152.51")
    requests.post(url, json={"symbol": "SOL_USDC_PERP", "markPrice": "200"}, timeout=10)
    assert mark() == ("151.00", "158.55")                              # bounded: index + 5 %
    requests.post(url, json={"symbol": "SOL_USDC_PERP", "indexPrice": "140", "markPrice": None}, timeout=10)
    assert mark() == ("140.00", "140.00")
    requests.post(url, json={"symbol": "SOL_USDC_PERP", "indexPrice": None}, timeout=10)
    assert mark() == ("151.00", "151.00")
    assert requests.post(url, json={"symbol": "SOL_USDC"}, timeout=10).status_code == 400


def test_mark_and_index_klines_follow_the_rule_as_it_stood_at_each_print(perp_sim):
    control = SimControl(perp_sim.rest_url)
    start_s = int(requests.get(perp_sim.rest_url + "/api/v1/time", timeout=10).text) // 1000 - 120
    control.set_price("150.00", symbol="SOL_USDC_PERP")
    requests.post(perp_sim.rest_url + "/_sim/perp", json={"symbol": "SOL_USDC_PERP", "premium": "0.02"}, timeout=10)
    control.set_price("160.00", symbol="SOL_USDC_PERP")

    def candle(price_type):
        ks = get(perp_sim, "/api/v1/klines", symbol="SOL_USDC_PERP", interval="1d", startTime=start_s,
                 priceType=price_type)
        return ks[-1]["high"], ks[-1]["close"]

    assert candle("Last") == ("160.00", "160.00")
    assert candle("Index") == ("160.00", "160.00")
    assert candle("Mark") == ("163.20", "163.20")        # 160 × 1.02; the 150 print came before the premium
    ks = get(perp_sim, "/api/v1/klines", symbol="SOL_USDC_PERP", interval="1d", startTime=start_s, priceType="Mark")
    assert D(ks[-1]["low"]) == D("150.00")


def test_the_mark_price_stream_is_backpacks(perp_sim):
    ws = websocket.create_connection(perp_sim.ws_url, timeout=10)
    try:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["markPrice.SOL_USDC_PERP"]}))
        msg = wait_until(lambda: json.loads(ws.recv()), timeout=10, message="a markPrice frame")
    finally:
        ws.close()
    assert msg["stream"] == "markPrice.SOL_USDC_PERP"
    data = msg["data"]
    for c in captures("WS markPrice"):
        pin(data, c)
    assert data["n"] % HOUR_MS == 0 and data["n"] < 10**13 and data["E"] > 10**15   # n in ms, E in µs


def test_ccxt_reads_the_perps_unmodified(perp_sim):
    ccxt = pytest.importorskip("ccxt")
    SimControl(perp_sim.rest_url)._call("POST", "/_sim/clock", {"offset_ms": 2 * HOUR_MS})
    ex = ccxt.backpack({"urls": {"api": {"public": perp_sim.rest_url, "private": perp_sim.rest_url}}})
    markets = ex.load_markets()
    assert markets["SOL/USDC:USDC"]["swap"] and markets["SOL/USDC:USDC"]["linear"]
    assert markets["SOL/USDC"]["spot"]
    rate = ex.fetch_funding_rate("SOL/USDC:USDC")
    assert rate["markPrice"] == 150.0 and rate["fundingRate"] == 0.0000125 and rate["interval"] == "1h"
    history = ex.fetch_funding_rate_history("SOL/USDC:USDC")
    assert len(history) == 2 and all(h["timestamp"] % HOUR_MS == 0 for h in history)
    oi = ex.fetch_open_interest("BTC/USDC:USDC")
    assert oi["symbol"] == "BTC/USDC:USDC" and oi["openInterestValue"] == 0
    assert ex.fetch_ticker("SOL/USDC")["last"] == 150.0


def test_the_open_interest_stream_is_the_longs_open():
    with running_simulator(feed="none", ticker_interval=0.05, open_interest_seconds=0.2) as sim:
        from tests.test_sim_perp_positions import Acct
        a = Acct(sim)
        a.price("150")
        a.order("Bid", "151", "3")                       # a long of 3: the open interest
        ws = websocket.create_connection(sim.ws_url, timeout=10)
        try:
            ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["openInterest.SOL_USDC_PERP"]}))
            data = wait_until(lambda: json.loads(ws.recv())["data"], timeout=10, message="an openInterest frame")
        finally:
            ws.close()
        rest = get(sim, "/api/v1/openInterest", symbol="SOL_USDC_PERP")[0]
    assert data == {"e": "openInterest", "E": data["E"], "s": "SOL_USDC_PERP", "o": "3"} and data["E"] > 10**15
    assert rest["openInterest"] == "3"
