"""Candles: the type, the intra-candle price path, Backpack's kline intervals and the klines CSV format.

The one market-data package both the bot and its simulator import: the backtester and ``plan`` walk
candles with ``candle_path``, ``backtest --klines`` and the simulator's replay feed read the same CSV
(``read_klines_csv``), and the REST klines, the kline streams and ``backtest --fetch`` share one table of
intervals. It imports nothing else of the bot (an import-linter contract), so the simulator stays
independent of the bot's wire code.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Iterator

# Backpack's candle intervals, in the order its docs list them, with their length in seconds
# (docs/exchange.md, "Klines").
KLINE_SECONDS: dict[str, int] = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800,
    "1month": 2592000}

REQUIRED_COLUMNS = ("start", "open", "high", "low", "close")


class FeedError(ValueError):
    pass


@dataclass(frozen=True)
class Candle:
    start: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


def candle_path(c: Candle) -> list[Decimal]:
    """open -> the nearer extreme -> the farther extreme -> close, without repeats.

    When both extremes are equally near, the low comes first (a grid is hurt more by a fall it
    cannot sell into, so the path that fills bids first is the conservative one).
    """
    if c.high - c.open < c.open - c.low:
        points = [c.open, c.high, c.low, c.close]
    else:
        points = [c.open, c.low, c.high, c.close]
    path: list[Decimal] = []
    for p in points:
        if not path or path[-1] != p:
            path.append(p)
    return path


def read_klines_csv(path: str) -> Iterator[Candle]:
    """Candles from a CSV with a header row; a clear FeedError names a bad row or column."""
    try:
        fh = open(path, newline="")
    except OSError as e:
        raise FeedError(f"cannot read klines file {path}: {e.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise FeedError(f"{path} is empty: expected a header row with {','.join(REQUIRED_COLUMNS)}") from None
        cols = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise FeedError(f"{path}: missing column(s) {', '.join(missing)} in the header row")
        idx = [cols.index(c) for c in REQUIRED_COLUMNS]
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                start = row[idx[0]]
                o, h, lo, c = (Decimal(row[i]) for i in idx[1:])
            except (IndexError, InvalidOperation):
                raise FeedError(f"{path}:{lineno}: not a candle row: {','.join(row)[:80]}") from None
            if not (lo <= o <= h and lo <= c <= h) or lo <= 0:
                raise FeedError(f"{path}:{lineno}: inconsistent candle (low {lo}, high {h}, open {o}, close {c})")
            yield Candle(start, o, h, lo, c)


def read_funding_column(path: str) -> list[tuple[str, Decimal]]:
    """A perps backtest's funding from the klines file: (candle start, rate) of every row whose optional
    ``funding_rate`` column is filled in: a funding interval that ends within that candle, paid at its close."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "funding_rate" not in [h.strip() for h in reader.fieldnames]:
            return []
        out = []
        for lineno, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            cell = (row.get("funding_rate") or "").strip()
            if cell:
                try:
                    out.append((row["start"], Decimal(cell)))
                except InvalidOperation:
                    raise FeedError(f"{path}:{lineno}: funding_rate {cell!r} is not a number") from None
        return out
