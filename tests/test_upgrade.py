"""Upgrades: ``git pull`` on an installed copy always works. Two local clones: an upstream that moves on,
and an installed copy that ran the README's paper command, the other commands' paper forms, and the
service recipe's steps inside the checkout (a virtualenv; configs and keys outside it)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import start_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None or not (ROOT / ".git").exists(), reason="needs git and a git checkout")


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([GIT, "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
                          cwd=str(cwd), capture_output=True, text=True, timeout=120)


def test_git_pull_works_after_a_paper_run_and_after_the_service_recipe(tmp_path):
    upstream, installed = tmp_path / "upstream", tmp_path / "installed"
    assert git("clone", "-q", str(ROOT), str(upstream), cwd=tmp_path).returncode == 0
    assert git("clone", "-q", str(upstream), str(installed), cwd=tmp_path).returncode == 0
    # The README's first command, in the installed copy, until its grid is on the paper book.
    proc = start_process([sys.executable, "grid_bot.py", "--paper", "--seed", "7"], cwd=str(installed),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (installed / "grid_bot.paper.log").exists()
                   and "placing" in (installed / "grid_bot.paper.log").read_text(), timeout=60,
                   message="the paper grid placed")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.communicate()
    for args in (["status", "--paper"], ["report", "--paper"], ["list", "--paper"], ["plan", "--paper"]):
        r = subprocess.run([sys.executable, "grid_bot.py", *args], cwd=str(installed), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, (args, r.stderr)
    # The service recipe: a virtualenv inside the checkout; the config and keys copied out to /etc/grid-bot.
    (installed / ".venv" / "bin").mkdir(parents=True)
    (installed / ".venv" / "bin" / "python").write_text("")
    etc = tmp_path / "etc-grid-bot"
    etc.mkdir()
    config = json.loads((installed / "config.json").read_text())
    config["trading"]["grid_num"] = 12                 # the user's own grid, outside the checkout
    (etc / "config.json").write_text(json.dumps(config))
    (etc / "keys.env").write_text("BACKPACK_API_KEY=x\nBACKPACK_API_SECRET=y\n")
    # Nothing the runs or the recipe left is tracked or untracked in the checkout.
    status = git("status", "--porcelain", "--ignored=no", cwd=installed)
    assert status.returncode == 0 and status.stdout == "", status.stdout
    # Upstream moves on, touching the files a user might have edited in place.
    shipped = json.loads((upstream / "config.json").read_text())
    shipped["trading"]["grid_num"] = 11
    (upstream / "config.json").write_text(json.dumps(shipped, indent=2) + "\n")
    with open(upstream / "CHANGELOG.md", "a") as fh:
        fh.write("\n(an upstream change)\n")
    assert git("commit", "-qam", "upstream change", cwd=upstream).returncode == 0
    pulled = git("pull", "-q", "--ff-only", cwd=installed)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads((installed / "config.json").read_text())["trading"]["grid_num"] == 11
    assert git("status", "--porcelain", cwd=installed).stdout == ""
