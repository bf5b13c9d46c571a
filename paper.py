"""Paper mode: the real bot against a simulator started in this process, with paper funds.

The only bot module besides the backtester that imports ``simulator``. Paper runs keep their own
state and log files (``grid_bot.paper.log``, ``grid_state.paper.db``), never a live run's.
"""
from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any

from backpack_api import Signer, generate_keypair
from config import Config
from errors import InputError


def paper_path(path: str, default_ext: str) -> str:
    """grid_bot.log -> grid_bot.paper.log: paper runs never share files with live ones."""
    root, ext = os.path.splitext(path)
    return f"{root}.paper{ext or default_ext}"


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
