"""Market data of the simulated exchange: ticker, depth and its events, klines from the price history.

A mixin of ``Exchange``: it reads the engine's state under the engine's lock and writes nothing but
the depth and bookTicker events of a changed book.
"""
from __future__ import annotations

import bisect
from decimal import Decimal
from typing import Callable

from .records import D, MarketState, SYNTHETIC_LEVELS, SYNTHETIC_QTY, ZERO, s
from .wire import kline_json


class MarketData:
    """Needs from the engine: ``lock``, ``market()``, ``clock_us``, ``sink``, ``open_by_symbol``."""

    def ticker(self, symbol: str) -> dict:
        with self.lock:
            m = self.market(symbol)
            now = self.clock_us()
            start = bisect.bisect_left(m.ticks_ts, now - 24 * 3600 * 1_000_000)
            window = m.ticks[start:] or [(m.price, ZERO)]
            first = window[0][0]
            high = max(p for p, _ in window)
            low = min(p for p, _ in window)
            vol = sum((v for _, v in window), ZERO)
            qvol = sum((p * v for p, v in window), ZERO)
            trades = sum(1 for _, v in window if v > 0)
            change = m.price - first
            pct = (change / first).quantize(D("0.000001")) if first else ZERO
            return {"symbol": symbol, "firstPrice": s(first), "lastPrice": s(m.price),
                    "priceChange": s(change), "priceChangePercent": s(pct), "high": s(high),
                    "low": s(low), "volume": s(vol), "quoteVolume": s(qvol), "trades": str(trades)}

    def ticker_event(self, symbol: str) -> dict:
        t = self.ticker(symbol)
        now = self.clock_us()
        return {"e": "ticker", "E": now, "s": symbol, "o": t["firstPrice"], "c": t["lastPrice"],
                "h": t["high"], "l": t["low"], "v": t["volume"], "V": t["quoteVolume"],
                "n": int(t["trades"])}

    def _book(self, m: MarketState) -> dict[str, dict[Decimal, Decimal]]:
        """Synthetic liquidity around the price plus every resting order."""
        tick = m.spec.tick_size
        qty = SYNTHETIC_QTY.get(m.spec.symbol, D("100"))
        asks: dict[Decimal, Decimal] = {}
        bids: dict[Decimal, Decimal] = {}
        for k in range(1, SYNTHETIC_LEVELS + 1):
            asks[m.price + k * tick] = qty
            if m.price - k * tick > 0:
                bids[m.price - k * tick] = qty
        for o in self.open_by_symbol[m.spec.symbol].values():
            side = bids if o.side == "Bid" else asks
            if o.price is not None:
                side[o.price] = side.get(o.price, ZERO) + o.remaining
        return {"a": asks, "b": bids}

    def depth(self, symbol: str, limit: int) -> dict:
        with self.lock:
            m = self.market(symbol)
            book = self._book(m)
            asks = sorted(book["a"].items())[:limit]
            bids = sorted(book["b"].items(), reverse=True)[:limit]
            return {"asks": [[s(p), s(q)] for p, q in asks],
                    "bids": [[s(p), s(q)] for p, q in sorted(bids)],
                    "lastUpdateId": str(m.depth_update_id), "timestamp": self.clock_us()}

    def _book_changed(self, m: MarketState) -> None:
        """Push bookTicker and an incremental depth update (absolute quantities, 0 = removed).

        Skipped while nobody listens, so that an order's own events leave sooner. That stays exact:
        the next update is diffed against the last book published, so it carries every level that
        changed meanwhile, with its absolute quantity, and the update ids stay consecutive."""
        sym = m.spec.symbol
        if not (self.sink.wants(f"depth.{sym}") or self.sink.wants(f"bookTicker.{sym}")):
            return
        book = self._book(m)
        now = self.clock_us()
        diff: dict[str, list[list[str | None]]] = {"a": [], "b": []}
        for side in ("a", "b"):
            old, new = m.last_book[side], book[side]
            for p in sorted(set(old) | set(new)):
                if old.get(p) != new.get(p):
                    diff[side].append([s(p), s(new.get(p, ZERO))])
        m.last_book = book
        if diff["a"] or diff["b"]:
            first = m.depth_update_id + 1
            m.depth_update_id += 1
            self.sink.public_event(f"depth.{m.spec.symbol}", {
                "e": "depth", "E": now, "s": m.spec.symbol, "a": diff["a"], "b": diff["b"],
                "U": first, "u": m.depth_update_id, "T": now})
        best_ask = min(book["a"]) if book["a"] else None
        best_bid = max(book["b"]) if book["b"] else None
        self.sink.public_event(f"bookTicker.{m.spec.symbol}", {
            "e": "bookTicker", "E": now, "s": m.spec.symbol,
            "a": s(best_ask), "A": s(book["a"].get(best_ask)) if best_ask else None,
            "b": s(best_bid), "B": s(book["b"].get(best_bid)) if best_bid else None,
            "u": m.depth_update_id, "T": now})

    def recent_trades(self, symbol: str, limit: int, offset: int = 0) -> list[dict]:
        """The market's trades, newest first (ids and timestamps falling), ``offset`` back from the newest."""
        with self.lock:
            trades = self.market(symbol).trades
            end = len(trades) - offset
            return [trades[i] for i in range(end - 1, max(end - limit, 0) - 1, -1)] if end > 0 else []

    def klines(self, symbol: str, interval_s: int, start_s: int, end_s: int | None, *,
               price_at: Callable[[Decimal, int], Decimal] | None = None) -> list[dict]:
        """Candles from the simulator's own price history, oldest first. ``price_at``: what each print
        becomes at its time (a perp's mark or index; perps.py), volumes unchanged."""
        with self.lock:
            m = self.market(symbol)
            end_us = (end_s * 1_000_000) if end_s is not None else self.clock_us()
            i = bisect.bisect_left(m.ticks_ts, start_s * 1_000_000)
            j = bisect.bisect_right(m.ticks_ts, end_us)
            out: list[dict] = []
            cur: dict | None = None
            for ts, (price, vol) in zip(m.ticks_ts[i:j], m.ticks[i:j]):
                if price_at is not None:
                    price = price_at(price, ts).quantize(m.spec.tick_size)
                bucket = (ts // 1_000_000) // interval_s * interval_s
                if cur is None or cur["_b"] != bucket:
                    cur = {"_b": bucket, "o": price, "h": price, "l": price, "c": price,
                           "v": ZERO, "qv": ZERO, "n": 0}
                    out.append(cur)
                cur["h"] = max(cur["h"], price)
                cur["l"] = min(cur["l"], price)
                cur["c"] = price
                cur["v"] += vol
                cur["qv"] += vol * price
                cur["n"] += 1 if vol > 0 else 0
            return [kline_json(c["_b"], interval_s, c) for c in out]
