"""Every HTTP fault kind of the control API, over real HTTP."""
from __future__ import annotations

import time

import pytest
import requests

from tests.helpers import new_signer, order_body, signed_request


def test_status_fault_for_a_count_of_requests(sim, control):
    signer = new_signer()
    control.fault(kind="http_status", method="GET", path="/api/v1/capital", status=503, count=2)
    r1 = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital")
    r2 = signed_request(sim.rest_url, signer, "GET", "/api/v1/capital")
    assert (r1.status_code, r2.status_code) == (503, 503)
    assert r1.json()["code"] == "SERVER_ERROR"
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").status_code == 200
    # A fault scoped to one path leaves the others alone.
    control.fault(kind="http_status", method="POST", path="/api/v1/order", status=500)
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/orders").status_code == 200


def test_429_carries_retry_after(sim, control):
    control.fault(kind="http_status", path="*", status=429, retry_after=3)
    r = requests.get(sim.rest_url + "/api/v1/ticker", params={"symbol": "SOL_USDC"}, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json() == {"code": "TOO_MANY_REQUESTS", "message": "Too many requests"}


def test_502_is_not_json_like_a_proxy(sim, control):
    control.fault(kind="http_status", path="/api/v1/ticker", status=502)
    r = requests.get(sim.rest_url + "/api/v1/ticker", params={"symbol": "SOL_USDC"}, timeout=5)
    assert r.status_code == 502 and r.text.startswith("<html>")


def test_status_fault_for_a_duration(sim, control):
    control.fault(kind="http_status", path="/api/v1/ping", status=500, duration=0.5)
    assert requests.get(sim.rest_url + "/api/v1/ping", timeout=5).status_code == 500
    assert requests.get(sim.rest_url + "/api/v1/ping", timeout=5).status_code == 500
    deadline = time.monotonic() + 5
    while requests.get(sim.rest_url + "/api/v1/ping", timeout=5).status_code == 500:
        assert time.monotonic() < deadline, "the fault outlived its duration"
        time.sleep(0.05)


def test_delay_holds_the_request(sim, control):
    control.fault(kind="delay", path="/api/v1/ping", seconds=0.3)
    started = time.monotonic()
    assert requests.get(sim.rest_url + "/api/v1/ping", timeout=5).text == "pong"
    assert time.monotonic() - started >= 0.3
    with pytest.raises(requests.Timeout):
        control.fault(kind="delay", path="/api/v1/ping", seconds=1.0)
        requests.get(sim.rest_url + "/api/v1/ping", timeout=0.2)


def test_drop_response_places_the_order_but_never_answers(sim, control):
    signer = new_signer()
    control.fault(kind="drop_response", method="POST", path="/api/v1/order")
    with pytest.raises(requests.ConnectionError):
        signed_request(sim.rest_url, signer, "POST", "/api/v1/order",
                       body=order_body("140.00", client_id=555))
    got = signed_request(sim.rest_url, signer, "GET", "/api/v1/order",
                         params={"symbol": "SOL_USDC", "clientId": 555})
    assert got.status_code == 200 and got.json()["status"] == "New"


def test_202_processes_the_cancel_and_answers_empty(sim, control):
    signer = new_signer()
    o = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140.00")).json()
    control.fault(kind="http_status", method="DELETE", path="/api/v1/order", status=202)
    r = signed_request(sim.rest_url, signer, "DELETE", "/api/v1/order",
                       body={"symbol": "SOL_USDC", "orderId": o["id"]})
    assert r.status_code == 202 and r.content == b""
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/orders").json() == []


def test_faults_can_be_listed_and_cleared(sim, control):
    control.fault(kind="http_status", path="*", status=500, count=5)
    listed = requests.get(sim.rest_url + "/_sim/faults", timeout=5).json()["faults"]
    assert [f["status"] for f in listed] == [500]
    control.clear_faults()
    assert requests.get(sim.rest_url + "/api/v1/ping", timeout=5).status_code == 200


def test_order_reject_refuses_matching_orders_only(sim, control):
    signer = new_signer()
    control.fault(kind="order_reject", side="Bid", price="141.00", count=1, code="INVALID_ORDER",
                  message="Order would immediately match and take.")
    items = [order_body("140.00"), order_body("141.00"), order_body("141.00")]
    res = signed_request(sim.rest_url, signer, "POST", "/api/v1/orders", body=items).json()
    assert [x["operation"] for x in res] == ["Ok", "Err", "Ok"]
    assert res[1]["code"] == "INVALID_ORDER"


def test_a_late_answer_is_processed_first_and_answered_later(sim, control):
    signer = new_signer()
    control.fault(kind="late_answer", method="POST", path="/api/v1/order", seconds=0.8)
    t0 = time.monotonic()
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140.00", "1", client_id=31))
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.8
    st = control.state()
    new = next(e for e in st["journal"] if e["type"] == "order_new" and e["account"] == signer.api_key)
    answered = next(e for e in st["journal"] if e["type"] == "request" and e["path"] == "/api/v1/order")
    assert answered["t"] - new["t"] >= 700_000            # the order was on the book long before its answer


def test_a_replayed_placement_is_processed_twice(sim, control):
    signer = new_signer()
    control.fault(kind="replay", method="POST", path="/api/v1/order")
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("140.00", "1", client_id=32))
    assert r.status_code == 200
    mine = [o for o in control.state()["orders"] if o["account"] == signer.api_key]
    assert [(o["clientId"], o["price"], o["status"]) for o in mine] == [(32, "140.00", "New")] * 2
    assert r.json()["id"] == mine[0]["id"]                # the client hears of the first one


def test_a_fractional_retry_after_is_sent_as_it_is(sim, control):
    control.fault(kind="http_status", path="*", status=429, retry_after=0.5)
    r = requests.get(sim.rest_url + "/api/v1/ticker", params={"symbol": "SOL_USDC"}, timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "0.5"


@pytest.mark.parametrize("body", ["html", "truncated", "wrong_shape", "empty"])
def test_a_malformed_answer_to_a_placement_still_places_the_order(sim, control, body):
    signer = new_signer()
    control.fault(kind="malformed", method="POST", path="/api/v1/order", body=body)
    r = signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", client_id=9))
    assert r.status_code == 200
    if body == "wrong_shape":
        assert r.json() == [] or "id" not in r.json() and isinstance(r.json(), (list, dict))
    else:
        with pytest.raises(ValueError):
            r.json()
    opened = signed_request(sim.rest_url, signer, "GET", "/api/v1/orders").json()
    assert [o["clientId"] for o in opened] == [9]       # placed once, whatever the answer looked like
    # The next answer is whole again.
    assert signed_request(sim.rest_url, signer, "GET", "/api/v1/orders").json()[0]["clientId"] == 9


def test_a_malformed_answer_to_a_read(sim, control):
    signer = new_signer()
    control.fault(kind="malformed", method="GET", path="/api/v1/capital", body="wrong_shape")
    assert isinstance(signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json(), list)
    assert "USDC" in signed_request(sim.rest_url, signer, "GET", "/api/v1/capital").json()


def test_a_stalled_answer_stops_mid_body_then_closes(sim, control):
    signer = new_signer()
    control.fault(kind="malformed", method="POST", path="/api/v1/order", body="stall", seconds=0.5)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # the body ends short of its length
        signed_request(sim.rest_url, signer, "POST", "/api/v1/order", body=order_body("149.00", client_id=3))
    assert time.monotonic() - started >= 0.5
    assert [o["clientId"] for o in signed_request(sim.rest_url, signer, "GET", "/api/v1/orders").json()] == [3]


def test_malformed_needs_a_known_body(sim, control):
    r = requests.post(sim.rest_url + "/_sim/faults", json={"kind": "malformed", "body": "garbled"}, timeout=5)
    assert r.status_code == 400 and "html" in r.json()["error"]
