"""Tier 3: the one error boundary. Every exchange answer, a closed pipe and a bug end in one line on
stderr and the right exit code, never a traceback on the user's terminal."""
from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal

import pytest

import grid_bot
from grid_calculator import GridMode, GridSpec
from order_manager import OrderManager
from simulator import SimControl, running_simulator
from gridbot.engine.state_store import StateStore
from tests.e2e import PYTHON, ROOT, write_config

D = Decimal
BOT = os.path.join(ROOT, "grid_bot.py")


@pytest.fixture(scope="module")
def sim():
    with running_simulator(feed="none", price=D("149.5")) as s:
        yield s


def run_bot(args, cwd, **kwargs):
    return subprocess.run([PYTHON, BOT, *args], cwd=cwd, capture_output=True, text=True, timeout=120, **kwargs)


def assert_one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("grid_bot: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("method,path,status,code,words", [
    ("GET", "/api/v1/markets", 403, 1, "refused to list its markets"),
    ("GET", "/api/v1/markets", 503, 1, "cannot reach the exchange"),
    ("GET", "/api/v1/markets", 429, 1, "cannot reach the exchange"),
    ("GET", "/api/v1/ticker", 403, 1, "HTTP 403"),
    ("GET", "/api/v1/ticker", 500, 1, "cannot read the price"),
    ("GET", "/api/v1/capital", 401, 2, "check api.api_key and api.api_secret"),
    ("GET", "/api/v1/capital", 502, 1, "cannot read balances"),
])
def test_an_exchange_answer_at_start_is_one_line_and_its_exit_code(tmp_path, sim, method, path, status, code,
                                                                    words):
    control = SimControl(sim.rest_url)
    cfg, _ = write_config(tmp_path, sim)
    control.fault(kind="http_status", method=method, path=path, status=status, count=50, retry_after=0)
    try:
        r = run_bot(["--config", cfg], tmp_path)
    finally:
        control.clear_faults()
    assert r.returncode == code, r.stderr
    assert words in assert_one_line(r.stderr)


def test_plan_when_the_exchange_refuses_the_markets_call(tmp_path, sim):
    control = SimControl(sim.rest_url)
    cfg, _ = write_config(tmp_path, sim)
    control.fault(kind="http_status", method="GET", path="/api/v1/markets", status=403, count=50)
    try:
        r = run_bot(["plan", "--config", cfg], tmp_path)
    finally:
        control.clear_faults()
    assert r.returncode == 1
    assert "refused to list its markets" in assert_one_line(r.stderr)


def closed_pipe_run(args, cwd) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader is already gone, as ``... | head -3`` is once head has its
    lines: every write fails with EPIPE, deterministically."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([PYTHON, BOT, *args], cwd=cwd, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write_end)


def test_status_and_plan_into_a_closed_pipe_exit_quietly(tmp_path, sim):
    cfg, _ = write_config(tmp_path, sim)
    grid = GridSpec("SOL_USDC", "SOL", "USDC", tuple(D(140 + 2 * i) for i in range(10)), D("0.5"),
                    GridMode.ARITHMETIC)
    store = StateStore(str(tmp_path / "grid_state.db"))
    gid = store.create_grid({"symbol": "SOL_USDC"}, grid, 3, 0)
    om = OrderManager(grid, tag=3)
    om.start(D("149.5"))
    store.save(gid, om.take_changes(), 1)
    store.close()
    for args in (["status", "--config", cfg], ["status", "--json", "--config", cfg],
                 ["plan", "--paper", "--config", cfg]):
        r = closed_pipe_run(args, tmp_path)
        assert r.returncode == 0 and r.stderr == "", (args, r.stderr)


def test_a_bug_is_one_line_and_its_traceback_goes_to_a_file(capsys):
    try:
        raise KeyError("a bug")
    except KeyError as e:
        assert grid_bot.report_bug(e) == 1
    line = assert_one_line(capsys.readouterr().err)
    assert "unexpected error (a bug" in line and "KeyError" in line
    path = line.rsplit("the traceback is in ", 1)[1]
    try:
        text = open(path).read()
        assert "Traceback" in text and "raise KeyError" in text
    finally:
        os.remove(path)


def test_a_config_error_names_the_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"api": {}, "trading": {}, "log": {}}))
    r = run_bot(["status", "--config", str(bad)], tmp_path)
    assert r.returncode == 2
    assert str(bad) in assert_one_line(r.stderr)


@pytest.mark.parametrize("answer", [[], "ok", None, 3])
def test_a_parser_of_objects_refuses_anything_else_as_a_parse_error(answer):
    import gridbot.exchange.wire as wire
    for parse in (wire.parse_order, wire.parse_fill, wire.parse_market, wire.parse_balances,
                  wire.parse_order_update, wire.parse_ticker, wire.parse_batch_item):
        with pytest.raises(wire.ParseError, match="expected an object"):
            parse(answer)


def test_a_network_failure_names_its_cause_and_a_placement_that_never_connected_is_not_unknown():
    """``ConnectionError`` alone does not tell DNS from a closed port; and a placement that never reached a
    server (no name, nothing listening) was not placed: it is a transient failure, not an unknown outcome."""
    import socket
    from backpack_api import BackpackClient, OrderRequest, TransientError
    from gridbot.core.models import Side
    from tests.helpers import new_signer
    with socket.socket() as s:                  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for base, cause in (("http://no-such-host.invalid", "DNS: the host name does not resolve"),
                        (f"http://127.0.0.1:{port}", "connection refused")):
        client = BackpackClient(base, new_signer(), max_attempts=1, timeout=(2.0, 2.0))
        with pytest.raises(TransientError) as e:
            client.ticker_price("SOL_USDC")
        assert str(e.value) == f"GET /api/v1/ticker: ConnectionError ({cause})"
        with pytest.raises(TransientError) as e:   # not UnknownOutcome: nothing to look up
            client.place_order(OrderRequest("SOL_USDC", Side.BID, Decimal("140"), Decimal("1"), 5))
        assert str(e.value) == f"POST /api/v1/order: ConnectionError ({cause})"
