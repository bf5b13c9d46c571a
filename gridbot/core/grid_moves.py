"""A grid's moves and money outside its pairs, two collaborators of ``OrderManager`` (order_manager.py)
working on its state through its typed interface (grid_state.py): ``TrailMoves``, the moves along its
ladder (a pair dropped at one end, one added at the other, the dropped pair's order cancelled as an
orphan); ``OutsideOrders``, the clientIds and fills of orders that are not the pairs' own (the entry
purchase, the exit's sale). Pure, no I/O.
"""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from grid_calculator import Ladder
from gridbot.core.events import SaleFill
from gridbot.core.models import Fill, Side
from gridbot.core.grid_state import GridState
from gridbot.core.order_state import Cancel, GridOrder, OrderState, Pair


class TrailMoves:
    """The grid ``m`` along its ladder: which orders are inside its window, a move one step up or down,
    the recentring of a triggered auto-price grid."""

    def __init__(self, m: GridState) -> None:
        self.m = m

    def in_grid(self, o: GridOrder) -> bool:
        """Is this order one of the grid's as it stands (not one a trail move left outside, being cancelled)?"""
        return self.m._pair(o.pair) is not None

    def take_orphan_cancels(self) -> list[Cancel]:
        out = []
        for o in self.m.live.values():
            if (self.m._pair(o.pair) is None and o.state is OrderState.OPEN and o.order_id is not None
                    and not o.cancel_requested):
                o.cancel_requested = True
                self.m._touch(o)
                out.append(Cancel(o.client_id, o.order_id))
        return out

    def can_shift(self, up: bool) -> bool:
        """May the grid move one step now? Above the top it must hold only buys (below the bottom only
        sells), every order settled on the book: a move never races an order whose outcome is unknown,
        and never starts before the last move's cancel is confirmed (one move at a time)."""
        side = Side.BID if up else Side.ASK
        return (bool(self.m.pairs) and all(p.side is side for p in self.m.pairs)
                and all(o.state is OrderState.OPEN and o.order_id is not None and self.m._pair(o.pair) is not None
                        for o in self.m.live.values()))

    def shift(self, up: bool, levels: tuple[Decimal, ...]) -> None:
        """Move the grid one step along its ladder to ``levels``: up drops its lowest pair (whose buy is
        then cancelled) and adds a buy pair at the top; down drops its highest pair (a sell) and adds a
        sell pair at the bottom. The caller records the move (``risk.moves``) in the same save."""
        drop = self.m.pairs[0] if up else self.m.pairs[-1]
        self.m.risk.offset += 1 if up else -1
        self.m.grid = replace(self.m.grid, levels=levels)
        index = self.m.offset + len(levels) - 2 if up else self.m.offset
        # The new pair's order uses the funds the dropped pair's order frees: it is placed only once that
        # order's cancel is confirmed (cancel, confirm, then place).
        new = Pair(index=index, side=Side.BID if up else Side.ASK, waiting_since=self.m._next_wait_seq(),
                   after_cancel=drop.order)
        self.m.pairs = [*self.m.pairs[1:], new] if up else [new, *self.m.pairs[:-1]]
        self.m._changed_pairs.add(index)
        if drop.order is not None:
            self.m._touch(self.m.orders[drop.order])  # outside the window now: take_orphan_cancels cancels it
        self.m.version += 1

    def recentre(self, levels: tuple[Decimal, ...], tick: Decimal) -> None:
        """``auto_price`` with a trigger: before its first order the grid takes the levels around the price
        at which the trigger was crossed (its quantity kept), and its ladder follows them."""
        assert not self.m.pairs, "a grid is recentred only before it is laid out"
        self.m.grid = replace(self.m.grid, levels=levels)
        self.m.risk.ladder = Ladder(levels[0], levels[-1], len(levels), self.m.grid.mode, tick)
        self.m.version += 1


class OutsideOrders:
    """The orders of grid ``m`` that are not its pairs': the entry purchase's and the exit sale's clientIds,
    and the sale's fills (its base being sold, in the grid's ledger)."""

    def __init__(self, m: GridState) -> None:
        self.m = m

    def reserve_client_id(self) -> int:
        """A clientId for an order that is not the grid's own (the entry purchase); saved with the grid."""
        self.m.version += 1
        return self.m._new_client_id()

    def new_sale_order(self) -> int:
        """A clientId for an order of the exit's sale (recorded in ``risk.exit.sale`` before it is sent)."""
        assert self.m.risk.exit is not None and self.m.risk.exit.sale is not None
        cid = self.m._new_client_id()
        self.m.risk.exit.sale.orders.append(cid)
        self.m.version += 1
        return cid

    def sale_fill(self, fill: Fill) -> bool:
        """A fill of the exit's sale: accounted in the ledger (it is the grid's base being sold)."""
        if fill.trade_id in self.m.seen_trades:
            return False
        assert self.m.risk.exit is not None and self.m.risk.exit.sale is not None
        sale = self.m.risk.exit.sale
        self.m.seen_trades.add(fill.trade_id)
        self.m._new_fills.append(fill)
        fee_quote = self.m.ledger.record_fill(fill)
        sale.sold += fill.quantity
        sale.proceeds += fill.price * fill.quantity
        sale.fees += fee_quote
        self.m.version += 1
        self.m._events.append(SaleFill(fill.trade_id, fill.order_id, fill.price, fill.quantity, fill.fee,
                                     fill.fee_symbol, sale.sold, sale.target))
        return True

    def grid_base(self, start_base: Decimal) -> Decimal:
        """The base this grid holds: what it took at its start plus what it has bought, less what it
        has sold and paid in fees."""
        return start_base + self.m.ledger.position
