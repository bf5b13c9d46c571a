"""The simulator's perpetual futures, part two: orders, positions, margin, funding and liquidation, held to
the real payloads (tests/fixtures/backpack_captures.json) and the contract's worked examples
(docs/exchange.md §12), and driven by an independent client (ccxt's Backpack class).

Accounts here hold USDC only (every other balance set to 0), so margin is the USDC and nothing else.
"""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests
import websocket

from simulator import running_simulator
from simulator.server import SimControl
from backpack_api import Signer, generate_keypair
from tests.helpers import order_body, signed_request, wait_until
from tests.test_sim_perps import captures, pin
from tests.test_sim_ws import subscribe

D = Decimal
SYM = "SOL_USDC_PERP"
HOUR_MS = 3_600_000


@pytest.fixture
def zero_fee_sim():
    """Fees 0, as in the contract's worked margin example."""
    with running_simulator(feed="none", maker_fee=D(0), taker_fee=D(0), ticker_interval=0.1) as s:
        yield s


@pytest.fixture
def fee_sim():
    """Backpack's tier-1 futures fees: maker 0.02 %, taker 0.05 %."""
    with running_simulator(feed="none", maker_fee=D("0.0002"), taker_fee=D("0.0005"), ticker_interval=0.1) as s:
        yield s


class Acct:
    """A funded USDC-only account on a simulator, with the calls these tests make."""

    def __init__(self, sim, usdc="1000", leverage="10") -> None:
        self.secret = generate_keypair()[1]
        self.sim, self.url, self.signer = sim, sim.rest_url, Signer(self.secret)
        self.control = SimControl(sim.rest_url)
        for asset, amount in (("USDC", usdc), ("SOL", "0"), ("BTC", "0"), ("ETH", "0")):
            self.control.set_balance(self.signer.api_key, asset, amount)
        r = signed_request(self.url, self.signer, "PATCH", "/api/v1/account", body={"leverageLimit": leverage},
                           sign_as="accountUpdate")
        assert r.status_code == 200 and r.text == ""

    def order(self, side, price, qty, *, symbol=SYM, expect=200, **extra):
        body = order_body(price, qty, side=side, symbol=symbol, post_only=extra.pop("post_only", False), **extra)
        r = signed_request(self.url, self.signer, "POST", "/api/v1/order", body=body)
        assert r.status_code == expect, r.text
        return r.json()

    def get(self, path, instruction, **params):
        r = signed_request(self.url, self.signer, "GET", path, params=params or None, sign_as=instruction)
        assert r.status_code == 200, r.text
        return r.json()

    def positions(self):
        return self.get("/api/v1/position", "positionQuery")

    def collateral(self):
        return self.get("/api/v1/capital/collateral", "collateralQuery")

    def usdc(self):
        return D(self.get("/api/v1/capital", "balanceQuery")["USDC"]["available"])

    def price(self, p):
        return self.control.set_price(p, symbol=SYM)


def maker_long(a: Acct, qty="50", at="120"):
    """A long of ``qty`` bought as a maker at exactly ``at``, the market then at ``at``."""
    a.price(D(at) + D("0.5"))
    a.order("Bid", at, qty, post_only=True)
    a.price(D(at) - D("0.01"))          # trades through the bid: filled at its own price
    a.price(at)
    assert a.positions()[0]["netQuantity"] == qty


def pass_an_hour(a: Acct) -> None:
    """The simulator's clock an hour on (the interval ends: funding paid), then back, so that signed requests
    of this machine's time stay inside their window."""
    a.control._call("POST", "/_sim/clock", {"offset_ms": HOUR_MS})
    requests.get(a.url + "/api/v1/markPrices", timeout=10)
    a.control._call("POST", "/_sim/clock", {"offset_ms": 0})


# ------------------------------------------------------------------------------ the worked examples
def test_the_contracts_margin_example_and_its_liquidation_point(zero_fee_sim):
    """1,000 USDC, leverageLimit 10, 50 SOL long at mark 120: IMF 0.10, locked 600, available 400, MF 1/6;
    a bid for 10 at 110 locks 120 more (at mark); liquidation when the mark reaches 101.368."""
    a = Acct(zero_fee_sim)
    maker_long(a)
    c = a.collateral()
    assert (D(c["netEquity"]), D(c["netEquityLocked"]), D(c["netEquityAvailable"])) == (1000, 600, 400)
    assert D(c["imf"]) == D("0.1") and D(c["mmf"]) == D("0.0135")
    assert D(c["marginFraction"]).quantize(D("0.0001")) == D("0.1667")
    bid = a.order("Bid", "110", "10", post_only=True)
    assert D(a.collateral()["netEquityLocked"]) == 720
    limits = a.get("/api/v1/account/limits/order", "maxOrderQuantity", symbol=SYM, side="Bid", price="110")
    assert D(limits["maxOrderQuantity"]) == D("23.33")          # (400 - 120) / (120 x 0.10), to the step
    a.order("Bid", "110", "23.34", post_only=True, expect=400)   # one step more: refused for margin
    signed_request(a.url, a.signer, "DELETE", "/api/v1/order", body={"symbol": SYM, "orderId": bid["id"]})
    a.price("101.37")                                            # equity 68.5 > 0.0135 x 50 x 101.37 = 68.42
    assert a.positions()[0]["netQuantity"] == "50"
    a.price("101.36")                                            # below 101.3685: liquidated on the book
    assert a.positions() == []
    fills = a.get("/wapi/v1/history/fills", "fillHistoryQueryAll", symbol=SYM)
    assert fills[0]["systemOrderType"] == "LiquidatePositionOnBook" and fills[0]["side"] == "Ask"


def test_funding_longs_pay_shorts_when_the_rate_is_positive_at_the_hours_mark(zero_fee_sim):
    long_, short = Acct(zero_fee_sim), Acct(zero_fee_sim)
    maker_long(long_)
    short.price("119.5")
    short.order("Ask", "120", "20", post_only=True)
    short.price("120.01")
    short.price("120")
    requests.post(zero_fee_sim.rest_url + "/_sim/perp", json={"symbol": SYM, "fundingRate": "0.0001"}, timeout=10)
    before_long, before_short = long_.usdc(), short.usdc()
    pass_an_hour(long_)
    paid = long_.get("/wapi/v1/history/funding", "fundingHistoryQueryAll", symbol=SYM)
    got = short.get("/wapi/v1/history/funding", "fundingHistoryQueryAll", symbol=SYM)
    assert [r["quantity"] for r in paid] == ["-0.6"]             # 0.0001 x 50 x 120, paid by the long
    assert [r["quantity"] for r in got] == ["0.24"]              # 0.0001 x 20 x 120, to the short
    for c in captures("Funding payment: /wapi/v1/history/funding item"):
        pin(paid[0], c)
    assert long_.usdc() == before_long - D("0.6") and short.usdc() == before_short + D("0.24")
    assert long_.positions()[0]["cumulativeFundingPayment"] == "-0.6"
    ledger = long_.control.state()["perp_accounts"][long_.signer.api_key]     # the ledger says the same
    assert ledger["funding"][0]["quantity"] == "-0.6" and ledger["positions"][SYM]["cumulativeFunding"] == "-0.6"
    fs = long_.get("/wapi/v1/history/settlement", "settlementHistoryQueryAll", source="FundingPayment")
    assert [r["quantity"] for r in fs] == ["-0.6"] and fs[0]["positionId"] == long_.positions()[0]["positionId"]


# ------------------------------------------------------------------------------ positions and their payloads
def test_a_position_is_backpacks_payload_and_keeps_its_pnl_identity(fee_sim):
    a = Acct(fee_sim)
    a.price("150")
    a.order("Bid", "151", "2")                                   # a taker buy: at 150.01, fee in USDC
    pos = a.positions()[0]
    for c in captures("Position: GET /api/v1/position item"):
        pin(pos, c)
    assert pos["entryPrice"] == "150.01" and pos["netCost"] == "300.02" and pos["netQuantity"] == "2"
    fill = a.get("/wapi/v1/history/fills", "fillHistoryQueryAll", symbol=SYM)[0]
    assert fill["feeSymbol"] == "USDC" and D(fill["fee"]) == D("300.02") * D("0.0005")
    assert D(pos["breakEvenPrice"]) == D("150.01") + D(fill["fee"]) / 2
    for mark in ("151.20", "149.35", "152.00"):
        a.price(mark)
        requests.post(fee_sim.rest_url + "/_sim/perp", json={"symbol": SYM, "realize": True}, timeout=10)
        a.price(D(mark) + D("0.5"))
        pos = a.positions()[0]
        identity = D(pos["netQuantity"]) * (D(pos["markPrice"]) - D(pos["entryPrice"]))
        assert abs(D(pos["pnlRealized"]) + D(pos["pnlUnrealized"]) - identity) <= D("0.000002")
    # realized PnL went into USDC: the balance is the start, less the fee, plus what was realized
    assert a.usdc() == D(1000) - D(fill["fee"]) + D(pos["pnlRealized"])


def test_a_fill_through_zero_closes_the_position_and_opens_another(fee_sim):
    a = Acct(fee_sim, usdc="5000")
    a.price("150")
    a.order("Bid", "151", "1")
    first = a.positions()[0]["positionId"]
    a.order("Ask", "149", "3")
    pos = a.positions()[0]
    assert pos["netQuantity"] == "-2" and pos["positionId"] != first and pos["entryPrice"] == "149.99"
    rows = a.get("/wapi/v1/history/position", "positionHistoryQueryAll", symbol=SYM)
    assert {r["state"] for r in rows} == {"Open", "Closed"}
    closed = next(r for r in rows if r["state"] == "Closed")
    assert closed["id"] == first and closed["closingPrice"] == "149.99" and closed["closedVolume"] == "1"


def test_reduce_only_never_opens_or_flips_and_shrinks_with_the_position(fee_sim):
    a = Acct(fee_sim, usdc="5000")
    a.price("150")
    r = signed_request(a.url, a.signer, "POST", "/api/v1/order",
                       body=order_body("151", "1", side="Ask", symbol=SYM, post_only=True, reduceOnly=True))
    assert r.status_code == 400 and r.json()["code"] == "INVALID_ORDER"     # flat: nothing to reduce
    a.order("Bid", "151", "2")                                               # long 2
    big = a.order("Ask", "152", "5", post_only=True, reduceOnly=True)       # capped at the position
    assert big["quantity"] == "2" and big["reduceOnly"] is True
    plain = a.order("Bid", "140", "1", post_only=True)
    assert plain["reduceOnly"] is None                                      # REST shows null, not false
    ws = websocket.create_connection(fee_sim.ws_url, timeout=10)
    try:
        subscribe(ws, "account.orderUpdate", signer=a.signer)
        wait_until(lambda: "account.orderUpdate" in a.control.state()["ws"]["streams"], timeout=10,
                   message="the subscription registered")
        a.order("Ask", "149", "1.5")                                         # the position shrinks to 0.5
        events = []
        wait_until(lambda: events.append(json.loads(ws.recv())["data"]) or
                   any(e["e"] == "orderModified" for e in events), timeout=10, message="orderModified")
    finally:
        ws.close()
    modified = next(e for e in events if e["e"] == "orderModified")
    assert modified["i"] == big["id"] and modified["q"] == "0.5" and modified["r"] is True
    a.price("152.01")                                                        # the reduce-only ask fills
    assert a.positions() == []                                               # flat, never short


def test_a_reduce_only_order_that_cannot_reduce_can_be_accepted_then_expired():
    with running_simulator(feed="none", reduce_only_reject=False) as sim:
        a = Acct(sim)
        o = a.order("Ask", "151", "1", post_only=True, reduceOnly=True)
        assert o["status"] == "Expired"
        hist = a.get("/wapi/v1/history/orders", "orderHistoryQueryAll", symbol=SYM)
        assert hist[0]["expiryReason"] == "ReduceOnlyNotReduced"


def test_the_position_stream_sends_a_snapshot_then_each_change(fee_sim):
    a = Acct(fee_sim)
    a.price("150")
    a.order("Bid", "151", "1")
    ws = websocket.create_connection(fee_sim.ws_url, timeout=10)
    try:
        subscribe(ws, "account.positionUpdate", signer=a.signer)
        snap = json.loads(ws.recv())
        assert snap["stream"] == "account.positionUpdate" and "e" not in snap["data"]
        a.order("Bid", "151", "1")
        adjusted = json.loads(ws.recv())["data"]
        a.order("Ask", "149", "2")
        closed = json.loads(ws.recv())["data"]
    finally:
        ws.close()
    for c in captures("WS positionUpdate"):
        pin(adjusted, c) if "e" in c["payload"] else pin(snap["data"], c)
    assert (adjusted["e"], adjusted["q"], closed["e"], closed["q"]) == ("positionAdjusted", "2", "positionClosed", "0")
    assert isinstance(adjusted["i"], int) and str(adjusted["i"]) == str(snap["data"]["i"])


def test_liquidation_cancels_every_order_then_closes_in_steps_refusing_orders_meanwhile():
    with running_simulator(feed="none", maker_fee=D(0), taker_fee=D(0), liquidation_step=D("0.5")) as sim:
        a = Acct(sim)
        maker_long(a)
        resting = a.order("Ask", "130", "1", post_only=True)
        a.price("100")                                               # equity 0: under the maintenance margin
        assert a.get("/api/v1/account", "accountQuery")["liquidating"] is True
        assert a.positions()[0]["netQuantity"] == "25"               # half closed: the first step
        r = signed_request(a.url, a.signer, "POST", "/api/v1/order", body=order_body("90", "1", symbol=SYM))
        assert r.status_code == 400 and r.json()["code"] == "ACCOUNT_LIQUIDATING"
        cancelled = next(o for o in a.control.state()["orders"] if o["id"] == resting["id"])
        assert cancelled["status"] == "Cancelled" and cancelled["origin"] == "LIQUIDATION_AUTOCLOSE"  # orders first
        for _ in range(20):                                          # a step at each move of the price
            if not a.positions():
                break
            a.price("100")
        assert a.positions() == [] and a.get("/api/v1/account", "accountQuery")["liquidating"] is False
        fills = [f for f in a.get("/wapi/v1/history/fills", "fillHistoryQueryAll", symbol=SYM)
                 if f["systemOrderType"] == "LiquidatePositionOnBook"]
        assert len(fills) >= 3 and all(f["clientId"] is None for f in fills)
        assert sum(D(f["quantity"]) for f in fills) == 50


def test_perp_orders_answer_as_backpacks(fee_sim):
    a = Acct(fee_sim)
    a.price("150")
    limit = a.order("Bid", "140", "0.5")
    market = signed_request(a.url, a.signer, "POST", "/api/v1/order",
                            body={"symbol": SYM, "side": "Bid", "orderType": "Market", "quantity": "0.5",
                                  "clientId": 55555}).json()
    for c in captures("Order: POST /api/v1/order (perp limit, New)"):
        pin(limit, c)
    for c in captures("Order: POST /api/v1/order (perp trigger limit, TriggerPending)"):
        pin(limit, c)                  # the same keys; trigger orders themselves are not simulated
    for c in captures("Order: POST /api/v1/order (perp market, Filled)"):
        pin(market, c)
    assert market["status"] == "Filled" and market["reduceOnly"] is None


# ------------------------------------------------------------------------------ an independent client
def test_ccxt_trades_perps_unmodified(fee_sim):
    ccxt = pytest.importorskip("ccxt")
    a = Acct(fee_sim)
    a.price("150")
    ex = ccxt.backpack({"apiKey": a.signer.api_key, "secret": a.secret,
                        "urls": {"api": {"public": a.url, "private": a.url}}})
    ex.load_markets()
    bought = ex.create_order("SOL/USDC:USDC", "market", "buy", 2)
    assert bought["status"] == "closed" and bought["filled"] == 2
    positions = ex.fetch_positions(["SOL/USDC:USDC"])
    assert len(positions) == 1 and float(positions[0]["contracts"]) == 2 and positions[0]["side"] == "long"
    sell = ex.create_order("SOL/USDC:USDC", "limit", "sell", 1, 160, params={"reduceOnly": True, "postOnly": True})
    assert sell["reduceOnly"] is True
    pass_an_hour(a)
    history = ex.fetch_funding_history("SOL/USDC:USDC")
    assert len(history) == 1 and history[0]["amount"] < 0          # the neutral positive rate: the long pays


# ------------------------------------------------------------------------------ paper mode's simulators
def mark_of(sim):
    m = requests.get(sim.rest_url + "/api/v1/markPrices", params={"symbol": SYM}, timeout=10).json()[0]
    return m["indexPrice"], m["markPrice"]


def test_a_perp_paper_market_moves_on_the_random_walk():
    with running_simulator(symbol=SYM, feed="random", tick_seconds=0.05, volatility=0.01) as sim:
        first = mark_of(sim)
        wait_until(lambda: mark_of(sim) != first, timeout=20, message="the random walk to move the mark")
        a = Acct(sim)
        a.order("Bid", "100", "1", post_only=True)        # orders on the paper perp work as on any


def test_a_perp_paper_market_on_live_prices_follows_the_real_index_mark_and_trades():
    with running_simulator(feed="none", ticker_interval=0.1) as real:
        SimControl(real.rest_url).set_price("150", symbol=SYM)
        with running_simulator(feed="live", symbol=SYM, live_rest=real.rest_url, live_ws=real.ws_url,
                               ticker_interval=0.1) as paper:
            requests.post(real.rest_url + "/_sim/perp", json={"symbol": SYM, "indexPrice": "149", "markPrice": "151"},
                          timeout=10)
            wait_until(lambda: mark_of(paper) == ("149.00", "151.00"), timeout=20,
                       message="the paper mark to follow the real one")
            trader = Acct(real)
            trader.order("Bid", "160", "1")                 # a real trade at 150.01
            wait_until(lambda: requests.get(paper.rest_url + "/api/v1/ticker", params={"symbol": SYM},
                                            timeout=10).json()["lastPrice"] == "150.01",
                       timeout=20, message="the paper price to follow the real trade")


def test_funding_made_due_through_the_control_api_follows_a_scheduled_series(zero_fee_sim):
    """Tests cannot wait an hour: "fundingDue" ends the running interval now (it does not pay again at the
    hour), and "fundingRates" schedules the rates of the running and the next intervals."""
    a = Acct(zero_fee_sim)
    maker_long(a, qty="10", at="100")
    url = zero_fee_sim.rest_url + "/_sim/perp"
    before = requests.get(zero_fee_sim.rest_url + "/api/v1/markPrices", params={"symbol": SYM}, timeout=10).json()[0]
    requests.post(url, json={"symbol": SYM, "fundingRates": ["0.001", "-0.002", "0.0005"]}, timeout=10)
    for _ in range(3):
        after = requests.post(url, json={"symbol": SYM, "fundingDue": True}, timeout=10).json()
    rows = a.get("/wapi/v1/history/funding", "fundingHistoryQueryAll", symbol=SYM, sortDirection="Asc")
    assert [(r["fundingRate"], r["quantity"]) for r in rows] == [("0.001", "-1"), ("-0.002", "2"), ("0.0005", "-0.5")]
    ends = [r["intervalEndTimestamp"] for r in rows]
    assert len(set(ends)) == 3 and ends == sorted(ends)
    assert after["nextFundingTimestamp"] == before["nextFundingTimestamp"] + 3 * HOUR_MS
    realized = requests.get(zero_fee_sim.rest_url + "/api/v1/fundingRates", params={"symbol": SYM}, timeout=10).json()
    assert [r["fundingRate"] for r in realized] == ["0.0005", "-0.002", "0.001"]      # newest first
    assert D(a.positions()[0]["cumulativeFundingPayment"]) == D("0.5")


def test_a_paper_account_saved_and_restored_keeps_its_positions_leverage_and_ledgers(fee_sim):
    """Paper mode on live prices saves its simulated account between runs (simulator/persist.py): a perp
    position, the leverage limit and the funding ledger come back as they were."""
    from simulator import Simulator, persist
    from simulator.server import SimConfig
    a = Acct(fee_sim, leverage="5")
    maker_long(a, qty="2", at="120")
    requests.post(fee_sim.rest_url + "/_sim/perp", json={"symbol": SYM, "fundingRate": "0.0001", "fundingDue": True},
                  timeout=10).raise_for_status()
    before = fee_sim.exchange.accounts[a.signer.api_key]
    data = json.loads(json.dumps(persist.dump(fee_sim.exchange)))        # through JSON, as the file holds it
    fresh = Simulator(SimConfig(feed="none"))
    persist.restore(fresh.exchange, data)
    after = fresh.exchange.accounts[a.signer.api_key]
    assert after.leverage_limit == D(5) == before.leverage_limit
    assert after.positions == before.positions and after.positions[SYM].net == D(2)
    assert after.funding_rows == before.funding_rows and len(after.funding_rows) == 1
    assert after.settlements == before.settlements
