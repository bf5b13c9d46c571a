"""Start-up: every check before the first order, then a fresh grid, a resumed one, or ``--reset``.

The market's rules, the clock against the exchange's, the price, then the saved running grid (resumed
when its parameters match, refused when they do not, cancelled first with ``--reset``) or a new grid whose
funds are checked against the balances. Nothing is placed here except ``--reset``'s cancels.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Callable

from backpack_api import BackpackClient, BackpackError, TransientError
from gridbot.exchange.clock_watch import check_clock
from gridbot.ops.config import Config
from gridbot.engine.entry import Entry, EntryPurchase
from gridbot.core.errors import FatalError, InputError, StartRefused
from gridbot.engine.executor import ActiveGrid, Executor
from grid_calculator import (GridSpec, Ladder, funds_needed, initial_plan,
                             match_open_orders, shortfall)
from gridbot.core.models import MarketRules, Order, Side
from order_manager import OrderManager
from gridbot.core.order_state import Settings
from gridbot.ops.reports import describe_exit, describe_params, fmt_amount
from gridbot.core.risk import RiskState, exit_notes, start_funds
from gridbot.engine.grid_setup import (Balances, check_funds, grid_params, log_grid, make_grid,
                                      manager_settings, market_rules, read_balances, signed_read)
from gridbot.engine.perp_start import PerpStart
from gridbot.engine.state_locks import TagLock, tags_beside
from gridbot.core.accounting import perp_start_funds
from gridbot.engine.perp_account import PerpAccount, net_position
from gridbot.engine.perp_grid import perp_grid
from gridbot.engine.state_store import SavedGrid, StateStore

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)



@dataclass
class Started:
    grid: ActiveGrid
    rules: MarketRules
    price: Decimal
    resumed: bool


def _describe(orders: list[Order], most: int = 10) -> str:
    text = ", ".join(f"{o.side.value} {o.quantity} @ {o.price} (order {o.id})" for o in orders[:most])
    return text + (f" and {len(orders) - most} more" if len(orders) > most else "")


class Startup(PerpStart):
    def __init__(self, cfg: Config, client: BackpackClient, executor: Executor, store: StateStore | None, *,
                 wall_ms: Callable[[], int], tag: int | None = None, adopt: bool = False) -> None:
        self.cfg = cfg
        self.t = cfg.trading
        self.client = client
        self.executor = executor
        self.store = store
        self.wall_ms = wall_ms
        self.tag = tag
        self.adopt = adopt
        self.taker_fee = cfg.trading.taker_fee   # the account's, once read (read_account)

    def prepare(self, *, reset: bool) -> Started:
        """Market rules, clock, price, then resume the saved grid or lay out a new one (grid, funds)."""
        for w in self.cfg.warnings:
            log.warning("%s", w)
        rules = market_rules(self.client, self.t.symbol, self.cfg.api.base_url)
        skew_ms = check_clock(self.client, self.wall_ms)
        try:
            price = self.client.ticker_price(self.t.symbol)
        except TransientError as e:
            raise FatalError(f"cannot read the price of {self.t.symbol}: {e}") from None
        settings = replace(manager_settings(self.client, rules), clock_margin_ms=2000 + abs(skew_ms))
        self.read_account()
        saved = self.store.active_grid() if self.store is not None else None
        if reset:
            if saved is not None:
                self.reset_grid(saved, settings)
            else:
                log.info("--reset: no running grid to reset in %s", self.store.path if self.store else "memory")
            saved = None
        if saved is None and not reset and self.store is not None:
            last = self.store.latest_grid()
            if last is not None and last.status == "stopped" and last.risk.exit is not None:
                raise InputError(f"grid {last.id} in {self.store.path} is finished: "
                                 f"{describe_exit(last.risk.exit, last.spec)[len('exit: '):]}. A stopped grid is "
                                 f"not resumed: start with --reset to begin a new grid")
        if saved is not None and saved.params != grid_params(self.t):
            assert self.store is not None
            raise InputError(
                f"the state file {self.store.path} holds a running grid with other parameters "
                f"({describe_params(saved.params)}): put those settings back to resume it, or start with "
                f"--reset to cancel its orders and begin this grid")
        if saved is not None:
            return Started(self.resume(saved, settings, rules, price), rules, price, True)
        if self.store is None:
            return Started(self.fresh(rules, price, settings), rules, price, False)
        with TagLock(self.store.path):
            return Started(self.fresh(rules, price, settings), rules, price, False)

    def fresh(self, rules: MarketRules, price: Decimal, settings: Settings) -> ActiveGrid:
        if self.t.is_perp:
            return self.fresh_perp(rules, price, settings)
        grid, notes = make_grid(rules, self.t, price, size_at=self.cfg.risk.trigger_price)
        ladder = Ladder(grid.levels[0], grid.levels[-1], len(grid.levels), grid.mode, rules.tick_size)
        notes += exit_notes(self.cfg.risk, grid.levels, price, ladder)
        for n in notes:
            log.warning("%s", n)
        risk = RiskState(ladder=ladder)
        risk.arm(self.cfg.risk.trigger_price, price)
        if self.t.investment is not None:
            risk.reserve = grid.quantity * self.t.maker_fee * (len(grid.levels) - 1)
            log.info("investment %s %s: %s %s per order, a reserve of %s %s for the buys' fees", self.t.investment,
                     grid.quote, grid.quantity, grid.base, fmt_amount(risk.reserve), grid.base)
        # A grid that waits for its trigger is laid out at the trigger price: that is what it will need.
        at = price if risk.triggered else self.cfg.risk.trigger_price
        balances = read_balances(self.client)
        book = self.open_orders()
        taken = self.orders_to_adopt(grid, book)
        if taken and not risk.triggered:
            raise InputError("--adopt and trading.trigger_price do not go together: an adopted order trades at once")
        tag = self.tag if self.tag is not None else self.choose_tag(book)
        om = OrderManager(grid, tag=tag, settings=settings)
        om.risk = risk
        created = self.wall_ms()
        g = ActiveGrid(om, self.store, None, created, self.wall_ms)
        if self.t.entry == "buy" and not taken and risk.triggered:
            if self.purchase(g, rules, price, balances, lambda: grid_params(self.t)):
                balances = read_balances(self.client)
        if self.t.entry == "buy" and not risk.triggered:
            # The purchase is made when the trigger is crossed: now, the quote it and the buys will need.
            _, plan = initial_plan(grid, at)
            planned = funds_needed(grid, plan)
            free = balances.get(grid.base, (Decimal(0), Decimal(0)))[0]
            cost = shortfall(planned[grid.base] + risk.reserve, free, rules, self.taker_fee) * at
            have = balances.get(grid.quote, (Decimal(0), Decimal(0)))[0]
            if have < planned[grid.quote] + cost:
                raise InputError(f"not enough {grid.quote} for this grid at its trigger price {at}: the buys lock "
                                 f"{fmt_amount(planned[grid.quote])} and the entry purchase costs about "
                                 f"{fmt_amount(cost)}, {fmt_amount(have)} available")
            log.info("entry: when the trigger is crossed, the bot buys the %s the sells need (about %s %s now)",
                     grid.base, fmt_amount(cost / at if at else Decimal(0)), grid.base)
            balances = {**balances, grid.base: (max(free, planned[grid.base] + risk.reserve), Decimal(0))}
        try:
            need = check_funds(grid, at, balances, self.t.maker_fee, adopted=taken)
        except InputError:
            self.close_unplaced(g)
            raise
        self.executor.note_balances(balances)   # the first placements draw on this read
        log_grid(grid, self.t.symbol, at, need, self.t.maker_fee)
        if g.grid_id is None and self.store is not None:
            g.grid_id = self.store.create_grid(grid_params(self.t), grid, tag, created, risk)
        if not risk.triggered:
            log.info("waiting for the price to %s the trigger price %s (it is %s): nothing is placed until then",
                     "rise to" if risk.trigger_from == "below" else "fall to", risk.trigger, price)
            g.save()
            return g
        risk.start = start_funds(grid.levels, grid.quantity, price, self.wall_ms(), risk.reserve)
        empty = om.start(price)
        om.adopt(taken, created)
        om.risk_changed()
        g.save()
        log.info("placing the initial grid (level %d stays empty)", empty)
        return g

    def read_account(self) -> None:
        """The account's settings (``GET /api/v1/account``): its taker fee sizes the entry purchase, and
        the log says what its lending and borrowing mean for the grid."""
        try:
            a = self.client.account_settings()
        except BackpackError as e:
            # Not a reason to refuse the start (the balance read that follows tells bad keys): without the
            # settings the purchase is sized on trading.taker_fee, and the orders still never borrow.
            log.warning("cannot read the account's settings (%s): the entry purchase assumes trading.taker_fee %s",
                        e, fmt_amount(self.taker_fee))
            return
        if self.t.is_perp:
            log.info("account: leverage limit %s (trading.leverage %s); fees from trading.maker_fee %s%% and "
                     "taker_fee %s%%, each fill's own fee in the books", a.leverage_limit, self.t.leverage,
                     fmt_amount(self.t.maker_fee * 100), fmt_amount(self.t.taker_fee * 100))
            return
        if a.spot_taker_fee is not None and a.spot_taker_fee >= 0:
            self.taker_fee = a.spot_taker_fee
        fees = (f"maker {fmt_amount((a.spot_maker_fee or Decimal(0)) * 100)}%, taker {fmt_amount(self.taker_fee * 100)}%"
                if a.spot_taker_fee is not None else f"not given (taker assumed {fmt_amount(self.taker_fee * 100)}%, "
                                                      f"trading.taker_fee)")
        log.info("account: spot fees %s; borrowing %s; auto-lend %s. Every order says autoBorrow false: the exchange "
                 "refuses one the balance does not cover, so the grid never borrows", fees,
                 "on" if a.auto_borrow_settlements or (a.borrow_limit or 0) > 0 else "off",
                 "on" if a.auto_lend else "off")
        if a.spot_maker_fee is not None and a.spot_maker_fee > self.t.maker_fee:
            log.warning("the account's spot maker fee is %s%%, above trading.maker_fee %s%%: the profit estimates "
                        "and the step check understate the fees; set trading.maker_fee to %s",
                        fmt_amount(a.spot_maker_fee * 100), fmt_amount(self.t.maker_fee * 100),
                        fmt_amount(a.spot_maker_fee))
        if a.auto_lend:
            log.info("auto-lend is on: Backpack lends the account's idle balances and redeems them to cover its spot "
                     "orders; if orders are refused for funds, turn auto-lend off for this account")

    def choose_tag(self, book: list[Order]) -> int:
        """A tag (the top byte of every clientId) no order on the book, in the recent order and fill history
        of this symbol, or in a running grid of another state file in this folder carries. Matching also
        needs the side, price and quantity, so a shared tag could not make another grid's orders ours;
        this keeps clientIds apart as well. Chosen under the folder's TagLock (held by the caller)."""
        avoid = {o.client_id >> 24 for o in book if o.client_id is not None}
        recent = signed_read(lambda: self.client.recent_client_ids(self.t.symbol), "read the order history")
        avoid |= {cid >> 24 for cid in recent}
        if self.store is not None:
            avoid |= tags_beside(self.store.path, self.t.symbol)
            return self.store.free_tag(random.choice, avoid)
        free = [t for t in range(1, 256) if t not in avoid]
        return random.choice(free or list(range(1, 256)))

    def purchase(self, g: ActiveGrid, rules: MarketRules, price: Decimal, balances: Balances,
                 params: Callable[[], dict[str, Any]]) -> bool:
        """The entry purchase for a grid about to be laid out at ``price``: buys what the free base lacks
        for the sells and the fee reserve, if anything (the grid's row is created first, if it is not yet).
        Returns whether it bought; raises InputError (the start refused) when it ends short."""
        om, grid = g.om, g.om.grid
        _, plan = initial_plan(grid, price)
        planned = funds_needed(grid, plan)
        free = balances.get(grid.base, (Decimal(0), Decimal(0)))[0]
        target = shortfall(planned[grid.base] + om.risk.reserve, free, rules, self.taker_fee)
        if target <= 0:
            return False
        log.info("entry: the grid needs %s %s (its sells and fee reserve), the account has %s free: buying %s",
                 fmt_amount(planned[grid.base] + om.risk.reserve), grid.base, fmt_amount(free), target)
        om.risk.entry = EntryPurchase.start(target, price, self.cfg.risk.max_slippage, rules).to_json()
        om.risk_changed()
        if g.grid_id is None and self.store is not None:
            g.grid_id = self.store.create_grid(params(), grid, om.tag, g.created_ms, om.risk)
        g.save()
        self.buy(g, rules, planned[grid.quote])
        return True

    def entry_at_trigger(self, g: ActiveGrid, rules: MarketRules, price: Decimal) -> bool:
        """The grid's trigger was crossed: its entry purchase (``trading.entry: buy``) is made now, at the
        price it is laid out at. True when the grid may be laid out; False to try again at the next price
        update (the balances could not be read). InputError when the purchase ends short."""
        if self.t.auto_price and g.om.risk.trigger is not None and not g.om.pairs and g.om.risk.start is None:
            grid = (perp_grid(rules, self.t, self.cfg.risk, price).grid if self.t.is_perp else
                    make_grid(rules, self.t, price, size_at=self.cfg.risk.trigger_price)[0])
            g.om.trail.recentre(grid.levels, rules.tick_size)
            log.info("auto_price: the grid is centred on %s, the price at which the trigger was crossed: levels %s..%s",
                     price, grid.levels[0], grid.levels[-1])
        if self.t.is_perp:
            try:
                held = net_position(self.client, self.t.symbol)
            except BackpackError as e:
                log.warning("perps: cannot read the position (%s); trying again", e)
                return False
            self.start_perp(g, rules, price, held)
            return True
        if self.t.entry != "buy" or (g.om.risk.entry or {}).get("done"):
            return True
        try:
            balances = self.client.balances()
        except BackpackError as e:
            log.warning("entry: cannot read the balances (%s); trying again", e)
            return False
        self.purchase(g, rules, price, balances, lambda: grid_params(self.t))
        return True

    def buy(self, g: ActiveGrid, rules: MarketRules, quote_kept: Decimal) -> None:
        """The entry purchase (entry.py); a purchase that ends short refuses the start, and the grid row is
        closed (nothing was placed; the next start buys only what is still missing)."""
        om = g.om

        def save(e: Entry) -> None:
            om.risk.entry = e.to_json()
            om.risk_changed()
            g.save()

        purchase = EntryPurchase(self.client, rules, window_ms=self.cfg.api.window_ms, wall_ms=self.wall_ms,
                                 new_client_id=om.outside.reserve_client_id, save=save)
        try:
            purchase.run(Entry.from_json(om.risk.entry), quote_kept)
        except (InputError, StartRefused):
            self.close_unplaced(g)
            raise

    def close_unplaced(self, g: ActiveGrid) -> None:
        """A new grid refused before its first order (its purchase ended short, or what it bought still
        does not cover it): its row is closed, so the next start begins a new grid and buys only what is
        still missing, never resuming a grid that cannot be laid out."""
        if self.store is not None and g.grid_id is not None and not g.om.pairs:
            self.store.set_status(g.grid_id, "stopped", self.wall_ms())

    def open_orders(self) -> list[Order]:
        return signed_read(lambda: self.client.open_orders(self.t.symbol), "list open orders")

    def orders_to_adopt(self, grid: GridSpec, book: list[Order]) -> dict[int, Order]:
        """A new grid never starts on top of orders that look like a grid (a lost state file, another
        process): open orders at any of its level prices are refused, or, with ``--adopt``, those that
        match a level exactly are taken over (the rest are left alone and reported)."""
        levels = set(grid.levels)
        at_levels = [o for o in book if o.price in levels]
        if not at_levels:
            return {}
        where = self.store.path if self.store is not None else "memory"
        if not self.adopt:
            raise InputError(
                f"the account has {len(at_levels)} open order(s) on {self.t.symbol} at this grid's level prices "
                f"({_describe(at_levels)}) and {where} holds no running grid: a grid may already be trading "
                f"there. Cancel them yourself, or start with --adopt to take over those that match a level")
        taken, left = match_open_orders(grid, book)
        log.warning("--adopt: taking over %d open order(s) as this grid's (%s)", len(taken),
                    _describe(list(taken.values())) or "none")
        if left:
            log.warning("--adopt: left alone %d open order(s) that match no level's price, side and quantity: %s",
                        len(left), _describe(left))
        return taken

    def load(self, saved: SavedGrid, settings: Settings, *, closing: bool = False) -> ActiveGrid:
        assert self.store is not None
        om = OrderManager.from_snapshot(saved.spec, saved.tag, self.store.load(saved), settings)
        return ActiveGrid(om, self.store, saved.id, saved.created_ms, self.wall_ms, closing=closing)

    def resume(self, saved: SavedGrid, settings: Settings, rules: MarketRules, price: Decimal) -> ActiveGrid:
        assert self.store is not None
        read_balances(self.client)  # the keys still work
        g = self.load(saved, settings)
        log.info("resuming grid %d from %s: %s %d levels %s..%s, %d round trips so far", saved.id,
                 self.store.path, saved.spec.symbol, len(saved.spec.levels), saved.spec.levels[0],
                 saved.spec.levels[-1], g.om.ledger.round_trips)
        self.resume_risk(g, rules.tick_size)
        self.recover(g)
        if self.t.is_perp:
            PerpAccount(self.client, self.cfg, rules).check(ZERO, ZERO, resumed=True)
            self.perp_funds(g, rules, price)
        entry = g.om.risk.entry
        if entry is not None and not entry.get("done") and not g.om.pairs:
            log.warning("the entry purchase was under way: looking its orders up by clientId, then buying what is "
                        "still missing")
            if self.t.is_perp:
                collateral = Decimal(Entry.from_json(g.om.risk.entry).collateral)
                self.open_perp(g, rules)
                opened = Entry.from_json(g.om.risk.entry)
                held = opened.bought if opened.side == Side.BID.value else -opened.bought
                g.om.risk.start = perp_start_funds(collateral, held, price, self.wall_ms())
                g.om.risk_changed()
                return g
            _, plan = initial_plan(g.om.grid, price)
            self.buy(g, rules, funds_needed(g.om.grid, plan)[g.om.grid.quote])
        return g

    def recover(self, g: ActiveGrid) -> None:
        """What the exchange holds under this grid's tag that the saved state lost (a state file rolled back
        by a power cut): the sequence moves past every clientId of ours seen, and lost orders become
        orphans that their pairs take back (ExchangeNews.recover)."""
        om = g.om
        book = self.open_orders()
        fills = signed_read(lambda: self.client.fills(self.t.symbol, from_ms=g.fill_checkpoint()), "read fill history")
        recent = signed_read(lambda: self.client.recent_client_ids(self.t.symbol), "read the order history")
        before = om.next_seq
        orphans = om.news.recover(book, fills, recent)
        if om.next_seq != before:
            log.warning("clientIds up to sequence %d of this grid's tag were used after the state was last saved "
                        "(was the state file restored or rolled back?): new orders start at %d", om.next_seq - 1,
                        om.next_seq)
        for o in orphans:
            log.warning("order %s (clientId %d, %s @ %s) is ours but not in the saved state: %s", o.order_id,
                        o.client_id, o.side.value, o.price, "on the book" if o.on_book else "filled")
        g.save()

    def resume_risk(self, g: ActiveGrid, tick: Decimal) -> None:
        """Exits and trailing on a resumed grid: what it saved, and what a grid saved by an earlier version
        lacks (its ladder is rebuilt from its levels; its starting funds are unknown)."""
        om, cfg = g.om, self.cfg.risk
        st = om.risk
        if st.ladder is None and st.offset == 0:
            ladder = Ladder(om.grid.levels[0], om.grid.levels[-1], len(om.grid.levels), om.grid.mode, tick)
            if ladder.window(0) == om.grid.levels:
                st.ladder = ladder
                om.risk_changed()
        if cfg.out_of_range == "trail" and st.ladder is None:
            log.warning("risk.out_of_range trail: this grid's levels are not a ladder the bot can extend; it does "
                        "not trail (start with --reset for a grid that does)")
        if st.start is None and (cfg.stop_loss_return is not None or cfg.take_profit_return is not None):
            log.warning("risk.stop_loss_return / take_profit_return: this grid was started by an earlier version "
                        "that did not record its starting funds, so its return is unknown and these do not act; "
                        "start with --reset for a grid that records them")
        if st.exit is not None:
            log.warning("this grid's exit was under way (%s at %s): finishing it", st.exit.reason, st.exit.price)
        elif st.offset:
            log.info("the grid has trailed %+d step(s): its levels are %s..%s", st.offset, om.grid.levels[0],
                     om.grid.levels[-1])
        if st.trigger is not None and not st.triggered:
            log.info("still waiting for the trigger price %s", st.trigger)

    def reset_grid(self, saved: SavedGrid, settings: Settings) -> None:
        """--reset: cancel the saved grid's orders (only those), then forget it."""
        assert self.store is not None
        log.info("--reset: cancelling the orders of grid %d (%s)", saved.id, describe_params(saved.params))
        old = self.load(saved, settings, closing=True)
        result = self.executor.sync(old)
        if not result.ok:
            raise FatalError(f"--reset: cannot read the old grid's orders: {result.error}")
        if not self.executor.cancel_all(old):
            raise FatalError("--reset: some of the old grid's orders could not be cancelled; "
                             "try again, or cancel them on Backpack")
        self.store.set_status(saved.id, "reset", self.wall_ms())
