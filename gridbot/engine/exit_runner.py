"""Carrying out an exit over the signed REST client: cancel the grid's orders, then (``on_stop:
sell_base``) sell the grid's base with IOC limit orders no worse than the cap.

Crash-safe by construction (docs/architecture.md "Money in motion"): the exit (reason, price, time, phase) is in
the state file before the first cancel; the sale's target and floor before its first order; each sale
order's clientId before it is sent. A restarted bot continues from the saved phase: it looks each sale
order up by clientId (its fills come through the manager's ledger once, by trade id), sells only what
is left, and never more than the free balance, so a sale is never made twice.
"""
from __future__ import annotations

import logging
from decimal import ROUND_DOWN, Decimal
from typing import Callable

from backpack_api import BackpackClient, BackpackError, OrderRejected, OrderRequest
from gridbot.engine.executor import ActiveGrid, Executor
from gridbot.core.models import MarketRules, Side
from gridbot.ops.reports import fmt_amount
from gridbot.core.risk import RiskConfig, Sale, sale_floor

log = logging.getLogger("grid_bot")

MAX_SALE_ORDERS = 10     # IOC orders per sale at most; what is left then is reported
MAX_EMPTY_ROUNDS = 2     # IOC orders in a row that sold nothing: no buyer within the cap


def sale_target(grid_base: Decimal, free: Decimal, rules: MarketRules) -> tuple[Decimal, str]:
    """What the sale sells: the grid's own base, never more than the free balance, down to the step.
    With a note when that is less than the grid's base or nothing at all."""
    qty = max(Decimal(0), min(grid_base, free))
    qty = (qty / rules.step_size).to_integral_value(ROUND_DOWN) * rules.step_size
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
                 window_ms: int, sleep: Callable[[float], None]) -> None:
        self.client, self.executor, self.rules, self.cfg = client, executor, rules, cfg
        self.window_ms, self.sleep = window_ms, sleep

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
            if ex.on_stop == "sell_base":
                start_base = om.risk.start.base if om.risk.start is not None else Decimal(0)
                try:
                    free = self.client.balances().get(self.rules.base, (Decimal(0), Decimal(0)))[0]
                except BackpackError as e:
                    log.warning("exit: cannot read balances to size the sale (%s); trying again", e)
                    return False
                target, note = sale_target(om.grid_base(start_base), free, self.rules)
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
        """IOC sells at the floor while the price stays at or above it. True when the sale is over (sold,
        or stopped short with a note)."""
        om = g.om
        sale = om.risk.exit.sale  # type: ignore[union-attr]
        assert sale is not None
        if not self.settle_orders(g):
            return False
        empty = 0
        while not sale.done:
            left = (sale.left / self.rules.step_size).to_integral_value(ROUND_DOWN) * self.rules.step_size
            if left < self.rules.min_quantity or sale.target == 0:
                sale.done = True
                if sale.left > 0 and sale.target > 0:
                    sale.note = (f"{fmt_amount(sale.left)} {self.rules.base} left is below the minimum order "
                                 f"quantity {self.rules.min_quantity}")
                break
            if len(sale.orders) >= MAX_SALE_ORDERS or empty >= MAX_EMPTY_ROUNDS:
                sale.done = True
                sale.note = sale.note or f"no buyer at or above {sale.floor} for the rest"
                break
            try:
                price = self.client.ticker_price(self.rules.symbol)
                free = self.client.balances().get(self.rules.base, (Decimal(0), Decimal(0)))[0]
            except BackpackError as e:
                log.warning("exit: cannot read the price or balances (%s); trying again", e)
                return False
            if price < sale.floor:
                sale.done = True
                sale.note = f"the price {price} fell below the cap {sale.floor}"
                break
            qty = min(left, (free / self.rules.step_size).to_integral_value(ROUND_DOWN) * self.rules.step_size)
            if qty < self.rules.min_quantity:
                sale.done = True
                sale.note = f"only {fmt_amount(free)} {self.rules.base} is free"
                break
            cid = om.new_sale_order()
            g.save()   # the order's clientId is on disk before it is sent
            before = sale.sold
            log.info("exit: IOC sell %s @ %s (clientId %d)", qty, sale.floor, cid)
            try:
                self.client.place_order(OrderRequest(self.rules.symbol, Side.ASK, sale.floor, qty, cid,
                                                     post_only=False, time_in_force="IOC"))
            except OrderRejected as e:
                log.warning("exit: the sale order was refused: %s %s", e.code, e.message)
                sale.done, sale.note = True, f"the exchange refused the sale: {e.message or e.code}"
                break
            except BackpackError as e:
                # No answer (or none we could read): the order may still arrive until its signature
                # window has passed; only then does a lookup by clientId tell for sure.
                log.warning("exit: no answer for the sale order (%s); looking it up by clientId once its "
                            "window has passed", e)
                self.sleep(self.window_ms / 1000 + 1)
            if not self.settle_orders(g, [cid]):
                return False
            empty = empty + 1 if sale.sold == before else 0
        om.risk_changed()
        g.publish()
        g.save()
        log.info("exit: sold %s of %s %s for %s %s%s", fmt_amount(sale.sold), fmt_amount(sale.target),
                 self.rules.base, fmt_amount(sale.proceeds), self.rules.quote,
                 f"; {fmt_amount(sale.left)} {self.rules.base} not sold: {sale.note}" if sale.left else "")
        return True

    def settle_orders(self, g: ActiveGrid, cids: list[int] | None = None) -> bool:
        """Look the sale's orders up by clientId (each an IOC: finished at once) and apply their fills.
        An order whose request may still arrive is looked up only once its signature window has passed."""
        om = g.om
        sale = om.risk.exit.sale  # type: ignore[union-attr]
        since = om.risk.exit.time_ms - 60_000  # type: ignore[union-attr]
        if cids is None and sale.orders:
            self.sleep(self.window_ms / 1000)   # a resumed sale: its last order may still arrive (waited once)
        for cid in (cids if cids is not None else list(sale.orders)):
            for attempt in range(3):
                try:
                    order = self.client.find_order(self.rules.symbol, cid, since_ms=since, side=Side.ASK)
                    if order is not None and order.executed_quantity > 0:
                        for f in self.client.fills(self.rules.symbol, from_ms=since, order_id=order.id):
                            om.apply_fill(f)
                    break
                except BackpackError as e:
                    log.warning("exit: lookup of sale order clientId %d failed (%s)", cid, e)
                    self.sleep(1.0)
            else:
                return False
        g.publish()
        return True
