#!/usr/bin/env python3
"""Backpack grid bot: the command line, the main loop, signals, and turning errors into exit codes.

    python grid_bot.py [run] [--config config.json] [--paper] [--reset] [--log-level DEBUG]
    python grid_bot.py status [--config config.json] [--paper] [--json]
    python grid_bot.py plan [--config config.json] [--paper] [--json]
    python grid_bot.py backtest [--config config.json] (--klines FILE.csv | --fetch [--days N]) [--sweep K=V,..]
                                [--plot FILE.png] [--json] [grid overrides]
    python grid_bot.py keygen [--json]

This is the imperative shell (DESIGN.md). It owns all I/O and the one thread that changes bot state:
it reads the market's rules and balances, builds the grid (``grid_calculator``), feeds prices, fills
and order snapshots into the ``OrderManager`` and performs the actions it returns through the signed
REST client. The WebSocket thread only puts events on ``self.events``.

Exit codes: 0 stopped as asked; 1 a runtime failure (the exchange unreachable at start, an unexpected
error); 2 bad input the user must fix (config, keys, symbol, a grid that does not fit the market, not
enough balance); 130 a second Ctrl+C during shutdown.
"""
from __future__ import annotations

import argparse
import difflib
import json
import logging
import logging.handlers
import os
import queue
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Sequence

from backpack_api import (ApiError, BackpackClient, BackpackError, NotFound, OrderRejected, OrderRequest,
                          RequestRejected, Signer, TransientError, UnknownOutcome, generate_keypair,
                          wall_clock_ms, CANCEL_PENDING)
from config import PLACEHOLDER, Config, ConfigError, check_keys, load_config
from grid_calculator import GridError, GridMode, GridSpec, build_grid, funds_needed, initial_plan, summarize
from models import BatchError, MarketRules, Order, Side
from order_manager import Cancel, Lookup, OrderManager, OrderState, Place, Settings, Stats
from state_store import SavedGrid, StateError, StateStore
from websocket_client import (MarketStream, OrderEvent, StreamDown, StreamError, StreamUp, TickerEvent)

log = logging.getLogger("grid_bot")

EXIT_OK, EXIT_RUNTIME, EXIT_INPUT, EXIT_FORCED = 0, 1, 2, 130
BATCH_SIZE = 20  # Backpack's batch limit is undocumented (backpack_api.md §11): stay well under any likely one.
STREAM_POLL_FACTOR = 5  # while the order stream is verified, the REST safety net runs 5x less often


class BotError(Exception):
    """An error the bot reports as one line and an exit code."""
    exit_code = EXIT_RUNTIME


class InputError(BotError):
    """Something the user must change: config, keys, symbol, grid, balance."""
    exit_code = EXIT_INPUT


@dataclass
class RunResult:
    exit_code: int
    reason: str
    stats: Stats | None


# --------------------------------------------------------------------------------- logging
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


def setup_logging(cfg: Config, *, level: str | None = None, log_file: str | None = None) -> None:
    logger = logging.getLogger("grid_bot")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(level or cfg.log.level)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s")
    secret_filter = SecretFilter([cfg.api.api_secret])
    handlers: list[logging.Handler] = []
    if cfg.log.console:
        handlers.append(logging.StreamHandler(sys.stderr))
    path = log_file or cfg.log.file
    try:
        handlers.append(logging.handlers.RotatingFileHandler(
            path, maxBytes=cfg.log.max_bytes, backupCount=cfg.log.backup_count, encoding="utf-8"))
    except OSError as e:
        raise InputError(f"cannot write the log file {path}: {e.strerror} (set log.file)") from None
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(secret_filter)
        logger.addHandler(h)


def fmt_amount(d: Decimal, places: int = 8) -> str:
    """A decimal for a log line: exact, without trailing zeros beyond what it needs."""
    q = d.quantize(Decimal(1).scaleb(-places)) if d.as_tuple().exponent < -places else d
    text = f"{q:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def format_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h}:{m:02d}:{s:02d}"


def format_stats(st: Stats, grid: GridSpec, uptime: float, source: str = "", final: bool = False) -> str:
    fees = ", ".join(f"{fmt_amount(v)} {k}" for k, v in sorted(st.fees.items())) or "0"
    price = fmt_amount(st.price) if st.price is not None else "?"
    floating = f"{fmt_amount(st.floating_pnl, 4)} {grid.quote}" if st.floating_pnl is not None else "?"
    sign = "+" if st.position > 0 else ""
    waiting = f" ({st.waiting} waiting)" if st.waiting and not final else ""
    return (f"stats | price {price}{source} | open {st.open_bids} buys / {st.open_asks} sells{waiting} | "
            f"round trips {st.round_trips} | grid profit {fmt_amount(st.grid_profit)} {grid.quote} | "
            f"fees {fees} | position {sign}{fmt_amount(st.position)} {grid.base} | floating PnL {floating} | "
            f"uptime {format_duration(uptime)}")


def grid_params(t: Any) -> dict[str, Any]:
    """What identifies a grid across restarts: what decides its levels and orders. (Levels are not
    compared directly: an auto-price grid's levels depend on the price when it was created.)"""
    params: dict[str, Any] = {"symbol": t.symbol, "grid_mode": t.grid_mode, "grid_num": t.grid_num,
                              "quantity": f"{t.quantity:f}", "auto_price": t.auto_price}
    if t.auto_price:
        params["price_range"] = f"{t.price_range:f}"
    else:
        params["grid_lower"] = f"{t.grid_lower:f}"
        params["grid_upper"] = f"{t.grid_upper:f}"
    return params


def describe_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def market_rules(client: BackpackClient, symbol: str, base_url: str) -> MarketRules:
    """The market's rules from the exchange; an unknown symbol is the user's to fix."""
    try:
        markets = client.markets()
    except TransientError as e:
        raise BotError(f"cannot reach the exchange at {base_url}: {e}") from None
    by_symbol = {m.symbol: m for m in markets}
    rules = by_symbol.get(symbol)
    if rules is None:
        close = difflib.get_close_matches(symbol, list(by_symbol), n=3, cutoff=0.7)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise InputError(f"unknown symbol {symbol} on {base_url}{hint} (set trading.symbol)")
    if rules.order_book_state in ("Closed", "CancelOnly"):
        raise InputError(f"{rules.symbol} is not trading now (order book {rules.order_book_state})")
    return rules


def make_grid(rules: MarketRules, t: Any, price: Decimal) -> tuple[GridSpec, list[str]]:
    """The grid the config asks for on this market at this price (and notes worth a warning)."""
    try:
        return build_grid(rules, mode=GridMode(t.grid_mode), grid_num=t.grid_num, quantity=t.quantity,
                          post_only=t.post_only, lower=t.grid_lower, upper=t.grid_upper,
                          auto_price=t.auto_price, price_range=t.price_range, price=price)
    except GridError as e:
        raise InputError(str(e)) from None


# --------------------------------------------------------------------------------- the bot
class GridBot:
    def __init__(self, cfg: Config, *, signer: Signer | None = None, tag: int | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = wall_clock_ms,
                 stale_after: float = 5.0, ws_ping_interval: float = 20.0,
                 client: BackpackClient | None = None, label: str = "",
                 sleep: Callable[[float], None] = time.sleep, store: StateStore | None = None,
                 reset: bool = False) -> None:
        self.cfg = cfg
        self.t = cfg.trading
        if signer is None and cfg.api.api_secret:
            signer = Signer(cfg.api.api_secret)
        self.signer = signer
        self.client = client or BackpackClient(cfg.api.base_url, signer)
        self.clock = clock
        self.wall_ms = wall_ms
        self.sleep = sleep
        self.stale_after = stale_after
        self.ws_ping_interval = ws_ping_interval
        self.tag = tag
        self.label = label
        self.store = store
        self.reset = reset
        self.grid_id: int | None = None
        self.grid_created_ms = 0
        self.resumed = False
        self.ready = True  # False after a restart until the exchange has been reconciled
        self.events: queue.Queue[Any] = queue.Queue()
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.stream: MarketStream | None = None
        self.om: OrderManager | None = None
        self.grid: GridSpec | None = None
        self.rules: MarketRules | None = None
        self.price: Decimal | None = None
        self.price_source = "rest"
        self.last_ws_price = 0.0
        self.price_us = 0  # exchange time (µs) of the price in self.price, for stream prices
        self.started = 0.0
        self.started_ms = 0
        self.shutting_down = False
        self._reconcile_now = False
        self.polls = 0  # completed REST checks (tests wait on it)
        # The order stream is trusted once an order event has arrived on the current connection
        # (Backpack acknowledges no subscription); until then the REST check runs every interval.
        self.stream_verified = False
        self._gap_fill_after: float | None = None  # seconds down, while a reconnect's gap-fill is due

    # -- control
    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()
            self.events.put(None)  # wake the loop

    # -- startup: everything before the first order
    def market_rules(self) -> MarketRules:
        return market_rules(self.client, self.t.symbol, self.cfg.api.base_url)

    def check_clock(self) -> None:
        try:
            server = self.client.server_time_ms()
        except BackpackError:
            return
        skew = (self.wall_ms() - server) / 1000
        if abs(skew) >= 5:
            raise BotError(f"this machine's clock is {skew:+.1f} s off the exchange's: signed requests "
                           f"would be refused; sync the clock (e.g. enable NTP) and start again")
        if abs(skew) >= 1:
            log.warning("this machine's clock is %+.1f s off the exchange's; signed requests allow 5 s", skew)

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        try:
            return self.client.balances()
        except RequestRejected as e:
            raise InputError(f"the exchange refused our signed request ({e.code}: {e.message}): check "
                             f"api.api_key and api.api_secret, and the machine's clock") from None
        except TransientError as e:
            raise BotError(f"cannot read balances: {e}") from None

    def current_price(self) -> Decimal:
        try:
            return self.client.ticker_price(self.t.symbol)
        except TransientError as e:
            raise BotError(f"cannot read the price of {self.t.symbol}: {e}") from None

    def build(self, price: Decimal) -> GridSpec:
        assert self.rules is not None
        grid, notes = make_grid(self.rules, self.t, price)
        for n in notes:
            log.warning("%s", n)
        return grid

    def check_funds(self, grid: GridSpec, price: Decimal,
                    balances: dict[str, tuple[Decimal, Decimal]]) -> dict[str, Decimal]:
        _, plan = initial_plan(grid, price)
        need = funds_needed(grid, plan)
        missing = []
        for asset, amount in need.items():
            have = balances.get(asset, (Decimal(0), Decimal(0)))[0]
            if amount > have:
                missing.append(f"{fmt_amount(amount - have)} {asset} (needs {fmt_amount(amount)}, "
                               f"{fmt_amount(have)} available)")
        if missing:
            raise InputError("not enough balance for this grid: missing " + " and ".join(missing) +
                             "; deposit it, or lower trading.quantity or trading.grid_num")
        # A buy pays its maker fee in the base it receives; its counter-sell sells the full quantity.
        per_trip = grid.quantity * self.t.maker_fee
        spare = balances.get(grid.base, (Decimal(0), Decimal(0)))[0] - need.get(grid.base, Decimal(0))
        if per_trip > 0 and spare < per_trip * (len(grid.levels) - 1):
            log.warning("little spare %s: buys pay their fee in %s, so each round trip uses %s %s beyond what "
                        "the grid locks; the %s spare covers %d round trip(s), then counter-sells are refused "
                        "until you add %s", grid.base, grid.base, fmt_amount(per_trip), grid.base,
                        fmt_amount(spare), int(spare / per_trip), grid.base)
        return need

    def log_grid(self, grid: GridSpec, price: Decimal, need: dict[str, Decimal]) -> None:
        empty, plan = initial_plan(grid, price)
        s = summarize(grid, self.t.maker_fee)
        step = (f"step {fmt_amount(s.step_min)}" if s.step_min == s.step_max
                else f"steps {fmt_amount(s.step_min)}..{fmt_amount(s.step_max)}")
        pct = (f"{s.step_pct_min}%" if s.step_pct_min == s.step_pct_max
               else f"{s.step_pct_min}%..{s.step_pct_max}%")
        buys = sum(1 for o in plan if o.side is Side.BID)
        log.info("grid: %s %d levels %s..%s %s, %s (%s); price %s, empty level %d (%s); %d buys and %d sells "
                 "of %s %s", self.t.symbol, len(grid.levels), grid.levels[0], grid.levels[-1],
                 grid.mode.value, step, pct, price, empty, grid.levels[empty], buys, len(plan) - buys,
                 fmt_amount(grid.quantity), grid.base)
        log.info("grid: locks %s; net profit per round trip %s..%s %s after two maker fees of %s%%",
                 " + ".join(f"{fmt_amount(v)} {k}" for k, v in need.items()),
                 fmt_amount(s.profit_min), fmt_amount(s.profit_max), grid.quote,
                 fmt_amount(self.t.maker_fee * 100))
        for o in plan:
            log.debug("grid: level %d %s %s @ %s", o.level, o.side.value, o.quantity, o.price)
        if s.profit_min <= 0:
            log.warning("grid step too small: the narrowest step (%s%%) does not cover two maker fees of "
                        "%s%%, so a round trip there loses money; widen the range or lower grid_num",
                        s.step_pct_min, fmt_amount(self.t.maker_fee * 100))

    def settings(self) -> Settings:
        assert self.rules is not None
        # An order whose answer was lost is looked up once neither its signature window nor our read
        # timeout can still let it arrive.
        window = max(self.client.window_ms, int(self.client.timeout[1] * 1000))
        return Settings(window_ms=window, max_multiplier=self.rules.max_multiplier,
                        min_multiplier=self.rules.min_multiplier)

    def prepare(self) -> Decimal:
        """Market rules, clock, price, then resume the saved grid or lay out a new one (grid, funds):
        every check before the first order."""
        for w in self.cfg.warnings:
            log.warning("%s", w)
        self.rules = self.market_rules()
        self.check_clock()
        price = self.current_price()
        saved = self.store.active_grid() if self.store is not None else None
        params = grid_params(self.t)
        if saved is not None and self.reset:
            self.reset_grid(saved)
            saved = None
        elif self.reset:
            log.info("--reset: no running grid to reset in %s", self.store.path if self.store else "memory")
        if saved is not None and saved.params != params:
            raise InputError(
                f"the state file {self.store.path} holds a running grid with other parameters "
                f"({describe_params(saved.params)}): put those settings back to resume it, or start with "
                f"--reset to cancel its orders and begin this grid")
        if saved is not None:
            self.resume(saved)
        else:
            self.fresh(price)
        return price

    def fresh(self, price: Decimal) -> None:
        grid = self.build(price)
        need = self.check_funds(grid, price, self.balances())
        self.grid = grid
        self.log_grid(grid, price, need)
        if self.tag is None:
            used = self.store.used_tags() if self.store is not None else set()
            free = [x for x in range(1, 256) if x not in used] or list(range(1, 256))
            self.tag = random.choice(free)
        self.om = OrderManager(grid, tag=self.tag, settings=self.settings())
        self.grid_created_ms = self.wall_ms()
        if self.store is not None:
            self.grid_id = self.store.create_grid(grid_params(self.t), grid, self.tag, self.grid_created_ms)

    def resume(self, saved: SavedGrid) -> None:
        assert self.store is not None
        self.balances()  # the keys still work
        self.grid = saved.spec
        self.tag = saved.tag
        self.grid_id = saved.id
        self.grid_created_ms = saved.created_ms
        self.om = OrderManager(saved.spec, tag=saved.tag, settings=self.settings())
        self.store.load(saved, self.om)
        self.resumed = True
        self.ready = False
        log.info("resuming grid %d from %s: %s %d levels %s..%s, %d round trips so far", saved.id,
                 self.store.path, saved.spec.symbol, len(saved.spec.levels), saved.spec.levels[0],
                 saved.spec.levels[-1], self.om.round_trips)

    def reset_grid(self, saved: SavedGrid) -> None:
        """--reset: cancel the saved grid's orders (only those), then forget it."""
        assert self.store is not None
        log.info("--reset: cancelling the orders of grid %d (%s)", saved.id, describe_params(saved.params))
        old = OrderManager(saved.spec, tag=saved.tag, settings=self.settings())
        self.store.load(saved, old)
        try:
            old.apply_open_orders(self.client.open_orders(saved.spec.symbol), self.wall_ms())
        except BackpackError as e:
            raise BotError(f"--reset: cannot list open orders: {e}") from None
        if not self.cancel_all(old, saved.spec.symbol):
            self.store.save(saved.id, old, self.wall_ms())
            raise BotError("--reset: some of the old grid's orders could not be cancelled; "
                           "try again, or cancel them on Backpack")
        self.store.save(saved.id, old, self.wall_ms())
        self.store.set_status(saved.id, "reset", self.wall_ms())

    def reconcile(self) -> None:
        """After a restart: what happened while we were down, settled against the exchange."""
        assert self.om is not None
        om = self.om
        unknown = sum(1 for o in om.orders.values() if o.state is OrderState.UNKNOWN)
        fills_before = om.fill_count
        as_of = self.wall_ms()
        try:
            orders = self.client.open_orders(self.t.symbol)
            fills = self.client.fills(self.t.symbol, from_ms=self.fill_checkpoint())
        except BackpackError as e:
            # Nothing is placed until this has been done (act() waits for it): the next check retries.
            log.warning("cannot reconcile yet (%s); trying again at the next check", e)
            return
        for f in sorted(fills, key=lambda f: f.trade_id):
            om.apply_fill(f)
        foreign = om.apply_open_orders(orders, as_of)
        self.ready = True
        on_book = sum(1 for o in om.orders.values() if o.state is OrderState.OPEN and not o.missing)
        missing = sum(1 for o in om.orders.values() if o.state is OrderState.OPEN and o.missing)
        waiting = sum(1 for p in om.pairs if p.order is None)
        log.info("reconciled: %d of our orders on the book, %d fill(s) while stopped, %d order(s) with an "
                 "unknown outcome to settle, %d missing to look up, %d pair(s) to (re)place; %d foreign "
                 "order(s) left alone", on_book, om.fill_count - fills_before, unknown, missing, waiting,
                 foreign)
        self.log_notes()
        self.save()
        if self.store is not None and self.grid_id is not None:
            self.store.set_checkpoint(self.grid_id, as_of)

    def save(self) -> None:
        if self.store is not None and self.grid_id is not None and self.om is not None:
            self.store.save(self.grid_id, self.om, self.wall_ms())

    # -- running
    def run(self) -> RunResult:
        self.started = self.clock()
        self.started_ms = self.wall_ms()
        try:
            price = self.prepare()
        except BotError as e:
            log.error("%s", e)
            return RunResult(e.exit_code, str(e), None)
        assert self.om is not None and self.grid is not None
        self.price = price
        try:
            if self.t.use_websocket:
                self.stream = MarketStream(self.cfg.api.ws_url, self.t.symbol, self.events,
                                           signer=self.signer, private=self.signer is not None,
                                           stale_after=self.stale_after,
                                           ping_interval=self.ws_ping_interval)
                self.stream.start()
                self.await_stream(5.0)
            if self.resumed and self.om.pairs:
                self.reconcile()
            else:
                # A new grid, or one whose process died before it saved its first orders.
                empty = self.om.start(price)
                log.info("placing the initial grid (level %d stays empty)", empty)
            self.act()
            self.loop()
        except Exception as e:  # an unexpected bug: say so, then still try to stop cleanly
            log.exception("unexpected error: %s", e)
            self.stop_reason = f"unexpected error: {e}"
            code = EXIT_RUNTIME
        else:
            code = EXIT_OK
        self.shutdown()
        return RunResult(code, self.stop_reason, self.om.stats(self.price))

    def await_stream(self, timeout: float) -> None:
        """Give the WebSocket a moment to connect and subscribe before the first orders go out, so
        their events (and early fills) arrive on the order stream. Trading starts anyway after
        ``timeout``: REST covers until the stream is up."""
        deadline = self.clock() + timeout
        while self.stream is not None and not self.stream.up and self.clock() < deadline:
            if self.stop_event.is_set():
                return
            self.drain_events(min(0.2, max(0.0, deadline - self.clock())))
        if self.stream is not None and not self.stream.up:
            log.warning("the WebSocket is not up after %g s: starting on REST prices and checks", timeout)

    def check_interval(self) -> float:
        """Seconds between REST checks: ``interval``, or five times that while the order stream is
        verified (fills then arrive at once; REST is the safety net)."""
        verified = self.stream_verified and self.stream is not None and self.stream.up
        return self.t.interval * (STREAM_POLL_FACTOR if verified else 1)

    def loop(self) -> None:
        assert self.om is not None
        last_poll = self.clock()
        next_stats = last_poll + self.t.interval
        deadline = self.started + self.t.duration if self.t.duration else None
        while not self.stop_event.is_set():
            now = self.clock()
            if deadline is not None and now >= deadline:
                self.request_stop(f"duration of {self.t.duration:g} s reached")
                break
            next_poll = last_poll + self.check_interval()
            wake = min(next_poll, next_stats, deadline if deadline is not None else next_poll)
            self.drain_events(max(0.0, min(wake - now, 1.0)))
            if self.stop_event.is_set():
                break
            if self.clock() >= last_poll + self.check_interval() or self._reconcile_now:
                self._reconcile_now = False
                if self.ready:
                    self.poll()
                else:
                    self.reconcile()
                last_poll = self.clock()
            self.act()
            self.save()
            if self.clock() >= next_stats:
                self.log_stats()
                next_stats = self.clock() + self.t.interval

    def drain_events(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the first event, then take whatever else is queued."""
        try:
            ev = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self.handle(ev)
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                return

    def handle(self, ev: Any) -> None:
        assert self.om is not None
        if isinstance(ev, TickerEvent):
            self.last_ws_price = ev.received
            if ev.event_time_us >= self.price_us:
                self.price, self.price_us = ev.price, ev.event_time_us
            if self.price_source != "ws":
                if self.price_source == "rest-fallback":
                    log.info("WebSocket prices are back")
                self.price_source = "ws"
        elif isinstance(ev, OrderEvent):
            if not self.stream_verified:
                self.stream_verified = True
                log.info("order stream live: fills are acted on as they happen; REST checks every %g s",
                         self.t.interval * STREAM_POLL_FACTOR)
            fill = ev.update.fill
            if fill is not None and ev.update.engine_time_us > self.price_us:
                # Our fill is the latest trade: fresher than the ticker (pushed once a second), and the
                # price at which the fill's own counter-order is sure to rest.
                self.price, self.price_us = fill.price, ev.update.engine_time_us
            self.om.apply_update(ev.update, self.wall_ms())
            self.log_notes()
        elif isinstance(ev, StreamUp):
            self.stream_verified = False
            if ev.reconnect:
                log.info("WebSocket back after %.1f s down; filling the gap from open orders and fill "
                         "history", ev.down_for)
                self._gap_fill_after = ev.down_for
                self._reconcile_now = True
        elif isinstance(ev, StreamDown):
            self.stream_verified = False
            log.warning("WebSocket down (%s): trading on REST prices and REST checks every %g s until it "
                        "is back", ev.reason, self.t.interval)
        elif isinstance(ev, StreamError):
            log.warning("WebSocket: %s", ev.message)

    def ws_fresh(self) -> bool:
        return (self.stream is not None and self.stream.up
                and self.clock() - self.last_ws_price < self.stale_after)

    def refresh_price(self) -> None:
        """Use the WebSocket price while it is fresh; otherwise ask REST, and say so once."""
        if self.ws_fresh():
            return
        try:
            self.price = self.client.ticker_price(self.t.symbol)
        except BackpackError as e:
            log.warning("cannot read the price over REST: %s", e)
            return
        if self.t.use_websocket and self.price_source != "rest-fallback":
            log.warning("no fresh WebSocket price: using the REST price %s", self.price)
            self.price_source = "rest-fallback"

    def fill_checkpoint(self) -> int:
        """Where fill history is read from: the last fill of this grid (or its creation), never this
        process's start, so fills that happened while the bot was down are found. A minute of
        overlap: fills are de-duplicated by trade id, and the clocks may differ a little."""
        assert self.om is not None
        return max(self.om.last_fill_ms, self.grid_created_ms) - 60_000

    def poll(self) -> None:
        """The periodic REST check: open orders, then fills since the checkpoint."""
        assert self.om is not None
        as_of = self.wall_ms()
        try:
            orders = self.client.open_orders(self.t.symbol)
            fills = self.client.fills(self.t.symbol, from_ms=self.fill_checkpoint())
        except BackpackError as e:
            log.warning("order check failed, trying again next interval: %s", e)
            self.refresh_price()
            self.polls += 1
            return
        new_fills = 0
        for f in sorted(fills, key=lambda f: f.trade_id):
            new_fills += self.om.apply_fill(f)
        missing_before = sum(1 for o in self.om.live.values() if o.missing)
        foreign = self.om.apply_open_orders(orders, as_of)
        if self._gap_fill_after is not None:
            missing = sum(1 for o in self.om.live.values() if o.missing) - missing_before
            log.info("gap-fill after %.1f s down: %d fill(s) the stream missed, %d order(s) gone from the "
                     "book to look up", self._gap_fill_after, new_fills, max(0, missing))
            self._gap_fill_after = None
        if foreign:
            log.debug("%d open order(s) on %s are not this grid's; leaving them alone", foreign, self.t.symbol)
        self.refresh_price()
        self.log_notes()
        self.save()
        if self.store is not None and self.grid_id is not None:
            self.store.set_checkpoint(self.grid_id, as_of)
        self.polls += 1

    def act(self) -> None:
        """Whatever the grid needs now. Cheap when there is nothing to do (no I/O). Nothing at all
        before a resumed grid has been reconciled with the exchange."""
        assert self.om is not None
        if self.ready:
            self.perform(self.om.actions(self.wall_ms(), self.price))

    def perform(self, actions: Sequence[Any]) -> None:
        places = [a for a in actions if isinstance(a, Place)]
        for i in range(0, len(places), BATCH_SIZE):
            self.place(places[i:i + BATCH_SIZE])
        self.perform_other(actions)

    def perform_other(self, actions: Sequence[Any], om: OrderManager | None = None,
                      symbol: str | None = None) -> None:
        """Lookups and cancels (for this grid, or for ``om`` on ``symbol`` during --reset)."""
        om = om or self.om
        assert om is not None
        symbol = symbol or self.t.symbol
        for a in actions:
            if isinstance(a, Lookup):
                self.lookup(a, om, symbol)
            elif isinstance(a, Cancel):
                self.cancel(a, om, symbol)
        self.log_notes(om)

    def _request(self, p: Place) -> OrderRequest:
        assert self.grid is not None
        return OrderRequest(self.t.symbol, p.side, p.price, p.quantity, p.client_id, self.grid.post_only)

    def place(self, batch: Sequence[Place]) -> None:
        """Send orders: one request, or one batch request for several. Never retried blindly."""
        assert self.om is not None
        now = self.wall_ms()
        for p in batch:
            self.om.sending(p.client_id, now)
            log.info("placing %s %s @ %s (level %d, clientId %d)", p.side.value, p.quantity, p.price,
                     p.level, p.client_id)
        self.save()  # the intents, clientIds included, are on disk before anything is sent
        try:
            if len(batch) == 1:
                results: list[Order | BatchError] = [self.client.place_order(self._request(batch[0]))]
            else:
                results = self.client.place_orders([self._request(p) for p in batch])
        except OrderRejected as e:
            results = [BatchError(e.code, e.message)] * len(batch)
        except UnknownOutcome as e:
            log.warning("placement outcome unknown (%s): looking the order(s) up by clientId once the "
                        "request can no longer arrive", e)
            for p in batch:
                self.om.unknown(p.client_id, self.wall_ms())
            return
        except TransientError as e:
            log.warning("could not send the order(s): %s", e)
            for p in batch:
                self.om.not_sent(p.client_id, self.wall_ms())
            return
        now = self.wall_ms()
        for p, r in zip(batch, results):
            if isinstance(r, BatchError):
                self.om.rejected(p.client_id, r.code, r.message, now)
            else:
                self.om.placed(p.client_id, r, now)

    def lookup(self, a: Lookup, om: OrderManager, symbol: str) -> None:
        try:
            order = self.client.find_order(symbol, a.client_id, since_ms=a.since_ms)
            fills = []
            if order is not None and order.executed_quantity > 0:
                fills = self.client.fills(symbol, from_ms=a.since_ms, order_id=order.id)
        except BackpackError as e:
            log.warning("lookup of clientId %d failed, will retry: %s", a.client_id, e)
            return
        om.resolve(a.client_id, order, fills, self.wall_ms())

    def cancel(self, a: Cancel, om: OrderManager, symbol: str) -> None:
        try:
            result = self.client.cancel_order(symbol, a.order_id)
        except NotFound:
            om.cancel_result(a.client_id, None, self.wall_ms())
            return
        except BackpackError as e:
            log.warning("cancel of order %s failed, will retry: %s", a.order_id, e)
            om.cancel_failed(a.client_id)
            return
        if result == CANCEL_PENDING:
            return  # accepted, not yet executed: the next snapshot or lookup tells
        assert isinstance(result, Order)
        om.cancel_result(a.client_id, result, self.wall_ms())

    def log_notes(self, om: OrderManager | None = None) -> None:
        om = om or self.om
        assert om is not None
        for level, message in om.drain_notes():
            log.log(logging.getLevelName(level), "%s", message)

    def log_stats(self) -> None:
        assert self.om is not None and self.grid is not None
        source = "" if self.price_source == "ws" or not self.t.use_websocket else " (REST)"
        log.info("%s", format_stats(self.om.stats(self.price), self.grid, self.clock() - self.started, source))

    # -- stopping
    def shutdown(self) -> None:
        assert self.om is not None and self.grid is not None
        self.shutting_down = True
        log.info("stopping: %s", self.stop_reason or "asked to stop")
        if self.stream is not None:
            self.stream.stop()
        closed = False
        if self.t.on_exit == "keep":
            live = self.om.live_orders()
            log.info("on_exit is keep: leaving %d order(s) on the book; the next start resumes this grid",
                     len(live))
        else:
            closed = self.cancel_all(self.om, self.t.symbol)
        self.final_fills()
        self.save()
        if self.store is not None and self.grid_id is not None:
            # A grid whose orders are all cancelled is closed: the next start lays out a new one. One with
            # orders left (kept, or not confirmed cancelled) stays running, so the next start resumes it.
            if closed:
                self.store.set_status(self.grid_id, "stopped", self.wall_ms())
        log.info("final %s", format_stats(self.om.stats(self.price), self.grid, self.clock() - self.started,
                                          final=True))

    def cancel_all(self, om: OrderManager, symbol: str, timeout: float = 30.0) -> bool:
        """Cancel every order of ``om``'s grid, and only those, until a snapshot confirms it. Returns
        whether none is left."""
        deadline = self.clock() + timeout
        while om.live_orders() and self.clock() < deadline:
            self.perform_other([*om.cancels(), *om.lookups(self.wall_ms())], om, symbol)
            if not om.live_orders():
                break
            as_of = self.wall_ms()
            try:
                om.apply_open_orders(self.client.open_orders(symbol), as_of)
            except BackpackError as e:
                log.warning("cannot list open orders while stopping: %s", e)
            self.perform_other(om.lookups(self.wall_ms()), om, symbol)
            if om.live_orders():
                # Left: an order whose placement outcome is unknown, waiting for its signature window
                # to pass before it can be looked up, or a cancel the exchange accepted (202) but
                # had not yet executed.
                self.sleep(0.5)
        left = om.live_orders()
        if left:
            log.error("could not confirm the cancel of %d order(s): %s; check them on Backpack", len(left),
                      ", ".join(f"{o.order_id or o.client_id} ({o.side.value} @ {o.price})" for o in left))
            return False
        log.info("all of this grid's orders are cancelled")
        return True

    def final_fills(self) -> None:
        assert self.om is not None
        try:
            for f in self.client.fills(self.t.symbol, from_ms=self.fill_checkpoint()):
                self.om.apply_fill(f)
        except BackpackError as e:
            log.warning("cannot read the last fills: %s", e)
        self.log_notes()

    def warn_forced_exit(self) -> None:
        """The last words of a forced exit: which orders may still be on the book. (Called from the
        signal handler: it only reads state and logs.)"""
        live = self.om.live_orders() if self.om is not None else []
        if live:
            log.warning("forced exit: %d order(s) may still be open: %s; the next start settles them, or "
                        "cancel them on Backpack", len(live),
                        ", ".join(f"{o.order_id or o.client_id} ({o.side.value} @ {o.price})" for o in live))
        else:
            log.warning("forced exit")


# --------------------------------------------------------------------------------- paper mode
def paper_path(path: str, default_ext: str) -> str:
    """grid_bot.log -> grid_bot.paper.log: paper runs never share files with live ones."""
    root, ext = os.path.splitext(path)
    return f"{root}.paper{ext or default_ext}"


def open_store(cfg: Config, paper: bool, *, readonly: bool = False) -> StateStore:
    path = paper_path(cfg.state_file, ".db") if paper else cfg.state_file
    try:
        return StateStore(path, readonly=readonly)
    except StateError as e:
        raise InputError(str(e)) from None


def paper_market(cfg: Config) -> tuple[Any, Decimal, dict[str, Decimal], float]:
    """The simulated market of paper mode: (its MarketSpec, the starting price, the paper balances, the
    random walk's volatility per second)."""
    from simulator.markets import DEFAULT_MARKETS

    specs = {m.symbol: m for m in DEFAULT_MARKETS}
    t = cfg.trading
    spec = specs.get(t.symbol)
    if spec is None:
        raise InputError(f"paper mode simulates {', '.join(specs)}; set trading.symbol to one of them")
    if t.auto_price:
        mid = spec.default_price
        rel_step = 2 * t.price_range / (t.grid_num - 1)
        top = mid * (1 + t.price_range)
    else:
        assert t.grid_lower is not None and t.grid_upper is not None
        mid = ((t.grid_lower + t.grid_upper) / 2).quantize(spec.tick_size)
        rel_step = (t.grid_upper - t.grid_lower) / (t.grid_num - 1) / mid
        top = t.grid_upper
    # Prices move about half a grid step per second and drift back to the middle, so fills come
    # within seconds and the price stays inside the grid.
    volatility = float(rel_step) * 0.5
    balances = {spec.quote: (top * t.quantity * t.grid_num * 2).quantize(Decimal(1)) + 1000,
                spec.base: t.quantity * t.grid_num * 2}
    return spec, mid, balances, volatility


def start_paper(cfg: Config, seed: int | None = None) -> tuple[Any, Config, Signer]:
    """A simulator in this process, moving inside the grid, and a throwaway key with paper funds."""
    from simulator import SimConfig, Simulator

    t = cfg.trading
    spec, mid, balances, volatility = paper_market(cfg)
    sim = Simulator(SimConfig(symbol=t.symbol, price=mid, feed="random",
                              seed=int(time.time()) if seed is None else seed,
                              volatility=volatility, reversion=0.05, tick_seconds=1.0,
                              maker_fee=t.maker_fee, taker_fee=t.maker_fee * Decimal("1.25"),
                              balances=balances)).start()
    api_key, secret = generate_keypair()
    urls = sim.urls()
    return sim, cfg.replace_api(base_url=urls["rest"], ws_url=urls["ws"], api_key=api_key,
                                api_secret=secret), Signer(secret)


# --------------------------------------------------------------------------------- commands
def cmd_keygen(args: argparse.Namespace) -> int:
    api_key, secret = generate_keypair()
    if args.json:
        print(json.dumps({"api_key": api_key, "api_secret": secret}))
    else:
        print(f"BACKPACK_API_KEY={api_key}")
        print(f"BACKPACK_API_SECRET={secret}")
    return EXIT_OK


def install_signals(bot: GridBot) -> None:
    count = {"n": 0}

    def handler(signum: int, frame: Any) -> None:
        count["n"] += 1
        name = signal.Signals(signum).name
        if count["n"] == 1 or not bot.shutting_down:
            bot.request_stop(f"{name} received")
        elif signum == signal.SIGINT:
            # Exit now, from here: an exception raised into whatever the main thread is doing could be
            # swallowed by library code (websocket-client's close() catches everything). The state
            # file holds the last consistent save; the next start reconciles from it.
            bot.warn_forced_exit()
            for h in logging.getLogger("grid_bot").handlers:
                h.flush()
            os._exit(EXIT_FORCED)
        else:
            log.warning("%s received again: already stopping (Ctrl+C twice forces an exit)", name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, need_keys=not args.paper)
    except ConfigError as e:
        print(f"grid_bot: {args.config}: {e}", file=sys.stderr)
        return EXIT_INPUT
    sim = None
    signer = None
    store = None
    try:
        store = open_store(cfg, args.paper)
        if args.paper:
            # Each paper run has a new simulated exchange: a grid saved by an earlier one cannot resume.
            saved = store.active_grid()
            if saved is not None:
                store.set_status(saved.id, "stopped", wall_clock_ms())
            sim, cfg, signer = start_paper(cfg, args.seed)
        setup_logging(cfg, level=args.log_level,
                      log_file=paper_path(cfg.log.file, ".log") if args.paper else None)
    except InputError as e:
        print(f"grid_bot: {e}", file=sys.stderr)
        if sim is not None:
            sim.stop()
        if store is not None:
            store.close()
        return EXIT_INPUT
    if args.paper:
        log.info("PAPER MODE: a simulated exchange at %s with paper funds; no real orders", cfg.api.base_url)
    else:
        log.info("starting: %s on %s", cfg.trading.symbol, cfg.api.base_url)
    bot = GridBot(cfg, signer=signer, store=store, reset=args.reset)
    install_signals(bot)
    try:
        result = bot.run()
    finally:
        store.close()
        if sim is not None:
            sim.stop()
    if result.exit_code not in (EXIT_OK, EXIT_FORCED) and not cfg.log.console:
        # The log file has it, but a terminal (or systemd's journal) must see why we stopped.
        print(f"grid_bot: {result.reason}", file=sys.stderr)
    return result.exit_code


def iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC"


def status_report(store: StateStore, saved: SavedGrid, now_ms: int) -> dict[str, Any]:
    """The saved state of a grid as plain JSON-able data (decimals as strings)."""
    om = OrderManager(saved.spec, tag=saved.tag)
    store.load(saved, om)
    st = om.stats(None)
    spec = saved.spec
    return {
        "state_file": store.path,
        "grid": {"id": saved.id, "status": saved.status, "symbol": spec.symbol, "mode": spec.mode.value,
                 "levels": [f"{x:f}" for x in spec.levels], "quantity": f"{spec.quantity:f}",
                 "base": spec.base, "quote": spec.quote, "params": saved.params,
                 "created": iso(saved.created_ms), "last_checkpoint": iso(saved.checkpoint_ms),
                 "last_checkpoint_ms": saved.checkpoint_ms,
                 "last_checkpoint_ago_s": (now_ms - saved.checkpoint_ms) // 1000 if saved.checkpoint_ms else None,
                 "last_saved": iso(saved.updated_ms), "stopped": iso(saved.stopped_ms)},
        "stats": {"round_trips": st.round_trips, "grid_profit": f"{st.grid_profit:f}",
                  "fees": {k: f"{v:f}" for k, v in sorted(st.fees.items())}, "position": f"{st.position:f}",
                  "quote_flow": f"{st.quote_flow:f}", "fills": st.fills, "open_buys": st.open_bids,
                  "open_sells": st.open_asks},
        "levels": [{**row, "price": f"{row['price']:f}",
                    "executed": None if row["executed"] is None else f"{row['executed']:f}"}
                   for row in om.level_view()],
        # What each pair of adjacent levels wants now; "waiting" when its order is not on the book.
        "pairs": [{"pair": p.index, "side": p.side.value, "level": spec.pair_level(p.index, p.side),
                   "waiting": p.order is None, "round_trips": p.round_trips} for p in om.pairs],
    }


def print_status(r: dict[str, Any]) -> None:
    g, s = r["grid"], r["stats"]
    print(f"grid {g['id']} ({g['status']}) {g['symbol']} {g['mode']}, {len(g['levels'])} levels "
          f"{g['levels'][0]}..{g['levels'][-1]}, {g['quantity']} {g['base']} per order")
    ago = f" ({g['last_checkpoint_ago_s']} s ago)" if g["last_checkpoint_ago_s"] is not None else ""
    print(f"  created {g['created']}; last checkpoint {g['last_checkpoint'] or 'never'}{ago}"
          + (f"; stopped {g['stopped']}" if g["stopped"] else ""))
    print(f"  parameters: {describe_params(g['params'])}")
    print(f"  state file: {r['state_file']}")
    fees = ", ".join(f"{fmt_amount(Decimal(v))} {k}" for k, v in s["fees"].items()) or "0"
    print(f"round trips {s['round_trips']} | grid profit {fmt_amount(Decimal(s['grid_profit']))} {g['quote']} | "
          f"fees {fees} | position {fmt_amount(Decimal(s['position']))} {g['base']} | fills {s['fills']} | "
          f"open {s['open_buys']} buys / {s['open_sells']} sells")
    waiting = [p for p in r["pairs"] if p["waiting"]]
    if waiting:
        print("waiting: " + ", ".join(f"{p['side']} at level {p['level']}" for p in waiting)
              + " (it would cross the price, or it is retried after a rejection)")
    print("level  price           order")
    for row in reversed(r["levels"]):
        if row["side"] is None:
            order = "-"
        else:
            executed = f", {row['executed']} filled" if row["executed"] not in (None, "0") else ""
            order = f"{row['side']:<3} {row['state']:<8} {row['order_id'] or '(no id yet)'} " \
                    f"clientId {row['client_id']}{executed}"
        print(f"{row['level']:>5}  {row['price']:<14}  {order}")


def cmd_status(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, need_keys=False)
        store = open_store(cfg, args.paper, readonly=True)
    except (ConfigError, InputError) as e:
        print(f"grid_bot: {e}", file=sys.stderr)
        return EXIT_INPUT
    try:
        saved = store.active_grid() or store.latest_grid()
        if saved is None:
            print(f"grid_bot: no grid saved in {store.path} yet", file=sys.stderr)
            return EXIT_INPUT
        report = status_report(store, saved, wall_clock_ms())
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_status(report)
    return EXIT_OK


def keys_set(cfg: Config) -> bool:
    """Are API keys configured (not left as placeholders)? Malformed ones are an error to fix."""
    if PLACEHOLDER.fullmatch(cfg.api.api_key.strip()) or PLACEHOLDER.fullmatch(cfg.api.api_secret.strip()):
        return False
    check_keys(cfg.api.api_key, cfg.api.api_secret)
    return True


def public_client(cfg: Config, signer: Signer | None = None) -> BackpackClient:
    # plan and backtest answer a person at a terminal: fail fast when the exchange is unreachable,
    # and show the client's retry warnings as plain lines.
    logging.basicConfig(format="grid_bot: %(message)s", level=logging.WARNING)
    return BackpackClient(cfg.api.base_url, signer, timeout=(5.0, 15.0), max_attempts=2)


def saved_for_plan(cfg: Config, paper: bool) -> dict[str, Any] | None:
    """The running grid in the state file, as ``planner.plan_report`` wants it (None: there is none)."""
    path = paper_path(cfg.state_file, ".db") if paper else cfg.state_file
    if not os.path.exists(path):
        return None
    store = open_store(cfg, paper, readonly=True)
    try:
        saved = store.active_grid()
        if saved is None:
            return None
        om = OrderManager(saved.spec, tag=saved.tag)
        store.load(saved, om)
    finally:
        store.close()
    return {"id": saved.id, "status": saved.status, "params": saved.params, "levels": om.level_view(),
            "params_now": grid_params(cfg.trading)}


def cmd_plan(args: argparse.Namespace) -> int:
    from backtest import rules_from_spec, spec_from_rules
    from planner import plan_report, print_plan

    try:
        cfg = load_config(args.config, need_keys=False)
        with_keys = not args.paper and keys_set(cfg)
    except ConfigError as e:
        print(f"grid_bot: {args.config}: {e}", file=sys.stderr)
        return EXIT_INPUT
    t = cfg.trading
    try:
        if args.paper:
            spec, price, paper_funds, _ = paper_market(cfg)
            rules = rules_from_spec(spec)
            source = "paper mode: the simulator's starting price"
            balances: dict[str, tuple[Decimal, Decimal]] | None = {
                k: (v, Decimal(0)) for k, v in paper_funds.items()}
            balances_source: str | None = "paper"
        else:
            client = public_client(cfg, Signer(cfg.api.api_secret) if with_keys else None)
            try:
                rules = market_rules(client, t.symbol, cfg.api.base_url)
            except InputError:
                raise
            except BotError as e:
                raise BotError(f"{e} (plan --paper shows the grid on the built-in simulated market)") from None
            spec = spec_from_rules(rules)
            try:
                price = client.ticker_price(t.symbol)
                balances = client.balances() if with_keys else None
            except RequestRejected as e:
                raise InputError(f"the exchange refused our signed request ({e.code}: {e.message}): check "
                                 f"api.api_key and api.api_secret, and the machine's clock") from None
            except TransientError as e:
                raise BotError(f"cannot read from {cfg.api.base_url}: {e}") from None
            source = f"last price on {cfg.api.base_url}"
            balances_source = "exchange" if with_keys else None
        grid, notes = make_grid(rules, t, price)
        report = plan_report(grid, spec, price=price, price_source=source, maker_fee=t.maker_fee,
                             auto_price=t.auto_price, balances=balances, balances_source=balances_source,
                             saved=saved_for_plan(cfg, args.paper))
    except BotError as e:
        print(f"grid_bot: {e}", file=sys.stderr)
        return e.exit_code
    report["warnings"] = [*cfg.warnings, *notes, *report["warnings"]]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_plan(report)
    return EXIT_OK


def progress_bar(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests", end=end,
              file=sys.stderr, flush=True)
    return show


BACKTEST_FLAGS = ("grid_lower", "grid_upper", "grid_num", "quantity", "price_range", "maker_fee",
                  "grid_mode", "auto_price")


def backtest_market(cfg: Config, client: BackpackClient, offline_ok: bool) -> tuple[Any, str | None]:
    """The engine's market for the backtest: the exchange's rules, or, reading a file with the exchange
    out of reach, the simulator's built-in rules for the symbol (with a note)."""
    from backtest import spec_from_rules
    from simulator.markets import DEFAULT_MARKETS

    try:
        return spec_from_rules(market_rules(client, cfg.trading.symbol, cfg.api.base_url)), None
    except InputError:
        raise
    except BotError as e:
        builtin = {m.symbol: m for m in DEFAULT_MARKETS}.get(cfg.trading.symbol)
        if not offline_ok or builtin is None:
            raise
        return builtin, (f"{e}; using the built-in rules of {builtin.symbol} (tick {builtin.tick_size}, "
                         f"step {builtin.step_size}, min quantity {builtin.min_quantity})")


def cmd_backtest(args: argparse.Namespace) -> int:
    from backtest import (cached_history, format_result, format_sweep, iter_pairs, rules_from_spec,
                          run_backtest, sweep_order, sweep_settings)
    from backtest_plot import PlotUnavailable, plot, require_matplotlib
    from simulator.feeds import FeedError, read_klines_csv
    from simulator.rest import KLINE_SECONDS

    overrides: dict[str, Any] = {k: getattr(args, k) for k in BACKTEST_FLAGS if getattr(args, k) is not None}
    if isinstance(overrides.get("grid_num"), str) and overrides["grid_num"].isdigit():
        overrides["grid_num"] = int(overrides["grid_num"])
    try:
        if args.interval not in KLINE_SECONDS:
            raise ValueError(f"--interval {args.interval}: use one of {', '.join(KLINE_SECONDS)}")
        combos = sweep_settings(iter_pairs(args.sweep)) if args.sweep else [{}]
        if args.plot and len(combos) > 1:
            raise ValueError("--plot draws one backtest: leave out --sweep, or pick the settings to plot")
        if args.plot:
            require_matplotlib()
        configs = [load_config(args.config, need_keys=False, trading={**overrides, **c}) for c in combos]
    except ConfigError as e:
        print(f"grid_bot: {args.config}: {e}", file=sys.stderr)
        return EXIT_INPUT
    except (ValueError, PlotUnavailable) as e:
        print(f"grid_bot: {e}", file=sys.stderr)
        return EXIT_INPUT
    cfg, t = configs[0], configs[0].trading
    client = public_client(cfg)
    try:
        spec, note = backtest_market(cfg, client, offline_ok=args.klines is not None)
        if note:
            print(f"grid_bot: {note}", file=sys.stderr)
        if args.klines:
            candles = list(read_klines_csv(args.klines))
        else:
            iv = KLINE_SECONDS[args.interval]
            # Up to the start of the candle still forming: every candle before it has closed, so the
            # cache never records a range that lacks one.
            now = int(wall_clock_ms() // 1000) // iv * iv
            start = now - int(args.days * 86400) // iv * iv
            cache = args.cache or os.path.join(os.path.dirname(cfg.path), f"klines_{t.symbol}_{args.interval}.csv")
            try:
                candles = cached_history(
                    cache, lambda a, b: client.klines(t.symbol, args.interval, a, b), iv, start, now,
                    progress=progress_bar(f"fetching {t.symbol} {args.interval} klines"))
            except TransientError as e:
                raise BotError(f"cannot fetch klines from {cfg.api.base_url}: {e}") from None
            except OSError as e:
                raise InputError(f"cannot write the klines cache {cache}: {e.strerror} (use --cache)") from None
            print(f"grid_bot: {len(candles)} candles cached in {cache}", file=sys.stderr)
        if not candles:
            raise InputError("no candles to backtest: the file or the time range is empty")
        runs = []
        for c, run_cfg in zip(combos, configs):
            grid, _ = make_grid(rules_from_spec(spec), run_cfg.trading, candles[0].open)
            runs.append((c, grid, run_backtest(grid, spec, candles, run_cfg.trading.maker_fee,
                                               keep_series=bool(args.plot))))
    except FeedError as e:
        print(f"grid_bot: {e}", file=sys.stderr)
        return EXIT_INPUT
    except BotError as e:
        print(f"grid_bot: {e}", file=sys.stderr)
        return e.exit_code
    if args.sweep:
        if args.json:
            print(json.dumps([{"settings": c, **r.summary()} for c, _, r in
                              sorted(runs, key=lambda x: sweep_order(x[2]))], indent=2))
        else:
            print("\n".join(format_sweep([(c, r) for c, _, r in runs], spec.quote)))
        return EXIT_OK
    _, grid, result = runs[0]
    if args.json:
        print(json.dumps({**result.summary(), "grid": {"symbol": grid.symbol, "mode": grid.mode.value,
                                                       "levels": [f"{x:f}" for x in grid.levels],
                                                       "quantity": f"{grid.quantity:f}"}}, indent=2))
    else:
        print("\n".join(format_result(result, grid, t.maker_fee)))
    if args.plot:
        try:
            plot(result, grid, args.plot)
        except OSError as e:
            print(f"grid_bot: cannot write the plot {args.plot}: {e.strerror}", file=sys.stderr)
            return EXIT_INPUT
        print(f"grid_bot: plot written to {args.plot}", file=sys.stderr)
    return EXIT_OK


COMMANDS = ("run", "keygen", "status", "plan", "backtest")


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be above 0 (got {text})")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grid_bot.py", description="A grid-trading bot for Backpack Exchange.")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the grid (the default command)")
    run.add_argument("--config", default="config.json", help="config file (default config.json)")
    run.add_argument("--paper", action="store_true",
                     help="trade against a built-in simulator with paper funds; no keys needed")
    run.add_argument("--seed", type=int, help="paper mode: seed of the simulated price path (repeatable runs)")
    run.add_argument("--reset", action="store_true",
                     help="cancel the orders of the saved running grid and start this config's grid")
    run.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                     help="override log.level")
    run.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="print the saved state of the configured grid")
    st.add_argument("--config", default="config.json", help="config file (default config.json)")
    st.add_argument("--paper", action="store_true", help="the paper-mode state")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)
    pl = sub.add_parser("plan", help="show what the configured grid would place and need, placing nothing")
    pl.add_argument("--config", default="config.json", help="config file (default config.json)")
    pl.add_argument("--paper", action="store_true", help="the paper-mode market, price and balances")
    pl.add_argument("--json", action="store_true", help="print JSON")
    pl.set_defaults(func=cmd_plan)
    bt = sub.add_parser("backtest", help="run the configured grid over historical prices")
    bt.add_argument("--config", default="config.json", help="config file (default config.json)")
    src = bt.add_mutually_exclusive_group(required=True)
    src.add_argument("--klines", metavar="FILE.csv",
                     help="candles with a header row of Backpack's kline fields (start,open,high,low,close)")
    src.add_argument("--fetch", action="store_true", help="fetch candles from the exchange's public klines")
    bt.add_argument("--days", type=positive_float, default=30.0, help="--fetch: days of history (default 30)")
    bt.add_argument("--interval", default="1m", help="--fetch: candle interval: 1m, 5m, 15m, 1h, 1d... (default 1m)")
    bt.add_argument("--cache", metavar="FILE.csv",
                    help="--fetch: cache file (default klines_<SYMBOL>_<interval>.csv beside the config)")
    for key in ("grid_lower", "grid_upper", "grid_num", "quantity", "price_range", "maker_fee"):
        bt.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="X", help=f"override trading.{key}")
    bt.add_argument("--grid-mode", dest="grid_mode", choices=("arithmetic", "geometric"),
                    help="override trading.grid_mode")
    bt.add_argument("--auto-price", dest="auto_price", action=argparse.BooleanOptionalAction, default=None,
                    help="override trading.auto_price (the grid centred on the first candle's open)")
    bt.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                    help="run one backtest per value (repeatable: every combination) and print a table, "
                         "best return first")
    bt.add_argument("--plot", metavar="FILE.png", help="draw price, grid, fills and equity (needs matplotlib)")
    bt.add_argument("--json", action="store_true", help="print JSON")
    bt.set_defaults(func=cmd_backtest)
    kg = sub.add_parser("keygen", help="print a fresh ED25519 key pair (base64)")
    kg.add_argument("--json", action="store_true", help="print JSON instead of KEY=value lines")
    kg.set_defaults(func=cmd_keygen)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
