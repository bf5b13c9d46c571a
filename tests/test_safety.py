"""Tier 3: never two grids, never a duplicate. The real bot as a process against the simulator: a second
instance, a lost state file and --adopt, a replayed placement, damaged state files, SIGHUP, a skewed
clock, file modes. Every process a test starts is ended by conftest's finaliser, whatever happens."""
from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
from decimal import Decimal

import pytest

from simulator import SimControl
from tests.e2e import PYTHON, ROOT, open_orders_of, orders_of, write_config
from tests.helpers import order_body, signed_request, start_process, wait_until

D = Decimal
BOT = os.path.join(ROOT, "grid_bot.py")
GRID = [D(x) for x in range(140, 160, 2)]


@pytest.fixture
def procs():
    """Start bot processes (conftest's finaliser kills any still running when the test is over)."""
    def spawn(path, cwd, *extra):
        return start_process([PYTHON, BOT, "--config", path, *extra], cwd=cwd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    return spawn


def stop(p, sig=signal.SIGTERM):
    p.send_signal(sig)
    try:
        code = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGUSR1)              # every thread's stack to stderr: what it was stuck on
        try:
            _, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        raise AssertionError(f"the bot did not stop within 60 s; its threads:\n{err[-20000:]}") from None
    err = p.stderr.read()
    return code, err


def run(args, cwd):
    return subprocess.run([PYTHON, BOT, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def prices_held_twice(state, key) -> list:
    seen: dict = {}
    for o in open_orders_of(state, key):
        seen[(o["side"], o["price"])] = seen.get((o["side"], o["price"]), 0) + 1
    return [k for k, n in seen.items() if n > 1]


def test_a_second_instance_and_a_reset_while_running_are_refused(tmp_path, quiet_sim, procs):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    first = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    for extra in ((), ("--reset",)):
        r = run(["--config", path, *extra], tmp_path)
        assert r.returncode == 2
        line = one_line(r.stderr)
        assert f"another grid_bot (pid {first.pid}) is running" in line
    st = control.state()
    assert len(orders_of(st, key)) == 9 and not prices_held_twice(st, key)   # nothing placed by the others
    assert run(["status", "--config", path], tmp_path).returncode == 0        # status works meanwhile
    assert run(["plan", "--config", path], tmp_path).returncode == 0          # and plan
    code, _ = stop(first)
    assert code == 0 and not open_orders_of(control.state(), key)


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_lost_state_file_is_refused_then_adopt_takes_the_book_over(tmp_path, quiet_sim, procs, loss):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    first = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    stop(first, signal.SIGKILL)
    foreign = signed_request(quiet_sim.rest_url, signer, "POST", "/api/v1/order",
                             body=order_body("141.00", "1", client_id=4242)).json()   # not at a level
    for name in ("grid_state.db", "grid_state.db-wal", "grid_state.db-shm"):
        if (tmp_path / name).exists():
            os.remove(tmp_path / name)
    if loss == "emptied":
        (tmp_path / "grid_state.db").write_bytes(b"")
    r = run(["--config", path], tmp_path)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "9 open order(s) on SOL_USDC at this grid's level prices" in line and "--adopt" in line
    assert len(orders_of(control.state(), key)) == 10                          # nothing placed
    # The price moved meanwhile: the buy at 148 filled while no bot ran.
    control.set_price("147.50")
    adopted = procs(path, tmp_path, "--adopt")

    def settled():
        st = control.state()
        return st if len(open_orders_of(st, key)) == 10 else None   # 8 adopted + 1 placed + the foreign one

    st = wait_until(settled, timeout=20, message="the adopted grid complete")
    assert not prices_held_twice(st, key)
    placed = [o for o in orders_of(st, key) if o["id"] != foreign["id"]]
    assert len(placed) == 10                                      # 9 old + the one missing level, no more
    code, err = stop(adopted)
    assert code == 0 and "Traceback" not in err
    left = open_orders_of(control.state(), key)
    assert [o["id"] for o in left] == [foreign["id"]]             # no orphan; the foreign order stays
    log = (tmp_path / "grid_bot.log").read_text()
    assert "--adopt: taking over 8 open order(s)" in log


def test_a_replayed_placement_leaves_no_duplicate(tmp_path, quiet_sim, procs):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    bot = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    ours = next(o for o in open_orders_of(control.state(), key) if D(o["price"]) == 146)
    # The same signed placement delivered a second time: a twin with the same clientId at the same price.
    twin = signed_request(quiet_sim.rest_url, signer, "POST", "/api/v1/order",
                          body=order_body("146.00", "0.5", client_id=ours["clientId"])).json()
    control.set_price("149.40")                                  # any price event: the bot checks

    def twin_cancelled():
        st = control.state()
        return st if next(o for o in orders_of(st, key) if o["id"] == twin["id"])["status"] == "Cancelled" else None

    st = wait_until(twin_cancelled, timeout=30, message="the twin cancelled")
    assert next(o for o in orders_of(st, key) if o["id"] == ours["id"])["status"] == "New"   # ours kept
    assert not prices_held_twice(st, key)
    code, _ = stop(bot)
    assert code == 0 and not open_orders_of(control.state(), key)
    assert "a second order with its clientId; cancelling it" in (tmp_path / "grid_bot.log").read_text()


@pytest.mark.parametrize("damage,words", [
    ("UPDATE grids SET params = 'not json{'", "damaged"),
    ("UPDATE grids SET levels = '[]'", "no valid list of levels"),
    ("UPDATE orders SET price = 'abc'", "damaged"),
    ("UPDATE grids SET grid_profit = 'NaN'", "damaged"),
    ("UPDATE pairs SET idx = idx + 50", "do not fit its levels"),
])
def test_a_damaged_state_file_is_one_line_and_exit_2(tmp_path, quiet_sim, procs, damage, words):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    stop(p, signal.SIGKILL)
    db = sqlite3.connect(str(tmp_path / "grid_state.db"))
    db.execute(damage)
    db.commit()
    db.close()
    for args in (["--config", path], ["--config", path, "--reset"], ["status", "--config", path]):
        r = run(args, tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        line = one_line(r.stderr)
        assert words in line and "grid_state.db" in line and "mv " in line
    assert len(orders_of(control.state(), key)) == 9                 # nothing placed


def test_a_state_file_that_is_not_a_database(tmp_path, quiet_sim):
    path, _ = write_config(tmp_path, quiet_sim)
    (tmp_path / "grid_state.db").write_bytes(b"this is not a database" * 100)
    for args in (["--config", path], ["status", "--config", path]):
        r = run(args, tmp_path)
        assert r.returncode == 2 and "grid_state.db" in one_line(r.stderr)


def test_sighup_stops_like_sigterm(tmp_path, quiet_sim, procs):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    code, _ = stop(p, signal.SIGHUP)
    assert code == 0 and not open_orders_of(control.state(), key)
    log = (tmp_path / "grid_bot.log").read_text()
    assert "stopping: SIGHUP received" in log and "final stats" in log


def test_state_and_log_files_are_private(tmp_path, quiet_sim, procs):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    names = ["grid_bot.log", "grid_state.db", "grid_state.db-wal", "grid_state.db-shm", "grid_state.db.lock"]
    modes = {n: stat.S_IMODE(os.stat(tmp_path / n).st_mode) for n in names}
    stop(p)
    assert modes == {n: 0o600 for n in names}


def test_a_skewed_clock_is_named_and_trading_resumes_when_it_is_fixed(tmp_path, quiet_sim, procs):
    path, signer = write_config(tmp_path, quiet_sim)
    control, key = SimControl(quiet_sim.rest_url), signer.api_key
    p = procs(path, tmp_path)
    wait_until(lambda: len(open_orders_of(control.state(), key)) == 9, timeout=20, message="the grid")
    control.set_clock_offset(30_000)               # the exchange's clock 30 s ahead: ours is 30 s behind
    control.set_price("147.50")                    # the buy at 148 fills; its counter-order is refused
    log = tmp_path / "grid_bot.log"
    wait_until(lambda: "this machine's clock is 30" in log.read_text(), timeout=30, message="the clock named")
    assert "behind the exchange's" in log.read_text() and "NTP" in log.read_text()
    assert not any(o["side"] == "Ask" and D(o["price"]) == 150 for o in open_orders_of(control.state(), key))
    control.set_clock_offset(0)
    wait_until(lambda: any(o["side"] == "Ask" and D(o["price"]) == 150 for o in open_orders_of(control.state(), key)),
               timeout=60, message="the counter-order once the clock is right")
    code, _ = stop(p)
    assert code == 0 and not open_orders_of(control.state(), key)
