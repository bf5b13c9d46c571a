"""Tier 2: the signing vectors of docs/exchange.md §2.5, for the bot's signer and the simulator's
independent verifier (which rebuilds the string from the wire form of the request)."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backpack_api import Signer, decode_key, KeyFormatError, signing_payload
from simulator import signing as sim_signing

SECRET = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
API_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
TS = 1700000000000

ORDER_BODY = {"symbol": "SOL_USDC", "side": "Bid", "orderType": "Limit", "price": "180.50",
              "quantity": "1.5", "timeInForce": "GTC", "postOnly": True, "clientId": 1001,
              "selfTradePrevention": "RejectTaker"}
BATCH = [{"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": "141", "quantity": "12"},
         {"symbol": "SOL_USDC_PERP", "side": "Bid", "orderType": "Limit", "price": "140", "quantity": "11"}]

PERP_ORDER = {"symbol": "SOL_USDC_PERP", "side": "Ask", "orderType": "Limit", "price": "125.50", "quantity": "0.50",
              "timeInForce": "GTC", "postOnly": True, "reduceOnly": True, "clientId": 42}

# (instruction, query pairs, body, timestamp, expected string, expected signature)
VECTORS = [
    ("balanceQuery", [], None, TS,
     "instruction=balanceQuery&timestamp=1700000000000&window=5000",
     "ogsyh1c6LnY10GiJaCoAEdHpkK2BT4KgS7NAd1PW2DQndw1OnR0WbY0M753KwW9Mq6Dmw3k+Kdw+wPxzKMCiAg=="),
    ("orderExecute", [], ORDER_BODY, TS,
     "instruction=orderExecute&clientId=1001&orderType=Limit&postOnly=true&price=180.50&quantity=1.5"
     "&selfTradePrevention=RejectTaker&side=Bid&symbol=SOL_USDC&timeInForce=GTC&timestamp=1700000000000&window=5000",
     "9fA+kxAOZNy8zNSVEHva6Eu6gWjHWYtfvpGqyhmKnAO7Xz+W/nc/cTCDgJa+7lvk/pxVEKuvQmbAfJryJU8SAg=="),
    ("orderCancel", [], {"orderId": 28, "symbol": "BTC_USDT"}, 1614550000000,
     "instruction=orderCancel&orderId=28&symbol=BTC_USDT&timestamp=1614550000000&window=5000",
     "80cYcHmUHbvcO3IonY2y+nObqUTRkZrNbRsPB30r+NjqgKfP5DIFKryC0ea11fMcweyoymFT+S2cGbPACyinDw=="),
    ("orderExecute", [], BATCH, 1750793021519,
     "instruction=orderExecute&orderType=Limit&price=141&quantity=12&side=Bid&symbol=SOL_USDC_PERP"
     "&instruction=orderExecute&orderType=Limit&price=140&quantity=11&side=Bid&symbol=SOL_USDC_PERP"
     "&timestamp=1750793021519&window=5000",
     "/RiVIEmATq6bDKSR8I9tEY3qY/MRt45Y5/Wi4mKYjt3SaqoLFfOiYrYNRddqSXfrcDdY/b0n3duPew5JKrn/CA=="),
    ("fillHistoryQueryAll", [("symbol", "SOL_USDC"), ("limit", "100"), ("offset", "0")], None, TS,
     "instruction=fillHistoryQueryAll&limit=100&offset=0&symbol=SOL_USDC&timestamp=1700000000000&window=5000",
     "OPtAoudWrsnLs9IDCgtzxucnL0M0VXkw447K0QY2MhWFRyOT/WZSufgV3AjrVszG5NsDuIZ3C8ttba3eY4L3CQ=="),
    ("subscribe", [], None, TS,
     "instruction=subscribe&timestamp=1700000000000&window=5000",
     "mxIdZT3relFG10SYkdl4nIzm1LhhlW8oC6qF2MO03/JWvhFiRSeHidCVk8UGX+cyLu3UdxatFYnoPs+ngqkdBQ=="),
    # Perps (docs/exchange.md §12): a reduce-only order, the leverage update, positions, collateral, the account,
    # funding history and order limits, with the same test key.
    ("orderExecute", [], PERP_ORDER, TS,
     "instruction=orderExecute&clientId=42&orderType=Limit&postOnly=true&price=125.50&quantity=0.50&reduceOnly=true"
     "&side=Ask&symbol=SOL_USDC_PERP&timeInForce=GTC&timestamp=1700000000000&window=5000",
     "uyM+T4WR2T64MsXjkErvpY3o4oWkPxGr12B30OkkPvzNQYAuhMO3F0faLBlOKzymaVC9a98f+Df85yg9r5GqCA=="),
    ("accountUpdate", [], {"leverageLimit": "10"}, TS,
     "instruction=accountUpdate&leverageLimit=10&timestamp=1700000000000&window=5000",
     "NvRfqNWOOOR1Nf4YdT1KNQsCwK9FXgZBGx2Lj7yZoxyC3FSoSUn+11svTy8ghXRlxvC9iyYlqHLTGQCNVNaeDA=="),
    ("positionQuery", [("symbol", "SOL_USDC_PERP")], None, TS,
     "instruction=positionQuery&symbol=SOL_USDC_PERP&timestamp=1700000000000&window=5000",
     "LP4c15kqnktXqBckcB5eJTfB8aXML8bbMKP0rqnuGT9DTbz22dKBfV8FJhCQc1HzLDehQXZO+j/3mPbMDQjjCw=="),
    ("positionQuery", [], None, TS,
     "instruction=positionQuery&timestamp=1700000000000&window=5000",
     "0P+bA7L+zTWrqxkEErhnercnNZDbjxUI/5inRdlF7Y0If9RJ3VDIBB3VzPRvvnglxWbhQLxqU2W0ZBzK97bxBQ=="),
    ("collateralQuery", [], None, TS,
     "instruction=collateralQuery&timestamp=1700000000000&window=5000",
     "lNwaHKcUBi5B+xx+m4kinKQIXGaMf8qrfNLH9ny7nPQy9HOxGYMEsDq+EyI4pQR8V7dsPSxwyD2l8RaAVI0VCA=="),
    ("accountQuery", [], None, TS,
     "instruction=accountQuery&timestamp=1700000000000&window=5000",
     "dV6+sY4YS6HRRwKMkNLWjwftbof1zt5Qa3rQpf3yKAOx6bFscqNB+bWdH6+fINDYJna6QBlQdxaUtYwj65XzCQ=="),
    ("fundingHistoryQueryAll", [("symbol", "SOL_USDC_PERP"), ("limit", "100"), ("offset", "0"),
                                ("sortDirection", "Desc")], None, TS,
     "instruction=fundingHistoryQueryAll&limit=100&offset=0&sortDirection=Desc&symbol=SOL_USDC_PERP"
     "&timestamp=1700000000000&window=5000",
     "pjipmlrHqkyvP1wNqZDCZ5cUMgMj6LoOYNO8rNo10q/mDUrb89spzOh/INzN41aRL4ImejfTtPyLlHuzvQcTAQ=="),
    ("maxOrderQuantity", [("symbol", "SOL_USDC_PERP"), ("side", "Bid"), ("price", "120"), ("reduceOnly", "false")],
     None, TS,
     "instruction=maxOrderQuantity&price=120&reduceOnly=false&side=Bid&symbol=SOL_USDC_PERP"
     "&timestamp=1700000000000&window=5000",
     "Sq4XyEwpKOVb6CB7WZLK7W642g2q09YTVz2nNl80H4TI9nfOzWCPawjjrjfyMTO7+uZZrFBEbYzMOoXGvzv6BA=="),
]


def test_signer_derives_the_documented_api_key():
    assert Signer(SECRET).api_key == API_KEY


@pytest.mark.parametrize("instruction,query,body,ts,expected,signature", VECTORS)
def test_bot_signing_string_and_signature(instruction, query, body, ts, expected, signature):
    params = dict(query) if query else body
    assert signing_payload(instruction, params, ts, 5000) == expected
    assert Signer(SECRET).sign(expected) == signature


@pytest.mark.parametrize("instruction,query,body,ts,expected,signature", VECTORS)
def test_simulator_rebuilds_the_string_from_the_wire_and_verifies(instruction, query, body, ts,
                                                                   expected, signature):
    wire_body = json.loads(json.dumps(body), parse_float=Decimal) if body is not None else None
    assert sim_signing.signing_string(instruction, query, wire_body, ts, 5000) == expected
    sim_signing.verify(API_KEY, signature, expected)


def test_simulator_rejects_a_tampered_message_and_a_wrong_key():
    message = VECTORS[0][4]
    good = VECTORS[0][5]
    with pytest.raises(sim_signing.AuthFailure, match="Invalid signature"):
        sim_signing.verify(API_KEY, good, message.replace("5000", "6000"))
    other_key = Signer("B" * 43 + "=").api_key
    with pytest.raises(sim_signing.AuthFailure, match="Invalid signature"):
        sim_signing.verify(other_key, good, message)
    with pytest.raises(sim_signing.AuthFailure, match="Invalid X-Signature header"):
        sim_signing.verify(API_KEY, "c2hvcnQ=", message)


def test_booleans_are_lower_case_and_decimals_plain():
    s = signing_payload("orderExecute", {"postOnly": False, "price": Decimal("1E+2"),
                                         "quantity": Decimal("0.10")}, 1, 5000)
    assert s == "instruction=orderExecute&postOnly=false&price=100&quantity=0.10&timestamp=1&window=5000"


def test_window_defaults_to_5000_and_is_capped():
    h = sim_signing.parse_headers({"X-API-Key": API_KEY, "X-Signature": "x", "X-Timestamp": "1"}.get)
    assert h.window_ms == 5000
    with pytest.raises(sim_signing.AuthFailure, match="Invalid X-Window header"):
        sim_signing.parse_headers({"X-API-Key": API_KEY, "X-Signature": "x", "X-Timestamp": "1",
                                   "X-Window": "60001"}.get)


def test_expiry_is_timestamp_plus_window():
    sim_signing.check_time(1000, 5000, 6000)
    with pytest.raises(sim_signing.AuthFailure, match="Request has expired"):
        sim_signing.check_time(1000, 5000, 6001)


@pytest.mark.parametrize("bad,why", [("", "empty"), ("not base64!", "not valid base64"),
                                     ("AAAA", "3 bytes")])
def test_malformed_keys_are_named_without_their_value(bad, why):
    with pytest.raises(KeyFormatError) as e:
        decode_key(bad, "api_secret")
    assert why in str(e.value) and "api_secret" in str(e.value)
    if bad:
        assert bad not in str(e.value)


def test_signer_repr_does_not_reveal_the_secret():
    assert SECRET not in repr(Signer(SECRET)) and SECRET not in str(Signer(SECRET))
