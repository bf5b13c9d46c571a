"""``status``: the saved state of the configured grid, also while the bot runs."""
from __future__ import annotations

import argparse
import json
import os

from backpack_api import wall_clock_ms
from gridbot.commands.grids import cmd_list
from gridbot.core.errors import EXIT_OK, InputError
from gridbot.paper import sim_state_path
from gridbot.ops.reports import print_status, status_report
from gridbot.commands.common import read_config, open_store, saved_grid, bot_running


def cmd_status(args: argparse.Namespace) -> int:
    if args.all:
        return cmd_list(args)
    if args.dir:
        raise InputError("--dir is for status --all (or list): add --all")
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
