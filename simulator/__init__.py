"""A wire-compatible local Backpack Exchange simulator (REST + WebSocket on 127.0.0.1).

Used by the bot's tests, its paper mode (``grid_bot.py --paper``) and its backtests; runs standalone
with ``python -m simulator``. See the README's simulator section and docs/exchange.md.
"""
from .engine import Exchange
from .records import SimError
from .server import SimConfig, SimControl, Simulator, running_simulator

__all__ = ["Exchange", "SimConfig", "SimControl", "SimError", "Simulator", "running_simulator"]
