"""The bot's own client on perps (backpack_api.py, gridbot/exchange/wire.py): the real payloads parsed
(numbers or strings alike), a perp order's wire form, and every perps call against the simulator, whose
code shares nothing with the client's."""
from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from backpack_api import BackpackClient, OrderRejected, OrderRequest, Signer, generate_keypair
from gridbot.core.models import Side
from gridbot.exchange import wire
from simulator import running_simulator
from simulator.server import SimControl
from tests.test_sim_perps import captures

D = Decimal
SYM = "SOL_USDC_PERP"


@pytest.mark.parametrize("name, parse", [
    ("Position: GET /api/v1/position item", wire.parse_position),
    ("Funding payment: /wapi/v1/history/funding item", wire.parse_funding_payment),
    ("Mark price: /api/v1/markPrices item", wire.parse_mark_price),
])
def test_every_real_perp_payload_parses(name, parse):
    for c in captures(name):
        parse(c["payload"])                      # stringified numbers (the recorder's) parse as well
    first = parse(captures(name)[0]["payload"])
    if name.startswith("Position"):
        assert first.net_quantity == D("0.0036") and first.cumulative_funding == D("-0.009218")
    if name.startswith("Funding"):
        assert first.quantity == D("-0.001301") and first.interval_end_ms % 3_600_000 == 0
    if name.startswith("Mark"):
        assert first.next_funding_ms == 1753113600000 and first.mark == D("118343.51853741")


def test_a_perp_order_carries_reduce_only_and_no_spot_margin_flags():
    perp = OrderRequest(SYM, Side.ASK, D("125.50"), D("0.50"), 42, reduce_only=True).to_wire()
    assert perp["reduceOnly"] is True and "autoBorrow" not in perp
    assert "reduceOnly" not in OrderRequest(SYM, Side.BID, D("120"), D("1"), 43).to_wire()
    spot = OrderRequest("SOL_USDC", Side.BID, D("120"), D("1"), 44).to_wire()
    assert spot["autoBorrow"] is False and "reduceOnly" not in spot


def test_the_client_trades_and_reads_perps_on_the_simulator():
    with running_simulator(feed="none", maker_fee=D("0.0002"), taker_fee=D("0.0005")) as sim:
        control = SimControl(sim.rest_url)
        signer = Signer(generate_keypair()[1])
        for asset, amount in (("USDC", "2000"), ("SOL", "0"), ("BTC", "0"), ("ETH", "0")):
            control.set_balance(signer.api_key, asset, amount)
        client = BackpackClient(sim.rest_url, signer)
        client.set_leverage(D(5))
        assert client.account_settings().leverage_limit == 5
        assert client.positions() == [] and client.positions(SYM) == []          # flat: [] and 404 alike
        with pytest.raises(OrderRejected) as e:                                  # nothing to reduce
            client.place_order(OrderRequest(SYM, Side.ASK, D("151"), D("1"), 1, reduce_only=True))
        assert e.value.code == "INVALID_ORDER"
        control.set_price("150", symbol=SYM)
        client.place_order(OrderRequest(SYM, Side.BID, D("151"), D("2"), 2, post_only=False, time_in_force="IOC"))
        [pos] = client.positions(SYM)
        assert (pos.net_quantity, pos.entry_price, pos.mark_price) == (D(2), D("150.01"), D("150.00"))
        m = client.margin()
        assert m.locked == D("0.2") * 2 * 150 and m.available == m.net_equity - m.locked   # IMF 1/5 at mark
        mark = client.mark_price(SYM)
        assert mark.mark == D("150.00") and mark.funding_rate == D("0.0000125") and mark.next_funding_ms
        requests.post(sim.rest_url + "/_sim/perp", json={"symbol": SYM, "fundingRate": "0.0001", "fundingDue": True},
                      timeout=10)
        [paid] = client.funding_payments(SYM)
        assert paid.quantity == D("-0.03") and paid.rate == D("0.0001")             # 0.0001 x 2 x 150, paid
        ro = client.place_order(OrderRequest(SYM, Side.ASK, D("160"), D("5"), 3, reduce_only=True))
        assert ro.quantity == D(2)                                                   # capped at the position
