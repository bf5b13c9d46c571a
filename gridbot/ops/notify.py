"""Notifications: Apprise URLs (Telegram, Discord, ntfy, e-mail, JSON webhooks, ...) on a thread of
their own, and a dead-man's heartbeat.

The bot never waits for a notification. ``Notifier.send`` puts a message in a bounded outbox and
returns; one thread delivers it to every URL, retrying a failed delivery with backoff and then dropping
it with a log line. A full outbox drops its oldest message that is not an error. The same thread
requests the heartbeat URL every ``heartbeat_interval`` while the bot says it is healthy, and the
``/fail`` form of it while it is not; when the process dies, the pings stop by themselves.

What is sent comes from the core's typed events (fills and round trips for the digest, a refused
counter-order for an error) and from the bot's own view of its health (``ErrorWatch``), never from
log lines. Notification URLs hold secrets (bot tokens, webhook keys): they appear in no log line, no
error message and no report; a URL is named by its position and scheme only (``URL 2 (tgram)``).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any, Callable, Sequence

import requests
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gridbot.core.errors import InputError
from gridbot.exchange.net_errors import network_cause
from gridbot.core.events import FillApplied, RoundTripCompleted

log = logging.getLogger("grid_bot.notify")

EVENTS = ("start", "stop", "exit", "round_trip", "digest", "error", "daily")
DEFAULT_EVENTS = ("start", "stop", "exit", "digest", "error", "daily")
URLS_ENV = "GRID_BOT_NOTIFY_URLS"
HEARTBEAT_ENV = "GRID_BOT_HEARTBEAT_URL"
OUTBOX_SIZE = 50
WEB_SCHEMES = ("http", "https", "json", "jsons", "form", "forms", "xml", "xmls")  # a real host after ://
ATTEMPTS = 3
BACKOFF_S = (2.0, 8.0)  # waits between the attempts of one delivery


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[str, ...] = ()
    urls_from: str = "notify.urls"     # where the URLs came from: the file's key or the environment
    events: tuple[str, ...] = DEFAULT_EVENTS
    digest_interval: float = 3600.0
    error_after: float = 300.0
    daily_hour: int = 8
    heartbeat_url: str = ""
    heartbeat_interval: float = 300.0
    heartbeat_fail_url: str = ""       # the failure signal, when the service's differs from fail_url()

    def fail_url(self) -> str:
        """The heartbeat's failure signal: ``notify.heartbeat_fail_url`` if set; for an Uptime Kuma push URL
        (its query says ``status=up``) the same URL with ``status=down``; otherwise healthchecks.io's form,
        ``/fail`` appended to the path, the query kept."""
        if self.heartbeat_fail_url:
            return self.heartbeat_fail_url
        parts = urlsplit(self.heartbeat_url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if ("status", "up") in query:
            return urlunsplit(parts._replace(query=urlencode([(k, "down" if k == "status" else v) for k, v in query])))
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))

    @property
    def enabled(self) -> bool:
        return bool(self.urls or self.heartbeat_url)

    def secrets(self) -> list[str]:
        """Every URL and each of its parts that may be a token, for the log's secret filter. The host of a
        web URL (a webhook, a heartbeat) is no secret, and masking it would mangle every other line that
        names that host (the paper simulator's 127.0.0.1); in any other scheme (tgram://TOKEN/...) the
        part after ``://`` is the token itself."""
        out: list[str] = []
        for url in (*self.urls, self.heartbeat_url, self.heartbeat_fail_url):
            if not url:
                continue
            out.append(url)
            scheme, _, rest = url.partition("://")
            if scheme.lower() in WEB_SCHEMES:
                parts = urlsplit(url)
                host = parts.hostname or ""
                rest = " ".join([parts.username or "", parts.password or "", parts.path, parts.query, parts.fragment])
            else:
                host = ""
            for sep in "/?&=@:#":
                rest = rest.replace(sep, " ")
            out.extend(part for part in rest.split() if len(part) >= 8 and part != host)
        return out


@dataclass
class Message:
    kind: str        # one of EVENTS
    title: str
    body: str


def url_name(index: int, url: str) -> str:
    """How a URL is named anywhere a person reads: its position and scheme, never its text."""
    scheme = url.split("://", 1)[0] if "://" in url else "?"
    return f"URL {index + 1} ({scheme})"


# The lines Apprise logs during one delivery. A context variable, not a thread's: Apprise may deliver on a
# worker of its own, to which it hands the caller's context.
_DELIVERY: ContextVar[list[str] | None] = ContextVar("delivery", default=None)


class _Causes(logging.Handler):
    """What Apprise says while it delivers, kept for the delivery in progress (``_DELIVERY``) and never passed
    on: its lines can hold a URL's token. ``cause`` turns them into a fixed phrase."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        lines = _DELIVERY.get()
        if lines is None:
            return
        try:
            lines.append(record.getMessage())
        except Exception:  # a plugin's malformed log call is no cause of ours
            return
        del lines[:-20]


CAUSES = _Causes()


def cause(lines: Sequence[str]) -> str:
    """Why a delivery failed, as a fixed phrase (never Apprise's text, which may show a token)."""
    text = " ".join(lines)
    low = text.lower()
    status = re.search(r"error=(\d{3})\b", text) or re.search(r"\b(?:status|code|HTTP)[ =:]*([1-5]\d\d)\b", text)
    if status:
        code = int(status[1])
        try:
            return f"the service answered HTTP {code} {HTTPStatus(code).phrase}"
        except ValueError:
            return f"the service answered HTTP {code}"
    for needles, phrase in (
            (("name or service not known", "name resolution", "nodename nor servname", "getaddrinfo",
              "no address associated"), "its host name does not resolve (DNS)"),
            (("connection refused",), "connection refused (nothing listens at that address)"),
            (("timed out", "timeout"), "no answer in time"),
            (("ssl", "certificate"), "a TLS/certificate error"),
            (("network is unreachable", "no route to host"), "the network is unreachable"),
            (("connection error", "connection aborted", "remotedisconnected", "connection reset"),
             "the connection failed"),
    ):
        if any(n in low for n in needles):
            return phrase
    return "the service refused it (check the URL and its token)"


def _apprise_targets(urls: Sequence[str], where: str = "notify.urls") -> list[Any]:
    """One Apprise object per URL, so each is delivered, retried and reported on its own."""
    import apprise  # imported only when notifications are configured: it loads a hundred plugins

    quiet = logging.getLogger("apprise")
    quiet.propagate = False          # Apprise logs URLs (and so tokens) in its own messages
    quiet.setLevel(logging.DEBUG)    # ... to CAUSES alone, which keeps them from every log and output
    for h in list(quiet.handlers):
        if h is not CAUSES:
            quiet.removeHandler(h)
    if CAUSES not in quiet.handlers:
        quiet.addHandler(CAUSES)
    targets = []
    for i, url in enumerate(urls):
        target = apprise.Apprise()
        if not target.add(url):
            raise InputError(f"{where}[{i}] is not a URL Apprise knows ({url_name(i, url)}); see "
                             f"https://github.com/caronc/apprise/wiki for the form of each service")
        targets.append(target)
    return targets


def send_one(target: Any, msg: Message) -> str | None:
    """Deliver one message to one URL now: None when delivered, else why not."""
    lines: list[str] = []
    token = _DELIVERY.set(lines)
    try:
        ok = bool(target.notify(title=msg.title, body=msg.body))
    except Exception as e:  # a plugin's own failure is a failed delivery, never the bot's
        return cause([*lines, type(e).__name__])
    finally:
        _DELIVERY.reset(token)
    return None if ok else cause(lines)


class Outbox:
    """A bounded queue that, when full, drops its oldest message that is not an error."""

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self.size = size
        self.items: deque[Message] = deque()
        self.cond = threading.Condition()
        self.dropped = 0

    def put(self, msg: Message) -> None:
        with self.cond:
            if len(self.items) >= self.size:
                victim = next((m for m in self.items if m.kind != "error"), self.items[0])
                self.items.remove(victim)
                self.dropped += 1
                log.warning("notification outbox full: dropped a %s message", victim.kind)
            self.items.append(msg)
            self.cond.notify()

    def get(self, timeout: float) -> Message | None:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            return self.items.popleft() if self.items else None

    def empty(self) -> bool:
        with self.cond:
            return not self.items

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


class Channel:
    """One URL: its own outbox and delivery thread, so a slow or dead URL never delays another."""

    def __init__(self, name: str, target: Any, stop_event: threading.Event,
                 send: Callable[[Any, Message], str | None]) -> None:
        self.name, self.target, self.stop_event, self.send = name, target, stop_event, send
        self.outbox = Outbox()
        self.busy = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"notify {name}", daemon=True)
        self.delivered = self.failed = 0
        self.last: tuple[str, str | None] | None = None   # the last message's kind and its failure (None: delivered)

    def idle(self) -> bool:
        return self.outbox.empty() and not self.busy.is_set()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            msg = self.outbox.get(1.0)
            if msg is None:
                continue
            self.busy.set()
            try:
                self._deliver(msg)
            finally:
                self.busy.clear()

    def _deliver(self, msg: Message) -> None:
        why: str | None = "not tried"
        for attempt in range(ATTEMPTS):
            if self.stop_event.is_set():
                break
            why = self.send(self.target, msg)
            if why is None:
                self.delivered += 1
                break
            if attempt + 1 < ATTEMPTS:
                self.stop_event.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        else:
            self.failed += 1
            log.warning("notification %r to %s not delivered after %d attempts (%s): dropped", msg.kind, self.name,
                        ATTEMPTS, why)
        self.last = (msg.kind, why)


class Notifier:
    """The URLs' channels and the heartbeat. ``health`` says whether the grid is healthy (loop running,
    exchange reachable, orders in sync); it is read on the heartbeat's thread."""

    def __init__(self, cfg: NotifyConfig, *, grid: str, health: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 http: requests.Session | None = None) -> None:
        self.cfg = cfg
        self.grid = grid
        self.health = health
        self.clock, self.sleep_fn = clock, sleep
        self.stop_event = threading.Event()
        targets = _apprise_targets(cfg.urls, cfg.urls_from) if cfg.urls else []
        self.channels = [Channel(url_name(i, url), t, self.stop_event, send_one)
                         for i, (url, t) in enumerate(zip(cfg.urls, targets))]
        self.http = http or requests.Session()
        # The heartbeat has a thread of its own: a slow notification receiver must not delay it (a late
        # heartbeat is a false alarm at the checker).
        self.beat_thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.heartbeats = 0

    @property
    def delivered(self) -> int:
        return sum(c.delivered for c in self.channels)

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.channels)

    # -- the bot's side: never blocks
    def wants(self, kind: str) -> bool:
        return bool(self.channels) and kind in self.cfg.events

    def send(self, kind: str, title: str, body: str) -> None:
        if self.wants(kind):
            msg = Message(kind, f"{self.grid}: {title}", body)
            for c in self.channels:
                c.outbox.put(msg)

    def start(self) -> "Notifier":
        for c in self.channels:
            c.thread.start()
        if self.cfg.heartbeat_url:
            self.beat_thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (the stop message) for up to ``timeout`` s, each URL on its own, then stop;
        say for each URL whether its last message arrived, and why not."""
        deadline = self.clock() + timeout
        while not all(c.idle() for c in self.channels) and self.clock() < deadline:
            time.sleep(0.05)
        self.stop_event.set()
        for c in self.channels:
            c.outbox.wake()
            if not c.idle():
                log.warning("the last notifications to %s were not delivered within %g s (%s): given up", c.name,
                            timeout, c.last[1] if c.last is not None and c.last[1] else "still trying")
            elif c.last is not None and c.last[1] is None:
                log.info("the last notification (%s) was delivered to %s", c.last[0], c.name)
            elif c.last is not None:
                log.warning("the last notification (%s) was NOT delivered to %s: %s", c.last[0], c.name, c.last[1])

    # -- the heartbeat's thread
    def _beat(self) -> None:
        """Request the heartbeat URL every interval: as it is while healthy, its failure form while not.
        Nothing is sent before the bot has been healthy once (its grid placed, or resumed and reconciled):
        a start in progress is not a failure, and a checker must not page on every restart or deploy."""
        url = self.cfg.heartbeat_url
        been_healthy = False
        while not self.stop_event.is_set():
            healthy = self.health()
            been_healthy = been_healthy or healthy
            if not been_healthy:
                self.stop_event.wait(min(1.0, self.cfg.heartbeat_interval))
                continue
            target = url if healthy else self.cfg.fail_url()
            try:
                self.http.get(target, timeout=(5, 10))
                self.heartbeats += 1
            except requests.RequestException as e:
                log.warning("heartbeat not delivered (%s)", network_cause(e))
            self.stop_event.wait(self.cfg.heartbeat_interval)


def try_urls(urls: Sequence[str], grid: str, where: str = "notify.urls") -> list[tuple[str, str | None]]:
    """``notify-test``: one message to each URL, synchronously; (name, None if delivered else why not) per URL."""
    targets = _apprise_targets(urls, where)
    msg = Message("start", f"{grid}: test message", "If you read this, grid_bot's notifications reach you.")
    return [(url_name(i, urls[i]), send_one(target, msg)) for i, target in enumerate(targets)]


# ------------------------------------------------------------------------------ what to say and when
# The conditions the running bot watches: what each means, and what to do about it.
CONDITIONS = {
    "exchange": ("Backpack unreachable or refusing",
                 "The bot keeps trying; check the log and https://status.backpack.exchange."),
    "stream": ("WebSocket down", "The bot trades on REST meanwhile and keeps reconnecting."),
    "lookup": ("an order's outcome is still unknown",
               "The bot keeps looking it up by clientId; check the log and the exchange."),
    "funds": ("orders held back: the free balance does not cover them",
              "The levels wait and are tried again as fills free funds; add funds, or check what else trades on "
              "this account."),
    "clock": ("this machine's clock is off", "Sync the clock (timedatectl set-ntp true)."),
}


class ErrorWatch:
    """Conditions that need a human once they have lasted ``error_after`` seconds: each is told once
    when it crosses that, and once more when it clears."""

    def __init__(self, notifier: Notifier, error_after: float) -> None:
        self.notifier = notifier
        self.error_after = error_after
        self.since: dict[str, float] = {}
        self.told: set[str] = set()

    def update_all(self, now: float, **active: bool) -> None:
        """Each of ``CONDITIONS`` by name: whether it holds now."""
        for name, holds in active.items():
            what, todo = CONDITIONS[name]
            self.update(name, holds, now, what, todo)

    def update(self, name: str, active: bool, now: float, what: str, todo: str) -> None:
        if active:
            start = self.since.setdefault(name, now)
            if name not in self.told and now - start >= self.error_after:
                self.told.add(name)
                self.notifier.send("error", what, f"{what} for {now - start:.0f} s. {todo}")
        else:
            self.since.pop(name, None)
            if name in self.told:
                self.told.discard(name)
                self.notifier.send("error", f"recovered: {what}", f"No longer: {what}.")


class Digest:
    """Fills and round trips since the last digest; a digest only when something happened, and one
    daily summary at ``daily_hour`` UTC."""

    def __init__(self, notifier: Notifier, cfg: NotifyConfig, quote: str, now: float,
                 wall: Callable[[], float] = time.time) -> None:
        self.notifier, self.cfg, self.quote, self.wall = notifier, cfg, quote, wall
        self.fills = 0
        self.round_trips = 0
        self.profit = Decimal(0)
        self.next_digest = now + cfg.digest_interval
        today = datetime.fromtimestamp(wall(), tz=timezone.utc)
        # Today's summary is due only if its hour is still ahead.
        self.last_daily = today.date() if today.hour >= cfg.daily_hour else None

    def on_event(self, ev: Any) -> None:
        if isinstance(ev, FillApplied):
            self.fills += 1
        elif isinstance(ev, RoundTripCompleted):
            self.round_trips += 1
            self.profit += ev.profit
            self.notifier.send("round_trip", f"round trip {ev.number}",
                               f"Levels {ev.pair}-{ev.pair + 1}: profit {ev.profit:f} {self.quote}.")
        # An order held back for funds is not told here, once per refusal: the bot's ErrorWatch tells it
        # once it has lasted notify.error_after, and once when it has cleared.

    def tick(self, now: float, summary: Callable[[], str]) -> None:
        if now >= self.next_digest:
            self.next_digest = now + self.cfg.digest_interval
            if self.fills:
                self.notifier.send("digest", "digest",
                                   f"Since the last digest: {self.fills} fill(s), {self.round_trips} round "
                                   f"trip(s), profit {self.profit:f} {self.quote}.\n{summary()}")
                self.fills, self.round_trips, self.profit = 0, 0, Decimal(0)
        today = datetime.fromtimestamp(self.wall(), tz=timezone.utc)
        if today.hour >= self.cfg.daily_hour and self.last_daily != today.date():
            self.last_daily = today.date()
            self.notifier.send("daily", f"daily summary {today.date()}", summary())
