"""The start-up of a perps grid (docs/perps.md), part of ``Startup``: a new grid sized where it will be laid
out and refused when its worst case is liquidated inside its range or within the buffer, the subaccount
checked (perp_account.py), a long's or a short's opening (the entry's crash-safe IOC campaign, against the
margin), its starting funds on its collateral, and the executor's margin check.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from gridbot.core.accounting import perp_start_funds
from gridbot.core.errors import InputError, StartRefused
from gridbot.core.models import MarketRules, Side
from gridbot.core.order_state import Settings
from gridbot.core.risk import RiskState, exit_notes
from gridbot.engine.entry import Entry, EntryPurchase
from gridbot.engine.executor import ActiveGrid
from gridbot.engine.grid_setup import grid_params, placement_notes, signed_read
from gridbot.engine.ioc_campaign import down_to_step
from gridbot.engine.perp_account import PerpAccount, PerpFunds, grid_position
from gridbot.engine.perp_grid import opening_position, perp_grid, reduce_side, shown_liquidation
from grid_calculator import Ladder
from gridbot.ops.reports import fmt_amount
from order_manager import OrderManager

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)


class PerpStart:
    """``Startup``'s perps methods (they use its client, config, executor, store and the tag and adoption
    checks it shares with spot)."""
    client: Any
    cfg: Any
    t: Any
    executor: Any
    store: Any
    tag: int | None
    wall_ms: Any

    def fresh_perp(self, rules: MarketRules, price: Decimal, settings: Settings) -> ActiveGrid:
        """A new perps grid (docs/perps.md): sized where it will be laid out (the price, or the trigger price)
        and refused when its worst case is liquidated inside its range or within the buffer; the subaccount
        checked (perp_account.py); then, now or when the trigger is crossed, a long's or a short's position
        opened and the grid laid out like a spot grid."""
        trigger = self.cfg.risk.trigger_price
        pg = perp_grid(rules, self.t, self.cfg.risk, trigger or price)
        if pg.refused:
            raise StartRefused("; ".join(pg.refused))
        grid = pg.grid
        ladder = Ladder(grid.levels[0], grid.levels[-1], len(grid.levels), grid.mode, rules.tick_size)
        for n in pg.notes + placement_notes(grid, rules, price) + exit_notes(self.cfg.risk, grid.levels, price, ladder):
            log.warning("%s", n)
        held = PerpAccount(self.client, self.cfg, rules).check(pg.opening, pg.collateral, resumed=False)
        book = self.open_orders()
        taken = self.orders_to_adopt(grid, book)
        if taken and trigger is not None:
            raise InputError("--adopt and trading.trigger_price do not go together: an adopted order trades at once")
        tag = self.tag if self.tag is not None else self.choose_tag(book)
        om = OrderManager(grid, tag=tag, settings=settings)
        om.risk = RiskState(ladder=ladder)
        om.risk.arm(trigger, price)
        # The collateral is kept with the (perps) entry from the start: the starting funds are valued on it.
        om.risk.entry = Entry(ZERO, ZERO, done=True, collateral=f"{pg.collateral:f}").to_json()
        g = ActiveGrid(om, self.store, None, self.wall_ms(), self.wall_ms)
        for s in (pg.bottom, pg.top):
            log.info("perps: at the %s (%s) the grid is %s; %s", s.end, s.price,
                     f"{'long' if s.position > 0 else 'short'} {fmt_amount(abs(s.position))} {grid.base}" if s.position
                     else "flat", f"liquidated at {shown_liquidation(s, rules.tick_size)} ({s.distance():.1%} beyond it)"
                     if s.liquidation_price is not None else "never liquidated")
        if self.store is not None:
            g.grid_id = self.store.create_grid(grid_params(self.t), grid, tag, g.created_ms, om.risk)
        g.save()
        self.perp_funds(g, rules, price)
        if not om.risk.triggered:
            log.info("waiting for the price to %s the trigger price %s (it is %s): nothing is placed or opened until "
                     "then", "rise to" if om.risk.trigger_from == "below" else "fall to", trigger, price)
            return g
        self.start_perp(g, rules, price, held)
        empty = om.start(price)
        om.adopt(taken, g.created_ms)
        om.risk_changed()
        g.save()
        log.info("placing the initial %s perps grid at leverage %s (level %d stays empty): %d levels %s..%s, %s %s "
                 "each", self.t.direction, self.t.leverage, empty, len(grid.levels), grid.levels[0], grid.levels[-1],
                 grid.quantity, grid.base)
        return g

    def start_perp(self, g: ActiveGrid, rules: MarketRules, price: Decimal, held: Decimal) -> None:
        """A perps grid about to be laid out at ``price``: a long's or a short's opening, less the position
        ``held`` already in its direction (crash-safe: written down first, each order by clientId), then its
        starting funds."""
        om, t = g.om, self.t
        e = Entry.from_json(om.risk.entry)
        opening = opening_position(om.grid.levels, price, om.grid.quantity, t.direction)
        target = down_to_step(abs(opening) - abs(held), rules)
        if target > 0 and not e.orders:
            new = EntryPurchase.start(target, price, self.cfg.risk.max_slippage, rules,
                                      Side.BID if opening > 0 else Side.ASK)
            new.collateral = e.collateral
            om.risk.entry = new.to_json()
            om.risk_changed()
            g.save()
            log.info("perps: opening a %s of %s %s (%s %s already held) with IOC orders no worse than %s", t.direction,
                     fmt_amount(abs(opening)), om.grid.base, fmt_amount(abs(held)), om.grid.base, new.ceiling)
            self.open_perp(g, rules)
        om.risk.start = perp_start_funds(Decimal(e.collateral), opening, price, self.wall_ms())
        om.risk_changed()

    def open_perp(self, g: ActiveGrid, rules: MarketRules) -> None:
        """A long's or a short's opening (or the rest of it, resumed): the entry's IOC campaign, against the
        margin."""
        om = g.om

        def save(e: Entry) -> None:
            om.risk.entry = e.to_json()
            om.risk_changed()
            g.save()

        e = Entry.from_json(om.risk.entry)
        opening = EntryPurchase(self.client, rules, window_ms=self.cfg.api.window_ms, wall_ms=self.wall_ms,
                                new_client_id=om.outside.reserve_client_id, save=save)
        try:
            opening.run(e, ZERO, fit=PerpAccount(self.client, self.cfg, rules).fit_opening(e), read=self.client.margin)
        except (InputError, StartRefused):
            self.close_unplaced(g)
            raise

    def perp_funds(self, g: ActiveGrid, rules: MarketRules, price: Decimal) -> None:
        """The executor's margin check for this grid's orders, its budget read now."""
        assert rules.margin is not None and self.t.leverage is not None
        om = g.om
        self.executor.perp = PerpFunds(self.client, rules.margin, self.t.leverage, reduce_side(self.t.direction), price,
                                       lambda: grid_position(om))
        self.executor.note_balances({"margin": (signed_read(self.client.margin, "read the margin").available, ZERO)})
