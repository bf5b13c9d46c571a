#!/usr/bin/env python3
"""Backpack grid bot: the command line, and the one place errors become a message and an exit code.

    python grid_bot.py [run] [--config config.json] [--paper [--live-prices]] [--reset] [--log-level DEBUG]
    python grid_bot.py status [--config config.json] [--paper] [--json]
    python grid_bot.py status --all [--dir FOLDER ...] [--paper] [--json]     (also: list)
    python grid_bot.py plan [--config config.json] [--paper] [--json]
    python grid_bot.py backtest [--config config.json] (--klines FILE.csv | --fetch [--days N]) [--sweep K=V,..]
                                [--plot FILE.png] [--json] [grid overrides]
    python grid_bot.py report [--config config.json] [--paper] [--json] [--csv FILE] [--fills] [--plot FILE.png]
    python grid_bot.py keygen [--json]
    python grid_bot.py notify-test [--config config.json]

Each command is a module of ``gridbot/commands/``; the running bot is ``gridbot/engine/loop.py``;
docs/architecture.md maps every module. Exit codes: 0 stopped as asked (or output cut short by
its reader, as ``status | head``); 1 a runtime failure (the exchange unreachable or refusing, an
unexpected error); 2 bad input the user must fix (config, keys, symbol, a grid that does not fit the
market, not enough balance, an unusable state file) or a start the market refuses (an entry purchase
past its cap, a market not trading): systemd restarts on neither; 130 a second Ctrl+C during shutdown.
This module is the one place an error becomes its line and its exit code (the running bot hands its
own up in ``RunResult.error``). A user never sees a traceback: a bug's goes to the log file (or a
crash file), and one line says where.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import tempfile
import traceback
from typing import Sequence

from gridbot import __version__
from gridbot.commands.backtest import cmd_backtest
from gridbot.commands.keygen import cmd_keygen
from gridbot.commands.notify_test import cmd_notify_test
from gridbot.commands.plan import cmd_plan
from gridbot.commands.run import cmd_run
from gridbot.commands.grids import cmd_list
from gridbot.commands.status import cmd_status
from gridbot.commands.suggest import cmd_suggest
from gridbot.core.errors import EXIT_FORCED, EXIT_OK, EXIT_RUNTIME, GridBotError
from gridbot.engine.state_store import SCHEMA_VERSION
from gridbot.ops.log_setup import log_file_of
from gridbot.commands.report import cmd_report


COMMANDS = ("run", "keygen", "status", "list", "plan", "backtest", "suggest", "report", "notify-test")


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="grid_bot.py", description="A grid-trading bot for Backpack Exchange.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run is the default command:\n"
               "  python grid_bot.py --paper                  try it on a simulated exchange, no keys needed\n"
               "  python grid_bot.py --paper --live-prices    the same on Backpack's real prices\n"
               "  python grid_bot.py --config config.json     trade for real (see README: Live setup)\n"
               "  python grid_bot.py plan --config config.json   what a grid will place and need, first\n"
               "  python grid_bot.py report --config config.json what it did: profit figures, every fill\n"
               "Each command has its own --help (python grid_bot.py run --help).")
    p.add_argument("--version", action="version", version=f"grid_bot {__version__} (state schema {SCHEMA_VERSION})")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the grid (the default command)")
    run.add_argument("--config", default="config.json", help="config file (default config.json)")
    run.add_argument("--paper", action="store_true",
                     help="trade against a built-in simulator with paper funds; no keys needed")
    run.add_argument("--seed", type=int, help="paper mode: seed of the simulated price path (repeatable runs)")
    run.add_argument("--live-prices", action="store_true",
                     help="paper mode: follow the real market's trades (public data from api.base_url and "
                          "api.ws_url; no key is used)")
    run.add_argument("--reset", action="store_true",
                     help="cancel the orders of the saved running grid and start this config's grid")
    run.add_argument("--adopt", action="store_true",
                     help="with no running grid saved: take over the open orders that match this grid's levels "
                          "(price, side and quantity) as its own, and place only the missing ones")
    run.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                     help="override log.level")
    run.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="print the saved state of the configured grid")
    st.add_argument("--config", default="config.json", help="config file (default config.json)")
    st.add_argument("--paper", action="store_true", help="the paper-mode state")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--all", action="store_true",
                    help="every grid on this machine, one line each with totals (as the list command)")
    st.add_argument("--dir", action="append", metavar="FOLDER",
                    help="with --all: also look for configs in FOLDER (repeatable; the current folder and "
                         "/etc/grid-bot always)")
    st.set_defaults(func=cmd_status)
    ls = sub.add_parser("list", help="every grid on this machine: name, symbol, state, profit, last error; totals")
    ls.add_argument("--dir", action="append", metavar="FOLDER",
                    help="also look for configs in FOLDER (repeatable; the current folder and /etc/grid-bot always)")
    ls.add_argument("--paper", action="store_true", help="the paper-mode states")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)
    pl = sub.add_parser("plan", help="show what the configured grid would place and need, placing nothing")
    pl.add_argument("--config", default="config.json", help="config file (default config.json)")
    pl.add_argument("--paper", action="store_true", help="the paper-mode market, price and balances")
    pl.add_argument("--live-prices", action="store_true",
                    help="with --paper: the real market's rules and last price, with the paper balances")
    pl.add_argument("--json", action="store_true", help="print JSON")
    pl.set_defaults(func=cmd_plan)
    bt = sub.add_parser("backtest", help="run the configured grid over historical prices")
    bt.add_argument("--config", default="config.json", help="config file (default config.json)")
    src = bt.add_mutually_exclusive_group(required=True)
    src.add_argument("--klines", metavar="FILE.csv",
                     help="candles with a header row of Backpack's kline fields (start,open,high,low,close)")
    src.add_argument("--fetch", action="store_true", help="fetch candles from the exchange's public klines")
    bt.add_argument("--days", type=positive_float, default=30.0, help="--fetch: days of history (default 30)")
    bt.add_argument("--interval", default="1m", help="--fetch: candle interval: 1m, 5m, 15m, 1h, 1d... (default 1m)")
    bt.add_argument("--cache", metavar="FILE.csv",
                    help="--fetch: cache file (default klines_<SYMBOL>_<interval>.csv beside the config)")
    for key in ("grid_lower", "grid_upper", "grid_num", "quantity", "investment", "price_range", "maker_fee"):
        bt.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="X", help=f"override trading.{key}")
    bt.add_argument("--grid-mode", dest="grid_mode", choices=("arithmetic", "geometric"),
                    help="override trading.grid_mode")
    bt.add_argument("--auto-price", dest="auto_price", action=argparse.BooleanOptionalAction, default=None,
                    help="override trading.auto_price (the grid centred on the first candle's open)")
    bt.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                    help="run one backtest per value (repeatable: every combination) and print a table, "
                         "best return first")
    bt.add_argument("--plot", metavar="FILE.png", help="draw price, grid, fills and equity (needs matplotlib)")
    bt.add_argument("--json", action="store_true", help="print JSON")
    bt.set_defaults(func=cmd_backtest)
    sg = sub.add_parser("suggest", help="grid parameters chosen on past prices and judged on later prices they "
                                        "were not chosen on (walk-forward)")
    sg.add_argument("--config", default="config.json", help="config file (default config.json): market, fees")
    sg.add_argument("--klines", metavar="FILE.csv", help="one-minute candles from a file instead of the exchange")
    sg.add_argument("--days", type=positive_float, default=90.0, help="days of one-minute candles (default 90)")
    size = sg.add_mutually_exclusive_group()
    size.add_argument("--investment", metavar="Q", help="size every candidate from this much quote")
    size.add_argument("--quantity", metavar="Q", help="every candidate's base quantity per order")
    sg.add_argument("--candidates", type=int, default=None,
                    help="how many candidate rules to try (default 200; on perps 24: each runs on the exact engine)")
    sg.add_argument("--folds", type=int, default=6, help="walk-forward folds, at least 6 (default 6)")
    sg.add_argument("--top", type=int, default=10, help="rows in the table (default 10)")
    sg.add_argument("--json", action="store_true", help="print JSON: every fold's windows and figures")
    sg.add_argument("--plot", metavar="FILE.png", help="draw the top candidates' held-out equity against holding")
    sg.add_argument("--write", metavar="NEW.json", help="write the config with the recommended grid")
    sg.set_defaults(func=cmd_suggest)
    rp = sub.add_parser("report", help="what the saved grid did: profit figures, every fill, a CSV, a picture")
    rp.add_argument("--config", default="config.json", help="config file (default config.json)")
    rp.add_argument("--paper", action="store_true", help="the paper-mode state")
    rp.add_argument("--json", action="store_true", help="print JSON (with every fill)")
    rp.add_argument("--fills", action="store_true",
                    help="list every fill: fill id, order id, clientId, side, price, quantity, fee and its round trip")
    rp.add_argument("--csv", metavar="FILE.csv", help="write one row per fill")
    rp.add_argument("--plot", metavar="FILE.png",
                    help="draw the price with the levels and fills, and equity against holding (needs matplotlib)")
    rp.set_defaults(func=cmd_report)
    kg = sub.add_parser("keygen", help="print a fresh ED25519 key pair (base64)")
    kg.add_argument("--json", action="store_true", help="print JSON instead of KEY=value lines")
    kg.set_defaults(func=cmd_keygen)
    nt = sub.add_parser("notify-test", help="send one test message to every notification URL and say which arrived")
    nt.add_argument("--config", default="config.json", help="config file (default config.json)")
    nt.set_defaults(func=cmd_notify_test)
    return p


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def report_error(e: GridBotError) -> None:
    """An error's one line: in the bot's log when the run set one up (which, with ``log.console``, is the
    terminal's line too), and on stderr unless that log already shows it there."""
    text = one_line(str(e))
    logger = logging.getLogger("grid_bot")
    if logger.handlers:
        logger.error("%s", text)
        if any(type(h) is logging.StreamHandler for h in logger.handlers):
            return
    print(f"grid_bot: {text}", file=sys.stderr)


def report_bug(e: BaseException) -> int:
    """An exception nobody meant to raise: its traceback to the log file (or a crash file), one line to
    stderr, exit 1."""
    logger = logging.getLogger("grid_bot")
    path = log_file_of(logger)
    if path is not None:
        logger.error("unexpected error: %s", e, exc_info=e)
    else:
        fd, path = tempfile.mkstemp(prefix="grid_bot-crash-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exception(e, file=fh)
    print(f"grid_bot: unexpected error (a bug; please report it): {type(e).__name__}: {one_line(str(e))}; "
          f"the traceback is in {path}", file=sys.stderr)
    return EXIT_RUNTIME


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)  # a usage error is argparse's own line and exit 2
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except GridBotError as e:
        report_error(e)
        return e.exit_code
    except BrokenPipeError:
        # The reader closed our output (``status | head -3``): it had what it wanted. Point stdout at
        # /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_FORCED
    except Exception as e:  # a bug: never a traceback on the user's terminal
        return report_bug(e)


if __name__ == "__main__":
    # `kill -USR1 <pid>` prints every thread's stack to stderr (the journal under systemd): what a bot
    # that seems stuck is doing, without stopping it. (Only as a program: stderr is then a real file.)
    # A fatal signal (systemd's watchdog kills a hung bot with SIGABRT) prints them too before the end.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    faulthandler.enable(all_threads=True)
    sys.exit(main())
