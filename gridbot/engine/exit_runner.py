"""Carrying out an exit over the signed REST client: cancel the grid's orders, then (``on_stop:
sell_base``) sell the grid's base with IOC limit orders no worse than the cap; on perps (``on_stop: close``)
close the position with reduce-only IOC orders no worse than the cap.

Crash-safe by construction (docs/architecture.md "Money in motion"): the exit (reason, price, time, phase)
is in the state file before the first cancel; the sale's target and floor before its first order; each
sale order's clientId before it is sent (the sale is an IOC campaign, ioc_campaign.py, as the entry
purchase is). A restarted bot continues from the saved phase: it looks each sale order up by clientId (its
fills come through the manager's ledger once, by trade id), sells only what is left, and never more than
the free balance, so a sale is never made twice.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable

from backpack_api import BackpackClient, BackpackError
from gridbot.core.models import MarketRules, Side
from gridbot.core.risk import RiskConfig, Sale, buy_ceiling, sale_floor
from gridbot.engine.executor import ActiveGrid, Executor
from gridbot.engine.ioc_campaign import IocCampaign, Paused, down_to_step
from gridbot.engine.perp_account import net_position
from gridbot.ops.reports import fmt_amount

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)


def sale_target(grid_base: Decimal, free: Decimal, rules: MarketRules) -> tuple[Decimal, str]:
    """What the sale sells: the grid's own base, never more than the free balance, down to the step.
    With a note when that is less than the grid's base or nothing at all."""
    qty = down_to_step(max(ZERO, min(grid_base, free)), rules)
    note = ""
    if grid_base > free:
        note = (f"the grid holds {fmt_amount(grid_base)} {rules.base} but only {fmt_amount(free)} is free: "
                f"selling what is free")
    if qty < rules.min_quantity:
        return Decimal(0), (f"{fmt_amount(qty)} {rules.base} to sell is below the minimum order quantity "
                            f"{rules.min_quantity}: nothing sold")
    return qty, note


class ExitRunner:
    def __init__(self, client: BackpackClient, executor: Executor, rules: MarketRules, cfg: RiskConfig, *,
                 window_ms: int, sleep: Callable[[float], None], wall_ms: Callable[[], int]) -> None:
        self.client, self.executor, self.rules, self.cfg = client, executor, rules, cfg
        self.window_ms, self.sleep, self.wall_ms = window_ms, sleep, wall_ms

    def carry_out(self, g: ActiveGrid, price: Decimal) -> bool:
        """Take the exit as far as it goes now; True when it is done (the grid is finished)."""
        om = g.om
        ex = om.risk.exit
        assert ex is not None
        if ex.phase == "cancelling":
            if not self.executor.cancel_all(g):
                log.error("exit: some of the grid's orders are not confirmed cancelled yet; trying again")
                return False
            result = self.executor.sync(g, orders=False)   # the fills that raced the cancels
            if not result.ok:
                log.warning("exit: cannot read the last fills yet (%s); trying again", result.error)
                return False
            if ex.on_stop == "close":
                try:
                    net = net_position(self.client, self.rules.symbol)
                except BackpackError as e:
                    log.warning("exit: cannot read the position to close it (%s); trying again", e)
                    return False
                ex.sale = close_of(net, price, self.cfg.max_slippage, self.rules)
                ex.phase = "selling"
                log.info("exit: closing the %s position of %s %s with reduce-only IOC orders no worse than %s (the "
                         "last price %s and max_slippage %s)", "long" if net > 0 else "short", fmt_amount(abs(net)),
                         self.rules.base, ex.sale.floor, price, self.cfg.max_slippage)
            elif ex.on_stop == "sell_base":
                start_base = om.risk.start.base if om.risk.start is not None else Decimal(0)
                try:
                    free = self.client.balances().get(self.rules.base, (Decimal(0), Decimal(0)))[0]
                except BackpackError as e:
                    log.warning("exit: cannot read balances to size the sale (%s); trying again", e)
                    return False
                target, note = sale_target(om.outside.grid_base(start_base), free, self.rules)
                ex.sale = Sale(target, sale_floor(price, self.cfg.max_slippage, self.rules.tick_size), note=note)
                ex.phase = "selling"
                log.info("exit: selling %s %s, no lower than %s (the last price %s less max_slippage %s)%s",
                         fmt_amount(target), self.rules.base, ex.sale.floor, price, self.cfg.max_slippage,
                         f"; {note}" if note else "")
            else:
                ex.phase = "done"
            om.risk_changed()
            g.save()   # the sale's target and floor, before its first order
        if ex.phase == "selling":
            if not self.sell(g):
                return False
            ex.phase = "done"
            om.risk_changed()
            g.save()
        return ex.phase == "done"

    def sell(self, g: ActiveGrid) -> bool:
        """The sale as an IOC campaign (ioc_campaign.py): sells at the floor while the price stays at or
        above it, never more than the free base; its fills go through the grid's ledger (they are the grid's
        base being sold). True when the sale is over (sold, or stopped short with a note); False when it
        must be tried again (the exchange did not answer)."""
        om = g.om
        ex = om.risk.exit
        assert ex is not None and ex.sale is not None
        sale, r = ex.sale, self.rules
        campaign = self.campaign(sale)
        since = ex.time_ms - 60_000

        def left() -> tuple[Decimal, str]:
            qty = down_to_step(sale.left, r)
            if sale.target == 0 or qty < r.min_quantity:
                return ZERO, (f"{fmt_amount(sale.left)} {r.base} left is below the minimum order quantity "
                              f"{r.min_quantity}" if sale.left > 0 and sale.target > 0 else "")
            return qty, ""

        def fit(qty: Decimal, balances: dict[str, tuple[Decimal, Decimal]]) -> tuple[Decimal, str]:
            free = balances.get(r.base, (ZERO, ZERO))[0]
            qty = min(qty, down_to_step(free, r))
            return (qty, "") if qty >= r.min_quantity else (ZERO, f"only {fmt_amount(free)} {r.base} is free")

        def fit_close(qty: Decimal, net: Decimal) -> tuple[Decimal, str]:
            """A close never exceeds the position left (its orders are reduce-only besides)."""
            qty = min(qty, down_to_step(abs(net), r))
            return (qty, "") if qty >= r.min_quantity else (ZERO, f"the position left is {fmt_amount(net)} {r.base}")

        def settle(cids: list[int]) -> None:
            for cid in cids:
                for f in campaign.fills_of(cid, since):
                    om.apply_fill(f)       # once per trade id: the ledger and the sale's totals
            g.publish()

        def save() -> None:
            om.risk_changed()
            g.save()

        try:
            campaign.run(sale, left=left, fit=fit_close if ex.on_stop == "close" else fit,
                         reserve=om.outside.new_sale_order, save=save, settle=settle,
                         filled=lambda: sale.sold)
        except Paused as p:
            log.warning("exit: the sale %s; trying again", p)
            return False
        g.publish()
        log.info("exit: %s %s of %s %s for %s %s%s", "bought back" if sale.side == Side.BID.value else "sold",
                 fmt_amount(sale.sold), fmt_amount(sale.target), r.base, fmt_amount(sale.proceeds), r.quote,
                 f"; {fmt_amount(sale.left)} {r.base} not sold: {sale.note}" if sale.left else "")
        return True

    def campaign(self, sale: Sale) -> IocCampaign:
        perp = self.rules.margin is not None
        return IocCampaign(self.client, self.rules, Side(sale.side), sale.floor, label="exit",
                           what="close" if perp else "sale", window_ms=self.window_ms, wall_ms=self.wall_ms,
                           sleep=self.sleep, reduce_only=perp,
                           read=(lambda: net_position(self.client, self.rules.symbol)) if perp else None)


def close_of(net: Decimal, price: Decimal, max_slippage: Decimal, rules: MarketRules) -> Sale:
    """The close of a perp position ``net`` (signed): a sale of a long no lower than the price less the
    slippage cap, a purchase of a short no higher than the price plus it (``Sale.floor`` is the cap)."""
    target = down_to_step(abs(net), rules)
    if net >= 0:
        return Sale(target, sale_floor(price, max_slippage, rules.tick_size))
    return Sale(target, buy_ceiling(price, max_slippage, rules.tick_size), side=Side.BID.value)
