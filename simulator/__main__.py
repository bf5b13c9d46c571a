"""``python -m simulator``: run the simulator standalone.

The first line on stdout is one JSON object with its URLs; logs go to stderr. SIGINT and SIGTERM
stop it cleanly.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation

from .feeds import FeedError
from .markets import DEFAULT_MARKETS
from .server import DEFAULT_BALANCES, SimConfig, Simulator


def _decimal(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal: {text!r}") from None
    if not d.is_finite():
        raise argparse.ArgumentTypeError(f"not a decimal: {text!r}")
    return d


def _balance(text: str) -> tuple[str, Decimal]:
    asset, sep, amount = text.partition("=")
    if not sep or not asset:
        raise argparse.ArgumentTypeError(f"expected ASSET=AMOUNT, got {text!r}")
    return asset.upper(), _decimal(amount)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator",
                                description="A local Backpack Exchange simulator (REST + WebSocket).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="REST port (0 = any free port)")
    p.add_argument("--ws-port", type=int, default=0, help="WebSocket port (0 = any free port)")
    p.add_argument("--symbol", default="SOL_USDC", choices=[m.symbol for m in DEFAULT_MARKETS],
                   help="the default market: --price and a replay feed apply to it")
    p.add_argument("--price", type=_decimal, help="starting price of the default market")
    p.add_argument("--feed", default="random",
                   help="random | none | replay:FILE (a klines CSV) | live (follow --live-rest/--live-ws)")
    p.add_argument("--live-rest", default="", help="live feed: the real market's REST URL")
    p.add_argument("--live-ws", default="", help="live feed: the real market's WebSocket URL")
    p.add_argument("--seed", type=int, default=1, help="random feed seed (default 1)")
    p.add_argument("--volatility", type=float, default=0.001,
                   help="random feed: standard deviation of each tick's log-price move (default 0.001)")
    p.add_argument("--tick-seconds", type=float, default=1.0,
                   help="random feed: seconds between price moves (default 1)")
    p.add_argument("--reversion", type=float, default=0.0,
                   help="random feed: pull toward the starting price per tick, 0..1 (default 0)")
    p.add_argument("--liquidity", type=_decimal,
                   help="most quantity filled per crossed order per price move (partial fills)")
    p.add_argument("--replay-speed", type=float, default=1.0,
                   help="replay feed: seconds per candle; 0 = step with POST /_sim/feed")
    p.add_argument("--maker-fee", type=_decimal, default=Decimal("0.0008"), help="default 0.0008")
    p.add_argument("--taker-fee", type=_decimal, default=Decimal("0.001"), help="default 0.001")
    p.add_argument("--balance", type=_balance, action="append", default=[],
                   help="ASSET=AMOUNT starting balance of every new account (repeatable)")
    p.add_argument("--ticker-interval", type=float, default=1.0, help="seconds between ticker pushes")
    p.add_argument("--ws-ping-interval", type=float, default=60.0, help="seconds between server pings")
    p.add_argument("--ws-pong-timeout", type=float, default=120.0,
                   help="close a connection with no pong for this long")
    p.add_argument("--rate-limit", type=int, default=2000,
                   help="requests per minute per account (0 = off; Backpack allows 2000)")
    p.add_argument("--max-batch", type=int, default=50, help="most orders in one batch request")
    p.add_argument("--clock-offset-ms", type=int, default=0,
                   help="run the simulator's clock this far ahead of the machine's (negative: behind)")
    p.add_argument("--reduce-only", choices=("reject", "expire"), default="reject",
                   help="perps: a reduce-only order that cannot reduce is rejected (400, the default) or accepted "
                        "then expired ReduceOnlyNotReduced")
    p.add_argument("--liquidation-step", type=_decimal, default=Decimal(1),
                   help="perps: the share of a position each liquidation step closes (default 1: all at once)")
    p.add_argument("--pnl-settle-seconds", type=float, default=10.0,
                   help="perps: seconds between realizations of the positions' PnL into USDC (default 10)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    balances = dict(DEFAULT_BALANCES)
    if args.balance:
        balances = dict(args.balance)
    cfg = SimConfig(host=args.host, port=args.port, ws_port=args.ws_port, symbol=args.symbol,
                    price=args.price, feed=args.feed, seed=args.seed, volatility=args.volatility,
                    tick_seconds=args.tick_seconds, reversion=args.reversion, liquidity=args.liquidity,
                    replay_speed=args.replay_speed, maker_fee=args.maker_fee, taker_fee=args.taker_fee,
                    balances=balances, ticker_interval=args.ticker_interval,
                    ping_interval=args.ws_ping_interval, pong_timeout=args.ws_pong_timeout,
                    rate_limit=args.rate_limit, max_batch=args.max_batch, clock_offset_ms=args.clock_offset_ms,
                    live_rest=args.live_rest, live_ws=args.live_ws,
                    reduce_only_reject=args.reduce_only == "reject", liquidation_step=args.liquidation_step,
                    pnl_settle_seconds=args.pnl_settle_seconds)
    try:
        sim = Simulator(cfg).start()
    except (FeedError, ValueError, OSError) as e:
        print(f"simulator: {e}", file=sys.stderr)
        return 2
    print(json.dumps(sim.urls()), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    logging.getLogger("simulator").info("stopping")
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
