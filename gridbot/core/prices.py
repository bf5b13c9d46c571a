"""The bot's last price and where it came from (the WebSocket, REST, or REST while the stream is stale)."""
from __future__ import annotations

import logging
from decimal import Decimal
from enum import Enum

log = logging.getLogger("grid_bot")


class PriceSource(Enum):
    STREAM = "stream"            # the WebSocket ticker, or our own fills from the order stream
    REST = "rest"                # before the stream is up, or without one
    REST_FALLBACK = "rest-fallback"  # the stream's price went stale


class LastPrice:
    """The freshest price the bot knows, and where it came from. Stream prices carry the exchange's
    event time, so an older ticker never overwrites a newer fill."""

    def __init__(self, price: Decimal) -> None:
        self.price = price
        self.source = PriceSource.REST
        self.event_us = 0
        self.stream_received = 0.0   # our clock when the last ticker arrived
        self.updated = 0.0           # our clock when any source last told us the price (its age)

    def from_stream(self, price: Decimal, event_us: int, at: float) -> None:
        if event_us >= self.event_us:
            self.price, self.event_us = price, event_us
        self.updated = max(self.updated, at)
        if self.source is PriceSource.REST_FALLBACK:
            log.info("WebSocket prices are back")
        self.source = PriceSource.STREAM

    def age(self, now: float) -> float:
        """Seconds since any source last told the price."""
        return now - self.updated

    def from_rest(self, price: Decimal, *, fallback: bool, at: float) -> None:
        """A REST price: the usual source without a stream, a fallback (said once) when the stream's
        price has gone stale."""
        self.price = price
        self.updated = max(self.updated, at)
        if not fallback:
            self.source = PriceSource.REST
        elif self.source is not PriceSource.REST_FALLBACK:
            log.warning("no fresh WebSocket price: using the REST price %s", price)
            self.source = PriceSource.REST_FALLBACK
