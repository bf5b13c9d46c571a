"""The simulator's payloads against real Backpack payloads (tests/fixtures/backpack_captures.json:
each capture names the public client code it was taken from).

Each test rebuilds the situation a capture was taken in (the same market, price, quantity and fee rate)
and compares the simulator's answer with the real one: its key set, its value types, and every value
that follows from the situation.
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import websocket

from backpack_api import wall_clock_ms
from simulator import running_simulator
from simulator.server import SimControl
from tests.helpers import new_signer, order_body, signed_request, wait_until

D = Decimal
CAPTURES = json.loads((Path(__file__).parent / "fixtures" / "backpack_captures.json").read_text())["objects"]


def capture(name: str, source_part: str = "") -> dict:
    """The payload of capture ``name`` (the first whose source contains ``source_part``)."""
    return next(c["payload"] for c in CAPTURES[name] if source_part in c["source"])


def types_of(d: dict) -> dict:
    return {k: type(v).__name__ for k, v in d.items()}


@pytest.fixture
def eth_sim():
    """ETH_USDC with Backpack's 0.1 % fee for maker and taker, quiet."""
    with running_simulator(feed="none", symbol="ETH_USDC", price=D("4000.00"), maker_fee=D("0.001"),
                           taker_fee=D("0.001"), ticker_interval=0.1) as s:
        yield s


def test_spot_market_object_is_solusdc_as_backpack_sends_it(sim):
    real = capture("Market", "ccxt")
    ours = requests.get(sim.rest_url + "/api/v1/market", params={"symbol": "SOL_USDC"}, timeout=10).json()
    # ccxt's comment misspells the borrow-fee keys; hummingbot's capture has them as the spec names them.
    real_price = {k: v for k, v in real["filters"]["price"].items() if not k.startswith("borrow")}
    for k, v in real_price.items():
        assert ours["filters"]["price"][k] == v, k
    assert ours["filters"]["quantity"] == real["filters"]["quantity"]
    hb = capture("Market", "hummingbot")
    assert set(hb["filters"]["price"]) <= set(ours["filters"]["price"])
    assert set(real) | set(hb) <= set(ours)
    for k in ("marketType", "openInterestLimit", "orderBookState", "imfFunction", "mmfFunction",
              "fundingRateLowerBound", "fundingRateUpperBound", "createdAt", "baseSymbol", "quoteSymbol"):
        assert ours[k] == real[k], k
    assert ours["positionLimitWeight"] is None and ours["rwaMarketType"] is None
    assert ours["filters"]["price"]["maxPriceUpdateMultiplier"] is None


def test_trades_are_newest_first_with_the_real_shape(sim, control):
    signer = new_signer()
    for price in ("149.00", "148.00", "147.00"):
        signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body(price, "0.5"))
    for price in ("148.99", "147.99", "146.99"):
        control.set_price(price)
    trades = requests.get(sim.rest_url + "/api/v1/trades", params={"symbol": "SOL_USDC"}, timeout=10).json()
    assert [t["id"] for t in trades] == sorted((t["id"] for t in trades), reverse=True) and len(trades) == 3
    assert [t["timestamp"] for t in trades] == sorted((t["timestamp"] for t in trades), reverse=True)
    real = capture("Trade (REST /api/v1/trades)")
    assert types_of(trades[0]) == types_of(real)
    assert D(trades[0]["quoteQuantity"]) == D("147.00") * D("0.5")
    # The public history pages back from the newest, rate limited like klines.
    page = requests.get(sim.rest_url + "/api/v1/trades/history",
                        params={"symbol": "SOL_USDC", "limit": 2, "offset": 1}, timeout=10).json()
    assert [t["id"] for t in page] == [trades[1]["id"], trades[2]["id"]]
    assert requests.get(sim.rest_url + "/api/v1/trades/history",
                        params={"symbol": "SOL_USDC", "offset": 3}, timeout=10).json() == []


def test_fee_and_balance_are_exact(eth_sim):
    """ccxt's capture: 0.001 ETH sold at 4732.5, fee "0.0047325" USDC (0.1 %), no rounding, no padding."""
    real = capture("Fill: /wapi/v1/history/fills item", "spot ETH_USDC sell")
    control = SimControl(eth_sim.rest_url)
    signer = new_signer()
    before = D(signed_request(eth_sim.rest_url, signer, "GET", "/api/v1/capital").json()["USDC"]["available"])
    control.set_price("4732.40", "ETH_USDC")
    signed_request(eth_sim.rest_url, signer, "POST", "/api/v1/order",
                   body=order_body("4732.5", "0.001", side="Ask", symbol="ETH_USDC"))
    control.set_price("4732.60", "ETH_USDC")
    fill = signed_request(eth_sim.rest_url, signer, "GET", "/wapi/v1/history/fills").json()[0]
    assert (fill["fee"], fill["feeSymbol"], fill["price"], fill["quantity"]) == (
        real["fee"], real["feeSymbol"], real["price"], real["quantity"])
    assert set(fill) == set(real)
    after = signed_request(eth_sim.rest_url, signer, "GET", "/api/v1/capital").json()["USDC"]["available"]
    assert D(after) == before + D("4.7325") - D("0.0047325")
    assert after == f"{(before + D('4.7325') - D('0.0047325')).normalize():f}"  # exact, no padding


def test_market_order_by_quantity_reports_its_quote_quantity(eth_sim):
    """ccxt's capture: a market buy of 0.001 ETH filled for 3.81428 USDC reports quoteQuantity "3.82"."""
    real = capture("Order: POST /api/v1/order (market by quantity, Filled)")
    SimControl(eth_sim.rest_url).set_price("3814.27", "ETH_USDC")  # the synthetic best ask is one tick above: 3814.28
    o = signed_request(eth_sim.rest_url, new_signer(), "POST", "/api/v1/order",
                       body={"symbol": "ETH_USDC", "side": "Bid", "orderType": "Market",
                             "quantity": "0.001"}).json()
    assert set(o) == set(real)
    for k in ("executedQuantity", "executedQuoteQuantity", "quoteQuantity", "status", "orderType", "side"):
        assert o[k] == real[k], k


def test_limit_order_history_has_price_times_quantity(eth_sim):
    real = capture("Order: /wapi/v1/history/orders item (limit)")
    signer = new_signer()
    o = signed_request(eth_sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body("4000", "0.001", symbol="ETH_USDC", post_only=False)).json()
    assert set(o) == set(capture("Order: POST /api/v1/order (limit, New)", "ccxt"))
    listed = signed_request(eth_sim.rest_url, signer, "GET", "/api/v1/orders").json()[0]
    assert set(listed) == set(capture("Order: GET /api/v1/orders item"))
    gone = signed_request(eth_sim.rest_url, signer, "DELETE", "/api/v1/order",
                          body={"symbol": "ETH_USDC", "orderId": o["id"]}).json()
    assert set(gone) == set(capture("Order: DELETE /api/v1/order"))
    h = signed_request(eth_sim.rest_url, signer, "GET", "/wapi/v1/history/orders").json()[0]
    assert set(h) == set(real)
    assert (h["quoteQuantity"], h["price"], h["status"], h["postOnly"]) == ("4", "4000", "Cancelled", False)


def _private_ws(sim, signer):
    ws = websocket.create_connection(sim.ws_url, timeout=5)
    ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["account.orderUpdate"],
                        "signature": signer.ws_signature(wall_clock_ms())}))
    wait_until(lambda: sim.hub.streams("account."), message="the private subscription")
    return ws


def _events(ws, n):
    return [json.loads(ws.recv())["data"] for _ in range(n)]


def test_stream_limit_order_without_post_only_has_no_y_key(eth_sim):
    real = capture("WS orderAccepted (limit)")
    signer = new_signer()
    ws = _private_ws(eth_sim, signer)
    try:
        signed_request(eth_sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body("3999.50", "0.01", symbol="ETH_USDC", post_only=False))
        (acc,) = _events(ws, 1)
        assert set(acc) == set(real) and "y" not in acc
        assert types_of(acc) == types_of(real)
        assert acc["Q"] == "39.9950"  # price x quantity, as the capture's "3568.3445" = 178.15 x 20.03
    finally:
        ws.close()


def test_stream_market_order_carries_its_quote_quantity_and_exact_fee(eth_sim):
    """ccxt's captures: 0.0010 ETH bought at 4299.16: Q "4.30", fee "0.000001" ETH, Z "4.299160"."""
    real_acc, real_fill = capture("WS orderAccepted (market)"), capture("WS orderFill (market, taker)")
    signer = new_signer()
    ws = _private_ws(eth_sim, signer)
    try:
        SimControl(eth_sim.rest_url).set_price("4299.15", "ETH_USDC")
        signed_request(eth_sim.rest_url, signer, "POST", "/api/v1/order",
                       body={"symbol": "ETH_USDC", "side": "Bid", "orderType": "Market", "quantity": "0.0010"})
        acc, fill = _events(ws, 2)
        assert set(acc) == set(real_acc) and set(fill) == set(real_fill)
        for k in ("Q", "q", "o", "X", "z", "Z", "S"):
            assert acc[k] == real_acc[k], k
        for k in ("Q", "L", "l", "n", "N", "X", "z", "Z", "m", "o"):
            assert fill[k] == real_fill[k], k
    finally:
        ws.close()


def test_account_endpoints_answer_as_for_a_plain_spot_account(sim):
    signer = new_signer()
    acct = signed_request(sim.rest_url, signer, "GET", "/api/v1/account", sign_as="accountQuery").json()
    assert set(acct) == {"autoBorrowSettlements", "autoLend", "autoRealizePnl", "autoRepayBorrows",
                         "borrowLimit", "futuresMakerFee", "futuresTakerFee", "leverageLimit", "limitOrders",
                         "liquidating", "positionLimit", "spotMakerFee", "spotTakerFee", "triggerOrders"}
    assert acct["autoBorrowSettlements"] is False and acct["limitOrders"] == 0
    assert acct["spotMakerFee"] == "8" and acct["spotTakerFee"] == "10"  # basis points
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", "2"))
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/account", sign_as="accountQuery").json()["limitOrders"] == 1
    coll = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital/collateral", sign_as="collateralQuery").json()
    usdc = next(c for c in coll["collateral"] if c["symbol"] == "USDC")
    assert usdc["openOrderQuantity"] == "298" and D(usdc["availableQuantity"]) == D("100000") - 298
    assert coll["borrowLiability"] == "0" and coll["liabilitiesValue"] == "0"
    most = signed_request(sim.rest_url, signer, "GET", "/api/v1/account/limits/order", sign_as="maxOrderQuantity",
                          params={"symbol": "SOL_USDC", "side": "Bid", "price": "100"}).json()
    assert most["maxOrderQuantity"] == "997.02"  # (100000 - 298 locked) / 100
    assets = requests.get(sim.rest_url + "/api/v1/assets", timeout=10).json()
    assert {"SOL", "USDC", "BTC", "ETH"} <= {a["symbol"] for a in assets}
    assert all({"symbol", "displayName", "tokens"} <= set(a) for a in assets)
    # No position: an empty array; for a symbol, 404 "Position not found" (docs/exchange.md §12)
    r = signed_request(sim.rest_url, signer, "GET", "/api/v1/position", sign_as="positionQuery")
    assert r.status_code == 200 and r.json() == []
    r = signed_request(sim.rest_url, signer, "GET", "/api/v1/position", params={"symbol": "SOL_USDC_PERP"},
                       sign_as="positionQuery")
    assert r.status_code == 404 and r.json()["code"] == "RESOURCE_NOT_FOUND"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_string_client_id_is_refused_on_post_and_delete_alike(sim, method):
    signer = new_signer()
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", client_id=5))
    body = (order_body("148.00", client_id=6) | {"clientId": "6"} if method == "POST"
            else {"symbol": "SOL_USDC", "clientId": "5"})
    r = signed_request(sim.rest_url, signer, method, "/api/v1/order", body=body)
    assert r.status_code == 400 and "clientId" in r.json()["message"]
    # The number is accepted; the order is still there for it.
    r = signed_request(sim.rest_url, signer, "DELETE", "/api/v1/order", body={"symbol": "SOL_USDC", "clientId": 5})
    assert r.status_code == 200 and r.json()["status"] == "Cancelled"
