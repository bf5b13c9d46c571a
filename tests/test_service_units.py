"""The systemd units: well-formed (systemd-analyze verify) and hardened (systemd-analyze security rates
them 4.0 or less, "OK"). Skipped, with the reason, where systemd-analyze is not installed."""
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
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed on this machine")
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


@pytest.mark.parametrize("unit", list(UNITS))
def test_the_unit_verifies(tmp_path, unit):
    path = localised(tmp_path, unit, UNITS[unit])
    out = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("unit", list(UNITS))
def test_the_unit_is_hardened(tmp_path, unit):
    path = localised(tmp_path, unit, UNITS[unit])
    out = subprocess.run([ANALYZE, "security", "--offline=true", str(path)], capture_output=True, text=True,
                         timeout=60)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out.stdout)
    assert level is not None, out.stdout + out.stderr
    assert float(level[1]) <= 4.0 and level[2] in ("OK", "SAFE"), level[0]


def test_the_template_gives_each_grid_its_own_state_and_log(tmp_path):
    from gridbot.ops.config import load_config
    cfg = load_config(str(ROOT / "docs" / "example_config.json"), need_keys=False,
                      env={"GRID_BOT_STATE_FILE": str(tmp_path / "a" / "grid_state.db"),
                           "GRID_BOT_LOG_FILE": str(tmp_path / "a.log")})
    assert cfg.state_file == str(tmp_path / "a" / "grid_state.db") and cfg.log.file == str(tmp_path / "a.log")
    text = (ROOT / "grid-bot@.service").read_text()
    assert "--config /etc/grid-bot/%i.json" in text
    assert "Environment=GRID_BOT_STATE_FILE=/var/lib/grid-bot/%i/grid_state.db" in text
    assert "Environment=GRID_BOT_LOG_FILE=/var/log/grid-bot/%i.log" in text
