"""What a perps grid watches while it runs (docs/perps.md), and when it stops the grid:

- **Its position** against the exchange's ``netQuantity``, read on every check. A difference that a second
  read after the fills still shows is logged and alerted, and stops the grid: something the grid does not
  know of changed the position (a liquidation, auto-deleveraging, another client on the subaccount), and
  its reduce-only orders and its worst case no longer hold.
- **Its margin**: the account's margin fraction (``/api/v1/capital/collateral``). At
  ``risk.stop_margin_fraction`` (by default halfway between the maintenance fraction and the grid's own at
  the worse end of its range: ``perp_grid.margin_stop_fraction``) the grid stops and closes its position
  itself (cancel first, then a reduce-only, capped IOC close), before the exchange would liquidate it.
- **Changes the exchange makes itself**: an order update whose origin is not the user's
  (``LIQUIDATION_AUTOCLOSE``, ``ADL_AUTOCLOSE``...), ``orderModified`` (a reduce-only order shrunk), an
  ``ACCOUNT_LIQUIDATING`` refusal. Each stops the grid with ``on_stop: keep``: its orders are cancelled and
  the bot places nothing more; it never fights the exchange.
- **Funding**: the rows of ``/wapi/v1/history/funding`` since the grid was created, saved once each (by
  interval) and counted in the grid's ledger: their sum is the funding line of every report.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Callable

from backpack_api import BackpackClient, BackpackError
from gridbot.core.events import OrderRefused
from gridbot.core.models import MarketRules, OrderUpdate
from gridbot.engine.executor import ActiveGrid, Executor
from gridbot.engine.perp_account import PerpFunds, grid_position, net_position
from gridbot.engine.perp_grid import margin_stop_fraction
from gridbot.ops.reports import fmt_amount, iso, signed

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)
MARGIN_STOP = "margin stop"
LIQUIDATION = "liquidation"
EXCHANGE_CHANGE = "exchange's own change"
POSITION_CHANGE = "position change"
ORIGINS = {"LIQUIDATION_AUTOCLOSE": LIQUIDATION, "ADL_AUTOCLOSE": "auto-deleveraging",
           "BACKSTOP_LIQUIDITY_PROVIDER": LIQUIDATION}


class PerpWatch:
    def __init__(self, client: BackpackClient, executor: Executor, cfg: Any, funds: PerpFunds, rules: MarketRules,
                 *, clock: Callable[[], float]) -> None:
        self.client, self.executor, self.cfg, self.funds, self.clock = client, executor, cfg, funds, clock
        self.rules = rules
        # The margin fraction that stops the grid: risk.stop_margin_fraction, or (once the grid is laid out and
        # its starting price known) perp_grid.margin_stop_fraction.
        self.stop_at: Decimal | None = cfg.risk.stop_margin_fraction
        self.symbol = cfg.trading.symbol
        self.pending: tuple[str, str, str] | None = None   # (reason, detail, on_stop): an exit to write down
        self.next_at = 0.0
        self.counted: set[int] = set()      # funding intervals counted (by their end), this process
        self.checks = 0                     # completed checks (tests wait on it)

    def flag(self, reason: str, detail: str, on_stop: str = "keep") -> None:
        if self.pending is None:
            log.error("perps: %s: %s", reason, detail)
            self.pending = (reason, detail, on_stop)

    # -------------------------------------------------------------------------- what the exchange tells
    def on_update(self, u: OrderUpdate, om: Any) -> None:
        """An order update, before the grid applies it: one the exchange made itself stops the grid first
        (an order it cancelled must not be placed again)."""
        if u.symbol != self.symbol:
            return
        if u.origin not in (None, "USER"):
            what = ORIGINS.get(u.origin, EXCHANGE_CHANGE)
            self.flag(what, f"the exchange's {u.origin} {u.event} on order {u.order_id}" + (
                f" ({u.side.value} {u.quantity} @ {u.price})" if u.price is not None else ""))
        elif u.event == "orderModified" and (u.order_id in om.by_order_id or u.client_id in om.orders):
            self.flag(EXCHANGE_CHANGE, f"the exchange shrank our reduce-only order {u.order_id} to {u.quantity} "
                                       f"{om.grid.base}: the position fell below what the grid's orders close")
        elif u.event == "orderExpired" and u.expiry_reason == "ReduceOnlyNotReduced" and (
                u.order_id in om.by_order_id or u.client_id in om.orders):
            self.flag(EXCHANGE_CHANGE, f"the exchange expired our reduce-only order {u.order_id} "
                                       f"({u.expiry_reason}): the position fell below what the grid's orders close")

    def on_event(self, ev: Any) -> None:
        if isinstance(ev, OrderRefused) and ev.code == "ACCOUNT_LIQUIDATING":
            self.flag(LIQUIDATION, "the exchange refuses our orders: the account is being liquidated")

    # -------------------------------------------------------------------------- the check
    def due(self) -> bool:
        return self.clock() >= self.next_at

    def stop_fraction(self, g: ActiveGrid) -> Decimal | None:
        """The margin fraction that stops the grid (None before it is laid out)."""
        start = g.om.risk.start
        if self.stop_at is None and start is not None:
            self.stop_at = margin_stop_fraction(g.om.grid, start.price, self.cfg.trading, self.rules, start.value)
            log.info("perps: the grid stops and closes its position at a margin fraction of %s (risk.stop_margin_"
                     "fraction not set: halfway from maintenance to the grid's own at the worse end of its range)",
                     f"{self.stop_at:.4f}" if self.stop_at is not None else "twice the maintenance fraction")
        return self.stop_at

    def check(self, g: ActiveGrid, price: Decimal | None = None) -> bool:
        """Position, margin and funding, read now (``price``: the last price, at which the margin check values
        a flat grid's orders). False when the exchange did not answer (tried again at the next interval). A
        grid not yet laid out (waiting for its trigger) has only its funding counted: a position held for its
        opening is not a difference."""
        self.next_at = self.clock() + self.cfg.trading.interval
        try:
            held = [p for p in self.client.positions(self.symbol) if p.symbol == self.symbol]
            m = self.client.margin()
            payments = self.client.funding_payments(self.symbol)
        except BackpackError as e:
            log.warning("perps: cannot read the position, margin or funding (%s); trying again", e)
            return False
        self.count_funding(g, payments)
        net = sum((p.net_quantity for p in held), ZERO)
        if price is not None:
            self.funds.mark = price
        for p in held:
            self.funds.mark = p.mark_price        # the margin check values exposure at the mark
        if g.om.risk.start is None:
            self.checks += 1
            return True
        if net != grid_position(g.om):
            self.executor.sync(g, orders=False)   # fills that came between the reads
            try:
                net = net_position(self.client, self.symbol)
            except BackpackError as e:
                log.warning("perps: cannot read the position again (%s)", e)
                return False
            mine = grid_position(g.om)
            if net != mine and g.om.risk.exit is None:
                self.flag(POSITION_CHANGE, f"the exchange's position is {fmt_amount(net)} {g.om.grid.base}, the "
                                           f"grid's fills make it {fmt_amount(mine)}: the exchange's figure stands")
        stop_at = self.stop_fraction(g)
        stop_at = stop_at if stop_at is not None else 2 * m.mmf
        if m.margin_fraction is not None and m.margin_fraction <= stop_at and g.om.risk.exit is None:
            self.flag(MARGIN_STOP, f"the margin fraction {m.margin_fraction:.4f} reached {stop_at:.4f} "
                                   f"(maintenance {m.mmf:.4f})", "close")
        self.checks += 1
        return True

    def count_funding(self, g: ActiveGrid, payments: list[Any]) -> None:
        ours = [p for p in payments if p.symbol == self.symbol and p.interval_end_ms > g.created_ms
                and p.interval_end_ms not in self.counted]
        new = g.store.add_funding(g.grid_id, ours) if g.store is not None and g.grid_id is not None else ours
        for p in sorted(new, key=lambda p: p.interval_end_ms):
            g.om.ledger.funding += p.quantity
            g.om.version += 1
            log.info("funding: %s %s at the rate %s for the interval to %s; %s in all", signed(p.quantity),
                     g.om.grid.quote, p.rate, iso(p.interval_end_ms), signed(g.om.ledger.funding))
        self.counted.update(p.interval_end_ms for p in ours)


def perp_watch_for(cfg: Any, client: BackpackClient, executor: Executor, g: ActiveGrid, rules: MarketRules,
                   clock: Callable[[], float]) -> PerpWatch | None:
    """The watch of a perps grid (None on spot), listening to the grid's events for refusals."""
    if not cfg.trading.is_perp or executor.perp is None:
        return None
    watch = PerpWatch(client, executor, cfg, executor.perp, rules, clock=clock)
    g.listeners.append(watch.on_event)
    if watch.stop_at is not None:
        log.info("perps: the grid stops and closes its position at a margin fraction of %s (risk.stop_margin_"
                 "fraction)", watch.stop_at)
    else:
        watch.stop_fraction(g)
    return watch
