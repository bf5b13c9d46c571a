"""The bot's stop (``GridBot.shutdown``): the stream closed, the grid's orders cancelled (or kept, with
``on_exit: keep``), the last fills read, the grid closed when nothing of it is left on the book, and the final
statistics and figures logged.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gridbot.engine.perp_account import grid_position
from gridbot.ops.reports import describe_exit, fmt_amount, format_figures, format_stats

if TYPE_CHECKING:
    from gridbot.engine.loop import GridBot

log = logging.getLogger("grid_bot")


def shut_down(bot: "GridBot") -> None:
    assert bot.g is not None
    bot.shutting_down = True
    bot.systemd.stopping(f"stopping: {bot.stop_reason or 'asked to stop'}")
    log.info("stopping: %s", bot.stop_reason or "asked to stop")
    if bot.stream is not None:
        bot.stream.stop()
    for hook in bot.on_stopping:
        hook()
    closed = False
    if bot.t.on_exit == "keep":
        log.info("on_exit is keep: leaving %d order(s) on the book; the next start resumes this grid",
                 len(bot.g.om.live_orders()))
    else:
        closed = bot.executor.cancel_all(bot.g)
    result = bot.executor.sync(bot.g, orders=False)  # the last fills
    if not result.ok:
        log.warning("cannot read the last fills: %s", result.error)
    if bot.last is not None:
        bot.g.note_price(bot.last.price, bot.wall_ms())
    bot.g.save()
    bot.executor.close()
    ex = bot.g.om.risk.exit
    if ex is not None and ex.phase == "done":
        log.info("%s", describe_exit(ex, bot.g.om.grid))
    if closed and ex is None and bot.store is not None and bot.g.grid_id is not None:
        # A grid whose orders are all cancelled is closed: the next start lays out a new one. One with
        # orders left (kept, or not confirmed cancelled) stays running, so the next start resumes it.
        bot.store.set_status(bot.g.grid_id, "stopped", bot.wall_ms())
    log.info("final %s", format_stats(bot.g.om.stats(bot.price), bot.g.om.grid, bot.clock() - bot.started,
                                      final=True))
    fig = bot.figures()
    if fig is not None:
        log.info("final %s", format_figures(fig, bot.g.om.grid))
    left = grid_position(bot.g.om) if bot.perp is not None else 0
    if left:
        log.warning("perps: a %s of %s %s stays open on the exchange: stopping cancels the grid's orders, it does not "
                    "close the position (an exit with risk.on_stop close does); a new grid counts a position in its "
                    "own direction toward its opening, and refuses any other", "long" if left > 0 else "short",
                    fmt_amount(abs(left)), bot.g.om.grid.base)

