"""Profit users can check: every figure of ``status --json`` and ``report --json`` recomputed here,
independently, from the simulator's fill ledger and the price, to the last decimal; ``report --fills``,
``--csv`` and ``--plot``."""
from __future__ import annotations

import csv
import json
import os
from decimal import Decimal

import pytest

import grid_bot
from simulator import SimControl
from gridbot.engine.state_store import StateStore
from tests.e2e import BotThread, ledger_totals, open_orders_of, orders_of, write_config
from tests.helpers import wait_until

D = Decimal


def cli(capsys, *argv):
    code = grid_bot.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_status_and_report_figures_recomputed_from_the_ledger(tmp_path, quiet_sim, capsys):
    path, signer = write_config(tmp_path, quiet_sim, grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5")
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    with BotThread(path, store=StateStore(os.path.join(tmp_path, "grid_state.db"))) as b:
        wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
        for price in ("147.9", "151.1", "145.3", "149.1", "152.7", "150.3"):
            n = len(control.state()["fills"])
            control.set_price(price)
            wait_until(lambda: b.bot.price == D(price) and b.bot.om.ledger.fill_count == len(
                [f for f in control.state()["fills"] if f["account"] == key]) and not b.bot.om.stats(None).waiting,
                timeout=15, message=f"settled at {price} ({n} fills before)")
        result = b.stop()
    assert result.error is None
    st = control.state()
    fills = sorted((f for f in st["fills"] if f["account"] == key), key=lambda f: f["tradeId"])
    status = json.loads(cli(capsys, "status", "--config", path, "--json"))["figures"]
    report = json.loads(cli(capsys, "report", "--config", path, "--json"))
    fig = report["figures"]
    assert {k: v for k, v in status.items() if k != "age_s"} == {k: v for k, v in fig.items() if k != "age_s"}
    # Independently: the grid started at 149.5 with 4 sells (2 SOL) and 5 buys (360 USDC).
    p = D(fig["price"])
    assert p == D("150.3")
    b0, q0 = D(2), D(360)
    base, quote, fees, fees_quote = b0, q0, {}, D(0)
    for f in fills:
        qty, px, fee = D(f["quantity"]), D(f["price"]), D(f["fee"])
        base, quote = (base + qty, quote - qty * px) if f["side"] == "Bid" else (base - qty, quote + qty * px)
        fees[f["feeSymbol"]] = fees.get(f["feeSymbol"], D(0)) + fee
        if f["feeSymbol"] == "SOL":
            base -= fee
            fees_quote += fee * px
        else:
            quote -= fee
            fees_quote += fee
    value = b0 * D("149.5") + q0
    equity = base * p + quote
    hold = b0 * p + q0
    ledger = ledger_totals(st, orders_of(st, key), [D(x) for x in range(140, 160, 2)], "SOL")
    assert D(fig["start_value"]) == value and D(fig["equity"]) == equity
    assert D(fig["total_return"]) == (equity / value - 1).quantize(D("1e-8"))     # 8 places, as printed
    assert D(fig["hold_value"]) == hold and D(fig["vs_hold"]) == equity - hold
    assert D(fig["grid_profit"]) == ledger["grid_profit"] and ledger["round_trips"] >= 2
    assert D(fig["floating_pnl"]) == equity - hold - ledger["grid_profit"]
    assert {k: D(v) for k, v in fig["fees"].items()} == fees and D(fig["fees_quote"]) == fees_quote
    assert D(fig["break_even"]) == ((value - quote) / base).quantize(D("1e-8"))   # where equity equals the start value
    assert fig["annual_yield"] is None                                # under 30 days: too early
    # Every fill traces to the exchange, with its round trip.
    rows = report["fills"]
    assert [(r["trade_id"], r["order_id"], r["client_id"], r["side"], r["price"], r["quantity"], r["fee"], r["fee_asset"])
            for r in rows] == [(f["tradeId"], f["orderId"], f["clientId"], f["side"], f["price"], f["quantity"],
                                f["fee"], f["feeSymbol"]) for f in fills]
    trips: dict[int, list] = {}
    for r in rows:
        if r["round_trip"] is not None:
            trips.setdefault(r["round_trip"], []).append(r)
    assert sorted(trips) == list(range(1, ledger["round_trips"] + 1))
    for legs in trips.values():
        assert sorted(x["side"] for x in legs) == ["Ask", "Bid"] and abs(legs[0]["level"] - legs[1]["level"]) == 1
    text = cli(capsys, "report", "--config", path, "--fills")
    assert "round trip" in text and str(fills[0]["tradeId"]) in text and "break-even price" in text
    assert "annual grid yield   too early (under 30 days)" in text
    csv_path, png = tmp_path / "fills.csv", tmp_path / "grid.png"
    cli(capsys, "report", "--config", path, "--csv", str(csv_path), *(("--plot", str(png)) if _mpl() else ()))
    with open(csv_path, newline="") as fh:
        assert [int(r["trade_id"]) for r in csv.DictReader(fh)] == [f["tradeId"] for f in fills]
    if _mpl():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def _mpl() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def test_report_before_any_grid_is_one_line(tmp_path, quiet_sim, capsys):
    path, _ = write_config(tmp_path, quiet_sim)
    assert grid_bot.main(["report", "--config", path]) == 2
    assert "no saved state at" in capsys.readouterr().err


@pytest.mark.parametrize("args,words", [(["--csv", "/no/such/dir/x.csv"], "cannot write the CSV"),
                                        (["--plot", "/no/such/dir/x.png"], "cannot write the plot")])
def test_report_output_errors_are_one_line(tmp_path, quiet_sim, capsys, args, words):
    if "--plot" in args and not _mpl():
        pytest.skip("matplotlib is not installed")
    path, signer = write_config(tmp_path, quiet_sim)
    control = SimControl(quiet_sim.rest_url)
    with BotThread(path, store=StateStore(os.path.join(tmp_path, "grid_state.db"))) as b:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=20)
        b.wait_polls(1)
        b.stop()
    assert grid_bot.main(["report", "--config", path, *args]) == 2
    assert words in capsys.readouterr().err


def test_no_yield_is_annualised_before_30_days_and_no_break_even_without_base_worth_counting():
    from gridbot.core.accounting import Ledger, StartFunds, figures
    start = StartFunds(D("2"), D("300"), D("150"))
    lg = Ledger("SOL", "USDC", grid_profit=D("3"))
    assert figures(start, lg, D("150"), 2 * 86400).annual_yield is None            # two days: no "172%"
    assert figures(start, lg, D("150"), 30 * 86400).annual_yield == D("3") / D("600") * D(365 * 86400) / D(30 * 86400)
    sold = Ledger("SOL", "USDC", position=D("-1.99999"), quote_flow=D("290"))    # after a stop-loss sale
    assert figures(start, sold, D("150"), 3600).break_even is None                  # not "4049.36"
    assert figures(start, Ledger("SOL", "USDC"), D("150"), 3600).break_even == D("150")


def test_a_grid_without_fills_reports_its_zero_fees_with_their_unit(tmp_path, quiet_sim, capsys):
    path, signer = write_config(tmp_path, quiet_sim)
    with BotThread(path, store=StateStore(os.path.join(tmp_path, "grid_state.db"))) as b:
        wait_until(lambda: len(open_orders_of(SimControl(quiet_sim.rest_url).state(), signer.api_key)) == 9,
                   timeout=20, message="the grid")
        wait_until(lambda: b.bot.polls >= 2, timeout=20, message="a logged price")   # the figures need one
        assert b.stop().error is None
    text = cli(capsys, "report", "--config", path)
    assert "  fees                0 USDC (0 USDC in all)" in text.splitlines()
    assert "fees 0 USDC" in cli(capsys, "status", "--config", path)
