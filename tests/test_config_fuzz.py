"""Every config is valid, or one line naming what to fix: property-based (hypothesis) over configs built
from valid values, boundary values and garbage, and a few reported crashes run as a process against the
simulator (exit 2, one line, nothing sent to the exchange)."""
from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridbot.paper import rules_from_spec
from gridbot.ops.config import ConfigError, load_config
from gridbot.core.errors import InputError
from grid_calculator import funds_needed, initial_plan, summarize
from simulator import running_simulator
from simulator.control_api import exchange_state
from simulator.markets import DEFAULT_MARKETS
from gridbot.engine.grid_setup import make_grid
from tests.e2e import PYTHON, ROOT

D = Decimal
RULES = rules_from_spec(next(m for m in DEFAULT_MARKETS if m.symbol == "SOL_USDC"))
SECRET = "u0P/LZuUWh34qAz1DNbbKSKAR9a1Dd54bQ6vxyLkbp4="

numbers = st.one_of(
    st.integers(min_value=-10, max_value=2000),
    st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(lambda d: str(d)),
    st.sampled_from(["1e30", "1e999999", "1e999999999", "-1e-999999999",
                     "9" * 300, "1e-400", "١٥٠", "0.5", "140", "158", "0", "-1", "1e400",
                     " 145 ", "0x10", "NaN", "Infinity", "", "1,5"]),
    st.floats(allow_nan=False, allow_infinity=False),
)
garbage = st.one_of(st.none(), st.booleans(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                    st.sampled_from(["a\x00b", "grid\x00.log"]))
value = st.one_of(numbers, garbage)

trading = st.fixed_dictionaries(
    {"symbol": st.sampled_from(["SOL_USDC", "SOL_USDC", "sol", "X_Y"])},
    optional={"grid_lower": value, "grid_upper": value, "grid_num": st.one_of(st.integers(-5, 1200), value),
              "quantity": value, "auto_price": st.one_of(st.booleans(), value), "price_range": value,
              "interval": value, "duration": value, "maker_fee": value, "grid_mode": value,
              "post_only": value, "on_exit": value, "use_websocket": value})
log_section = st.fixed_dictionaries({}, optional={"file": st.one_of(st.just("bot.log"), garbage),
                                                  "level": value, "max_bytes": value, "backup_count": value})


def write(tmp_path, data) -> str:
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(data, default=str))
    return str(path)


def valid_or_one_line(path: str) -> None:
    """The property: the config loads and its grid can be built (or refused as an input error), or it is
    refused with one non-empty line; nothing else (no other exception, no traceback)."""
    try:
        cfg = load_config(path, need_keys=False)
    except ConfigError as e:
        text = str(e)
        assert text.strip() and "\n" not in text and "Traceback" not in text
        return
    t = cfg.trading
    assert 1 <= t.interval <= 3600 and (t.duration == 0 or 1 <= t.duration <= 10 * 365 * 86400)
    try:
        grid, _ = make_grid(RULES, t, D("149.5"))
    except InputError as e:
        assert str(e).strip() and "\n" not in str(e)
        return
    _, plan = initial_plan(grid, D("149.5"))
    funds_needed(grid, plan)
    summarize(grid, t.maker_fee)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trading=trading, log=log_section, window=st.one_of(st.integers(0, 70000), value))
def test_any_config_is_valid_or_one_line(tmp_path, trading, log, window):
    data = {"api": {"api_key": "", "api_secret": SECRET, "window_ms": window}, "trading": trading, "log": log}
    valid_or_one_line(write(tmp_path, data))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_valid_or_one_line(tmp_path, raw):
    path = tmp_path / "raw.json"
    path.write_bytes(raw)
    valid_or_one_line(str(path))


@pytest.mark.parametrize("content,words", [
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    (b'{"trading": {"grid_num": ' + b"1" * 5000 + b"}}", "5000 digits"),
    (b'{"trading": {"quantity": NaN}}', "NaN is not a number"),
    (b" " * (1 << 20) + b"{}", "larger than 1 MiB"),
])
def test_unreadable_files_are_named(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_config(str(path), need_keys=False)
    assert words in str(e.value)


@pytest.fixture(scope="module")
def sim():
    with running_simulator(feed="none", price=D("149.5")) as s:
        yield s


@pytest.mark.parametrize("trading,words", [
    ({"grid_lower": "1e30", "grid_upper": "2e30"}, "must be below 1,000,000,000,000"),
    ({"quantity": "1e999999"}, "trading.quantity must be below"),
    ({"quantity": "1e999999999"}, "trading.quantity must be below"),     # beyond what normalize() can hold
    ({"grid_lower": "1e-999999999"}, "trading.grid_lower must be below"),
    ({"grid_upper": "9" * 300}, "trading.grid_upper must be below"),
    ({"interval": 1e300}, "trading.interval must be a number of seconds from 1 to 3,600"),
    ({"duration": "1e-400"}, "trading.duration must be a number of seconds"),
    ({"grid_lower": "١٤٠"}, "trading.grid_lower must be a number"),
])
def test_reported_crashes_are_one_line_exit_2_and_nothing_sent(tmp_path, sim, trading, words):
    t = {"symbol": "SOL_USDC", "grid_lower": "140", "grid_upper": "158", "grid_num": 10, "quantity": "0.5",
         **trading}
    from backpack_api import Signer
    signer = Signer(SECRET)
    cfg = {"api": {"base_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": signer.api_key, "api_secret": SECRET},
           "trading": t, "log": {"file": str(tmp_path / "b.log"), "console": False}}
    path = write(tmp_path, cfg)
    # (the fixture's readiness ping is journalled once answered, so it may appear late: not the bot's)
    before = [e for e in exchange_state(sim.exchange)["journal"] if e["type"] == "request" and e["path"] != "/api/v1/ping"]
    r = subprocess.run([PYTHON, os.path.join(ROOT, "grid_bot.py"), "--config", path], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr
    after = [e for e in exchange_state(sim.exchange)["journal"] if e["type"] == "request" and e["path"] != "/api/v1/ping"]
    assert len(after) == len(before)                      # the exchange never heard from it
