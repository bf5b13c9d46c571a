"""The layers, where import-linter cannot see them, and the simulator's independence proved by running.

import-linter checks the ``gridbot`` package and ``simulator`` (its contracts are in pyproject.toml and
``.ci/run`` runs them). It takes packages only, so the five top-level modules are checked here with the
same rules: ``grid_calculator.py`` and ``order_manager.py`` belong to the core, ``backpack_api.py`` and
``websocket_client.py`` to the exchange, and ``grid_bot.py`` stands above everything (nothing imports it).
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from simulator import running_simulator
from tests.e2e import write_config

ROOT = Path(__file__).resolve().parent.parent
CORE_FORBIDDEN = {"requests", "sqlite3", "threading", "websocket", "websockets", "socket", "nacl", "time",
                  "simulator", "backpack_api", "websocket_client", "grid_bot"}
LAYERS = {
    # module: (the bot's own modules it may import: prefixes, the outside modules it may not import)
    "grid_calculator": (("gridbot.core", "grid_calculator"), CORE_FORBIDDEN),
    "order_manager": (("gridbot.core", "grid_calculator", "order_manager"), CORE_FORBIDDEN),
    "backpack_api": (("gridbot.core", "gridbot.exchange"), {"simulator", "grid_bot", "sqlite3"}),
    "websocket_client": (("gridbot.core", "gridbot.exchange", "backpack_api"), {"simulator", "grid_bot", "sqlite3"}),
}
OURS = ("gridbot", "grid_calculator", "order_manager", "backpack_api", "websocket_client", "grid_bot", "simulator")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (lazy imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_the_top_level_modules_import_only_their_layer_and_below(module):
    allowed, forbidden = LAYERS[module]
    bad = []
    for name in sorted(imports_of(ROOT / f"{module}.py")):
        top = name.split(".")[0]
        if top in forbidden or name in forbidden:
            bad.append(name)
        elif top in OURS and not any(name == a or name.startswith(a + ".") for a in allowed):
            bad.append(name)
    assert bad == [], f"{module}.py imports {bad}: outside its layer (docs/architecture.md)"


def test_nothing_imports_grid_bot_it_is_the_top():
    files = [p for p in ROOT.glob("*.py") if p.name != "grid_bot.py"] + sorted((ROOT / "gridbot").rglob("*.py"))
    assert [str(p.relative_to(ROOT)) for p in files if "grid_bot" in imports_of(p)] == []


def test_the_checker_itself_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    import requests\n    from simulator.engine import Exchange\n")
    assert {"requests", "simulator.engine"} <= imports_of(bad)


def test_plan_runs_with_the_simulator_folder_deleted(tmp_path):
    """A checkout without ``simulator/`` plans a grid against an exchange (here, the simulator of this
    checkout, in this process): nothing but paper mode needs the simulator."""
    copy = tmp_path / "checkout"
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]   # what a commit would hold
    files = subprocess.run(listed, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith("simulator/") or f.startswith("tests/"):
            continue
        if not (ROOT / f).exists():
            continue
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, copy / f)
    assert not (copy / "simulator").exists() and (copy / "gridbot").is_dir()
    with running_simulator(feed="none", price=Decimal("149.5")) as sim:
        cfg, _ = write_config(tmp_path, sim, grid_lower="140", grid_upper="158", grid_num=10, quantity="0.5",
                              maker_fee="0.001", risk={"stop_loss_price": "135"})
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = subprocess.run([sys.executable, "grid_bot.py", "plan", "--config", cfg, "--json"], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["buys"], report["sells"]) == (5, 4)
    assert report["if_price_ends"]["bottom"]["fills"] == 5          # the what-ifs ran on the backtester's book
    assert report["exits"]["stop_loss"]["keep"]["fired"] == "stop-loss price"
    # and the copy really lacks the simulator: paper mode says so instead of running
    r = subprocess.run([sys.executable, "grid_bot.py", "plan", "--config", cfg, "--paper"], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "the simulator/ folder beside grid_bot.py" in r.stderr, r.stderr
    assert "unexpected error" not in r.stderr
