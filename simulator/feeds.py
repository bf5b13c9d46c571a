"""Price feeds: what moves the simulated market.

- ``none``: the price moves only when told (``POST /_sim/price``).
- ``random``: a seeded, reproducible random walk in log-price, ``volatility`` per tick, every
  ``tick_seconds``; ``reversion`` pulls it back toward its starting price (paper mode uses this so the
  price keeps moving inside the grid).
- ``replay:FILE``: a klines CSV (Backpack's field names; ``start,open,high,low,close`` required) replayed
  along each candle's path ``candle_path`` at ``speed`` seconds per candle, or, when ``speed`` is 0,
  as told: whole candles (``step``) or single points of the path (``step_points``).

``candle_path`` is the intra-candle path the backtester uses too, so a paper run on a replay and a
backtest of the same file see the same prices in the same order.
"""
from __future__ import annotations

import math
import random
import threading
from decimal import Decimal
from typing import Callable

# The candle type, its path and the CSV format are the shared market-data package's.
from gridbot.marketdata.candles import REQUIRED_COLUMNS, Candle, FeedError, candle_path, read_klines_csv  # noqa: F401

class Feed:
    """Base: a feed owns at most one thread and calls ``move(symbol, price, volume)``."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()
        self._paused = False  # a paused feed keeps ticking but moves no price
        self.ticks = 0

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, paused: bool) -> None:
        """Takes effect before it returns: no tick is half done afterwards."""
        with self._tick_lock:
            self._paused = paused

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"sim-feed-{type(self).__name__}",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:  # pragma: no cover - overridden
        pass

    def step(self, n: int = 1) -> int:
        return 0

    def step_points(self, n: int = 1) -> int:
        return 0

    def describe(self) -> dict:
        return {"kind": "none", "paused": self.paused}


class RandomFeed(Feed):
    def __init__(self, move: Callable[[str, Decimal, Decimal], None], prices: dict[str, Decimal],
                 *, seed: int, volatility: float, tick_seconds: float, reversion: float = 0.0,
                 symbols: list[str] | None = None) -> None:
        super().__init__()
        self._move = move
        self._rng = random.Random(seed)
        self.volatility = volatility
        self.tick_seconds = tick_seconds
        self.reversion = reversion
        self._anchor = {s: math.log(float(p)) for s, p in prices.items()
                        if symbols is None or s in symbols}
        self._log = dict(self._anchor)

    def next_prices(self) -> dict[str, Decimal]:
        """One step of the walk for every market (deterministic for a seed)."""
        out = {}
        for sym in sorted(self._log):
            x = self._log[sym]
            x += self.reversion * (self._anchor[sym] - x) + self.volatility * self._rng.gauss(0.0, 1.0)
            self._log[sym] = x
            # Floats drive the walk only; the engine rounds the result to the tick as a Decimal.
            out[sym] = Decimal(repr(math.exp(x)))
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            with self._tick_lock:
                self.ticks += 1
                if self._paused:
                    continue
                for sym, price in self.next_prices().items():
                    volume = Decimal(self._rng.randint(1, 50))
                    self._move(sym, price, volume)

    def describe(self) -> dict:
        return {"kind": "random", "volatility": self.volatility, "tick_seconds": self.tick_seconds,
                "reversion": self.reversion, "paused": self.paused, "ticks": self.ticks}


class ReplayFeed(Feed):
    def __init__(self, move: Callable[[str, Decimal, Decimal], None], symbol: str, path: str,
                 *, speed: float) -> None:
        super().__init__()
        self._move = move
        self.symbol = symbol
        self.path = path
        self.candles = list(read_klines_csv(path))
        if not self.candles:
            raise FeedError(f"{path} has no candles")
        self.speed = speed
        self.position = 0  # the candle being replayed
        self.point = 0     # the next point of its path
        self._lock = threading.Lock()

    def first_price(self) -> Decimal:
        return self.candles[0].open

    def step(self, n: int = 1) -> int:
        """Replay the rest of the current candle and the next ones until ``n`` candles are complete;
        returns how many were completed."""
        done = 0
        with self._lock:
            while done < n and self.position < len(self.candles):
                self._next_point()
                if self.point == 0:
                    done += 1
        return done

    def step_points(self, n: int = 1) -> int:
        """Move the price to the next ``n`` points of the candle paths, one at a time (the points a
        backtest acts on); returns how many were replayed."""
        done = 0
        with self._lock:
            while done < n and self.position < len(self.candles):
                self._next_point()
                done += 1
        return done

    def _next_point(self) -> None:
        path = candle_path(self.candles[self.position])
        self._move(self.symbol, path[self.point], Decimal(0))
        self.point += 1
        if self.point == len(path):
            self.position, self.point = self.position + 1, 0

    def _run(self) -> None:
        if self.speed <= 0:
            return  # stepped through the control API
        while not self._stop.wait(self.speed):
            with self._tick_lock:
                self.ticks += 1
                if self._paused:
                    continue
            if self.step(1) == 0:
                return

    def describe(self) -> dict:
        return {"kind": "replay", "file": self.path, "speed": self.speed,
                "position": self.position, "point": self.point, "candles": len(self.candles),
                "paused": self.paused}
