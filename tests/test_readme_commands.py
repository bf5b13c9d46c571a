"""The README and docs/, followed literally: every ``python grid_bot.py ...`` it shows is run as written, in a
copy of the project (so nothing it writes lands in the checkout), with this test's Python standing in
for the activated virtualenv's. Commands that need keys or the real exchange are run where that gives
a clear answer (exit 2 and what to do) and skipped where it needs the internet. A command added to the
README must be added here: an unknown one fails the test."""
from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import start_process, wait_until

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "bench", "tests"}


def readme_commands() -> list[str]:
    """Every literal command of the README and of the pages in docs/ it links to."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    found = set(re.findall(r"`(python grid_bot\.py[^`]*)`", text))
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                part = part.strip()
                if part.startswith("python grid_bot.py"):
                    found.add(part)
    # Templates with placeholders ([--flag], FILE, N) are documentation, not commands to type as they are.
    return sorted(c for c in found if not re.search(r"\[|FILE|\bN\b|…|<", c))


# What each literal command must do here: "ok" (exit 0), "paper" (a paper run, stopped with SIGTERM),
# ("exit", code, words in the message), or ("skip", why).
NEEDS_KEYS = ("exit", 2, "api.api_key is not set: put your Backpack key in config.json or BACKPACK_API_KEY, "
                         "or try --paper")
EXPECTED = {
    "python grid_bot.py --paper": "paper",
    "python grid_bot.py status --paper": "ok",
    "python grid_bot.py report --paper --fills --plot grid.png": "ok",
    "python grid_bot.py plan --config docs/example_config.json --paper": "ok",
    "python grid_bot.py backtest --config docs/example_config.json --klines docs/example_klines.csv "
    "--plot docs/backtest_example.png": "ok",
    "python grid_bot.py keygen": "ok",
    "python grid_bot.py --version": "ok",
    "python grid_bot.py --config config.json": NEEDS_KEYS,
    "python grid_bot.py --reset": NEEDS_KEYS,
    "python grid_bot.py --adopt": NEEDS_KEYS,
    "python grid_bot.py --log-level DEBUG": NEEDS_KEYS,
    "python grid_bot.py status": ("exit", 2, "no saved state at"),
    "python grid_bot.py list": "ok",
    "python grid_bot.py plan --config perp.json": ("exit", 2, "config file not found"),
    "python grid_bot.py run --paper --config perp.json": ("exit", 2, "config file not found"),
    "python grid_bot.py suggest --config config.json": ("skip", "fetches the real exchange's candles"),
    "python grid_bot.py status --config /etc/grid-bot/sol.json": ("exit", 2, "config file not found"),
    "python grid_bot.py notify-test": ("exit", 2, "no notification URLs: set notify.urls"),
    "python grid_bot.py backtest": ("exit", 2, "one of the arguments --klines --fetch is required"),
    "python grid_bot.py plan": ("skip", "reads the real exchange's market and price"),
    "python grid_bot.py --paper --live-prices": ("skip", "follows the real exchange's trades"),
}


def copy_project(where: Path) -> Path:
    dest = where / "grid-bot"
    shutil.copytree(ROOT, dest, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS
                                                         or n.endswith((".db", ".log", ".lock", ".sim.json"))])
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("readme"))


def test_every_literal_command_is_known():
    unknown = [c for c in readme_commands() if c not in EXPECTED]
    assert unknown == [], f"README commands this test does not know yet: {unknown}"


# The Quick start's paper run, its status and its report are one story, run in one test (one project copy).
SEQUENCE = ("python grid_bot.py --paper", "python grid_bot.py status --paper",
            "python grid_bot.py report --paper --fills --plot grid.png")
SINGLE = sorted(c for c in EXPECTED if c not in SEQUENCE)


def test_the_quick_start_paper_run_then_its_status(tmp_path):
    project = copy_project(tmp_path)
    for command in SEQUENCE:
        if command in readme_commands():
            run_as_written(project, command, EXPECTED[command])


@pytest.mark.parametrize("command", SINGLE)
def test_the_readme_command_works_as_written(project, command):
    if command not in readme_commands():
        pytest.skip("no longer in the README")
    expect = EXPECTED[command]
    if isinstance(expect, tuple) and expect[0] == "skip":
        pytest.skip(f"{command}: {expect[1]} (no internet here)")
    run_as_written(project, command, expect)


def run_as_written(project: Path, command: str, expect) -> None:
    argv = [sys.executable, *shlex.split(command)[1:]]
    if expect == "paper":
        proc = start_process(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log = project / "grid_bot.paper.log"
        # "round trip 1 on levels": a completed one (the start's grid summary also says "round trip").
        wait_until(lambda: log.exists() and "round trip 1 on levels" in log.read_text(), timeout=90,
                   message="a paper round trip, as the Quick start promises within a minute")
        proc.send_signal(signal.SIGINT)                  # Ctrl+C, as the README says
        assert proc.wait(timeout=60) == 0
        proc.communicate()
        assert "final stats" in log.read_text()
        return
    out = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=120)
    if expect == "ok":
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
    else:
        _, code, words = expect
        assert out.returncode == code and words in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------------ example outputs
def doc_block_after(page: str, command: str) -> str:
    """The first plain output block (a ``` fence with no language) a docs page shows after ``command``."""
    text = (ROOT / "docs" / page).read_text()
    at = text.index(command)
    lines = text.splitlines(keepends=True)
    pos, inside, lang, start, body = 0, False, "", 0, []
    for line in lines:
        fence = line.strip().startswith("```")
        if fence and not inside:
            inside, lang, start, body = True, line.strip()[3:], pos, []
        elif fence and inside:
            inside = False
            if start > at and not lang and "".join(body).strip():
                indent = min(len(x) - len(x.lstrip()) for x in body if x.strip())
                return "".join(x[indent:] if x.strip() else "\n" for x in body)
        elif inside:
            body.append(line)
        pos += len(line)
    raise AssertionError(f"no output block after {command} in docs/{page}")


def matches_with_elisions(shown: list[str], real: list[str]) -> bool:
    """Do the example's lines equal the output's, where a line "..." stands for any number of lines?"""
    if not shown:
        return not real
    if shown[0].strip() == "...":
        return any(matches_with_elisions(shown[1:], real[i:]) for i in range(len(real) + 1))
    return bool(real) and shown[0] == real[0] and matches_with_elisions(shown[1:], real[1:])


@pytest.mark.parametrize("page, command, cmd", [
    ("plan-and-backtest.md", "plan --config docs/example_config.json --paper",
     ["plan", "--config", "docs/example_config.json", "--paper"]),
    ("plan-and-backtest.md", "--klines docs/example_klines.csv --plot docs/backtest_example.png",
     ["backtest", "--config", "docs/example_config.json", "--klines", "docs/example_klines.csv"]),
])
def test_the_docs_example_outputs_are_what_the_commands_print(page, command, cmd):
    """The examples of deterministic commands (paper plan, backtest of the shipped klines) are their
    output, line for line: a change in what the command prints must change the docs with it."""
    shown = doc_block_after(page, command)
    out = subprocess.run([sys.executable, "grid_bot.py", *cmd], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    shown_lines, real_lines = shown.strip("\n").splitlines(), out.stdout.strip("\n").splitlines()
    assert matches_with_elisions(shown_lines, real_lines), \
        "\n".join(["the docs show:", *shown_lines, "the command prints:", *real_lines])


def shape(line: str) -> str:
    """A line with its figures, times and ids masked: what stays the same from run to run."""
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( UTC)?", "T", line)
    line = re.sub(r"[-+]?\d[\d,.]*", "9", line)
    line = re.sub(r"9 [A-Z]+(, 9 [A-Z]+)*", "9 X", line)
    return re.sub(r"\s+", " ", line).strip()


def assert_shapes_printed(page: str, command: str, real: str, skip: tuple[str, ...]) -> None:
    real_shapes = {shape(x) for x in real.splitlines()}
    for line in doc_block_after(page, command).splitlines():
        s = line.strip()
        if not s or s == "..." or s.startswith(skip):
            continue
        assert shape(s) in real_shapes, f"docs/{page}: a line the command does not print: {s!r}"


def test_the_status_and_report_examples_have_the_shape_of_what_the_commands_print(tmp_path):
    """status and report of a paper grid: every line of the docs' examples (but elisions and the lines of
    settings the paper config lacks) appears in the real output with figures, times and ids masked."""
    proj = copy_project(tmp_path)
    p = start_process([sys.executable, "grid_bot.py", "--paper", "--seed", "7"], cwd=proj,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "last checkpoint 2" in subprocess.run(
            [sys.executable, "grid_bot.py", "status", "--paper"], cwd=proj, capture_output=True, text=True,
            timeout=60).stdout, timeout=60, message="a first checkpoint")
        real = subprocess.run([sys.executable, "grid_bot.py", "status", "--paper"], cwd=proj, capture_output=True,
                              text=True, timeout=60).stdout
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    assert_shapes_printed("running.md", "**`python grid_bot.py status`**", real,
                          ("parameters:", "state file:", "waiting:"))
    report = subprocess.run([sys.executable, "grid_bot.py", "report", "--paper", "--fills"], cwd=proj,
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert_shapes_printed("investment-and-profit.md", "python grid_bot.py report --paper --fills --plot grid.png",
                          report.stdout, ("parameters:", "entry purchase:", "20"))
