"""What the grid's collaborators may see and do of its state: the typed interface between
``OrderManager`` (order_manager.py), which owns the state, and the classes it hands parts of its work to:
``ExchangeNews`` (exchange_news.py: what the exchange reports), ``TrailMoves`` and ``OutsideOrders``
(grid_moves.py: the grid's moves along its ladder; the entry's and the sale's orders). Each collaborator
holds the manager as a ``GridState`` and changes the state only through these members, under the
manager's rules: an order changes state only through ``_move``, and every saved change is marked
(``_touch``, ``_changed_pairs``, ``version``). Pure, no I/O.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from grid_calculator import GridSpec
from gridbot.core.accounting import Ledger
from gridbot.core.events import GridEvent
from gridbot.core.models import Fill, Side
from gridbot.core.order_state import GridOrder, OrderState, Orphan, Pair, Settings
from gridbot.core.risk import RiskState


class GridState(Protocol):
    grid: GridSpec
    tag: int
    settings: Settings
    next_seq: int
    version: int
    orders: dict[int, GridOrder]
    live: dict[int, GridOrder]
    by_order_id: dict[str, int]
    pairs: list[Pair]
    seen_trades: set[int]
    ledger: Ledger
    risk: RiskState
    zombies: dict[str, int]
    duplicates: set[str]
    orphans: dict[int, Orphan]
    _changed_pairs: set[int]
    _new_fills: list[Fill]
    _events: list[GridEvent]

    @property
    def offset(self) -> int: ...

    def apply_fill(self, fill: Fill) -> bool: ...

    def risk_changed(self) -> None: ...

    def _new_client_id(self) -> int: ...

    def _next_wait_seq(self) -> int: ...

    def _find(self, client_id: int | None, order_id: str | None, side: Side, price: Decimal | None,
              quantity: Decimal | None, created_ms: int = 0) -> GridOrder | None: ...

    def _move(self, o: GridOrder, new: OrderState, now_ms: int | None = None) -> bool: ...

    def _pair(self, index: int) -> Pair | None: ...

    def _touch(self, o: GridOrder) -> None: ...
