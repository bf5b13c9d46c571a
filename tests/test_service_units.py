"""The systemd units: well-formed (systemd-analyze verify), hardened (systemd-analyze security rates them
2.0 or less), watched (Type=notify with a watchdog) and unable to write their own code. The systemd-analyze
tests are skipped, with the reason, where it is not installed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed on this machine")
UNITS = {"grid-bot.service": "grid-bot.service", "grid-bot@.service": "grid-bot@one.service"}


def localised(tmp_path: Path, unit: str, name: str) -> Path:
    """The unit with its paths pointing into tmp_path (verify checks that ExecStart's program exists)."""
    opt = tmp_path / "opt"
    (opt / ".venv" / "bin").mkdir(parents=True, exist_ok=True)
    py = opt / ".venv" / "bin" / "python"
    if not py.exists():
        py.symlink_to(os.path.realpath(sys.executable))
    (tmp_path / "keys.env").write_text("")
    text = (ROOT / unit).read_text().replace("/opt/grid-bot", str(opt)).replace("/etc/grid-bot/keys.env",
                                                                               str(tmp_path / "keys.env"))
    path = tmp_path / name
    path.write_text(text)
    return path


@needs_analyze
@pytest.mark.parametrize("unit", list(UNITS))
def test_the_unit_verifies(tmp_path, unit):
    path = localised(tmp_path, unit, UNITS[unit])
    out = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@needs_analyze
@pytest.mark.parametrize("unit", list(UNITS))
def test_the_unit_is_hardened(tmp_path, unit):
    path = localised(tmp_path, unit, UNITS[unit])
    out = subprocess.run([ANALYZE, "security", "--offline=true", str(path)], capture_output=True, text=True,
                         timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out.stdout)
    assert level is not None, out.stdout + out.stderr
    assert float(level[1]) <= 2.0 and level[2] in ("OK", "SAFE"), level[0]


def settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / unit).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("unit", list(UNITS))
def test_the_unit_is_watched_and_writes_only_its_state_and_log_folders(unit):
    s = settings(unit)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"] and int(s["WatchdogSec"][0]) > 0
    assert s["StateDirectory"] == ["grid-bot"] and s["LogsDirectory"] == ["grid-bot"]
    assert s["ProtectSystem"] == ["strict"] and "ReadWritePaths" not in s     # the code is never writable
    assert "Environment" in s and "PYTHONDONTWRITEBYTECODE=1" in s["Environment"]
    assert not any(v.startswith("GRID_BOT_STATE_FILE") or v.startswith("GRID_BOT_LOG_FILE") for v in s["Environment"])
    config = s["ExecStart"][0].split("--config ", 1)[1]
    assert config.startswith("/etc/grid-bot/")                                # configs live outside the checkout


def test_a_config_in_the_template_folder_keeps_its_state_and_log_in_the_units_folders(tmp_path):
    """No environment variable: ``status --config /etc/grid-bot/sol.json`` finds what grid-bot@sol writes."""
    from gridbot.ops.config import load_config
    from gridbot.ops.grid_files import SystemDirs
    etc = tmp_path / "etc"
    etc.mkdir()
    system = SystemDirs(config=str(etc), state=str(tmp_path / "lib"), logs=str(tmp_path / "log"))
    for name, state, log in (("sol", "lib/sol.state.db", "log/sol.log"),
                             ("config", "lib/grid_state.db", "log/grid_bot.log")):
        (etc / f"{name}.json").write_text((ROOT / "config.json").read_text())
        cfg = load_config(str(etc / f"{name}.json"), need_keys=False, env={}, system=system)
        assert (cfg.name, cfg.state_file, cfg.log.file) == (name, str(tmp_path / state), str(tmp_path / log))
    # the environment still overrides both
    cfg = load_config(str(etc / "sol.json"), need_keys=False, system=system,
                      env={"GRID_BOT_STATE_FILE": str(tmp_path / "a.db"), "GRID_BOT_LOG_FILE": str(tmp_path / "a.log")})
    assert cfg.state_file == str(tmp_path / "a.db") and cfg.log.file == str(tmp_path / "a.log")
