"""The commands: ``run``, ``status``, ``plan`` and ``keygen`` (``backtest`` has its own module).

Each takes the parsed arguments and returns an exit code. Errors are raised, not printed: only
``grid_bot.main()`` turns them into one line and an exit code.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from decimal import Decimal
from typing import Any

from backpack_api import (BackpackClient, RequestRejected, Signer, TransientError, generate_keypair,
                          wall_clock_ms)
from gridbot.engine.loop import GridBot
from gridbot.ops.config import PLACEHOLDER, Config, ConfigError, check_keys, load_config
from gridbot.core.errors import EXIT_FORCED, EXIT_OK, EXIT_RUNTIME, FatalError, InputError
from gridbot.ops.log_setup import setup_logging
from gridbot.ops.notify import URLS_ENV, Notifier, try_urls
from order_manager import OrderManager
from gridbot.paper import live_market, paper_market, paper_path, sim_state_path, start_paper
from gridbot.ops.reports import level_view, print_status, status_report
from gridbot.engine.startup import grid_params, keys_refused, make_grid, market_rules
from gridbot.engine.state_store import SavedGrid, StateLock, StateStore

log = logging.getLogger("grid_bot")


def read_config(path: str, **kwargs: Any) -> Config:
    """``load_config`` with the file named in its errors."""
    try:
        return load_config(path, **kwargs)
    except ConfigError as e:
        named = not e.from_file or str(e).startswith(path)  # already says where it came from
        raise ConfigError(str(e) if named else f"{path}: {e}") from None


def open_store(cfg: Config, paper: bool, *, readonly: bool = False) -> StateStore:
    return StateStore(paper_path(cfg.state_file, ".db") if paper else cfg.state_file, readonly=readonly)


def cmd_keygen(args: argparse.Namespace) -> int:
    api_key, secret = generate_keypair()
    if args.json:
        print(json.dumps({"api_key": api_key, "api_secret": secret}))
    else:
        print(f"BACKPACK_API_KEY={api_key}")
        print(f"BACKPACK_API_SECRET={secret}")
    return EXIT_OK


def install_signals(bot: GridBot) -> None:
    count = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        count["n"] += 1
        name = signal.Signals(signum).name
        if count["n"] == 1 or not bot.shutting_down:
            bot.request_stop(f"{name} received")
        elif signum == signal.SIGINT:
            # Exit now, from here: an exception raised into whatever the main thread is doing could be
            # swallowed by library code (websocket-client's close() catches everything). The state
            # file holds the last consistent save; the next start reconciles from it.
            bot.warn_forced_exit()
            for h in logging.getLogger("grid_bot").handlers:
                h.flush()
            os._exit(EXIT_FORCED)
        else:
            log.warning("%s received again: already stopping (Ctrl+C twice forces an exit)", name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # A closed terminal or a dropped ssh session: stop exactly as on SIGTERM, orders cancelled.
    signal.signal(signal.SIGHUP, handler)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = read_config(args.config, need_keys=not args.paper)
    sim = None
    signer = None
    lock = StateLock(paper_path(cfg.state_file, ".db") if args.paper else cfg.state_file).acquire()
    try:
        store = open_store(cfg, args.paper)
    except BaseException:
        lock.release()
        raise
    try:
        live = args.live_prices
        if live and not args.paper:
            raise InputError("--live-prices is for paper mode: add --paper")
        if args.paper:
            # A random-walk paper run has a new simulated exchange: a grid saved by an earlier run cannot
            # resume. On live prices the simulated account is saved beside the state file, and a running
            # paper grid resumes with it.
            sim_state = sim_state_path(cfg)
            saved = store.active_grid()
            resume = live and saved is not None and os.path.exists(sim_state)
            if saved is not None and not resume:
                store.set_status(saved.id, "stopped", wall_clock_ms())
            if live and not resume and os.path.exists(sim_state):
                os.replace(sim_state, sim_state + ".old")  # a new paper account; the last one kept aside
            live_from = cfg.api.base_url
            sim, cfg, signer = start_paper(cfg, args.seed, live=live, sim_state=sim_state)
        setup_logging(cfg, level=args.log_level, log_file=paper_path(cfg.log.file, ".log") if args.paper else None)
        if args.paper and live:
            log.info("PAPER MODE on live prices from %s: a simulated exchange at %s follows its trades; paper funds, "
                     "no real orders, no keys used", live_from, cfg.api.base_url)
        elif args.paper:
            log.info("PAPER MODE: a simulated exchange at %s with paper funds; no real orders", cfg.api.base_url)
        else:
            log.info("starting: %s on %s", cfg.trading.symbol, cfg.api.base_url)
        notifier = None
        if cfg.notify.enabled:
            notifier = Notifier(cfg.notify, grid=f"{'[paper] ' if args.paper else ''}{cfg.trading.symbol} grid")
        bot = GridBot(cfg, signer=signer, store=store, reset=args.reset, adopt=args.adopt, notifier=notifier)
        if args.paper:
            bot.paper = "live" if live else "random"
        install_signals(bot)
        if notifier is not None:
            notifier.health = bot.healthy
            notifier.start()
        try:
            result = bot.run()
        finally:
            if notifier is not None:
                notifier.close(NOTIFY_FLUSH_S)  # the stop message, at most this long
    finally:
        store.close()
        lock.release()
        if sim is not None:
            sim.stop()
    if result.exit_code not in (EXIT_OK, EXIT_FORCED) and not cfg.log.console:
        # The log file has it, but a terminal (or systemd's journal) must see why we stopped.
        print(f"grid_bot: {result.reason}", file=sys.stderr)
    return result.exit_code


NOTIFY_FLUSH_S = 10.0


def cmd_notify_test(args: argparse.Namespace) -> int:
    """One test message to every notification URL; per URL, delivered or not."""
    cfg = read_config(args.config, need_keys=False)
    n = cfg.notify
    if not n.urls:
        raise ConfigError(f"{args.config}: no notification URLs: set notify.urls (or {URLS_ENV})")
    results = try_urls(n.urls, f"{cfg.trading.symbol} grid", n.urls_from)
    for name, ok in results:
        print(f"{name}: {'delivered' if ok else 'NOT delivered (check the URL, the token and the network)'}")
    return EXIT_OK if all(ok for _, ok in results) else EXIT_RUNTIME


def saved_grid(store: StateStore) -> tuple[SavedGrid, OrderManager]:
    """The grid ``status`` and ``report`` show: the running one, else the latest; with its manager."""
    saved = store.active_grid() or store.latest_grid()
    if saved is None:
        raise InputError(f"no grid saved in {store.path} yet")
    return saved, OrderManager.from_snapshot(saved.spec, saved.tag, store.load(saved))


def cmd_status(args: argparse.Namespace) -> int:
    cfg = read_config(args.config, need_keys=False)
    store = open_store(cfg, args.paper, readonly=True)
    try:
        saved, om = saved_grid(store)
        paper = None
        if args.paper:
            paper = "live" if os.path.exists(sim_state_path(cfg)) else "random"
        report = status_report(saved, om, store.path, wall_clock_ms(), running=bot_running(store.path),
                               paper=paper)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_status(report)
    return EXIT_OK


def bot_running(state_path: str) -> bool:
    """Is a bot running on this state file now? Read, never taken: the lock file holds the pid of the
    bot that took it last (a probe that took the lock, even for an instant, could make a starting bot
    refuse to start). Running = that process is alive and is a grid_bot."""
    try:
        with open(state_path + ".lock") as fh:
            pid = int(fh.read(32).strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"grid_bot" in fh.read()
    except OSError:
        return True  # no /proc: an alive pid is the best answer


def keys_set(cfg: Config) -> bool:
    """Are API keys configured (not left as placeholders)? Malformed ones are an error to fix."""
    if PLACEHOLDER.fullmatch(cfg.api.api_key.strip()) or PLACEHOLDER.fullmatch(cfg.api.api_secret.strip()):
        return False
    check_keys(cfg.api.api_key, cfg.api.api_secret, key_from=cfg.api.key_from, secret_from=cfg.api.secret_from)
    return True


def public_client(cfg: Config, signer: Signer | None = None) -> BackpackClient:
    # plan and backtest answer a person at a terminal: fail fast when the exchange is unreachable,
    # and show the client's retry warnings as plain lines.
    logging.basicConfig(format="grid_bot: %(message)s", level=logging.WARNING)
    return BackpackClient(cfg.api.base_url, signer, timeout=(5.0, 15.0), max_attempts=2)


def saved_for_plan(cfg: Config, paper: bool) -> dict[str, Any] | None:
    """The running grid in the state file, as ``planner.plan_report`` wants it (None: there is none)."""
    path = paper_path(cfg.state_file, ".db") if paper else cfg.state_file
    if not os.path.exists(path):
        return None
    store = open_store(cfg, paper, readonly=True)
    try:
        saved = store.active_grid()
        if saved is None:
            return None
        om = OrderManager.from_snapshot(saved.spec, saved.tag, store.load(saved))
    finally:
        store.close()
    return {"id": saved.id, "status": saved.status, "params": saved.params, "levels": level_view(om),
            "params_now": grid_params(cfg.trading)}


def cmd_plan(args: argparse.Namespace) -> int:
    from gridbot.analysis.planner import plan_report, print_plan
    from gridbot.paper import rules_from_spec

    cfg = read_config(args.config, need_keys=False)
    if args.live_prices and not args.paper:
        raise InputError("--live-prices is for paper mode: add --paper")
    try:
        with_keys = not args.paper and keys_set(cfg)
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}" if e.from_file else str(e)) from None
    t = cfg.trading
    balances: dict[str, tuple[Decimal, Decimal]] | None
    if args.paper and args.live_prices:
        spec, price, paper_funds = live_market(cfg)
        rules = rules_from_spec(spec)
        source = f"paper mode on live prices: the last price on {cfg.api.base_url}"
        balances = {k: (v, Decimal(0)) for k, v in paper_funds.items()}
        balances_source = "paper"
    elif args.paper:
        spec, price, paper_funds, _ = paper_market(cfg)
        rules = rules_from_spec(spec)
        source = "paper mode: the simulator's starting price"
        balances = {k: (v, Decimal(0)) for k, v in paper_funds.items()}
        balances_source: str | None = "paper"
    else:
        client = public_client(cfg, Signer(cfg.api.api_secret) if with_keys else None)
        try:
            rules = market_rules(client, t.symbol, cfg.api.base_url)
        except FatalError as e:
            raise FatalError(f"{e} (plan --paper shows the grid on the built-in simulated market)") from None
        try:
            price = client.ticker_price(t.symbol)
            balances = client.balances() if with_keys else None
        except RequestRejected as e:
            raise keys_refused(e) from None
        except TransientError as e:
            raise FatalError(f"cannot read from {cfg.api.base_url}: {e}") from None
        source = f"last price on {cfg.api.base_url}"
        balances_source = "exchange" if with_keys else None
    grid, notes = make_grid(rules, t, price)
    report = plan_report(grid, rules, price=price, price_source=source, maker_fee=t.maker_fee,
                         auto_price=t.auto_price, balances=balances, balances_source=balances_source,
                         saved=saved_for_plan(cfg, args.paper), risk=cfg.risk, investment=t.investment,
                         entry=t.entry)
    report["warnings"] = [*cfg.warnings, *notes, *report["warnings"]]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_plan(report)
    return EXIT_OK
