"""Price history for backtests: Backpack's klines fetched page by page (paced, as the exchange allows),
and a CSV cache beside the config that later runs extend with only what it lacks."""
from __future__ import annotations

import csv
import json
import os
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable

from gridbot.marketdata.candles import Candle, FeedError


def _parse_start(text: str) -> datetime:
    return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=timezone.utc)


HISTORY_PAGE = 1000   # candles asked per request: Backpack's cap is undocumented, so ask for few
HISTORY_PACE_S = 2.0  # historical market data allows 30 requests a minute (docs/exchange.md §8)
KLINE_COLUMNS = ("start", "open", "high", "low", "close", "end", "volume", "quoteVolume", "trades")


def _ts(start: str) -> int:
    return int(_parse_start(start).timestamp())


def _fmt_ts(t: int) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def fetch_klines(get: Callable[[int, int], list[dict]], interval_s: int, start_s: int, end_s: int, *,
                 progress: Callable[[int, int], None] = lambda done, total: None,
                 pace_s: float = HISTORY_PACE_S, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> list[dict]:
    """Closed candles starting in [start_s, end_s), oldest first, paged ``HISTORY_PAGE`` at a time
    through ``get(page_start_s, page_end_s)`` (the exchange's ``/api/v1/klines``), at most one request
    per ``pace_s``. A page the exchange cuts short is continued from its last candle."""
    out: dict[int, dict] = {}
    span = HISTORY_PAGE * interval_s
    total = max(1, -(-(end_s - start_s) // span))
    cursor, done, last_request = start_s, 0, None
    while cursor < end_s:
        if last_request is not None:
            wait = pace_s - (clock() - last_request)
            if wait > 0:
                sleep(wait)
        page_end = min(cursor + span, end_s)
        last_request = clock()
        rows = get(cursor, page_end)
        done += 1
        newest = None
        for row in rows:
            t = _ts(row["start"])
            if start_s <= t < end_s and t + interval_s <= end_s and row.get("open") is not None:
                out[t] = row
            newest = t if newest is None else max(newest, t)
        # Continue after the newest candle of a short page, else after the page.
        nxt = None if newest is None else newest + interval_s
        cursor = nxt if nxt is not None and cursor < nxt < page_end else page_end
        total = max(total, done + -(-(end_s - cursor) // span))
        progress(done, total)
    return [out[t] for t in sorted(out)]


def write_klines(path: str, rows: Iterable[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        fh.write(",".join(KLINE_COLUMNS) + "\n")
        for r in rows:
            fh.write(",".join("" if r.get(k) is None else str(r[k]) for k in KLINE_COLUMNS) + "\n")
    os.replace(tmp, path)


def cached_history(path: str, get: Callable[[int, int], list[dict]], interval_s: int, start_s: int,
                   end_s: int, **fetch_options: Any) -> list[Candle]:
    """The candles of [start_s, end_s) from the cache file at ``path``, fetching only what it lacks.
    What the cache covers is kept beside it (``path + ".range"``), so a range the exchange has no
    candles for is not asked again."""
    rows: dict[int, dict] = {}
    have: tuple[int, int] | None = None
    if os.path.exists(path) and os.path.exists(path + ".range"):
        try:
            with open(path + ".range") as fh:
                meta = json.load(fh)
            have = (int(meta["from"]), int(meta["to"]))
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    rows[_ts(r["start"])] = r
        except (OSError, ValueError, KeyError):
            rows, have = {}, None  # an unreadable cache is fetched again
    gaps = [(start_s, end_s)] if have is None else [
        (a, b) for a, b in ((start_s, have[0]), (have[1], end_s)) if a < b]
    if have is not None and (start_s > have[1] or end_s < have[0]):
        gaps = [(min(start_s, have[1]), max(end_s, have[0]))]  # keep one contiguous range
    for a, b in gaps:
        for r in fetch_klines(get, interval_s, a, b, **fetch_options):
            rows[_ts(r["start"])] = r
    if gaps:
        write_klines(path, (rows[t] for t in sorted(rows)))
        lo = start_s if have is None else min(start_s, have[0])
        hi = end_s if have is None else max(end_s, have[1])
        with open(path + ".range", "w") as fh:
            json.dump({"from": lo, "to": hi, "from_utc": _fmt_ts(lo), "to_utc": _fmt_ts(hi)}, fh)
    out = []
    for t, r in sorted(rows.items()):
        if start_s <= t < end_s:
            try:
                out.append(Candle(r["start"], *(Decimal(str(r[k])) for k in ("open", "high", "low", "close"))))
            except ArithmeticError:
                raise FeedError(f"{path}: candle {r['start']} is not numbers: delete the file to fetch "
                                f"it again") from None
    return out


FUNDING_PAGE = 1000   # rates asked per request (newest first, paged by offset)


def cached_funding(path: str, get: Callable[[int, int], list[tuple[int, Decimal]]], start_ms: int, end_ms: int, *,
                   pace_s: float = HISTORY_PACE_S, sleep: Callable[[float], None] = time.sleep) -> list[tuple[int, Decimal]]:
    """A perp's realized funding rates (interval end in ms, rate) in [start_ms, end_ms), from the cache file at
    ``path`` (CSV ``interval_end_ms,rate``), fetched through ``get(limit, offset)`` (newest first) when the
    cache does not reach back to ``start_ms`` or up to the last hour before ``end_ms``, paced as klines are."""
    rows: dict[int, Decimal] = {}
    try:
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                rows[int(r["interval_end_ms"])] = Decimal(r["rate"])
    except (OSError, ValueError, KeyError, ArithmeticError):
        rows = {}   # no cache, or an unreadable one: fetched again
    hour = 3_600_000
    if not rows or min(rows) > start_ms + hour or max(rows) < end_ms - 2 * hour:
        offset = 0
        while True:
            page = get(FUNDING_PAGE, offset)
            for t, rate in page:
                rows[t] = rate
            if len(page) < FUNDING_PAGE or min(t for t, _ in page) < start_ms:
                break
            offset += FUNDING_PAGE
            sleep(pace_s)
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as fh:
            fh.write("interval_end_ms,rate\n")
            for t in sorted(rows):
                fh.write(f"{t},{rows[t]:f}\n")
        os.replace(tmp, path)
    return [(t, rows[t]) for t in sorted(rows) if start_ms <= t < end_ms]
