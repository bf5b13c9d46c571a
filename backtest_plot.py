"""Drawing a backtest (``grid_bot.py backtest --plot FILE.png``): price with the grid lines and the
fills, equity underneath. matplotlib is optional (``pip install matplotlib``); this is the only module
that imports it, and the only place figures become floats: for drawing, never for accounting."""
from __future__ import annotations

from backtest import BacktestResult
from errors import InputError
from grid_calculator import GridSpec


class PlotUnavailable(InputError):
    pass


def require_matplotlib() -> None:
    """Fail before any work when --plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib, which is not installed: pip install matplotlib "
                              "(or leave out --plot)") from None


def plot(result: BacktestResult, grid: GridSpec, path: str) -> None:
    """Price with the grid lines and the fills, equity underneath, as a PNG at ``path``."""
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")  # no display needed: a file
    import matplotlib.pyplot as plt
    s = result.series
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), height_ratios=[3, 1])
    ax1.plot(range(len(s["close"])), [float(x) for x in s["close"]], lw=0.8, color="black", label="close")
    for level in grid.levels:
        ax1.axhline(float(level), lw=0.4, color="grey", alpha=0.5)
    for side, color, marker in (("Bid", "tab:green", "^"), ("Ask", "tab:red", "v")):
        pts = [(i, float(p)) for i, sd, p in s["fills"] if sd == side]
        if pts:
            ax1.scatter(*zip(*pts), s=14, color=color, marker=marker, label=f"{'buy' if side == 'Bid' else 'sell'} fills")
    for i, m in enumerate(result.trail_moves):
        ax1.axvline(m["candle"], lw=0.8, ls="--", color="tab:purple", label="trail move" if i == 0 else None)
    if result.exit is not None and result.exit["candle"] is not None:
        ax1.axvline(result.exit["candle"], lw=1.2, color="tab:orange", label=f"exit: {result.exit['reason']}")
        ax1.scatter([result.exit["candle"]], [float(result.exit["price"])], s=60, color="tab:orange", marker="X")
    ax1.set_ylabel(f"{grid.symbol} price")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.set_title(f"{grid.symbol} grid {grid.levels[0]}..{grid.levels[-1]}, {len(grid.levels)} levels: "
                  f"{result.round_trips} round trips, grid profit {result.grid_profit:.4f} {grid.quote}")
    ax2.plot(range(len(s["equity"])), [float(x) for x in s["equity"]], lw=0.8, color="tab:blue")
    ax2.set_ylabel(f"equity ({grid.quote})")
    ax2.set_xlabel("candle")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
