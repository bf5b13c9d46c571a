"""Pictures of a grid (``backtest --plot`` and ``report --plot``): the price over time with the grid's
levels and each fill marked by side, and underneath the grid's equity against holding its starting
funds, on a real date axis. matplotlib is optional (``pip install matplotlib``); this is the only module
that imports it, and the only place figures become floats: for drawing, never for accounting."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Sequence

from gridbot.core.errors import InputError


class PlotUnavailable(InputError):
    pass


def require_matplotlib() -> None:
    """Fail before any work when --plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, which is not installed: pip install matplotlib "
                              "(or leave out --plot)") from None


@dataclass
class Picture:
    title: str
    symbol: str
    quote: str
    times: list[datetime]
    prices: list[Decimal]
    levels: Sequence[Decimal]
    equity: list[Decimal]                 # at each of ``times``
    hold: list[Decimal]                   # the starting funds untouched, at each of ``times``
    fills: list[tuple[datetime, str, Decimal]] = field(default_factory=list)   # (time, "Bid"/"Ask", price)
    marks: list[tuple[datetime, str]] = field(default_factory=list)            # trail moves, the exit, the trigger


def draw(pic: Picture, path: str) -> None:
    """The picture as a PNG at ``path`` (OSError when it cannot be written)."""
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")  # no display needed: a file
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), height_ratios=[3, 1])
    ax1.plot(pic.times, [float(x) for x in pic.prices], lw=0.8, color="black", label="price")
    for level in pic.levels:
        ax1.axhline(float(level), lw=0.4, color="grey", alpha=0.5)
    for side, color, marker in (("Bid", "tab:green", "^"), ("Ask", "tab:red", "v")):
        pts = [(t, float(p)) for t, sd, p in pic.fills if sd == side]
        if pts:
            ax1.scatter(*zip(*pts), s=14, color=color, marker=marker, zorder=3,
                        label=f"{'buy' if side == 'Bid' else 'sell'} fills")
    seen: set[str] = set()
    for t, label in pic.marks:
        kind = label.split(":")[0]
        color = "tab:orange" if kind.startswith("exit") else "tab:purple"
        ax1.axvline(t, lw=1.0, ls="--", color=color, label=None if kind in seen else label)
        seen.add(kind)
    ax1.set_ylabel(f"{pic.symbol} price")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(pic.title)
    ax2.plot(pic.times, [float(x) for x in pic.equity], lw=0.9, color="tab:blue", label="grid equity")
    ax2.plot(pic.times, [float(x) for x in pic.hold], lw=0.9, color="tab:gray", ls="--",
             label="holding the starting funds")
    ax2.set_ylabel(f"{pic.quote}")
    ax2.legend(loc="upper left", fontsize=8)
    locator = mdates.AutoDateLocator()
    ax2.xaxis.set_major_locator(locator)
    ax2.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax2.set_xlabel("time (UTC)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
