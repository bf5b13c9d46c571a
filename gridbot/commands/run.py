"""``run`` (the default command): the grid, live or on paper, until a signal, ``duration`` or an exit stops it."""
from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any, Callable

from backpack_api import wall_clock_ms
from gridbot.engine.loop import GridBot
from gridbot.core.errors import EXIT_FORCED, EXIT_OK, InputError
from gridbot.ops.log_setup import setup_logging
from gridbot.ops.notify import Notifier
from gridbot.ops.reports import forced_exit_message
from gridbot.ops.systemd_notify import SystemdNotify
from gridbot.paper import paper_path, sim_state_path, start_paper
from gridbot.commands.common import grid_title, open_store, read_config, take_state


log = logging.getLogger("grid_bot")


NOTIFY_FLUSH_S = 10.0


def signal_handler(bot: GridBot) -> Callable[[int, Any], None]:
    """What SIGINT, SIGTERM and SIGHUP do. A handler runs in the main thread between two of its bytecodes,
    wherever it is, possibly holding a lock: it must take none that is not reentrant (a ``queue.put`` or an
    ``Event.set`` there once deadlocked the bot inside its own ``queue.get``). So it only notes the signal
    (``GridBot.signal_stop``); the loop, which wakes at least once a second, stops on it."""
    count = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        count["n"] += 1
        name = signal.Signals(signum).name
        if count["n"] == 1 or not bot.shutting_down:
            bot.signal_stop(f"{name} received")
        elif signum == signal.SIGINT:
            # Exit now, from here: an exception raised into whatever the main thread is doing could be
            # swallowed by library code (websocket-client's close() catches everything). The state
            # file holds the last consistent save; the next start reconciles from it.
            # The last words of a forced exit: which orders may still be on the book (it only reads and logs).
            log.warning("%s", forced_exit_message(bot.g.om.live_orders() if bot.g is not None else [], bot.paper))
            for h in logging.getLogger("grid_bot").handlers:
                h.flush()
            os._exit(EXIT_FORCED)
        else:
            log.warning("%s received again: already stopping (Ctrl+C twice forces an exit)", name)

    return handler


def install_signals(bot: GridBot) -> None:
    handler = signal_handler(bot)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    # A closed terminal or a dropped ssh session: stop exactly as on SIGTERM, orders cancelled.
    signal.signal(signal.SIGHUP, handler)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = read_config(args.config, need_keys=not args.paper)
    sim = None
    signer = None
    lock, moved_from = take_state(cfg, args.paper)
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
            log.info("starting: grid %s, %s on %s", cfg.name, cfg.trading.symbol, cfg.api.base_url)
        if moved_from is not None:
            log.info("state file moved from %s (an earlier version's place) to %s", moved_from, cfg.state_file)
        notifier = None
        if cfg.notify.enabled:
            notifier = Notifier(cfg.notify, grid=grid_title(cfg, args.paper))
        bot = GridBot(cfg, signer=signer, store=store, reset=args.reset, adopt=args.adopt, notifier=notifier,
                      systemd=SystemdNotify())
        if args.paper:
            bot.paper = "live" if live else "random"
            bot.on_stopping.append(sim.freeze)
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
    if result.error is not None:
        raise result.error   # grid_bot.main gives it its line and exit code
    return EXIT_OK
