"""The running bot: the main loop of grid_bot, event dispatch, and shutdown.

One thread owns state: this one. The WebSocket thread only puts events on ``self.events``; the loop
takes them, feeds prices, order updates and fills to the ``OrderManager``, and has the ``Executor``
perform what the manager asks. The REST check (``Executor.sync``) runs every ``interval`` (five times
less often while the private order stream is verified), at once after a reconnect, and before
anything is placed on a resumed grid.

Time is injected (``clock``, ``wall_ms``, ``sleep``), so tests can drive the loop on a fake clock.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from gridbot.core.accounting import Figures, Stats, figures_since
from backpack_api import BackpackClient, BackpackError, Signer, wall_clock_ms
from gridbot.exchange.clock_watch import ClockWatch
from gridbot.ops.config import Config
from gridbot.core.errors import GridBotError
from gridbot.core.models import MarketRules
from gridbot.engine.executor import ActiveGrid, Executor
from gridbot.engine.exit_runner import ExitRunner
from gridbot.engine.stopping import shut_down
from gridbot.engine.perp_watch import PerpWatch, perp_watch_for
from gridbot.core.order_state import OrderState
from gridbot.ops.notify import Digest, ErrorWatch, Notifier
from gridbot.ops.systemd_notify import SystemdNotify
from gridbot.core.prices import LastPrice, PriceSource  # noqa: F401 (PriceSource: tests read the source)
from gridbot.ops.reports import (WaitWatch, format_figures, format_stats,
                                start_message)
from gridbot.core.risk import CarryOutExit, GridDecision, GridRisk, LayOut, PlaceOrders
from gridbot.engine.startup import Startup
from gridbot.engine.state_store import StateStore
from websocket_client import MarketStream, OrderEvent, StreamDown, StreamError, StreamUp, TickerEvent

log = logging.getLogger("grid_bot")

STREAM_POLL_FACTOR = 5  # while the order stream is verified, the REST safety net runs 5x less often
BURST_WAIT = 0.005      # the longest wait for a frame that had already arrived to be parsed and queued


@dataclass
class RunResult:
    """How a run ended: why, the final statistics, and the error that ended it (None: it stopped as asked, or
    an exit finished the grid). ``grid_bot.main`` turns the error into its line and exit code."""
    reason: str
    stats: Stats | None
    error: BaseException | None = None


class GridBot:
    def __init__(self, cfg: Config, *, signer: Signer | None = None, tag: int | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = wall_clock_ms,
                 sleep: Callable[[float], None] = time.sleep, stale_after: float = 5.0,
                 ws_ping_interval: float = 20.0, client: BackpackClient | None = None,
                 store: StateStore | None = None, reset: bool = False, adopt: bool = False,
                 notifier: Notifier | None = None, stream_wait: float = 5.0,
                 systemd: SystemdNotify | None = None) -> None:
        self.cfg = cfg
        self.t = cfg.trading
        if signer is None and cfg.api.api_secret:
            signer = Signer(cfg.api.api_secret)
        self.signer = signer
        self.client = client or BackpackClient(cfg.api.base_url, signer, window_ms=cfg.api.window_ms,
                                               requests_per_minute=cfg.api.requests_per_minute)
        self.clock, self.wall_ms, self.sleep = clock, wall_ms, sleep
        self.stale_after = stale_after
        self.ws_ping_interval = ws_ping_interval
        self.stream_wait = stream_wait  # how long the first orders wait for the WebSocket to be up
        self.store = store
        self.reset = reset
        self.executor = Executor(self.client, post_only=self.t.post_only, wall_ms=wall_ms, clock=clock, sleep=sleep)
        self.startup = Startup(cfg, self.client, self.executor, store, wall_ms=wall_ms, tag=tag, adopt=adopt)
        self.clock_watch = ClockWatch(self.client, cfg.api.window_ms, wall_ms, clock)
        self.events: queue.Queue[Any] = queue.Queue()
        self.stop_event = threading.Event()
        self.signal_reason: str | None = None   # set by a signal handler (signal_stop), acted on by the loop
        self.stop_reason = ""
        self.shutting_down = False
        self.stream: MarketStream | None = None
        self.g: ActiveGrid | None = None
        self.last: LastPrice | None = None
        self.price_fresh = True
        self.view: Stats | None = None   # the stats after the last step: for other threads (om is the loop's)
        self.started = 0.0
        self.ready = True        # False on a resumed grid until it has been settled with the exchange
        self.polls = 0           # completed REST checks (tests wait on it)
        # The order stream is trusted once an order event has arrived on the current connection
        # (Backpack acknowledges no subscription); until then the REST check runs every interval.
        self.stream_verified = False
        self.stream_up = False   # as the stream's own events (StreamUp, StreamDown) say
        self.gap_fill: float | None = None  # seconds the stream was down, while its gap-fill is due
        self.last_check = 0.0    # when the last REST check ran
        self.next_stats = 0.0    # when the next statistics line is due
        self.check_ok = True     # whether the last REST check reached the exchange
        self.last_ok_check = clock()
        self.last_step = clock()
        self.paper: str | None = None   # "random" or "live" in paper mode (what a forced exit leaves behind)
        self.waits = WaitWatch()     # levels waiting longer than three intervals, told once
        self.notifier = notifier
        self.systemd = systemd or SystemdNotify(env={})   # READY and the watchdog, under systemd only
        self.on_stopping: list[Callable[[], None]] = []    # called as the stop begins (paper mode: market frozen)
        self.digest: Digest | None = None
        self.watch: ErrorWatch | None = None
        self.risk: GridRisk | None = None    # exits and trailing (risk.py), once the grid is known
        self.failure: BaseException | None = None   # what stopped the loop, if not a request or an exit
        self.exits: ExitRunner | None = None
        self.rules: MarketRules | None = None   # the market's rules, once the grid is known
        self.perp: PerpWatch | None = None      # a perps grid's position, margin and funding (perp_watch.py)

    @property
    def om(self) -> Any:
        return self.g.om if self.g is not None else None

    @property
    def tag(self) -> int | None:
        return self.g.om.tag if self.g is not None else None

    @property
    def grid(self) -> Any:
        return self.g.om.grid if self.g is not None else None

    @property
    def price(self) -> Decimal | None:
        return self.last.price if self.last is not None else None

    # -- control
    def signal_stop(self, reason: str) -> None:
        """From a signal handler: an attribute set, no lock taken (commands/run.signal_handler)."""
        self.signal_reason = self.signal_reason or reason

    def take_signal(self) -> None:
        """A stop a signal asked for, made in the loop."""
        if self.signal_reason is not None and not self.stop_event.is_set():
            self.request_stop(self.signal_reason)

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()
            self.events.put(None)  # wake the loop

    # -- running
    def run(self) -> RunResult:
        """Start, run the loop until asked to stop, stop cleanly."""
        failed = self.begin()
        if failed is not None:
            return failed
        try:
            while not self.stop_event.is_set():
                self.step(self.wait_time())
                self.take_signal()
        except Exception as e:  # an unexpected bug: still stop cleanly; main reports it with its traceback
            self.failure, self.stop_reason = e, f"unexpected error: {e}"
        return self.finish()

    def begin(self) -> RunResult | None:
        """Everything before the loop: the checks, the stream, the first orders. Returns a result when
        the bot cannot start (nothing is placed then)."""
        self.started = self.clock()
        try:
            started = self.startup.prepare(reset=self.reset)
        except GridBotError as e:
            self.executor.close()
            self.tell("error", "refused to start", f"The bot refused to start: {e}")
            return RunResult(str(e), None, e)
        self.g, self.last = started.grid, LastPrice(started.price)
        self.last.updated = self.clock()   # read by the start-up just now
        self.exits = ExitRunner(self.client, self.executor, started.rules, self.cfg.risk,
                                window_ms=self.cfg.api.window_ms, sleep=self.sleep, wall_ms=self.wall_ms)
        self.rules = started.rules
        self.risk = GridRisk(self.cfg.risk)
        self.perp = perp_watch_for(self.cfg, self.client, self.executor, self.g, started.rules, self.clock)
        if self.notifier is not None:
            self.digest = Digest(self.notifier, self.notifier.cfg, self.g.om.grid.quote, self.clock())
            self.watch = ErrorWatch(self.notifier, self.notifier.cfg.error_after)
            self.g.listeners.append(self.digest.on_event)
            self.tell("start", "started", start_message(self.g.om.grid, started.price, started.resumed))
        self.last_check = self.clock()
        self.next_stats = self.last_check + self.t.interval
        try:
            if self.t.use_websocket:
                self.stream = MarketStream(self.cfg.api.ws_url, self.t.symbol, self.events, signer=self.signer,
                                           private=self.signer is not None, stale_after=self.stale_after,
                                           ping_interval=self.ws_ping_interval, clock=self.clock,
                                           window_ms=self.cfg.api.window_ms)
                self.stream.start()
                self.await_stream(self.stream_wait)
            if started.resumed and self.g.om.pairs:
                self.ready = False
                self.settle()
            elif not self.g.om.pairs and not self.g.om.risk.triggered:
                log.info("waiting for the price to cross the trigger price %s (it is %s): nothing is placed until "
                         "then", self.g.om.risk.trigger, started.price)
            # A resumed grid with no pairs (its process died before it saved its first orders, or after its
            # entry purchase) is laid out by act(), as a triggered grid is (GridRisk.decide: LayOut).
            self.act()
        except Exception as e:  # an unexpected bug: still stop cleanly; main reports it with its traceback
            self.failure, self.stop_reason = e, f"unexpected error: {e}"
            return self.finish()
        self.systemd.ready(f"{self.cfg.name}: {self.t.symbol} grid running")
        return None

    def finish(self) -> RunResult:
        assert self.g is not None
        self.shutdown()
        result = RunResult(self.stop_reason, self.g.om.stats(self.price), self.failure)
        fig = self.figures()
        self.tell("stop", "stopped", f"Stopped: {self.stop_reason or 'asked to stop'}.\n"
                  + format_stats(result.stats, self.g.om.grid, self.clock() - self.started, final=True)
                  + (f"\n{format_figures(fig, self.g.om.grid)}" if fig is not None else ""))
        return result

    # -- notifications (never block: they are queued for the notifier's thread)
    def tell(self, kind: str, title: str, body: str) -> None:
        if self.notifier is not None:
            self.notifier.send(kind, title, body)

    def healthy(self) -> bool:
        """For the heartbeat: the loop turns, the last REST check reached the exchange recently, and no
        order's outcome has been unknown for longer than ``error_after``."""
        now = self.clock()
        recent = max(60.0, 3 * self.check_interval())
        stuck = self.watch is not None and "lookup" in self.watch.told
        return (self.g is not None and not self.shutting_down and now - self.last_step < recent
                and self.check_ok and now - self.last_ok_check < recent + self.check_interval() and not stuck)

    def watch_health(self) -> None:
        """Tell the user about what has been wrong for longer than ``error_after``, and the digest."""
        if self.watch is None or self.digest is None or self.g is None:
            return
        now, om = self.clock(), self.g.om
        self.watch.update_all(now, exchange=not self.check_ok, stream=self.t.use_websocket and not self.stream_up,
                              lookup=any(o.state is OrderState.UNKNOWN for o in om.live.values()),
                              funds=bool(om.held_for_funds()), clock=self.clock_watch.skewed)
        self.digest.tick(now, lambda: format_stats(self.g.om.stats(self.price), self.g.om.grid,
                                                   self.clock() - self.started))

    def await_stream(self, timeout: float) -> None:
        """Give the WebSocket a moment to connect and subscribe before the first orders go out, so
        their events (and early fills) arrive on the order stream. Trading starts anyway after
        ``timeout``: REST covers until the stream is up."""
        deadline = self.clock() + timeout
        while not self.stream_up and self.clock() < deadline:
            self.take_signal()
            if self.stop_event.is_set():
                return
            self.drain_events(min(0.2, max(0.0, deadline - self.clock())))
        if not self.stream_up:
            log.warning("the WebSocket is not up after %g s: starting on REST prices and checks", timeout)

    def check_interval(self) -> float:
        """Seconds between REST checks: ``interval``, or five times that while the order stream is
        verified (fills then arrive at once; REST is the safety net)."""
        return self.t.interval * (STREAM_POLL_FACTOR if self.stream_verified and self.stream_up else 1)

    def next_check(self) -> float:
        """When the next REST check is due. The first comes one ``interval`` after the start, whatever
        the stream does, so a new grid has its first checkpoint (``status``) within seconds."""
        return self.last_check + (self.check_interval() if self.polls else self.t.interval)

    def deadline(self) -> float | None:
        return self.started + self.t.duration if self.t.duration else None

    def wait_time(self) -> float:
        """How long the loop may wait for an event before something else is due (at most 1 s)."""
        now, deadline = self.clock(), self.deadline()
        due = [self.next_check(), self.next_stats, now + 1.0, *([deadline] if deadline is not None else [])]
        return max(0.0, min(due) - now)

    def step(self, wait: float) -> None:
        """One turn of the loop: wait up to ``wait`` for events and handle them, then the REST check if
        it is due, whatever the grid needs, and the statistics line when due."""
        deadline = self.deadline()
        if deadline is not None and self.clock() >= deadline:
            self.request_stop(f"duration of {self.t.duration:g} s reached")
            return
        self.drain_events(wait)
        self.take_signal()
        if self.stop_event.is_set():
            return
        self.clock_watch.check()
        if self.clock() >= self.next_check() or self.gap_fill is not None:
            self.check()
            self.last_check = self.clock()
        if self.perp is not None and self.ready and self.perp.due() and not self.risk.finished:
            self.perp.check(self.g, self.price)
        self.act()
        if self.clock() >= self.next_stats:
            self.log_stats()
            self.next_stats = self.clock() + self.t.interval
        self.last_step = self.clock()
        self.systemd.kick()
        self.watch_health()
        self.view = self.g.om.stats(self.price) if self.g is not None else None

    def drain_events(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the first event, then take whatever else is queued, and the rest of
        a burst whose next frame had already arrived (``OrderEvent.more``), so that one act() answers
        the whole burst in one batch."""
        try:
            ev = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self.handle(ev)
            more = isinstance(ev, OrderEvent) and ev.more
            try:
                ev = self.events.get(timeout=BURST_WAIT) if more else self.events.get_nowait()
            except queue.Empty:
                return

    def handle(self, ev: Any) -> None:
        assert self.g is not None and self.last is not None
        if isinstance(ev, TickerEvent):
            self.last.stream_received = ev.received
            self.last.from_stream(ev.price, ev.event_time_us, ev.received)
        elif isinstance(ev, OrderEvent):
            if not self.stream_verified:
                self.stream_verified = True
                log.info("order stream live: fills are acted on as they happen; REST checks every %g s",
                         self.t.interval * STREAM_POLL_FACTOR)
            fill = ev.update.fill
            if fill is not None:
                # Our fill is the latest trade: fresher than the ticker (pushed once a second), and the
                # price at which the fill's own counter-order is sure to rest.
                self.last.from_stream(fill.price, ev.update.engine_time_us, self.clock())
            if self.perp is not None:
                self.perp.on_update(ev.update, self.g.om)
            self.g.om.news.apply_update(ev.update, self.wall_ms())
        elif isinstance(ev, StreamUp):
            self.stream_up, self.stream_verified = True, False
            if ev.reconnect:
                log.info("WebSocket back after %.1f s down; filling the gap from open orders and fill "
                         "history", ev.down_for)
                self.gap_fill = ev.down_for
        elif isinstance(ev, StreamDown):
            self.stream_up = self.stream_verified = False
            log.warning("WebSocket down (%s): trading on REST prices and REST checks every %g s until it "
                        "is back", ev.reason, self.t.interval)
        elif isinstance(ev, StreamError):
            log.warning("WebSocket: %s", ev.message)

    def refresh_price(self) -> None:
        """Use the WebSocket price while it is fresh; otherwise ask REST, and say so once."""
        assert self.last is not None
        if self.stream_up and self.clock() - self.last.stream_received < self.stale_after:
            return
        try:
            price = self.client.ticker_price(self.t.symbol)
        except BackpackError as e:
            log.warning("cannot read the price over REST: %s", e)
            return
        self.last.from_rest(price, fallback=self.t.use_websocket, at=self.clock())

    def settle(self) -> None:
        """A resumed grid: what happened while we were down, settled against the exchange. Nothing is
        placed until this has succeeded (``act`` waits for ``ready``)."""
        assert self.g is not None
        self.check_ok = self.executor.reconcile(self.g)
        if self.check_ok:
            self.last_ok_check = self.clock()
            self.ready = True

    def check(self) -> None:
        """The periodic REST check (and the gap-fill after a reconnect)."""
        assert self.g is not None
        if not self.ready:
            self.settle()
        else:
            result = self.executor.sync(self.g)
            self.check_ok = result.ok
            if result.ok:
                self.last_ok_check = self.clock()
            if not result.ok:
                log.warning("order check failed, trying again next interval: %s", result.error)
            elif self.gap_fill is not None:
                log.info("gap-fill after %.1f s down: %d fill(s) the stream missed, %d order(s) gone from the "
                         "book to look up", self.gap_fill, result.new_fills, result.newly_missing)
                self.gap_fill = None
            if result.foreign:
                log.debug("%d open order(s) on %s are not this grid's; leaving them alone", result.foreign,
                          self.t.symbol)
            self.refresh_price()
        self.polls += 1

    def act(self) -> None:
        """Whatever the grid needs now. Cheap when there is nothing to do (no I/O). Nothing at all
        before a resumed grid has been reconciled with the exchange. Exits and trailing come first:
        when an exit fires, no grid order is sent."""
        assert self.g is not None and self.risk is not None and self.exits is not None and self.rules is not None
        if self.ready and not self.risk.finished:
            if self.perp is not None and self.perp.pending is not None and self.g.om.risk.exit is None:
                self.risk.stop(self.g.om, *self.perp.pending[:2], self.price or self.g.om.grid.levels[0],
                               self.wall_ms(), self.perp.pending[2])
            decision = self.decide()
            if isinstance(decision, LayOut) and self.entry_at_trigger(self.rules, decision.price):
                self.risk.lay_out(self.g.om, decision.price, self.wall_ms())
                decision = self.decide()
            if isinstance(decision, CarryOutExit):
                if self.exits.carry_out(self.g, decision.price):
                    self.risk.exit_done()
            elif isinstance(decision, PlaceOrders):
                self.executor.perform(self.g, self.g.om.take_actions(self.wall_ms(), self.price))
            if self.risk.finished:
                ex = self.g.om.risk.exit
                if self.store is not None and self.g.grid_id is not None:
                    self.store.set_status(self.g.grid_id, "stopped", self.wall_ms())
                self.request_stop(f"{ex.reason}: {ex.detail}")
        self.g.publish()
        self.g.save()

    def fresh_price(self) -> Decimal | None:
        """The price exits, trailing and the trigger may act on: the last one, unless no source has told
        it for longer than the stream's staleness limit plus two REST checks (then None: they wait for a
        fresh one, and the log says so once)."""
        assert self.last is not None
        age = self.last.age(self.clock())
        fresh = age <= self.stale_after + 2 * self.check_interval()
        if fresh != self.price_fresh:
            self.price_fresh = fresh
            log.log(logging.INFO if fresh else logging.WARNING, "%s", "a fresh price again: exits, trailing and the "
                    "trigger act on it" if fresh else f"the last price is {age:.0f} s old: exits, trailing and the "
                    "trigger wait for a fresh one")
        return self.last.price if fresh else None

    def decide(self) -> GridDecision:
        """What exits and trailing decide on this update (core/risk.py), written down before the engine
        carries any of it out; what they have to say, logged (an exit notified too)."""
        assert self.g is not None and self.risk is not None
        decision = self.risk.decide(self.g.om, self.fresh_price(), self.wall_ms())
        self.g.save()
        for kind, text in self.risk.take_notes():
            if kind == "exit":
                log.warning("EXIT: %s", text)
                self.tell("exit", "exit", f"Exit: {text}.")
            elif kind == "trail-limit":
                log.warning("trailing: %s", text)
            else:
                log.info("%s", text if kind == "start" else f"{kind}: {text}")
        return decision

    def entry_at_trigger(self, rules: MarketRules, price: Decimal) -> bool:
        """The entry purchase of a grid laid out at its trigger (``Startup.entry_at_trigger``); one that
        ends short stops the bot (its error handed up in the result), nothing placed."""
        try:
            return self.startup.entry_at_trigger(self.g, rules, price)
        except GridBotError as e:
            self.failure = e
            self.request_stop(str(e))
            return False

    def log_stats(self) -> None:
        assert self.g is not None and self.last is not None
        self.waits.check(self.g.om, self.clock(), self.wall_ms(), self.price, 3 * self.t.interval)
        now_ms = self.wall_ms()
        self.g.note_price(self.last.price, now_ms)
        if self.store is not None and self.g.grid_id is not None:
            self.store.add_price(self.g.grid_id, now_ms, self.last.price)
        source = "" if self.last.source is PriceSource.STREAM or not self.t.use_websocket else " (REST)"
        log.info("%s", format_stats(self.g.om.stats(self.price), self.g.om.grid, self.clock() - self.started, source))

    # -- stopping
    def shutdown(self) -> None:
        shut_down(self)

    def figures(self) -> Figures | None:
        """The profit figures at the last price (None before the grid has started)."""
        return None if self.g is None else figures_since(self.g.om.risk.start, self.g.om.ledger, self.price,
                                                         self.wall_ms(), self.g.created_ms)
