"""This machine's clock against the exchange's: checked at start (a clock off by the signature window or
more refuses the start), and watched while running (said once when the exchange refuses our signed
requests because of it, and again when it is back)."""
from __future__ import annotations

import logging
from typing import Callable

from backpack_api import BackpackClient, BackpackError
from gridbot.core.errors import FatalError

log = logging.getLogger("grid_bot")


def check_clock(client: BackpackClient, wall_ms: Callable[[], int]) -> int:
    """This machine's clock against the exchange's, in ms (0 when the exchange does not say); refuses a
    skew the signature window cannot absorb."""
    try:
        server = client.server_time_ms()
    except BackpackError:
        return 0
    skew, window = (wall_ms() - server) / 1000, client.window_ms / 1000
    if abs(skew) >= window:
        raise FatalError(f"this machine's clock is {skew:+.1f} s off the exchange's: signed requests "
                         f"would be refused (the signature window is {window:g} s, api.window_ms); sync the clock "
                         f"(enable NTP: timedatectl set-ntp true) and start again")
    if abs(skew) >= min(1.0, window / 5):
        log.warning("this machine's clock is %+.1f s off the exchange's; signed requests allow %g s", skew, window)
    return int(skew * 1000)


class ClockWatch:
    """When the exchange refuses our signed requests, measure this machine's clock against the
    exchange's (``GET /api/v1/time``) and, if it is off by more than the signature window allows, say
    so once, with what to do; say so again when it is back. The bot keeps trying meanwhile."""

    RECHECK_S = 30.0

    def __init__(self, client: BackpackClient, window_ms: int, wall_ms: Callable[[], int],
                 clock: Callable[[], float]) -> None:
        self.client, self.window_ms, self.wall_ms, self.clock = client, window_ms, wall_ms, clock
        self.seen = client.signed_refusals
        self.next_check = 0.0
        self.skewed = False

    def check(self) -> None:
        refused = self.client.signed_refusals != self.seen
        if not (refused or self.skewed) or self.clock() < self.next_check:
            return
        self.seen = self.client.signed_refusals
        self.next_check = self.clock() + self.RECHECK_S
        try:
            skew_ms = self.wall_ms() - self.client.server_time_ms()
        except BackpackError:
            return
        off = abs(skew_ms) > self.window_ms * 0.8
        if off and not self.skewed:
            log.error("the exchange refuses our signed requests: this machine's clock is %.1f s %s the exchange's, "
                      "more than the %.0f s signature window allows; sync the clock (enable NTP: timedatectl "
                      "set-ntp true). Trying again meanwhile", abs(skew_ms) / 1000,
                      "ahead of" if skew_ms > 0 else "behind", self.window_ms / 1000)
        elif self.skewed and not off:
            log.info("the clock is back in sync with the exchange's (%+.1f s): signed requests go through again",
                     skew_ms / 1000)
        self.skewed = off
