"""Paper mode: the real bot against a simulator started in this process, with paper funds.

The only module of the bot that imports ``simulator`` (an import-linter contract), and only inside the
functions that need it, so that every other command runs without the simulator installed. Paper runs
keep their own state and log files (``grid_bot.paper.log``, ``grid_state.paper.db``), never a live run's.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from decimal import Decimal
from typing import Any

from backpack_api import BackpackClient, Signer, TransientError, generate_keypair
from gridbot.core.models import MarketRules
from gridbot.exchange.wire import parse_market
from gridbot.ops.config import Config
from gridbot.core.errors import FatalError, InputError

log = logging.getLogger("grid_bot.paper")


def need_simulator() -> None:
    """Paper mode runs the simulator of this checkout: say so in one line when its folder is missing."""
    try:
        import simulator  # noqa: F401
    except ImportError:
        raise FatalError("paper mode runs the simulator in the simulator/ folder beside grid_bot.py, and it is "
                         "missing: restore it (git checkout -- simulator)") from None


def paper_path(path: str, default_ext: str) -> str:
    """grid_bot.log -> grid_bot.paper.log: paper runs never share files with live ones."""
    root, ext = os.path.splitext(path)
    return f"{root}.paper{ext or default_ext}"


def sim_state_path(cfg: Config) -> str:
    """Where paper mode on live prices keeps its simulated account: grid_state.paper.sim.json."""
    root, _ = os.path.splitext(paper_path(cfg.state_file, ".db"))
    return root + ".sim.json"


def paper_funds(cfg: Config, spec: Any, top: Decimal) -> dict[str, Decimal]:
    """``paper.balances`` if set, else enough for the grid twice over (and 1000 quote to spare); in
    investment mode twice the investment in quote and no base."""
    if cfg.paper_balances:
        return dict(cfg.paper_balances)
    t = cfg.trading
    if t.investment is not None:
        # Investment mode starts from quote alone, as a new user's account does: the entry purchase buys the base.
        return {spec.quote: (t.investment * 2).quantize(Decimal(1)) + 1000, spec.base: Decimal(0)}
    return {spec.quote: (top * t.quantity * t.grid_num * 2).quantize(Decimal(1)) + 1000,
            spec.base: t.quantity * t.grid_num * 2}


def paper_market(cfg: Config) -> tuple[Any, Decimal, dict[str, Decimal], float]:
    """The simulated market of paper mode: (its MarketSpec, the starting price, the paper balances, the
    random walk's volatility per second)."""
    need_simulator()
    from simulator.markets import DEFAULT_MARKETS

    specs = {m.symbol: m for m in DEFAULT_MARKETS}
    t = cfg.trading
    spec = specs.get(t.symbol)
    if spec is None:
        raise InputError(f"paper mode simulates {', '.join(specs)}; set trading.symbol to one of them, "
                         f"or use --live-prices for any market of the exchange")
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
    return spec, mid, paper_funds(cfg, spec, top), volatility


def live_market(cfg: Config) -> tuple[Any, Decimal, dict[str, Decimal]]:
    """Paper mode on live prices: the real market's rules and last price, read from public data at
    ``api.base_url`` with no key (this client cannot sign), and the paper balances."""
    from gridbot.engine.grid_setup import market_rules

    client = BackpackClient(cfg.api.base_url, None, timeout=(5.0, 15.0), max_attempts=2)
    try:
        rules = market_rules(client, cfg.trading.symbol, cfg.api.base_url)
        price = client.ticker_price(cfg.trading.symbol)
    except TransientError as e:
        raise FatalError(f"live prices: cannot read {cfg.trading.symbol} from {cfg.api.base_url}: {e}") from None
    finally:
        client.close()
    t = cfg.trading
    top = t.grid_upper if t.grid_upper is not None and not t.auto_price else price * (1 + (t.price_range or 0))
    return spec_from_rules(rules), price, paper_funds(cfg, rules, top)


def rules_from_spec(spec: Any) -> MarketRules:
    """A simulated market's rules as the bot reads them from the exchange (through its own parser)."""
    need_simulator()
    from simulator.markets import market_json

    return parse_market(market_json(spec))


def spec_from_rules(rules: MarketRules) -> Any:
    """The exchange's rules as the simulator's market (a perp's margin functions included: the paper
    market then has margin, funding and liquidation). Backpack's price band (the multipliers) is unknown
    for some markets: then no band is applied, the reading that refuses no order."""
    from simulator.markets import MarketSpec
    from simulator.perps import PerpParams

    m = rules.margin
    perp = PerpParams(m.imf_base, m.imf_factor, m.mmf_base, m.mmf_factor) if m is not None else None
    return MarketSpec(rules.symbol, rules.base, rules.quote, rules.tick_size, rules.step_size,
                      rules.min_quantity, rules.max_quantity, rules.min_price, rules.max_price,
                      rules.max_multiplier if rules.max_multiplier is not None else Decimal("1e9"),
                      rules.min_multiplier if rules.min_multiplier is not None else Decimal(0),
                      rules.min_price, perp=perp)


def builtin_rules(symbol: str) -> MarketRules | None:
    """The simulator's built-in rules of ``symbol`` (None: it has none): what ``backtest --klines`` uses
    when the exchange is out of reach."""
    try:
        from simulator.markets import DEFAULT_MARKETS
    except ImportError:
        return None
    spec = {m.symbol: m for m in DEFAULT_MARKETS}.get(symbol)
    return None if spec is None else rules_from_spec(spec)


class PaperExchange:
    """The in-process simulator of paper mode and, on live prices, the saving of its accounts."""

    SAVE_EVERY_S = 1.0

    def __init__(self, sim: Any, state_path: str | None, secret: str | None = None) -> None:
        self.sim = sim
        self.state_path = state_path
        # Paper mode's throwaway key for this local simulator (a paper account, never a real one), saved
        # with the account: the next run signs as the same account.
        self.secret = secret
        self._saved = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if state_path is not None:
            # Every order, fill and cancel is on disk before its news leaves the simulated exchange: a kill -9
            # can never leave the bot's state holding what the saved paper account lacks (a fill counted
            # twice later, an order it calls gone).
            sim.exchange.durable = self._save_fill
            self._thread = threading.Thread(target=self._save_loop, name="paper-save", daemon=True)
            self._thread.start()

    def urls(self) -> dict[str, str]:
        return self.sim.urls()

    def freeze(self) -> None:
        """The bot is stopping: the paper market's price stands still from now on, so that no paper order
        fills after the bot's last look at its fills (a real exchange would go on; the next paper run on
        live prices takes the price up again where the real market is then)."""
        self.sim.feed.pause(True)

    def save(self) -> None:
        from simulator import persist

        ex = self.sim.exchange
        if self.state_path is not None and ex.version != self._saved:
            self._saved = ex.version
            persist.save(ex, self.state_path, {"paper_secret": self.secret})

    def _save_fill(self) -> None:
        try:
            self.save()
        except OSError as e:
            log.warning("paper mode: cannot save the simulated account to %s: %s", self.state_path, e.strerror)

    def _save_loop(self) -> None:
        while not self._stop.wait(self.SAVE_EVERY_S):
            try:
                self.save()
            except OSError as e:
                log.warning("paper mode: cannot save the simulated account to %s: %s", self.state_path, e.strerror)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.save()
        finally:
            self.sim.stop()


def start_paper(cfg: Config, seed: int | None = None, *, live: bool = False,
                sim_state: str | None = None) -> tuple[PaperExchange, Config, Signer]:
    """A simulator in this process and a throwaway key with paper funds: moving inside the grid, or,
    ``live``, following the real market's trades. On live prices the simulated account is kept in
    ``sim_state`` (restored from it when the file exists) so a restart resumes the paper grid."""
    need_simulator()
    from simulator import SimConfig, Simulator, persist

    t = cfg.trading
    if live:
        spec, price, balances = live_market(cfg)
        sim = Simulator(SimConfig(symbol=t.symbol, markets=(spec,), feed="live", live_rest=cfg.api.base_url,
                                  live_ws=cfg.api.ws_url, price=price, maker_fee=t.maker_fee,
                                  live_stale_after=cfg.paper_stale_after, live_logger="grid_bot.paper",
                                  taker_fee=t.taker_fee, balances=balances, id_base=int(time.time() * 1000)))
        secret = None
        if sim_state is not None and os.path.exists(sim_state):
            try:
                with open(sim_state) as fh:
                    data = json.load(fh)
                persist.restore(sim.exchange, data)
                secret = data.get("paper_secret")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(f"paper mode: cannot read the simulated account {sim_state} ({e}); move it "
                                 f"away to start a new paper account") from None
        sim.start()
    else:
        spec, mid, balances, volatility = paper_market(cfg)
        sim = Simulator(SimConfig(symbol=t.symbol, price=mid, feed="random",
                                  seed=int(time.time()) if seed is None else seed,
                                  volatility=volatility, reversion=0.05, tick_seconds=1.0,
                                  maker_fee=t.maker_fee, taker_fee=t.taker_fee, balances=balances,
                                  id_base=int(time.time() * 1000))).start()
        secret = None
    if secret is None:
        _, secret = generate_keypair()
    signer = Signer(secret)
    paper = PaperExchange(sim, sim_state if live else None, secret)
    urls = sim.urls()
    return paper, cfg.replace_api(base_url=urls["rest"], ws_url=urls["ws"], api_key=signer.api_key,
                                  api_secret=secret), signer
