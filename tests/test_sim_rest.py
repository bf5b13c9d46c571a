"""The simulator's REST surface over real HTTP: wire formats, auth errors, validation, matching."""
from __future__ import annotations

import re
import time
from decimal import Decimal

import pytest
import requests

from backpack_api import wall_clock_ms
from tests.helpers import new_signer, order_body, signed_request

D = Decimal


def get(sim, path, **params):
    return requests.get(sim.rest_url + path, params=params, timeout=10)


# ------------------------------------------------------------------ public endpoints
def test_markets_have_every_filter_as_strings(sim):
    markets = get(sim, "/api/v1/markets").json()
    symbols = {m["symbol"] for m in markets}
    assert {"SOL_USDC", "BTC_USDC", "ETH_USDC"} <= symbols
    sol = next(m for m in markets if m["symbol"] == "SOL_USDC")
    assert sol["baseSymbol"] == "SOL" and sol["quoteSymbol"] == "USDC" and sol["marketType"] == "SPOT"
    f = sol["filters"]
    assert f["price"]["tickSize"] == "0.01" and f["quantity"]["stepSize"] == "0.01"
    assert f["quantity"]["minQuantity"] == "0.01" and f["price"]["maxPrice"] is None
    assert sol["orderBookState"] == "Open" and sol["visible"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", sol["createdAt"])
    assert get(sim, "/api/v1/market", symbol="BTC_USDC").json()["filters"]["price"]["tickSize"] == "0.1"


def test_unknown_symbol_is_a_400_with_a_code(sim):
    r = get(sim, "/api/v1/market", symbol="DOGE_USDC")
    assert r.status_code == 400 and r.json() == {"code": "INVALID_SYMBOL", "message": "Invalid symbol"}


def test_ticker_time_ping_status(sim, control):
    control.set_price("151.23")
    t = get(sim, "/api/v1/ticker", symbol="SOL_USDC").json()
    assert t["lastPrice"] == "151.23" and isinstance(t["trades"], str)
    assert set(t) >= {"firstPrice", "priceChange", "priceChangePercent", "high", "low", "volume",
                      "quoteVolume"}
    assert {x["symbol"] for x in get(sim, "/api/v1/tickers").json()} >= {"SOL_USDC", "ETH_USDC"}
    r = get(sim, "/api/v1/time")
    assert r.headers["Content-Type"].startswith("text/plain")
    assert abs(int(r.text) - wall_clock_ms()) < 5000
    assert get(sim, "/api/v1/ping").text == "pong"
    assert get(sim, "/api/v1/status").json() == {"status": "Ok", "message": None}


def test_depth_has_synthetic_liquidity_and_resting_orders(sim):
    signer = new_signer()
    signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.50", "2"))
    d = get(sim, "/api/v1/depth", symbol="SOL_USDC", limit=20).json()
    asks = [(D(p), D(q)) for p, q in d["asks"]]
    bids = [(D(p), D(q)) for p, q in d["bids"]]
    assert asks[0][0] == D("150.01") and bids[-1][0] == D("149.99")
    assert (D("149.50"), D("2")) in bids
    assert isinstance(d["lastUpdateId"], str) and d["timestamp"] > 10**15  # µs
    assert get(sim, "/api/v1/depth", symbol="SOL_USDC", limit=7).status_code == 400


def test_klines_come_from_the_price_history(sim, control):
    start = int(time.time()) - 5
    for p in ("150.5", "152", "149", "151"):
        control.set_price(p)
    ks = get(sim, "/api/v1/klines", symbol="SOL_USDC", interval="1m", startTime=start).json()
    assert ks, "at least one candle"
    last = ks[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:00", last["start"])
    assert D(last["high"]) >= D("152") and D(last["low"]) <= D("149") and last["close"] == "151.00"
    assert get(sim, "/api/v1/klines", symbol="SOL_USDC", interval="2m", startTime=start).status_code == 400


# ------------------------------------------------------------------ accounts and auth
def test_any_key_gets_a_funded_account(sim):
    r = signed_request(sim.rest_url, new_signer(), "GET", "/api/v1/capital")
    assert r.status_code == 200
    assert r.json()["USDC"] == {"available": "100000", "locked": "0", "staked": "0"}


@pytest.mark.parametrize("mutate,message", [
    (lambda h: h.update({"X-Signature": "A" * 86 + "=="}), "Invalid signature"),
    (lambda h: h.update({"X-API-Key": "bm90IGEga2V5"}), "Invalid X-API-Key header"),
    (lambda h: h.update({"X-Signature": "short"}), "Invalid X-Signature header"),
    (lambda h: h.update({"X-API-Key": None}), "Missing X-API-Key header"),
    (lambda h: h.update({"X-Window": "60001"}), "Invalid X-Window header"),
])
def test_bad_auth_is_invalid_client_request(sim, mutate, message):
    headers: dict = {}
    mutate(headers)
    r = signed_request(sim.rest_url, new_signer(), "GET", "/api/v1/capital", headers=headers)
    assert r.status_code == 400
    assert r.json() == {"code": "INVALID_CLIENT_REQUEST", "message": message}


def test_expired_request(sim):
    r = signed_request(sim.rest_url, new_signer(), "GET", "/api/v1/capital",
                       ts=wall_clock_ms() - 6000, window=5000)
    assert r.json() == {"code": "INVALID_CLIENT_REQUEST", "message": "Request has expired"}
    ok = signed_request(sim.rest_url, new_signer(), "GET", "/api/v1/capital",
                        ts=wall_clock_ms() - 6000, window=60000)
    assert ok.status_code == 200


def test_signature_over_the_wrong_params_is_refused(sim):
    signer = new_signer()
    # Signed as if the price were different from what is sent.
    good = order_body("140.00")
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=good,
                       headers={"X-Signature": signer.sign("instruction=orderExecute&price=1")})
    assert r.json()["message"] == "Invalid signature"
    # Upper-case booleans, the FAQ's classic mistake.
    ts = wall_clock_ms()
    msg = ("instruction=orderExecute&orderType=Limit&postOnly=True&price=140.00&quantity=1&side=Bid"
           f"&symbol=SOL_USDC&timeInForce=GTC&timestamp={ts}&window=5000")
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=good, ts=ts,
                       headers={"X-Signature": signer.sign(msg)})
    assert r.json()["message"] == "Invalid signature"


# ------------------------------------------------------------------ orders
def test_order_wire_format_and_balance_lock(sim):
    signer = new_signer()
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body("140.00", "2.5", client_id=4242))
    assert r.status_code == 200, r.text
    o = r.json()
    assert re.fullmatch(r"\d+", o["id"]) and o["clientId"] == 4242
    assert o["orderType"] == "Limit" and o["status"] == "New" and o["side"] == "Bid"
    assert o["executedQuantity"] == "0" and o["executedQuoteQuantity"] == "0"
    assert isinstance(o["createdAt"], int) and abs(o["createdAt"] - wall_clock_ms()) < 5000
    assert o["reduceOnly"] is None and o["triggerPrice"] is None and o["postOnly"] is True
    cap = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json()
    assert cap["USDC"] == {"available": "99650", "locked": "350", "staked": "0"}
    by_cid = signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                            params={"symbol": "SOL_USDC", "clientId": 4242}).json()
    by_id = signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                           params={"symbol": "SOL_USDC", "orderId": o["id"]}).json()
    assert by_cid["id"] == by_id["id"] == o["id"]
    both = signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                          params={"symbol": "SOL_USDC", "orderId": o["id"], "clientId": 4242})
    assert both.status_code == 400
    opened = signed_request(sim.rest_url, signer, "GET", "/api/v1/orders", params={"symbol": "SOL_USDC"})
    assert [x["id"] for x in opened.json()] == [o["id"]]
    # Another account sees none of it.
    assert signed_request(sim.rest_url, new_signer(), "GET", "/api/v1/orders").json() == []


def test_cancel_unlocks_and_then_the_order_is_gone(sim):
    signer = new_signer()
    o = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140.00", "1")).json()
    c = signed_request(sim.rest_url, signer, "DELETE", "/api/v1/order",
                       body={"symbol": "SOL_USDC", "orderId": o["id"]})
    assert c.status_code == 200 and c.json()["status"] == "Cancelled"
    cap = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json()
    assert D(cap["USDC"]["available"]) == D("100000") and D(cap["USDC"]["locked"]) == 0
    gone = signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                          params={"symbol": "SOL_USDC", "orderId": o["id"]})
    assert gone.status_code == 404 and gone.json() == {"code": "RESOURCE_NOT_FOUND", "message": "Order not found"}
    again = signed_request(sim.rest_url, signer, "DELETE", "/api/v1/order",
                           body={"symbol": "SOL_USDC", "orderId": o["id"]})
    assert again.status_code == 400 and again.json()["code"] == "RESOURCE_NOT_FOUND"
    hist = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/orders",
                          params={"symbol": "SOL_USDC"}).json()
    assert hist[0]["id"] == o["id"] and hist[0]["status"] == "Cancelled"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", hist[0]["createdAt"])


@pytest.mark.parametrize("body,code,message", [
    (order_body("140.001"), "INVALID_CLIENT_REQUEST", "Price decimal too long"),
    (order_body("140.00", "1.001"), "INVALID_CLIENT_REQUEST", "Quantity decimal too long"),
    (order_body("140.00", "0.001"), "INVALID_CLIENT_REQUEST", "Quantity decimal too long"),
    (order_body("140.00", "0", ), "INVALID_QUANTITY", "Invalid quantity"),
    (order_body("140.0", "0.00001", symbol="BTC_USDC"), "INVALID_PRICE",
     "Price is too far from the last active price"),
    (order_body("150.01"), "INVALID_ORDER", "Order would immediately match and take."),
    (order_body("149.99", side="Ask"), "INVALID_ORDER", "Order would immediately match and take."),
    (order_body("140.00", "1000"), "INSUFFICIENT_FUNDS", "Insufficient funds"),
    (order_body("140.00", symbol="DOGE_USDC"), "INVALID_SYMBOL", "Invalid symbol"),
    (order_body("3400.00", "0.0009", symbol="ETH_USDC"), "INVALID_QUANTITY",
     "Quantity is below the minimum allowed value"),
    (order_body("200.00", side="Ask"), "INVALID_PRICE", "Price is too far from the last active price"),
])
def test_validation_errors_change_nothing(sim, body, code, message):
    signer = new_signer()
    before = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json()
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=body)
    assert r.status_code == 400 and r.json() == {"code": code, "message": message}
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json() == before
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/orders").json() == []


def test_min_quantity_itself_is_accepted(sim):
    r = signed_request(sim.rest_url, new_signer(), "POST", "/api/v1/order",
                       body=order_body("3400.00", "0.001", symbol="ETH_USDC"))
    assert r.status_code == 200 and r.json()["quantity"] == "0.001"


def test_parse_errors_look_like_the_framework(sim):
    r = signed_request(sim.rest_url, new_signer(), "POST", "/api/v1/order",
                       body=order_body("140.00", side="buy"))
    assert r.status_code == 400 and r.json()["code"] == "INVALID_CLIENT_REQUEST"
    assert r.json()["message"].startswith("parse request payload error:")


def test_batch_has_one_result_per_item(sim):
    signer = new_signer()
    items = [order_body("140.00", client_id=1), order_body("150.50"), order_body("141.00", client_id=3)]
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/orders", body=items)
    assert r.status_code == 200
    res = r.json()
    assert [x["operation"] for x in res] == ["Ok", "Err", "Ok"]
    assert res[1] == {"operation": "Err", "code": "INVALID_ORDER",
                      "message": "Order would immediately match and take."}
    assert res[0]["clientId"] == 1 and res[2]["price"] == "141.00"
    too_many = [order_body("140.00")] * 51
    assert signed_request(sim.rest_url, signer, "POST", "/api/v1/orders", body=too_many).status_code == 400


def test_cancel_all_cancels_only_that_accounts_orders(sim):
    a, b = new_signer(), new_signer()
    for p in ("140.00", "141.00"):
        signed_request(sim.rest_url, a, "POST", "/api/v1/order", body=order_body(p))
    signed_request(sim.rest_url, b, "POST", "/api/v1/order", body=order_body("142.00"))
    r = signed_request(sim.rest_url, a, "DELETE", "/api/v1/orders", body={"symbol": "SOL_USDC"})
    assert sorted(x["status"] for x in r.json()) == ["Cancelled", "Cancelled"]
    assert len(signed_request(sim.rest_url, b, "GET", "/api/v1/orders").json()) == 1


# ------------------------------------------------------------------ matching, fees, history
def test_resting_orders_fill_when_the_price_trades_through(sim, control):
    signer = new_signer()
    bid = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                         body=order_body("149.00", "2", client_id=7)).json()
    ask = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                         body=order_body("152.00", "1", side="Ask")).json()
    assert control.set_price("149.00")["fills"] == []  # touching is not trading through
    fills = control.set_price("148.99")["fills"]
    assert [(f["orderId"], f["price"], f["quantity"]) for f in fills] == [(bid["id"], "149.00", "2")]
    fills = control.set_price("152.01")["fills"]
    assert [(f["orderId"], f["price"], f["quantity"]) for f in fills] == [(ask["id"], "152.00", "1")]
    cap = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json()
    # Bought 2 SOL at 149 (fee 0.0016 SOL), sold 1 at 152 (fee 0.1216 USDC).
    assert D(cap["SOL"]["available"]) == D("1000") + D("2") - D("0.0016") - D("1")
    assert D(cap["USDC"]["available"]) == D("100000") - D("298") + D("152") - D("0.1216")
    assert D(cap["USDC"]["locked"]) == 0 and D(cap["SOL"]["locked"]) == 0
    hist = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                          params={"symbol": "SOL_USDC", "sortDirection": "Asc"})
    fl = hist.json()
    assert [(f["side"], f["price"], f["fee"], f["feeSymbol"], f["isMaker"]) for f in fl] == [
        ("Bid", "149.00", "0.0016", "SOL", True), ("Ask", "152.00", "0.1216", "USDC", True)]
    assert fl[0]["clientId"] == "7" and fl[1]["clientId"] is None
    assert isinstance(fl[0]["tradeId"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", fl[0]["timestamp"])
    assert hist.headers["X-TOTAL"] == "2" and hist.headers["X-PAGE-COUNT"] == "1"


def test_partial_fills_with_liquidity(sim, control):
    signer = new_signer()
    o = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", "1")).json()
    control.set_price("148.50", liquidity="0.3")
    got = signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                         params={"symbol": "SOL_USDC", "orderId": o["id"]}).json()
    assert got["status"] == "PartiallyFilled" and got["executedQuantity"] == "0.30"
    assert got["executedQuoteQuantity"] == "44.7000"
    control.set_price("148.40", liquidity="0.3")
    control.set_price("148.30", liquidity="0.5")
    fills = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                           params={"orderId": o["id"], "sortDirection": "Asc"}).json()
    assert [f["quantity"] for f in fills] == ["0.30", "0.30", "0.40"]
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                          params={"symbol": "SOL_USDC", "orderId": o["id"]}).status_code == 404


def test_crossing_limit_order_takes_at_the_touch_with_taker_fee(sim):
    signer = new_signer()
    o = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body("155.00", "1", post_only=False)).json()
    assert o["status"] == "Filled" and o["executedQuoteQuantity"] == "150.01"
    f = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills").json()[0]
    assert f["isMaker"] is False and f["price"] == "150.01" and f["fee"] == "0.001"
    cap = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json()
    assert D(cap["USDC"]["available"]) == D("100000") - D("150.01") and D(cap["USDC"]["locked"]) == 0


def test_market_orders_and_ioc(sim):
    signer = new_signer()
    m = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                       body={"symbol": "SOL_USDC", "side": "Ask", "orderType": "Market", "quantity": "2"})
    assert m.json()["status"] == "Filled" and m.json()["orderType"] == "Market"
    ioc = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                         body=order_body("140.00", post_only=False, timeInForce="IOC")).json()
    assert ioc["status"] == "Expired"
    hist = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/orders").json()
    assert {h["expiryReason"] for h in hist if h["status"] == "Expired"} == {"ImmediateOrCancel"}


def test_fill_history_filters_and_pages(sim, control):
    signer = new_signer()
    ids = []
    for i in range(5):
        ids.append(signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                                  body=order_body(f"{149 - i}.00", "0.1")).json()["id"])
    mid = wall_clock_ms()
    control.set_price("140.00")
    allf = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                          params={"sortDirection": "Asc"}).json()
    assert [f["orderId"] for f in allf] == ids
    page = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                          params={"limit": 2, "offset": 2, "sortDirection": "Asc"})
    assert [f["orderId"] for f in page.json()] == ids[2:4]
    assert page.headers["X-CURRENT-PAGE"] == "2" and page.headers["X-PAGE-COUNT"] == "3"
    desc = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills").json()
    assert [f["orderId"] for f in desc] == ids[::-1]  # Desc by default
    assert signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                          params={"from": mid - 60_000, "to": mid - 30_000}).json() == []
    one = signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                         params={"orderId": ids[3]}).json()
    assert [f["orderId"] for f in one] == [ids[3]]
    assert signed_request(sim.rest_url, signer, "GET", "/wapi/v1/history/fills",
                          params={"limit": 1001}).status_code == 400


def test_rate_limit_answers_429_with_retry_after():
    from simulator import running_simulator
    with running_simulator(feed="none", rate_limit=5) as s:
        signer = new_signer()
        codes = [signed_request(s.rest_url, signer, "GET", "/api/v1/capital").status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
        r = signed_request(s.rest_url, signer, "GET", "/api/v1/capital")
        assert r.json() == {"code": "TOO_MANY_REQUESTS", "message": "Too many requests"}
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Another account has its own budget.
        assert signed_request(s.rest_url, new_signer(), "GET", "/api/v1/capital").status_code == 200


def test_state_dump_has_orders_fills_and_journal(sim, control):
    signer = new_signer()
    o = signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body("149.00", "1", client_id=99)).json()
    control.set_price("148")
    st = control.state()
    so = next(x for x in st["orders"] if x["id"] == o["id"])
    assert so["status"] == "Filled" and so["clientId"] == 99 and so["createdAtUs"] > 10**15
    assert so["closedAtUs"] >= so["createdAtUs"]
    f = st["fills"][0]
    assert f["orderId"] == o["id"] and f["timestampUs"] >= so["createdAtUs"]
    kinds = [e["type"] for e in st["journal"]]
    assert "order_new" in kinds and "fill" in kinds and "price" in kinds
    assert st["accounts"][signer.api_key]["SOL"]["available"] == "1000.9992"


def test_control_api_refuses_garbage(sim):
    r = requests.post(sim.rest_url + "/_sim/price", json={"symbol": "SOL_USDC"}, timeout=5)
    assert r.status_code == 400
    r = requests.post(sim.rest_url + "/_sim/faults", json={"kind": "meteor"}, timeout=5)
    assert r.status_code == 400 and "unknown fault kind" in r.json()["error"]
