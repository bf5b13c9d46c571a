"""Read-only account views: open orders, fill and order history, and those a spot account's other
tools touch: account settings, collateral, the largest order the balances allow, the asset list.
A mixin of ``Exchange`` (it reads its accounts, markets and fees under its lock).

Shapes from Backpack's API reference (operations get_account, get_collateral, get_max_order_quantity,
get_assets). The values are what a plain spot account has in this simulator, which never lends nor
borrows: the auto-borrow and auto-lend settings are off, limits and liabilities zero, every balance
counted at its collateral weight. Backpack's real weights are per asset and unpublished here; the
simulator uses 1 for the quote asset and 0.9 for the others.
"""
from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from .records import UINT32_MAX, ZERO, SimError, parse_error, plain

if TYPE_CHECKING:
    from .records import Account, Balance, Fill, MarketState, Order

BASIS_POINTS = Decimal(10_000)
ASSET_NAMES = {"SOL": ("Solana", "solana"), "BTC": ("Bitcoin", "bitcoin"),
               "ETH": ("Ethereum", "ethereum"), "USDC": ("USD Coin", "usd-coin")}


class AccountViews:
    # Provided by Exchange.
    lock: Any
    markets: dict[str, "MarketState"]
    orders: dict[str, "Order"]
    open_by_symbol: dict[str, dict[str, "Order"]]
    fills: list["Fill"]
    maker_fee: Decimal
    taker_fee: Decimal

    def account(self, api_key: str) -> "Account": ...
    def market(self, symbol: str) -> "MarketState": ...
    def _bal(self, acct: "Account", asset: str) -> "Balance": ...
    def _find_open(self, api_key: str, symbol: str, order_id: Any, client_id: int | None) -> "Order": ...

    def open_orders(self, api_key: str, symbol: str | None) -> list[Order]:
        with self.lock:
            if symbol is not None:
                self.market(symbol)
                books = [self.open_by_symbol[symbol]]
            else:
                books = list(self.open_by_symbol.values())
            out = [o for book in books for o in book.values() if o.account == api_key]
            return sorted(out, key=lambda o: o.created_us)

    def fill_history(self, api_key: str, *, symbol: str | None, order_id: str | None,
                     from_ms: int | None, to_ms: int | None) -> list[Fill]:
        with self.lock:
            out = []
            for f in self.fills:
                if f.account != api_key:
                    continue
                if symbol is not None and f.symbol != symbol:
                    continue
                if order_id is not None and f.order_id != order_id:
                    continue
                ms = f.ts_us // 1000
                if from_ms is not None and ms < from_ms:
                    continue
                if to_ms is not None and ms > to_ms:
                    continue
                out.append(f)
            return out

    def order_history(self, api_key: str, *, symbol: str | None, order_id: str | None) -> list[Order]:
        """Closed orders only: whether Backpack lists open ones here is undocumented, so a bot
        must not rely on it (it finds open orders through GET /api/v1/order)."""
        with self.lock:
            out = [o for o in self.orders.values()
                   if o.account == api_key and not o.is_open
                   and (symbol is None or o.symbol == symbol)
                   and (order_id is None or o.id == order_id)]
            return out

    def _mark_price(self, asset: str) -> Decimal:
        """An asset's price in the quote asset (USDC) from the market that trades it, 1 for USDC."""
        for m in self.markets.values():
            if m.spec.base == asset:
                return m.price
        return Decimal(1)

    def account_summary(self, api_key: str) -> dict:
        acct = self.account(api_key)
        with self.lock:
            open_orders = sum(1 for book in self.open_by_symbol.values()
                              for o in book.values() if o.account == acct.api_key)
        maker = plain(self.maker_fee * BASIS_POINTS)
        taker = plain(self.taker_fee * BASIS_POINTS)
        return {"autoBorrowSettlements": acct.borrow_limit > 0, "autoLend": False, "autoRealizePnl": False,
                "autoRepayBorrows": False, "borrowLimit": plain(acct.borrow_limit), "futuresMakerFee": maker,
                "futuresTakerFee": taker, "leverageLimit": plain(acct.leverage_limit), "limitOrders": open_orders,
                "liquidating": acct.liquidating, "positionLimit": "0", "spotMakerFee": maker, "spotTakerFee": taker,
                "triggerOrders": 0}

    def collateral(self, api_key: str) -> dict:
        acct = self.account(api_key)
        items = []
        total = available = locked = weighted = ZERO
        with self.lock:
            quotes = {m.spec.quote for m in self.markets.values()}
            for asset, b in sorted(acct.balances.items()):
                price = self._mark_price(asset)
                weight = Decimal(1) if asset in quotes else Decimal("0.9")
                qty = b.available + b.locked
                notional = qty * price
                total += notional
                available += b.available * price
                locked += b.locked * price
                weighted += notional * weight
                items.append({"symbol": asset, "assetMarkPrice": plain(price), "totalQuantity": plain(qty),
                              "balanceNotional": plain(notional), "collateralWeight": plain(weight),
                              "collateralValue": plain(notional * weight),
                              "openOrderQuantity": plain(b.locked), "lendQuantity": "0",
                              "availableQuantity": plain(b.available)})
            mg = self.perp.margin(acct)
        out = {"assetsValue": plain(total), "borrowLiability": "0", "collateral": items, "imf": "1",
               "unsettledEquity": "0", "liabilitiesValue": "0", "marginFraction": None, "mmf": "0",
               "netEquity": plain(total), "netEquityAvailable": plain(available),
               "netEquityLocked": plain(locked), "netExposureFutures": "0", "pnlUnrealized": "0"}
        if mg is not None and mg.exposure_notional:
            # Perps (positions.py): the collateral with its haircuts and the positions' unrealized PnL; what the
            # spot orders hold and the perps' initial margin locked.
            equity = mg.net_equity
            out.update({"netEquity": plain(equity), "netEquityLocked": plain(mg.locked),
                        "netEquityAvailable": plain(mg.available), "pnlUnrealized": plain(mg.pnl_unrealized),
                        "netExposureFutures": plain(mg.exposure_notional),
                        "imf": plain(max(1 / acct.leverage_limit, mg.imf_notional / mg.exposure_notional)),
                        "mmf": plain(mg.mmf_notional / mg.exposure_notional),
                        "marginFraction": plain(equity / mg.exposure_notional)})
        return out

    def max_order_quantity(self, api_key: str, symbol: str, side: str, price: Decimal | None,
                           reduce_only: bool = False) -> dict:
        """The most a spot order may be for: the free quote at the price (the best ask without one)
        for a buy, the free base for a sell, at the market's step; a perp's: what margin allows."""
        m = self.market(symbol)
        acct = self.account(api_key)
        spec = m.spec
        with self.lock:
            if spec.perp is not None:
                most = self.perp.max_quantity(acct, symbol, side, reduce_only)
            elif side == "Bid":
                at = price if price is not None else m.price + spec.tick_size
                if at <= 0:
                    raise SimError(400, "INVALID_PRICE", "Invalid price")
                most = self._bal(acct, spec.quote).available / at
            else:
                most = self._bal(acct, spec.base).available
        qty = most.quantize(spec.step_size, ROUND_DOWN) if most > 0 else ZERO
        out = {"symbol": symbol, "side": side, "maxOrderQuantity": plain(qty), "reduceOnly": reduce_only,
               "autoBorrow": False, "autoBorrowRepay": False, "autoLendRedeem": False}
        if price is not None:
            out["price"] = plain(price)
        return out

    def assets(self) -> list[dict]:
        names = sorted({a for m in self.markets.values() for a in (m.spec.base, m.spec.quote)})
        out = []
        for a in names:
            display, gecko = ASSET_NAMES.get(a, (a, None))
            out.append({"symbol": a, "displayName": display, "coingeckoId": gecko,
                        "tokens": [{"blockchain": "Solana", "depositEnabled": True, "withdrawEnabled": True,
                                    "minimumDeposit": "0", "minimumWithdrawal": "0",
                                    "maximumWithdrawal": None, "withdrawalFee": "0"}]})
        return out

    def get_open_order(self, api_key: str, symbol: str, order_id: Any = None,
                       client_id: str | None = None) -> Order:
        """GET /api/v1/order: ``clientId`` arrives as query text, a u32 in decimal digits."""
        cid = None
        if client_id is not None:
            if not client_id.isdigit() or int(client_id) > UINT32_MAX:
                raise parse_error("invalid value for `clientId`, expected u32")
            cid = int(client_id)
        with self.lock:
            return self._find_open(api_key, symbol, order_id, cid)
