"""Logging: one ``grid_bot`` logger, a rotating file (and stderr when ``log.console``), secrets masked.

Log files are created readable by their owner only (mode 0600): they hold the grid's orders and positions.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Sequence

from gridbot.ops.config import Config
from gridbot.core.errors import InputError


class SecretFilter(logging.Filter):
    """Defence in depth: whatever a log line contains, a secret in it is masked."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            if any(s in msg for s in self.secrets):
                for s in self.secrets:
                    msg = msg.replace(s, "***")
                record.msg, record.args = msg, None
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files (the current one and every rotated one) are created mode 0600."""

    def _open(self):  # type: ignore[override]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a log file made before this rule, or by hand
        except OSError:
            pass
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(cfg: Config, *, level: str | None = None, log_file: str | None = None) -> str:
    """Route the ``grid_bot`` logger to the configured file (and stderr); returns the file's path."""
    logger = logging.getLogger("grid_bot")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(level or cfg.log.level)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s")
    secret_filter = SecretFilter([cfg.api.api_secret, *cfg.notify.secrets()])
    handlers: list[logging.Handler] = []
    if cfg.log.console:
        handlers.append(logging.StreamHandler(sys.stderr))
    path = log_file or cfg.log.file
    if "\0" in path:
        raise InputError(f"log.file {path!r} holds a NUL character")
    try:
        handlers.append(PrivateRotatingFileHandler(path, maxBytes=cfg.log.max_bytes,
                                                   backupCount=cfg.log.backup_count, encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot write the log file {path}: {e.strerror} (set log.file)") from None
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(secret_filter)
        logger.addHandler(h)
    return path


def log_file_of(logger: logging.Logger) -> str | None:
    """The file a logger writes to, if any (for "the traceback is in ...")."""
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler):
            return h.baseFilename
    return None
