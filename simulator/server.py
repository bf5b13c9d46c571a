"""The simulator as a whole: an ``Exchange``, its REST and WebSocket servers, a price feed and the
periodic pushers (ticker every ``ticker_interval``, klines at most once a second, server pings).

``Simulator(config).start()`` binds (port 0 = any free port) and returns once both servers accept
connections; ``running_simulator(...)`` is the context manager tests and paper mode use.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterator

import requests

from .engine import Exchange
from .records import OrderRequest, SimError
from .wire import kline_time
from .faults import FaultBoard
from .feeds import Feed, RandomFeed, ReplayFeed
from .live_feed import LiveFeed
from .markets import DEFAULT_MARKETS, DEFAULT_SYMBOL, KLINE_SECONDS, MarketSpec
from .perp_engine import PerpEngine
from .perp_routes import PerpMarkets
from .ratelimit import RateLimiter
from .rest import RestServer
from .wsserver import Hub, WsServer

log = logging.getLogger("simulator")

DEFAULT_BALANCES = {"USDC": Decimal("100000"), "SOL": Decimal("1000"), "BTC": Decimal("10"),
                    "ETH": Decimal("100")}


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    ws_port: int = 0
    symbol: str = DEFAULT_SYMBOL
    price: Decimal | None = None          # starting price of ``symbol``
    feed: str = "random"                  # random | none | replay:FILE
    seed: int = 1
    volatility: float = 0.001             # per tick, in log-price
    tick_seconds: float = 1.0
    reversion: float = 0.0                # pull toward the starting price per tick (0..1)
    liquidity: Decimal | None = None      # random feed: most filled per crossed order per tick
    replay_speed: float = 1.0             # seconds per candle; 0 = step through /_sim/feed
    maker_fee: Decimal = Decimal("0.0008")
    taker_fee: Decimal = Decimal("0.001")
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_BALANCES))
    ticker_interval: float = 1.0
    ping_interval: float = 60.0
    pong_timeout: float = 120.0
    rate_limit: int = 2000                # requests per minute per account; 0 = off
    max_batch: int = 50
    markets: tuple[MarketSpec, ...] = DEFAULT_MARKETS
    clock_offset_ms: int = 0              # the simulator's clock minus this machine's
    live_rest: str = ""                   # feed "live": the real market's REST and WebSocket URLs
    live_ws: str = ""
    live_stale_after: float = 30.0
    live_logger: str = "simulator.live"   # paper mode logs the live feed into the bot's log
    # Perps (perp_engine.py): a reduce-only order that cannot reduce is refused (False: accepted, then
    # expired ReduceOnlyNotReduced); the share of a position each liquidation step closes; how often
    # positions' PnL is realized into USDC (Backpack: every 10 s).
    reduce_only_reject: bool = True
    liquidation_step: Decimal = Decimal(1)
    pnl_settle_seconds: float = 10.0
    open_interest_seconds: float = 60.0   # Backpack pushes openInterest.<symbol> once a minute
    id_base: int = 0                      # trade and order ids start above this (paper mode: the time, so
                                          # no two paper runs ever hand out one id)


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = cfg = config or SimConfig()
        if cfg.symbol not in {m.symbol for m in cfg.markets}:
            raise ValueError(f"unknown market {cfg.symbol}")
        self.replay: ReplayFeed | None = None
        self.live: LiveFeed | None = None
        prices: dict[str, Decimal] = {}
        if cfg.feed == "live":
            if not (cfg.live_rest and cfg.live_ws):
                raise ValueError("the live feed needs live_rest and live_ws")
            self.live = LiveFeed(self._live_trade, cfg.symbol, cfg.live_rest, cfg.live_ws,
                                 stale_after=cfg.live_stale_after, log=logging.getLogger(cfg.live_logger),
                                 mark=self._live_mark)
            if cfg.price is None:
                prices[cfg.symbol] = self.live.first_price()
        if cfg.feed.startswith("replay:"):
            self.replay = ReplayFeed(self._move, cfg.symbol, cfg.feed[len("replay:"):],
                                     speed=cfg.replay_speed)
            prices[cfg.symbol] = self.replay.first_price()
        if cfg.price is not None:
            prices[cfg.symbol] = cfg.price
        self.exchange = Exchange(cfg.markets, maker_fee=cfg.maker_fee, taker_fee=cfg.taker_fee,
                                 starting_balances=cfg.balances, prices=prices, seed=cfg.seed)
        self.hub = Hub(set(self.exchange.markets), lambda: self.exchange.clock_us() // 1000)
        self.exchange.sink = self.hub
        self.perps = PerpMarkets(self)
        self.exchange.perp = PerpEngine(self.exchange, self.perps, reduce_only_reject=cfg.reduce_only_reject,
                                        liquidation_step=cfg.liquidation_step)
        self.perps.on_funding = self.exchange.perp.fund
        self.hub.position_snapshot = self.exchange.perp.snapshot
        self._next_realize = time.monotonic() + cfg.pnl_settle_seconds
        self.exchange.clock_offset_us = cfg.clock_offset_ms * 1000
        if cfg.id_base:
            self.exchange.raise_ids(cfg.id_base)
        self.faults = FaultBoard()
        self.hub.faults = self.faults
        self.exchange.reject_hook = self._forced_reject
        self.limiter = RateLimiter(cfg.rate_limit)
        self.feed: Feed
        if self.replay is not None:
            self.feed = self.replay
        elif cfg.feed == "random":
            self.feed = RandomFeed(self._move, {s: m.price for s, m in self.exchange.markets.items()},
                                   seed=cfg.seed, volatility=cfg.volatility,
                                   tick_seconds=cfg.tick_seconds, reversion=cfg.reversion)
        elif self.live is not None:
            self.feed = self.live
        elif cfg.feed == "none":
            self.feed = Feed()
        else:
            raise ValueError(f"unknown feed {cfg.feed!r}: random, none, live or replay:FILE")
        self._stop = threading.Event()
        self._next_open_interest = 0.0
        self._threads: list[threading.Thread] = []
        self.rest: RestServer | None = None
        self.ws: WsServer | None = None

    def _forced_reject(self, order: OrderRequest) -> SimError | None:
        price = None if order.price is None else f"{order.price:f}"
        fault = self.faults.take_order_reject(order.side, price)
        if fault is None:
            return None
        return SimError(400, fault.code or "INVALID_ORDER", fault.message or "")

    def _live_mark(self, symbol: str, index: Decimal, mark: Decimal) -> None:
        """The real perp's index and mark, set on the paper market (which may then liquidate)."""
        with self.exchange.lock:
            p = self.perps.markets.get(symbol)
            if p is None:
                return
            p.set(self.exchange.clock_us(), index=index, mark=mark)
            self.exchange.perp.after_move(symbol)

    def _live_trade(self, symbol: str, price: Decimal, quantity: Decimal, trade_id: int) -> None:
        """A real trade: the paper orders it printed through fill, at most its quantity together."""
        self.exchange.set_price(symbol, price, volume=quantity, total=quantity, cause=trade_id)
        self.exchange.record_market_trade(symbol, quantity)

    def _move(self, symbol: str, price: Decimal, volume: Decimal) -> None:
        self.exchange.set_price(symbol, price, liquidity=self.config.liquidity, volume=volume)
        if volume > 0:
            self.exchange.record_market_trade(symbol, volume)

    # -- lifecycle
    def start(self) -> "Simulator":
        cfg = self.config
        self.rest = RestServer((cfg.host, cfg.port), self)
        self.ws = WsServer((cfg.host, cfg.ws_port), self.hub)
        rest, ws = self.rest, self.ws
        for name, target in (("sim-rest", lambda: rest.serve_forever(poll_interval=0.05)),
                             ("sim-ws", lambda: ws.serve_forever(poll_interval=0.05)),
                             ("sim-pusher", self._push_loop), ("sim-pinger", self._ping_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.feed.start()
        log.info("simulator listening: %s", json.dumps(self.urls()))
        return self

    def stop(self) -> None:
        self._stop.set()
        self.feed.stop()
        self.hub.drop_all()
        for server in (self.rest, self.ws):
            if server is not None:
                server.shutdown()
                server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def urls(self) -> dict[str, str]:
        assert self.rest is not None and self.ws is not None
        host = self.config.host
        return {"rest": f"http://{host}:{self.rest.server_address[1]}",
                "ws": f"ws://{host}:{self.ws.server_address[1]}"}

    @property
    def rest_url(self) -> str:
        return self.urls()["rest"]

    @property
    def ws_url(self) -> str:
        return self.urls()["ws"]

    def add_fault(self, spec: dict) -> dict:
        fault = self.faults.add(spec)
        if fault.kind == "ws_drop":
            if fault.seconds:
                self.hub.refuse_until = time.monotonic() + fault.seconds
            dropped = self.hub.drop_all()
            log.info("fault: dropped %d WebSocket connection(s)", dropped)
        elif fault.kind == "ws_silent":
            self.hub.silent_until = time.monotonic() + (fault.seconds or 0)
            log.info("fault: WebSocket silent for %.1f s", fault.seconds or 0)
        return fault.public()

    # -- periodic pushers
    def _push_loop(self) -> None:
        last_bucket: dict[str, int] = {}
        next_kline = 0.0
        while not self._stop.wait(self.config.ticker_interval):
            for stream in self.hub.streams("ticker."):
                sym = stream[len("ticker."):]
                self.hub.public_event(stream, self.exchange.ticker_event(sym))
            self._push_perps()
            self.hub.release_held()
            now = time.monotonic()
            if now >= next_kline:
                next_kline = now + 1.0
                self._push_klines(last_bucket)

    def _push_perps(self) -> None:
        """Funding due, PnL realization every ``pnl_settle_seconds``; ``markPrice.<symbol>`` with every ticker
        round; ``openInterest.<symbol>`` once a minute."""
        self.perps.roll()
        if time.monotonic() >= self._next_realize:
            self._next_realize = time.monotonic() + self.config.pnl_settle_seconds
            with self.exchange.lock:
                self.exchange.perp.realize()
                for sym in self.perps.markets:     # a liquidation under way takes its next step
                    self.exchange.perp.after_move(sym)
        for stream in self.hub.streams("markPrice."):
            sym = stream[len("markPrice."):]
            if sym in self.perps.markets:
                self.hub.public_event(stream, self.perps.mark_price_event(sym))
        now = time.monotonic()
        if now >= self._next_open_interest:
            self._next_open_interest = now + self.config.open_interest_seconds
            for stream in self.hub.streams("openInterest."):
                sym = stream[len("openInterest."):]
                if sym in self.perps.markets:
                    self.hub.public_event(stream, self.perps.open_interest_event(sym))

    def _push_klines(self, last_bucket: dict[str, int]) -> None:
        now_s = self.exchange.clock_us() // 1_000_000
        for stream in self.hub.streams("kline."):
            _, interval, sym = stream.split(".", 2)
            secs = KLINE_SECONDS[interval]
            bucket = now_s // secs * secs
            prev = last_bucket.get(stream)
            if prev is None:
                # The first push since the stream was subscribed: candles that closed meanwhile count too.
                prev = self.hub.subscribed_ms.get(stream, now_s * 1000) // 1000 // secs * secs
            if prev != bucket:
                # Every candle that closed since the last push (pushes drift: two may straddle one).
                now_start = kline_time(bucket)
                for k in self.exchange.klines(sym, secs, prev, None):
                    if k["end"] <= now_start:
                        self.hub.public_event(stream, _kline_event(sym, k, True, self.exchange))
            last_bucket[stream] = bucket
            current = self.exchange.klines(sym, secs, bucket, None)
            if current:
                self.hub.public_event(stream, _kline_event(sym, current[-1], False, self.exchange))

    def _ping_loop(self) -> None:
        while not self._stop.wait(self.config.ping_interval):
            self.hub.ping_all(self.config.pong_timeout)


def _kline_event(symbol: str, k: dict, closed: bool, ex: Exchange) -> dict:
    now = ex.clock_us()
    return {"e": "kline", "E": now, "s": symbol, "t": k["start"].replace(" ", "T"),
            "T": k["end"].replace(" ", "T"), "o": k["open"], "c": k["close"], "h": k["high"],
            "l": k["low"], "v": k["volume"], "n": int(k["trades"]), "X": closed}


class SimControl:
    """A small client of the ``/_sim/`` control API (tests, paper mode, benchmarks)."""

    def __init__(self, rest_url: str) -> None:
        self.base = rest_url.rstrip("/")
        self.http = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.base + path, json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def state(self, journal_since_us: int = 0) -> dict:
        path = "/_sim/state" + (f"?journal_since_us={journal_since_us}" if journal_since_us else "")
        return self._call("GET", path)

    def set_price(self, price: Any, symbol: str = DEFAULT_SYMBOL, liquidity: Any = None) -> dict:
        body: dict[str, Any] = {"symbol": symbol, "price": str(price)}
        if liquidity is not None:
            body["liquidity"] = str(liquidity)
        return self._call("POST", "/_sim/price", body)

    def fault(self, **spec: Any) -> dict:
        return self._call("POST", "/_sim/faults", spec)["faults"][0]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_sim/faults")

    def set_depth(self, quantity: Any, symbol: str = DEFAULT_SYMBOL) -> dict:
        """Takers find ``quantity`` at each tick from the touch outward (None: unlimited at the touch)."""
        return self._call("POST", "/_sim/depth", {"symbol": symbol,
                                                  "quantity": None if quantity is None else str(quantity)})

    def set_clock_offset(self, offset_ms: int) -> None:
        """Run the simulator's clock ``offset_ms`` ahead of this machine's (negative: behind)."""
        self._call("POST", "/_sim/clock", {"offset_ms": offset_ms})

    def set_balance(self, api_key: str, asset: str, available: Any) -> None:
        self._call("POST", "/_sim/balance", {"api_key": api_key, "asset": asset,
                                             "available": str(available)})

    def set_borrowing(self, api_key: str, limit: Any) -> None:
        """Margin borrowing on for an account (an order that allows it may borrow up to ``limit``), or off (0)."""
        self._call("POST", "/_sim/borrowing", {"api_key": api_key, "limit": str(limit)})

    def step_feed(self, n: int = 1) -> dict:
        return self._call("POST", "/_sim/feed", {"step": n})

    def step_points(self, n: int = 1) -> dict:
        """A replay feed: move the price to the next ``n`` points of the candle paths."""
        return self._call("POST", "/_sim/feed", {"step_points": n})

    def pause_feed(self, paused: bool = True) -> dict:
        return self._call("POST", "/_sim/feed", {"paused": paused})


@contextlib.contextmanager
def running_simulator(config: SimConfig | None = None, **options: Any) -> Iterator[Simulator]:
    """Start a simulator in this process (port 0 by default) and stop it afterwards."""
    cfg = config or SimConfig(**options)
    sim = Simulator(cfg).start()
    try:
        # Both sockets listen before start() returns; one ping proves the REST loop serves.
        requests.get(sim.rest_url + "/api/v1/ping", timeout=5).raise_for_status()
        yield sim
    finally:
        sim.stop()
