"""The bot's one exception hierarchy, named by what the caller must do.

    GridBotError                     the root: everything the bot raises on purpose
    |- Transient                     try again later (a timeout, a 5xx, a 429, a dropped connection)
    |- Rejected                      the exchange refused this one thing: mark it and go on
    |- InputError                    the user must fix something (config, keys, state file): exit 2
    |- StartRefused                  the market will not let this grid start now (a purchase past its cap,
    |                                a market not trading): exit 2, so systemd does not restart into it
    '- FatalError                    the bot cannot go on: exit 1

Modules raise subclasses of these (``backpack_api.OrderRejected`` is a ``Rejected``, ``config.ConfigError``
an ``InputError``, ...). Only ``grid_bot.main()`` turns one that escapes into a one-line message and an
exit code (the running bot hands its own up in ``RunResult.error``); a Transient or Rejected that escapes
to it means the bot gave up on it, so it exits 1.
No module here does I/O, so the pure core may import it.
"""
from __future__ import annotations

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT, EXIT_FORCED = 0, 1, 2, 130


class GridBotError(Exception):
    """An error the bot reports as one line and an exit code."""
    exit_code = EXIT_RUNTIME


class Transient(GridBotError):
    """Try again later: nothing is known to have failed for good."""


class Rejected(GridBotError):
    """The exchange refused this request: mark what it was for and go on."""


class InputError(GridBotError):
    """Something the user must change: config, keys, symbol, grid, balance, state file."""
    exit_code = EXIT_INPUT


class StartRefused(GridBotError):
    """The market, not the user's input, keeps the grid from starting now: nothing was placed."""
    exit_code = EXIT_INPUT


class FatalError(GridBotError):
    """The bot cannot go on (the exchange unreachable at start, a state it cannot trust)."""
    exit_code = EXIT_RUNTIME
