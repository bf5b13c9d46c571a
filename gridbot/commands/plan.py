"""``plan``: what the configured grid will place and need, and what it would do at the range's edges and exits;
places nothing."""
from __future__ import annotations

import argparse
import json
import os
from decimal import Decimal
from typing import Any

from backpack_api import RequestRejected, Signer, TransientError
from gridbot.ops.config import Config, ConfigError
from gridbot.core.errors import EXIT_INPUT, EXIT_OK, FatalError, InputError
from order_manager import OrderManager
from gridbot.paper import live_market, paper_market
from gridbot.ops.reports import level_view
from gridbot.engine.grid_setup import grid_params, keys_refused, make_grid, market_rules
from gridbot.commands.common import keys_set, open_store, public_client, read_config, state_path


def saved_for_plan(cfg: Config, paper: bool) -> dict[str, Any] | None:
    """The running grid in the state file, as ``planner.plan_report`` wants it (None: there is none)."""
    if not os.path.exists(state_path(cfg, paper)):
        return None
    store = open_store(cfg, paper, readonly=True)
    try:
        saved = store.active_grid()
        if saved is None:
            return None
        om = OrderManager.from_snapshot(saved.spec, saved.tag, store.load(saved))
    finally:
        store.close()
    return {"id": saved.id, "status": saved.status, "params": saved.params, "levels": level_view(om),
            "params_now": grid_params(cfg.trading)}


def plan_perps(args: argparse.Namespace, cfg: Config) -> int:
    """``plan`` of a perps grid (analysis/perp_plan.py): the mark, the funding rate and, with keys, the
    account's available equity read from the exchange; exit 2 when the grid is refused."""
    from gridbot.analysis.perp_plan import perp_plan_report, print_perp_plan
    from gridbot.paper import rules_from_spec
    t = cfg.trading
    available = None
    if args.paper and args.live_prices:
        spec, _, funds = live_market(cfg)
        rules, available = rules_from_spec(spec), funds.get(spec.quote)
        client = public_client(cfg)
        try:
            mp = client.mark_price(t.symbol)
        except TransientError as e:
            raise FatalError(f"cannot read from {cfg.api.base_url}: {e}") from None
        mark, index, rate = mp.mark, mp.index, mp.funding_rate or Decimal(0)
        source = f"paper mode on live prices: the mark price on {cfg.api.base_url}"
    elif args.paper:
        spec, mark, _, _ = paper_market(cfg)
        rules, index, rate = rules_from_spec(spec), mark, Decimal("0.0000125")
        source = "paper mode: the simulator's starting price and neutral funding rate"
    else:
        try:
            with_keys = keys_set(cfg)
        except ConfigError as e:
            raise ConfigError(f"{args.config}: {e}" if e.from_file else str(e)) from None
        client = public_client(cfg, Signer(cfg.api.api_secret) if with_keys else None)
        rules = market_rules(client, t.symbol, cfg.api.base_url)
        try:
            mp = client.mark_price(t.symbol)
            available = client.margin().available if with_keys else None
        except RequestRejected as e:
            raise keys_refused(e) from None
        except TransientError as e:
            raise FatalError(f"cannot read from {cfg.api.base_url}: {e}") from None
        mark, index, rate = mp.mark, mp.index, mp.funding_rate or Decimal(0)
        source = f"mark price on {cfg.api.base_url}"
    report = perp_plan_report(cfg, rules, mark=mark, index=index, funding_rate=rate, price_source=source,
                              available=available)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_perp_plan(report)
    return EXIT_INPUT if report["refused"] else EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from gridbot.analysis.planner import plan_report, print_plan
    from gridbot.paper import rules_from_spec

    cfg = read_config(args.config, need_keys=False)
    if args.live_prices and not args.paper:
        raise InputError("--live-prices is for paper mode: add --paper")
    if cfg.trading.is_perp:
        return plan_perps(args, cfg)
    try:
        with_keys = not args.paper and keys_set(cfg)
    except ConfigError as e:
        raise ConfigError(f"{args.config}: {e}" if e.from_file else str(e)) from None
    t = cfg.trading
    taker_fee = t.taker_fee
    balances: dict[str, tuple[Decimal, Decimal]] | None
    if args.paper and args.live_prices:
        spec, price, paper_funds = live_market(cfg)
        rules = rules_from_spec(spec)
        source = f"paper mode on live prices: the last price on {cfg.api.base_url}"
        balances = {k: (v, Decimal(0)) for k, v in paper_funds.items()}
        balances_source = "paper"
    elif args.paper:
        spec, price, paper_funds, _ = paper_market(cfg)
        rules = rules_from_spec(spec)
        source = "paper mode: the simulator's starting price"
        balances = {k: (v, Decimal(0)) for k, v in paper_funds.items()}
        balances_source: str | None = "paper"
    else:
        client = public_client(cfg, Signer(cfg.api.api_secret) if with_keys else None)
        try:
            rules = market_rules(client, t.symbol, cfg.api.base_url)
        except FatalError as e:
            raise FatalError(f"{e} (plan --paper shows the grid on the built-in simulated market)") from None
        try:
            price = client.ticker_price(t.symbol)
            balances = client.balances() if with_keys else None
            if with_keys:
                # The entry purchase is sized for the account's own taker fee, as run sizes it.
                taker = client.account_settings().spot_taker_fee
                taker_fee = taker if taker is not None and taker >= 0 else taker_fee
        except RequestRejected as e:
            raise keys_refused(e) from None
        except TransientError as e:
            raise FatalError(f"cannot read from {cfg.api.base_url}: {e}") from None
        source = f"last price on {cfg.api.base_url}"
        balances_source = "exchange" if with_keys else None
    grid, notes = make_grid(rules, t, price, size_at=cfg.risk.trigger_price)   # sized where run sizes it
    report = plan_report(grid, rules, price=price, price_source=source, maker_fee=t.maker_fee,
                         auto_price=t.auto_price, balances=balances, balances_source=balances_source,
                         saved=saved_for_plan(cfg, args.paper), risk=cfg.risk, investment=t.investment,
                         entry=t.entry, taker_fee=taker_fee)
    report["warnings"] = [*cfg.warnings, *notes, *report["warnings"]]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_plan(report)
    return EXIT_OK
