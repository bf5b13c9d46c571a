"""Tier 3 on a fake clock: the running bot's loop and executor against an in-process simulator, driven one
step at a time. Time moves only when the test says so (``FakeClock.advance``): no test here sleeps.

The stream's state reaches the loop as events on its queue (``StreamUp``, ``StreamDown``, ``TickerEvent``,
``OrderEvent``): the values the WebSocket thread produces, fed here directly, so the loop's decisions are
tested without a socket's timing (the WebSocket client itself is tested over real sockets elsewhere).
"""
from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal

import pytest

from gridbot.engine.loop import STREAM_POLL_FACTOR, GridBot, PriceSource
from gridbot.ops.config import load_config
from gridbot.core.models import OrderStatus, OrderUpdate
from gridbot.core.order_state import OrderState
from simulator import SimControl, running_simulator
from tests.e2e import open_orders_of, write_config
from websocket_client import OrderEvent, StreamDown, StreamUp, TickerEvent

D = Decimal


class FakeClock:
    """Monotonic seconds and wall-clock milliseconds that move only on ``advance`` (or the bot's own
    ``sleep``). The wall clock starts at the real time, so the exchange's timestamps stay comparable."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.wall0 = int(time.time() * 1000)

    def monotonic(self) -> float:
        return self.t

    def wall_ms(self) -> int:
        return self.wall0 + int((self.t - 1000.0) * 1000)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    sleep = advance


@pytest.fixture
def sim():
    with running_simulator(feed="none", price=D("149.5")) as s:
        yield s


def requests_to(sim, method: str, path: str, since_us: int = 0) -> int:
    st = SimControl(sim.rest_url).state(journal_since_us=since_us)
    return sum(1 for e in st["journal"] if e["type"] == "request" and e["method"] == method and e["path"] == path)


@pytest.fixture
def fake_bot(tmp_path, sim):
    """A started bot (REST only, ``interval`` 10 s) on a fake clock; stopped and its orders cancelled after."""
    made = []

    def make(risk=None, **trading):
        trading = {"use_websocket": False, "interval": 10, **trading}
        path, signer = write_config(tmp_path, sim, risk=risk, **trading)
        clock = FakeClock()
        bot = GridBot(load_config(path), clock=clock.monotonic, wall_ms=clock.wall_ms, sleep=clock.sleep)
        made.append(bot)
        assert bot.begin() is None
        # The fake wall clock runs ahead of the exchange's (which keeps real time) by however far a test
        # advances it: an order is told from another grid's by its terms here, not by its date.
        bot.g.om.settings = replace(bot.g.om.settings, clock_margin_ms=10**9)
        return bot, clock, signer

    yield make
    for bot in made:
        if bot.g is not None and not bot.shutting_down:
            bot.request_stop("test over")
            bot.finish()


def test_the_rest_check_runs_every_interval_and_not_before(fake_bot, sim):
    bot, clock, _ = fake_bot()
    polls, since = bot.polls, SimControl(sim.rest_url).state()["time_us"]
    clock.advance(9.9)
    bot.step(0)
    assert bot.polls == polls and requests_to(sim, "GET", "/api/v1/orders", since) == 0
    clock.advance(0.1)
    bot.step(0)
    assert bot.polls == polls + 1 and requests_to(sim, "GET", "/api/v1/orders", since) == 1
    for _ in range(3):                      # steps within the next interval check nothing
        clock.advance(3)
        bot.step(0)
    assert bot.polls == polls + 1
    clock.advance(1)
    bot.step(0)
    assert bot.polls == polls + 2


def test_a_verified_order_stream_slows_the_checks_and_a_drop_restores_them(fake_bot):
    bot, clock, _ = fake_bot()
    assert bot.check_interval() == 10
    bot.events.put(StreamUp(False, 0.0))
    bot.step(0)
    assert bot.check_interval() == 10       # up, but not verified until an order event arrives
    order = next(iter(bot.om.live.values()))
    bot.events.put(OrderEvent(OrderUpdate("orderAccepted", "SOL_USDC", order.order_id, order.client_id, order.side,
                                          OrderStatus.NEW, order.price, order.quantity, D(0), D(0), None, None,
                                          0, 0), clock.monotonic()))
    bot.step(0)
    assert bot.stream_verified and bot.check_interval() == 10 * STREAM_POLL_FACTOR
    # The first check comes one interval after the start, whatever the stream does (a checkpoint for
    # status within seconds); after it, the slower pace.
    clock.advance(10)
    bot.step(0)
    assert bot.polls == 1
    polls = bot.polls
    clock.advance(49)
    bot.step(0)
    assert bot.polls == polls               # 49 s: no check while the stream is trusted
    bot.events.put(StreamDown("test"))
    bot.step(0)
    assert bot.check_interval() == 10 and bot.polls == polls + 1   # overdue at the old pace: now


def test_a_reconnect_fills_the_gap_at_once(fake_bot, sim):
    bot, clock, _ = fake_bot()
    polls = bot.polls
    clock.advance(1)
    bot.events.put(StreamUp(True, 3.5))
    bot.step(0)
    assert bot.polls == polls + 1 and bot.gap_fill is None


def test_a_stale_stream_price_falls_back_to_rest_and_comes_back(fake_bot, sim):
    bot, clock, _ = fake_bot()
    bot.events.put(StreamUp(False, 0.0))
    bot.events.put(TickerEvent(D("149.30"), 10, clock.monotonic()))
    bot.step(0)
    assert bot.last.source is PriceSource.STREAM and bot.price == D("149.30")
    SimControl(sim.rest_url).set_price("149.10")
    clock.advance(10)                       # the check is due; the ticker is 10 s old (stale after 5)
    bot.step(0)
    assert bot.last.source is PriceSource.REST and bot.price == D("149.10")   # (REST-only config: not a fallback)
    bot.events.put(TickerEvent(D("149.20"), 20, clock.monotonic()))
    bot.step(0)
    assert bot.last.source is PriceSource.STREAM and bot.price == D("149.20")


def test_a_lost_answer_is_looked_up_only_once_its_window_has_passed(fake_bot, sim, tmp_path):
    control = SimControl(sim.rest_url)
    bot, clock, signer = fake_bot(interval=30)   # no REST check inside the window: only the lookup tells
    window = bot.om.settings.window_ms + bot.om.settings.lookup_margin_ms
    # The counter-order's answer is lost: the exchange takes it, the bot never hears.
    control.fault(kind="drop_response", method="POST", path="/api/v1/order", count=1)
    control.set_price("147.50")             # the buy at 148 fills; its counter is a sell at 150
    clock.advance(30)
    bot.step(0)                             # the REST check finds the fill, the counter goes out
    unknown = [o for o in bot.om.live.values() if o.state is OrderState.UNKNOWN]
    assert [(o.side.value, o.price) for o in unknown] == [("Ask", D(150))]
    since = control.state()["time_us"]
    clock.advance(window / 1000 - 0.5)
    bot.step(0)
    assert requests_to(sim, "GET", "/api/v1/orders", since) == 0 and unknown[0].state is OrderState.UNKNOWN
    clock.advance(0.5)
    bot.step(0)
    assert requests_to(sim, "GET", "/api/v1/orders", since) == 1
    assert unknown[0].state is OrderState.OPEN               # found by its clientId: not placed twice
    asks_at_150 = [o for o in open_orders_of(control.state(), signer.api_key) if D(o["price"]) == 150]
    assert len(asks_at_150) == 1


def test_duration_stops_the_loop_when_it_is_reached(fake_bot):
    bot, clock, _ = fake_bot(duration=60)
    clock.advance(59.9)
    bot.step(0)
    assert not bot.stop_event.is_set()
    clock.advance(0.1)
    bot.step(0)
    assert bot.stop_event.is_set() and bot.stop_reason == "duration of 60 s reached"
    result = bot.finish()
    assert result.error is None and result.stats is not None and result.stats.open_bids == 0


def test_exits_never_act_on_a_price_of_unknown_age(fake_bot, sim):
    """The price crosses the stop-loss, then no source tells the price any more (the REST ticker fails,
    no stream): a stop_delay must not run out on that old price. Exits wait for a fresh price."""
    control = SimControl(sim.rest_url)
    bot, clock, _ = fake_bot(interval=10, risk={"stop_loss_price": "145", "stop_delay": 60})
    control.set_price("144.50")
    clock.advance(10)
    bot.step(0)                              # the REST check reads 144.50: the stop-loss starts to hold
    assert bot.price == D("144.50") and bot.g.om.risk.exit is None
    control.fault(kind="http_status", method="GET", path="/api/v1/ticker", status=400, count=1000)
    control.set_price("150.00")              # back up, but the bot cannot read it
    for _ in range(8):                       # 80 s: far past the stop_delay, on a price nobody confirms
        clock.advance(10)
        bot.step(0)
    assert bot.g.om.risk.exit is None and not bot.price_fresh
    control.clear_faults()
    clock.advance(10)
    bot.step(0)                              # a fresh price (150): nothing to stop
    assert bot.price_fresh and bot.price == D("150.00") and bot.g.om.risk.exit is None


def test_a_signal_that_lands_inside_the_loops_queue_never_deadlocks_it(fake_bot):
    """A signal handler runs in the main thread wherever it is: once it landed inside the loop's own
    ``queue.get`` (the queue's lock held), and its ``queue.put`` waited for that lock for ever: the bot
    froze, its stream went silent, and SIGTERM was ignored. The handler now takes no lock: here it runs
    while the queue's lock is held, returns at once, and the loop stops on the signal at its next turn."""
    import signal as _signal
    import threading
    from gridbot.commands.run import signal_handler
    bot, clock, _ = fake_bot()
    handler = signal_handler(bot)
    with bot.events.mutex:                                  # as inside queue.get
        t = threading.Thread(target=handler, args=(_signal.SIGTERM, None), daemon=True)
        t.start()
        t.join(5)
        returned = not t.is_alive()
    assert returned, "the signal handler blocked on the loop's queue"
    assert not bot.stop_event.is_set()                     # noted only
    bot.step(0)
    assert bot.stop_event.is_set() and bot.stop_reason == "SIGTERM received"


def test_a_main_loop_that_stops_turning_is_unhealthy_and_stops_the_watchdog(fake_bot, tmp_path):
    """The heartbeat's health and systemd's watchdog both come from the loop's turns: a loop that stops
    (a deadlock, a stuck call) stops the success pings while the process, and its other threads, live on."""
    import socket
    from gridbot.ops.systemd_notify import SystemdNotify
    bot, clock, _ = fake_bot()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "notify"))
        s.settimeout(0)
        bot.systemd = SystemdNotify(env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "4000000"},
                                    clock=clock.monotonic)

        def kicks() -> int:
            n = 0
            while True:
                try:
                    n += s.recv(100) == b"WATCHDOG=1"
                except BlockingIOError:
                    return n

        for _ in range(5):                  # a turning loop: healthy, pinging
            clock.advance(1)
            bot.step(0)
        assert bot.healthy() and kicks() == 5
        clock.advance(61)                   # the loop stuck for a minute: no turn, no ping
        assert not bot.healthy() and kicks() == 0
        bot.step(0)                         # it turns again
        assert bot.healthy() and kicks() == 1
