"""``notify-test``: one test message to every notification URL, and which arrived."""
from __future__ import annotations

import argparse

from gridbot.ops.config import ConfigError
from gridbot.core.errors import EXIT_OK, EXIT_RUNTIME
from gridbot.ops.notify import URLS_ENV, try_urls
from gridbot.commands.common import grid_title, read_config


def cmd_notify_test(args: argparse.Namespace) -> int:
    """One test message to every notification URL; per URL, delivered or why not."""
    cfg = read_config(args.config, need_keys=False)
    n = cfg.notify
    if not n.urls:
        raise ConfigError(f"{args.config}: no notification URLs: set notify.urls (or {URLS_ENV})")
    results = try_urls(n.urls, grid_title(cfg, False), n.urls_from)
    for name, why in results:
        print(f"{name}: {'delivered' if why is None else f'NOT delivered: {why}'}")
    return EXIT_OK if all(why is None for _, why in results) else EXIT_RUNTIME
