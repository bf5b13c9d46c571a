"""The entry purchase: before a new grid is laid out, buy the base its sells (and its fee reserve) need
and the account lacks, with IOC limit buys no worse than the last price x (1 + ``risk.max_slippage``).

One IOC campaign (ioc_campaign.py), crash-safe like every order (docs/architecture.md "Money in motion"):
the grid's row, with the purchase's target, its cap and each order's clientId, is in the state file before
the order is sent. A restarted bot waits until the last order's signature window has passed, looks every
order up by clientId, and buys only what the fills found so far leave; it never buys twice. A purchase
that cannot be completed within the cap is reported and the start refused (exit 2) rather than starting a
lopsided grid; nothing is placed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Callable

from backpack_api import BackpackClient
from gridbot.core.errors import StartRefused
from gridbot.core.models import Fill, MarketRules, Side
from gridbot.core.risk import buy_ceiling, sale_floor
from gridbot.engine.ioc_campaign import IocCampaign, Paused, down_to_step
from gridbot.ops.reports import fmt_amount

log = logging.getLogger("grid_bot")

ZERO = Decimal(0)


@dataclass
class Entry:
    target: Decimal                 # base to buy (gross, on the step); perps: the position to open
    ceiling: Decimal                # no fill above this price (a short's opening: none below it)
    orders: list[int] = field(default_factory=list)
    sent_ms: int = 0                # when the last order was sent (its window must pass before a lookup)
    bought: Decimal = ZERO          # gross base bought, from the orders' fills
    spent: Decimal = ZERO           # quote spent
    fees: dict[str, str] = field(default_factory=dict)
    done: bool = False
    note: str = ""
    side: str = "Bid"               # perps: a short's opening sells (Ask), its ``ceiling`` then a floor
    collateral: str = ""            # perps: the grid's collateral, for its starting funds once it has opened

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (f"{v:f}" if isinstance(v, Decimal) else v) for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Entry":
        return cls(Decimal(d["target"]), Decimal(d["ceiling"]), [int(x) for x in d["orders"]], int(d["sent_ms"]),
                   Decimal(d["bought"]), Decimal(d["spent"]), dict(d.get("fees", {})), bool(d["done"]),
                   str(d.get("note", "")), str(d.get("side", "Bid")), str(d.get("collateral", "")))


class EntryPurchase:
    """The purchase as an IOC campaign (ioc_campaign.py): buys at the ceiling; a fill's base is not the
    grid's (the grid starts with it), so the totals are the orders' fills, summed again at each settle."""

    def __init__(self, client: BackpackClient, rules: MarketRules, *, window_ms: int, wall_ms: Callable[[], int],
                 sleep: Callable[[float], None] = time.sleep, new_client_id: Callable[[], int],
                 save: Callable[[Entry], None]) -> None:
        self.client, self.rules = client, rules
        self.window_ms, self.wall_ms, self.sleep = window_ms, wall_ms, sleep
        self.new_client_id, self.save = new_client_id, save

    @staticmethod
    def start(target: Decimal, price: Decimal, max_slippage: Decimal, rules: MarketRules, side: Side = Side.BID) -> Entry:
        if side is Side.ASK:
            return Entry(target, sale_floor(price, max_slippage, rules.tick_size), side=side.value)
        return Entry(target, buy_ceiling(price, max_slippage, rules.tick_size))

    def run(self, e: Entry, quote_kept: Decimal, *, fit: Callable[[Decimal, Any], tuple[Decimal, str]] | None = None,
            read: Callable[[], Any] | None = None) -> None:
        """Buy until ``e.target`` is bought, the price leaves the cap, or the book gives nothing; raise
        StartRefused (the start refused) when it ends short. ``quote_kept``: the quote the grid's buys
        will lock, which the purchase must leave free. A perps grid's opening gives its own ``fit`` and
        ``read`` (the margin), and a short's opening sells (``e.side``)."""
        r = self.rules
        campaign = IocCampaign(self.client, r, Side(e.side), e.ceiling, label="entry",
                               what="purchase" if e.side == Side.BID.value else "sale", window_ms=self.window_ms,
                               wall_ms=self.wall_ms, sleep=self.sleep, read=read)
        fills: dict[int, dict[int, Fill]] = {}   # clientId -> its fills by trade id

        def left() -> tuple[Decimal, str]:
            qty = down_to_step(e.target - e.bought, r)
            return (ZERO, "") if qty <= 0 else (max(qty, r.min_quantity), "")

        def fit_quote(qty: Decimal, balances: dict[str, tuple[Decimal, Decimal]]) -> tuple[Decimal, str]:
            free_quote = balances.get(r.quote, (ZERO, ZERO))[0]
            if free_quote - quote_kept < qty * e.ceiling:
                return ZERO, (f"the free {r.quote} ({fmt_amount(free_quote)}) does not cover the grid's buys "
                              f"({fmt_amount(quote_kept)}) and {qty} {r.base} at up to {e.ceiling}")
            return qty, ""

        def reserve() -> int:
            cid = self.new_client_id()
            e.orders.append(cid)
            return cid

        def settle(cids: list[int]) -> None:
            since = (e.sent_ms or self.wall_ms()) - 600_000
            for cid in cids:
                fills[cid] = {f.trade_id: f for f in campaign.fills_of(cid, since)}
            every = [f for by_trade in fills.values() for f in by_trade.values()]
            e.bought = sum((f.quantity for f in every), ZERO)
            e.spent = sum((f.price * f.quantity for f in every), ZERO)
            fees: dict[str, Decimal] = {}
            for f in every:
                fees[f.fee_symbol] = fees.get(f.fee_symbol, ZERO) + f.fee
            e.fees = {k: f"{v:f}" for k, v in fees.items()}

        try:
            campaign.run(e, left=left, fit=fit or fit_quote, reserve=reserve, save=lambda: self.save(e), settle=settle,
                         filled=lambda: e.bought)
        except Paused as p:
            raise StartRefused(f"the entry {campaign.what} {p}; start again (its orders are looked up again, never "
                               f"sent twice)") from None
        verb = "bought" if e.side == Side.BID.value else "sold"
        if e.bought < e.target and down_to_step(e.target - e.bought, r) > 0:
            e.done = False     # short: the next start of a grid buys what is still missing
            self.save(e)
            raise StartRefused(f"the entry {campaign.what} {verb} {fmt_amount(e.bought)} of {fmt_amount(e.target)} {r.base} "
                               f"(for {fmt_amount(e.spent)} {r.quote}): {e.note}. Refusing to start a lopsided grid: "
                               f"nothing was placed, and what was {verb} stays in the account (the next start "
                               f"{'buys' if e.side == Side.BID.value else 'sells'} only what is still missing)")
        log.info("entry: %s %s %s for %s %s (%s %s)", verb, fmt_amount(e.bought), r.base, fmt_amount(e.spent),
                 r.quote, "at most" if e.side == Side.BID.value else "at least", e.ceiling)
