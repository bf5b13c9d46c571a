"""Exits and trailing: the trigger price, stop-loss, take-profit, the out-of-range policy, trailing.

Pure, no I/O, no clock: ``RiskGuard.decide`` is given the last price and the time and says what the grid
must do before anything else on that price update, and ``GridRisk.decide`` turns that into a typed
decision the engine carries out (``PlaceOrders``, ``Hold``, ``LayOut``, ``CarryOutExit``; docs/architecture.md
"Money in motion"). The live bot, paper mode and the backtester call it in the same place: after the
update's fills are applied, before any order is placed. What must survive a restart (the trigger
reached, the trail offset and its moves, an exit and its sale) is ``RiskState``, saved with the grid in
the same transaction as its orders, before the engine carries a decision out.

Rules:
- Nothing is placed until the trigger price is crossed (from the side the price started on).
- An exit condition must hold continuously for ``stop_delay``; its timer restarts when it stops holding
  (timers are not saved: after a restart a condition must hold ``stop_delay`` again).
- Precedence on one update: stop-loss (price, then return), take-profit (price, then return), range.
- Trailing is one step at a time, maker-only: up when the price is more than one step above the top
  level, down when more than one step below the bottom, never past the limits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from gridbot.core.accounting import Ledger, StartFunds, total_return
from gridbot.core.errors import InputError
from grid_calculator import Ladder

ZERO = Decimal(0)
ON_STOP = ("keep", "sell_base", "close")   # close: perps only (a reduce-only close of the position)
OUT_OF_RANGE = ("wait", "stop", "trail")

# The conditions, in the order they win when several fire on one price update.
STOP_LOSS_PRICE = "stop-loss price"
STOP_LOSS_RETURN = "stop-loss return"
TAKE_PROFIT_PRICE = "take-profit price"
TAKE_PROFIT_RETURN = "take-profit return"
OUT_OF_RANGE_STOP = "out of range"
PRECEDENCE = (STOP_LOSS_PRICE, STOP_LOSS_RETURN, TAKE_PROFIT_PRICE, TAKE_PROFIT_RETURN, OUT_OF_RANGE_STOP)


@dataclass(frozen=True)
class RiskConfig:
    trigger_price: Decimal | None = None
    stop_loss_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    stop_loss_return: Decimal | None = None
    take_profit_return: Decimal | None = None
    stop_delay: float = 0.0
    on_stop: str = "keep"
    out_of_range: str = "wait"
    trail_up_limit: Decimal | None = None
    trail_down_limit: Decimal | None = None
    max_slippage: Decimal = Decimal("0.005")
    liquidation_buffer: Decimal = Decimal("0.05")   # perps: refuse a grid liquidated within this of its range
    stop_margin_fraction: Decimal | None = None     # perps: stop and close at this margin fraction (None: 2 x MMF)


@dataclass
class Sale:
    """The sale of the grid's base when it stops with ``on_stop: sell_base``; on perps (``on_stop: close``)
    the reduce-only close of its position: a sale of a long, a purchase (``side`` Bid) of a short."""
    target: Decimal                    # what is to be sold (the grid's base, at most the free balance)
    floor: Decimal                     # no fill below this price: the last price x (1 - max_slippage)
    orders: list[int] = field(default_factory=list)   # clientIds of the IOC orders, recorded before sent
    sold: Decimal = ZERO
    proceeds: Decimal = ZERO           # quote received, before fees
    fees: Decimal = ZERO               # in quote
    done: bool = False
    note: str = ""                     # why it ended short, if it did
    sent_ms: int = 0                   # when its last order was sent (0: before this was recorded)
    side: str = "Ask"                  # Ask: sells; Bid: buys back a short (perps); ``floor`` is then a ceiling

    @property
    def left(self) -> Decimal:
        return max(ZERO, self.target - self.sold)

    def to_json(self) -> dict:
        return {"target": f"{self.target:f}", "floor": f"{self.floor:f}", "orders": self.orders,
                "sold": f"{self.sold:f}", "proceeds": f"{self.proceeds:f}", "fees": f"{self.fees:f}",
                "done": self.done, "note": self.note, "sent_ms": self.sent_ms, "side": self.side}

    @classmethod
    def from_json(cls, d: dict) -> "Sale":
        return cls(Decimal(d["target"]), Decimal(d["floor"]), [int(x) for x in d["orders"]], Decimal(d["sold"]),
                   Decimal(d["proceeds"]), Decimal(d["fees"]), bool(d["done"]), str(d.get("note", "")),
                   int(d.get("sent_ms", 0)), str(d.get("side", "Ask")))


@dataclass
class Exit:
    """A triggered exit: written down before the first request that carries it out."""
    reason: str                        # one of PRECEDENCE
    detail: str                        # in words, with the numbers
    price: Decimal
    time_ms: int
    on_stop: str
    phase: str = "cancelling"          # cancelling -> selling -> done
    sale: Sale | None = None

    def to_json(self) -> dict:
        return {"reason": self.reason, "detail": self.detail, "price": f"{self.price:f}", "time_ms": self.time_ms,
                "on_stop": self.on_stop, "phase": self.phase,
                "sale": self.sale.to_json() if self.sale is not None else None}

    @classmethod
    def from_json(cls, d: dict) -> "Exit":
        return cls(str(d["reason"]), str(d["detail"]), Decimal(d["price"]), int(d["time_ms"]), str(d["on_stop"]),
                   str(d["phase"]), Sale.from_json(d["sale"]) if d.get("sale") else None)


@dataclass
class TrailMove:
    time_ms: int
    direction: str                     # "up" or "down"
    offset: int                        # the grid's offset after the move
    lower: Decimal
    upper: Decimal
    price: Decimal

    def to_json(self) -> dict:
        return {"time_ms": self.time_ms, "direction": self.direction, "offset": self.offset,
                "lower": f"{self.lower:f}", "upper": f"{self.upper:f}", "price": f"{self.price:f}"}

    @classmethod
    def from_json(cls, d: dict) -> "TrailMove":
        return cls(int(d["time_ms"]), str(d["direction"]), int(d["offset"]), Decimal(d["lower"]),
                   Decimal(d["upper"]), Decimal(d["price"]))


@dataclass
class RiskState:
    """Everything about exits and trailing that a restart must find as it was."""
    trigger: Decimal | None = None     # the trigger price this grid waits for (None: none)
    trigger_from: str = ""             # "below" or "above": where the price was when the grid was created
    triggered: bool = True
    start: StartFunds | None = None
    ladder: Ladder | None = None
    offset: int = 0
    moves: list[TrailMove] = field(default_factory=list)
    exit: Exit | None = None
    reserve: Decimal = ZERO            # investment mode: the base the grid keeps for its buys' fees
    last_price: Decimal | None = None  # the last price the bot logged (status and report read it)
    last_price_ms: int | None = None
    entry: Any = None                  # investment mode: the entry purchase (startup.Entry as JSON)
    recover_from: int | None = None    # a restart found orders the state had lost: their lowest sequence

    def to_json(self) -> dict[str, Any]:
        return {"trigger": None if self.trigger is None else f"{self.trigger:f}", "trigger_from": self.trigger_from,
                "triggered": self.triggered, "start": self.start.to_json() if self.start else None,
                "ladder": self.ladder.to_json() if self.ladder else None, "offset": self.offset,
                "moves": [m.to_json() for m in self.moves],
                "exit": self.exit.to_json() if self.exit else None, "reserve": f"{self.reserve:f}",
                "last_price": None if self.last_price is None else f"{self.last_price:f}",
                "last_price_ms": self.last_price_ms, "entry": self.entry,
                "recover_from": self.recover_from}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "RiskState":
        if not d:
            return cls()
        return cls(None if d.get("trigger") is None else Decimal(d["trigger"]), str(d.get("trigger_from", "")),
                   bool(d.get("triggered", True)), StartFunds.from_json(d["start"]) if d.get("start") else None,
                   Ladder.from_json(d["ladder"]) if d.get("ladder") else None, int(d.get("offset", 0)),
                   [TrailMove.from_json(m) for m in d.get("moves", [])],
                   Exit.from_json(d["exit"]) if d.get("exit") else None, Decimal(d.get("reserve", "0")),
                   None if d.get("last_price") is None else Decimal(d["last_price"]), d.get("last_price_ms"),
                   d.get("entry"), d.get("recover_from"))

    def arm(self, trigger: Decimal | None, price: Decimal) -> None:
        """A new grid: wait for ``trigger`` unless the price is already there."""
        self.trigger = trigger
        if trigger is None or price == trigger:
            self.triggered = True
            return
        self.trigger_from = "below" if price < trigger else "above"
        self.triggered = False


@dataclass(frozen=True)
class Trigger:
    price: Decimal


@dataclass(frozen=True)
class StopNow:
    reason: str
    detail: str


@dataclass(frozen=True)
class Move:
    up: bool


Decision = Trigger | StopNow | Move | None


def sale_floor(price: Decimal, max_slippage: Decimal, tick: Decimal) -> Decimal:
    """The lowest price a sale may fill at: ``price`` x (1 - max_slippage), rounded up to the tick (no
    worse than the cap)."""
    return (price * (1 - max_slippage) / tick).to_integral_value(ROUND_CEILING) * tick


def buy_ceiling(price: Decimal, max_slippage: Decimal, tick: Decimal) -> Decimal:
    """The highest price a purchase may fill at: ``price`` x (1 + max_slippage), rounded down to the tick."""
    return (price * (1 + max_slippage) / tick).to_integral_value(ROUND_FLOOR) * tick


class RiskGuard:
    """Decides, on each price update, whether the grid triggers, stops or moves. Holds the timers of
    ``stop_delay``; the state it decides on is the grid's ``RiskState``."""

    def __init__(self, cfg: RiskConfig) -> None:
        self.cfg = cfg
        self.delay_ms = int(cfg.stop_delay * 1000)
        self.since: dict[str, int] = {}

    def _held(self, name: str, holds: bool, now_ms: int) -> bool:
        """Has ``name`` held continuously for the delay (counting from its first update)?"""
        if not holds:
            self.since.pop(name, None)
            return False
        return now_ms - self.since.setdefault(name, now_ms) >= self.delay_ms

    @staticmethod
    def crossed(state: RiskState, price: Decimal) -> bool:
        assert state.trigger is not None
        return price >= state.trigger if state.trigger_from == "below" else price <= state.trigger

    def decide(self, state: RiskState, levels: tuple[Decimal, ...], ledger: Ledger, price: Decimal,
               now_ms: int) -> Decision:
        """What the grid must do first on this price update: trigger, stop, move one step, or nothing."""
        if state.exit is not None:
            return None
        if not state.triggered:
            return Trigger(price) if self.crossed(state, price) else None
        c = self.cfg
        ret = total_return(state.start, ledger, price)
        lo, hi = levels[0], levels[-1]

        def pct(r: Decimal | None) -> str:
            assert r is not None   # each message is built only when its condition, which needs it, held
            return f"{r.quantize(Decimal('0.0001')):%}"

        checks = (
            (STOP_LOSS_PRICE, c.stop_loss_price is not None and price <= c.stop_loss_price,
             lambda: f"the price {price} is at or below the stop-loss price {c.stop_loss_price}"),
            (STOP_LOSS_RETURN, c.stop_loss_return is not None and ret is not None and ret <= c.stop_loss_return,
             lambda: f"the grid's total return {pct(ret)} is at or below the stop-loss return "
                     f"{c.stop_loss_return:%}"),
            (TAKE_PROFIT_PRICE, c.take_profit_price is not None and price >= c.take_profit_price,
             lambda: f"the price {price} is at or above the take-profit price {c.take_profit_price}"),
            (TAKE_PROFIT_RETURN, c.take_profit_return is not None and ret is not None and ret >= c.take_profit_return,
             lambda: f"the grid's total return {pct(ret)} is at or above the take-profit return "
                     f"{c.take_profit_return:%}"),
            (OUT_OF_RANGE_STOP, c.out_of_range == "stop" and not lo <= price <= hi,
             lambda: f"the price {price} is outside the grid's range {lo}..{hi}"),
        )
        fired = [(name, detail) for name, holds, detail in checks if self._held(name, holds, now_ms)]
        if fired:
            name, detail = fired[0]
            return StopNow(name, detail() + (f" (for {c.stop_delay:g} s)" if c.stop_delay else ""))
        if c.out_of_range != "trail" or state.ladder is None:
            return None
        n = len(levels)
        up_to = state.ladder.price(state.offset + n)        # the level one step above the top
        down_to = state.ladder.price(state.offset - 1)      # one step below the bottom
        up = (c.trail_up_limit is not None and price > up_to and up_to <= c.trail_up_limit)
        down = (c.trail_down_limit is not None and price < down_to and down_to >= c.trail_down_limit
                and state.ladder.usable(state.offset - 1, ZERO))
        if self._held("trail up", up, now_ms):
            return Move(True)
        if self._held("trail down", down, now_ms):
            return Move(False)
        return None

    def trail_limits_reached(self, state: RiskState, levels: tuple[Decimal, ...], price: Decimal) -> str | None:
        """Why the grid does not follow the price that is more than a step beyond it (for the log), or None."""
        if self.cfg.out_of_range != "trail" or state.ladder is None:
            return None
        n = len(levels)
        up_to, down_to = state.ladder.price(state.offset + n), state.ladder.price(state.offset - 1)
        if price > up_to and (self.cfg.trail_up_limit is None or up_to > self.cfg.trail_up_limit):
            return f"the next move up would put the top level at {up_to}, above trail_up_limit {self.cfg.trail_up_limit}"
        if price < down_to and (self.cfg.trail_down_limit is None or down_to < self.cfg.trail_down_limit):
            return (f"the next move down would put the bottom level at {down_to}, below trail_down_limit "
                    f"{self.cfg.trail_down_limit}")
        return None


def exit_notes(cfg: RiskConfig, levels: tuple[Decimal, ...], price: Decimal, ladder: Ladder | None = None,
               *, fresh: bool = True) -> list[str]:
    """What is wrong or odd about the exits for this grid at this price: raises ``InputError`` for what
    must be fixed before a new grid starts (an exit that would fire at once, a stop-loss above the range),
    returns warnings for the rest (an exit inside the range, one that can never fire)."""
    lo, hi = levels[0], levels[-1]
    notes: list[str] = []
    sl, tp = cfg.stop_loss_price, cfg.take_profit_price
    if sl is not None:
        if sl >= hi:
            raise InputError(f"risk.stop_loss_price {sl} is not below the grid's range {lo}..{hi}: set it below "
                             f"{lo} (or inside the range, if you mean it)")
        if fresh and price <= sl:
            raise InputError(f"risk.stop_loss_price {sl} is at or above the price {price}: the grid would stop "
                             f"at once; set it below the price")
        if sl >= lo:
            notes.append(f"risk.stop_loss_price {sl} lies inside the grid's range {lo}..{hi}: the grid stops "
                         f"before its lowest levels can trade")
    if tp is not None:
        if tp <= lo:
            raise InputError(f"risk.take_profit_price {tp} is not above the grid's range {lo}..{hi}: set it above "
                             f"{hi} (or inside the range, if you mean it)")
        if fresh and price >= tp:
            raise InputError(f"risk.take_profit_price {tp} is at or below the price {price}: the grid would stop "
                             f"at once; set it above the price")
        if tp <= hi:
            notes.append(f"risk.take_profit_price {tp} lies inside the grid's range {lo}..{hi}: the grid stops "
                         f"before its highest levels can trade")
    if cfg.trigger_price is not None and fresh and cfg.out_of_range == "stop" and not lo <= cfg.trigger_price <= hi:
        notes.append(f"trading.trigger_price {cfg.trigger_price} lies outside the range {lo}..{hi} and "
                     f"risk.out_of_range is stop: the grid will stop once triggered")
    if fresh and cfg.out_of_range == "stop" and not lo <= price <= hi and cfg.trigger_price is None:
        notes.append(f"the price {price} is outside the range {lo}..{hi} and risk.out_of_range is stop: the grid "
                     f"stops {'at once' if not cfg.stop_delay else f'after {cfg.stop_delay:g} s'} unless the price "
                     f"comes back")
    if cfg.out_of_range == "trail" and ladder is not None:
        n = len(levels)
        up = cfg.trail_up_limit
        if up is not None and ladder.price(n) > up:
            notes.append(f"risk.trail_up_limit {up} is below the first move's top level {ladder.price(n)}: the grid "
                         f"can never trail up")
        down = cfg.trail_down_limit
        if down is not None and ladder.price(-1) < down:
            notes.append(f"risk.trail_down_limit {down} is above the first move's bottom level {ladder.price(-1)}: "
                         f"the grid can never trail down")
    return notes


def start_funds(levels: tuple[Decimal, ...], quantity: Decimal, price: Decimal, time_ms: int | None = None,
                reserve: Decimal = ZERO) -> StartFunds:
    """What a grid laid out at ``price`` takes: quote for the buys below the empty level, base for the
    sells above it (``grid_calculator.initial_plan``) and its fee ``reserve`` in base (investment
    mode), valued at ``price``."""
    from grid_calculator import nearest_level
    empty = nearest_level(levels, price)
    quote = sum((p * quantity for p in levels[:empty]), ZERO)
    return StartFunds(quantity * (len(levels) - 1 - empty) + reserve, quote, price, time_ms)


@dataclass(frozen=True)
class PlaceOrders:
    """Nothing stands in the way: the engine places what the grid's manager asks for."""


@dataclass(frozen=True)
class Hold:
    """Nothing to place on this update (waiting for the trigger, or for the engine's part of a lay-out)."""


@dataclass(frozen=True)
class LayOut:
    """The grid is triggered but not laid out: the engine makes its entry purchase, if it has one, then calls
    ``GridRisk.lay_out``."""
    price: Decimal


@dataclass(frozen=True)
class CarryOutExit:
    """An exit is written in the grid's state: the engine cancels the grid's orders and, with ``sell_base``,
    sells its base (``ExitRunner.carry_out``), then tells ``GridRisk.exit_done``."""
    price: Decimal


GridDecision = PlaceOrders | Hold | LayOut | CarryOutExit


class GridRisk:
    """The one place exits and trailing are applied to a grid's ``OrderManager`` (live, paper and backtest
    alike). ``decide`` runs on every price update after its fills and before any order is placed, and
    returns what the engine must do; it changes only the grid's state (the trigger reached, a trail move,
    an exit written down), which the engine saves before it carries anything out. What the grid has to say
    (the trigger, a move, an exit, a trail limit) waits in ``notes`` for the engine to log or notify. It
    never sleeps, never calls the exchange, and takes time as a value."""

    def __init__(self, cfg: RiskConfig) -> None:
        self.cfg = cfg
        self.guard = RiskGuard(cfg)
        self.finished = False
        self.limit_told: str | None = None
        self.notes: list[tuple[str, str]] = []   # (kind, text): "trigger", "start", "trail", "exit", "trail-limit"

    def take_notes(self) -> list[tuple[str, str]]:
        out, self.notes = self.notes, []
        return out

    def decide(self, om: Any, price: Decimal | None, now_ms: int) -> GridDecision:
        st: RiskState = om.risk
        if self.finished:
            return Hold()
        if st.exit is not None:
            return CarryOutExit(st.exit.price)
        if price is None:
            # No fresh price: nothing is known to have held meanwhile, so a stop_delay starts again.
            self.guard.since.clear()
            return PlaceOrders() if st.triggered else Hold()
        if not st.triggered:
            if not self.guard.crossed(st, price):
                return Hold()
            st.triggered = True
            om.risk_changed()
            self.notes.append(("trigger", f"the price {price} crossed the trigger price {st.trigger}: placing the grid"))
        if not om.pairs:
            return LayOut(price)   # triggered now, or resumed before its first orders: the engine's part first
        decision = self.guard.decide(st, om.grid.levels, om.ledger, price, now_ms)
        moves = 0
        while isinstance(decision, Move) and moves < len(om.grid.levels) and om.trail.can_shift(decision.up):
            self.move(om, decision.up, price, now_ms)
            moves += 1
            decision = self.guard.decide(st, om.grid.levels, om.ledger, price, now_ms)
        if isinstance(decision, StopNow):
            self.stop(om, decision.reason, decision.detail, price, now_ms, self.cfg.on_stop)
            return CarryOutExit(price)
        why = self.guard.trail_limits_reached(st, om.grid.levels, price)
        if why != self.limit_told and why is not None:
            self.notes.append(("trail-limit", f"the grid stays where it is: {why}"))
        self.limit_told = why
        return PlaceOrders()

    def stop(self, om: Any, reason: str, detail: str, price: Decimal, now_ms: int, on_stop: str) -> None:
        """Write an exit down (the guard's, or one the engine found: a perps grid's margin stop, a change the
        exchange made); the next ``decide`` carries it out. A grid already exiting keeps its exit."""
        if om.risk.exit is not None:
            return
        om.risk.exit = Exit(reason, detail, price, now_ms, on_stop)
        om.risk_changed()
        self.notes.append(("exit", f"{reason}: {detail}; stopping the grid" + {
            "sell_base": " and selling its base", "close": " and closing its position"}.get(on_stop, "")))

    def lay_out(self, om: Any, price: Decimal, now_ms: int) -> None:
        """The engine's part of a lay-out is done: the grid's first orders are planned at ``price``."""
        st: RiskState = om.risk
        empty = om.start(price)
        if st.start is None:
            st.start = start_funds(om.grid.levels, om.grid.quantity, price, now_ms, st.reserve)
        om.risk_changed()
        self.notes.append(("start", f"placing the initial grid (level {empty} stays empty)"))

    def exit_done(self) -> None:
        """The engine has carried the exit out: the grid is finished."""
        self.finished = True

    def move(self, om: Any, up: bool, price: Decimal, now_ms: int) -> None:
        st: RiskState = om.risk
        assert st.ladder is not None
        levels = st.ladder.window(st.offset + (1 if up else -1))
        om.trail.shift(up, levels)
        st.moves.append(TrailMove(now_ms, "up" if up else "down", st.offset, levels[0], levels[-1], price))
        om.risk_changed()
        self.notes.append(("trail", f"the price {price} is more than a step {'above' if up else 'below'} the grid: "
                           f"moved it one step {'up' if up else 'down'} to {levels[0]}..{levels[-1]} "
                           f"({st.offset:+d} steps in all)"))


def trail_needs(cfg: RiskConfig, ladder: Ladder | None, quantity: Decimal,
                offset: int = 0) -> tuple[int, int, Decimal]:
    """How far the grid can trail from ``offset`` (steps up, steps down) and what that needs beyond its own
    funds at most: each move up places a buy one level higher than the buy it cancels (extra quote), each
    move down places a sell that the cancelled sell's base pays for (nothing extra). Returns (up, down,
    extra quote)."""
    if cfg.out_of_range != "trail" or ladder is None:
        return 0, 0, ZERO
    n = ladder.n
    up = down = 0
    extra_quote = ZERO
    while (cfg.trail_up_limit is not None and up < 10_000
           and ladder.price(offset + n + up) <= cfg.trail_up_limit):
        # The buy placed at the old top costs more than the lowest buy it replaces frees.
        extra_quote += (ladder.price(offset + n - 1 + up) - ladder.price(offset + up)) * quantity
        up += 1
    while (cfg.trail_down_limit is not None and down < 10_000
           and ladder.price(offset - 1 - down) >= cfg.trail_down_limit and ladder.usable(offset - 1 - down, ZERO)):
        down += 1
    return up, down, extra_quote
