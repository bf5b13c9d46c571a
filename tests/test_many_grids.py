"""Tier 3: many grids on one machine. Every grid is named by its config: two configs in one folder run side
by side and ``status``, ``report`` and ``--reset`` of one never show or touch the other; ``status --all``
(``list``) tells each grid's state truly with totals equal to the sum of the grids' reports; a grid saved
where an earlier version kept it (one state file per folder) is moved to its config's name and resumed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from backpack_api import generate_keypair
from simulator import SimControl
from tests.e2e import open_orders_of, write_config
from tests.helpers import start_process, wait_until

D = Decimal
ROOT = Path(__file__).resolve().parent.parent
BOT = str(ROOT / "grid_bot.py")


def named_config(tmp_path, sim, name, secret, **trading):
    """A config that names no state or log file: the bot derives both from its name."""
    path, signer = write_config(tmp_path, sim, secret=secret, name=name, **trading)
    data = json.loads(Path(path).read_text())
    del data["log"]["file"]
    Path(path).write_text(json.dumps(data, indent=2))
    return path, signer


def start(path, *args, cwd=None):
    return start_process([sys.executable, BOT, *args, "--config", path], cwd=str(cwd or ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc, sig=signal.SIGTERM):
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    proc.communicate()
    return code


def cli(*args, cwd=None):
    r = subprocess.run([sys.executable, BOT, *args], cwd=str(cwd or ROOT), capture_output=True, text=True,
                       timeout=60)
    return r


def cli_json(*args, cwd=None):
    r = cli(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def stat(path, key):
    """A figure of ``status --json`` (None until the grid is saved)."""
    r = cli("status", "--json", "--config", path)
    return json.loads(r.stdout)["stats"][key] if r.returncode == 0 else None


def ids_in(control, key, lo, hi):
    return {o["id"] for o in open_orders_of(control.state(), key) if lo <= D(o["price"]) <= hi}


def test_two_configs_in_one_folder_run_side_by_side_and_never_touch_each_other(tmp_path, quiet_sim):
    control = SimControl(quiet_sim.rest_url)
    secret = generate_keypair()[1]
    sol, signer = named_config(tmp_path, quiet_sim, "sol.json", secret, grid_lower="140", grid_upper="148",
                               grid_num=5, on_exit="keep")
    low, _ = named_config(tmp_path, quiet_sim, "low.json", secret, grid_lower="120", grid_upper="128", grid_num=5)
    key = signer.api_key
    a, b = start(sol), start(low)
    try:
        wait_until(lambda: len(ids_in(control, key, 140, 148)) == 4 and len(ids_in(control, key, 120, 128)) == 4,
                   timeout=40, message="both grids on the book")
        low_orders = ids_in(control, key, 120, 128)
        for name, lo in (("sol", "140"), ("low", "120")):
            st = cli_json("status", "--config", str(tmp_path / f"{name}.json"))
            assert st["state_file"] == str(tmp_path / f"{name}.state.db") and st["state"] == "running"
            assert D(st["grid"]["levels"][0]) == D(lo)
            rp = cli_json("report", "--config", str(tmp_path / f"{name}.json"))
            assert D(rp["grid"]["levels"][0]) == D(lo)
        assert stop(a) == 0                                     # sol keeps its orders (on_exit keep)
        assert len(ids_in(control, key, 140, 148)) == 4
        # --reset of sol cancels sol's saved orders and lays out sol anew: low's orders stay as they were.
        data = json.loads(Path(sol).read_text())
        data["trading"]["duration"] = 3
        Path(sol).write_text(json.dumps(data))
        r = subprocess.run([sys.executable, BOT, "--reset", "--config", sol], cwd=str(ROOT), capture_output=True,
                           text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        assert ids_in(control, key, 120, 128) == low_orders and b.poll() is None
        assert cli_json("status", "--config", low)["state"] == "running"
    finally:
        codes = [stop(p) for p in (a, b) if p.poll() is None]
    assert codes == [0]
    sol_log, low_log = (tmp_path / "sol.log").read_text(), (tmp_path / "low.log").read_text()
    assert "starting: grid sol, SOL_USDC" in sol_log and "grid low" not in sol_log
    assert "starting: grid low, SOL_USDC" in low_log and "grid sol" not in low_log
    assert not (tmp_path / "grid_state.db").exists() and not (tmp_path / "grid_bot.log").exists()


def test_status_all_tells_a_running_a_finished_and_an_interrupted_grid_and_their_totals(tmp_path, quiet_sim):
    control = SimControl(quiet_sim.rest_url)
    control.set_price("150")
    paths = {}
    for name, risk in (("run", None), ("exit", {"stop_loss_price": "141", "on_stop": "keep"}), ("kill", None)):
        paths[name], _ = named_config(tmp_path, quiet_sim, f"{name}.json", generate_keypair()[1], risk=risk)
    procs = {name: start(path) for name, path in paths.items()}
    try:
        wait_until(lambda: all(stat(p, "open_buys") == 5 for p in paths.values()),
                   timeout=40, message="three grids placed")
        control.set_price("147.50")          # a buy fills in each grid
        wait_until(lambda: all(stat(p, "open_sells") == 5 for p in paths.values()),
                   timeout=40, message="the counter-orders")
        control.set_price("150.50")          # a round trip in each
        wait_until(lambda: all(stat(p, "round_trips") == 1 for p in paths.values()),
                   timeout=40, message="a round trip in each grid")
        stop(procs["kill"], signal.SIGKILL)  # interrupted
        control.set_price("140.50")          # the exit grid's stop-loss fires
        assert procs["exit"].wait(timeout=60) == 0
        procs["exit"].communicate()

        def money(report):
            f = report["figures"]
            return report["round_trips"], report["fills_count"], f["grid_profit"], f["floating_pnl"], f["fees_quote"]

        def consistent():
            reports = {n: cli_json("report", "--config", p) for n, p in paths.items()}
            listed = cli_json("list", cwd=tmp_path)
            again = {n: money(cli_json("report", "--config", p)) for n, p in paths.items()}
            same = again == {n: money(r) for n, r in reports.items()}
            return (listed, reports) if same else None   # no fill landed in between

        listed, reports = wait_until(consistent, timeout=60, message="a quiet moment")
    finally:
        for p in procs.values():
            if p.poll() is None:
                stop(p)
    rows = {g["name"]: g for g in listed["grids"]}
    assert set(rows) == {"run", "exit", "kill"}
    assert {n: rows[n]["state"] for n in rows} == {"run": "running", "exit": "finished", "kill": "interrupted"}
    assert rows["run"]["uptime_s"] is not None and rows["kill"]["uptime_s"] is None
    total = listed["totals"]["USDC"]
    assert total["grids"] == 3
    assert total["round_trips"] == sum(r["round_trips"] for r in reports.values()) >= 3
    for key, fig in (("grid_profit", "grid_profit"), ("floating_pnl", "floating_pnl"), ("fees", "fees_quote")):
        assert D(total[key]) == sum(D(r["figures"][fig]) for r in reports.values()), key
        assert all(D(rows[n][key]) == D(reports[n]["figures"][fig]) for n in rows), key
    assert D(total["grid_profit"]) > 0
    # the text form: one line per grid, the total line, and no traceback
    text = cli("status", "--all", cwd=tmp_path)
    assert text.returncode == 0 and "total USDC" in text.stdout and "3 grid(s)" in text.stdout
    assert [line.split()[0] for line in text.stdout.splitlines()[1:4]] == ["exit", "kill", "run"]


def test_a_grid_saved_by_an_earlier_version_in_the_folders_state_file_is_moved_and_resumed(tmp_path, quiet_sim):
    control = SimControl(quiet_sim.rest_url)
    sol, signer = named_config(tmp_path, quiet_sim, "sol.json", generate_keypair()[1], on_exit="keep")
    # An earlier version kept every config's grid in the folder's grid_state.db.
    data = json.loads(Path(sol).read_text())
    data["state"] = {"file": "grid_state.db"}
    Path(sol).write_text(json.dumps(data))
    p = start(sol)
    try:
        wait_until(lambda: len(open_orders_of(control.state(), signer.api_key)) == 9, timeout=40)
    finally:
        assert stop(p) == 0
    before = {o["id"] for o in open_orders_of(control.state(), signer.api_key)}
    del data["state"]
    Path(sol).write_text(json.dumps(data))
    # status reads it where it is until run moves it
    assert cli_json("status", "--config", sol)["state_file"] == str(tmp_path / "grid_state.db")
    # another config of the folder on the same symbol: whose grid is it? run asks, and places nothing
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    r = cli("--config", sol)
    assert r.returncode == 2 and "mv " in r.stderr and "other.json" in r.stderr and len(r.stderr.splitlines()) == 1
    other.unlink()
    p = start(sol)
    try:
        wait_until(lambda: "resuming grid 1" in (tmp_path / "sol.log").read_text(), timeout=40,
                   message="the resumed grid")
        wait_until(lambda: cli_json("status", "--config", sol)["grid"]["last_checkpoint"] is not None, timeout=30)
        assert {o["id"] for o in open_orders_of(control.state(), signer.api_key)} == before   # nothing placed anew
    finally:
        assert stop(p) == 0
    log = (tmp_path / "sol.log").read_text()
    assert f"state file moved from {tmp_path / 'grid_state.db'}" in log
    assert not (tmp_path / "grid_state.db").exists() and (tmp_path / "sol.state.db").exists()
    assert cli_json("status", "--config", sol)["state_file"] == str(tmp_path / "sol.state.db")


def test_the_template_folders_old_per_grid_state_is_found_and_moved(tmp_path):
    """grid-bot@sol kept /var/lib/grid-bot/sol/grid_state.db; it is now /var/lib/grid-bot/sol.state.db."""
    import sqlite3
    from gridbot.ops.grid_files import SystemDirs, default_files, legacy_state, move_state
    system = SystemDirs(config=str(tmp_path / "etc"), state=str(tmp_path / "lib"), logs=str(tmp_path / "log"))
    os.makedirs(tmp_path / "etc")
    os.makedirs(tmp_path / "lib" / "sol")
    config = str(tmp_path / "etc" / "sol.json")
    new, _ = default_files(config, system)
    old = str(tmp_path / "lib" / "sol" / "grid_state.db")
    # A bot killed with its last transaction still in the WAL: the files as it left them.
    conn = sqlite3.connect(str(tmp_path / "src.db"))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE grids (id INTEGER, symbol TEXT, status TEXT)")
    conn.execute("INSERT INTO grids VALUES (1, 'SOL_USDC', 'running')")
    conn.commit()
    for suffix in ("", "-wal"):
        shutil.copyfile(str(tmp_path / "src.db") + suffix, old + suffix)
    conn.close()
    assert os.path.getsize(old + "-wal") > 0
    assert legacy_state(config, "SOL_USDC", new, system) == old
    move_state(old, new)
    assert not os.path.exists(old) and legacy_state(config, "SOL_USDC", new, system) is None
    assert sqlite3.connect(new).execute("SELECT symbol, status FROM grids").fetchall() == [("SOL_USDC", "running")]
