"""config.json -> a frozen ``Config``, checked before anything touches the exchange.

Two passes: the *shape* pass checks every key's type and range, fills defaults and
refuses unknown keys (a typo must not be silently ignored); the *rules* pass checks what involves
several keys (bounds order, auto-price, the key pair). Every failure is one ``ConfigError`` line that
names the key and says what to do. ``BACKPACK_API_KEY`` and ``BACKPACK_API_SECRET`` in the environment
override the file. Decimal values may be written as JSON numbers or strings; numbers are read exactly
(``parse_float=Decimal``), never through a float.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Mapping

from backpack_api import KeyFormatError, decode_key, public_key_of
from gridbot.ops.config_checks import (TEN_YEARS, Check, ConfigError, _show, balances, boolean, decimal, integer,
                           secret_http_url, secret_urls, seconds, string_list, text)
from gridbot.ops.grid_files import SYSTEM, SystemDirs, default_files, grid_name
from gridbot.ops.notify import DEFAULT_EVENTS, EVENTS, HEARTBEAT_ENV, URLS_ENV, NotifyConfig
from gridbot.core.perp_risk import DIRECTIONS
from gridbot.core.risk import ON_STOP, OUT_OF_RANGE, RiskConfig

DEFAULT_BASE_URL = "https://api.backpack.exchange"
DEFAULT_WS_URL = "wss://ws.backpack.exchange"
PLACEHOLDER = re.compile(r"^(|YOUR[_ A-Z]*|<.*>|CHANGE[_ A-Z]*|xxx+|\.\.\.)$", re.IGNORECASE)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ON_EXIT = ("cancel", "keep")
ENTRY = ("buy", "none")
STATE_FILE_ENV = "GRID_BOT_STATE_FILE"   # override state.file and log.file
LOG_FILE_ENV = "GRID_BOT_LOG_FILE"


def check_flag(label: str, key: str, value: Any, section: str = "trading") -> Any:
    """A command-line override of ``<section>.<key>``, checked as the file's value is and named by its
    flag (``--grid-num``, ``--sweep grid_num``)."""
    try:
        return SCHEMA[section][key][0](label, value)
    except ConfigError as e:
        raise ConfigError(str(e), from_file=False) from None


class _Required:
    pass


REQUIRED = _Required()


# ------------------------------------------------------------------------------ value checkers
# ------------------------------------------------------------------------------ the schema
SCHEMA: dict[str, dict[str, tuple[Check, Any]]] = {
    "api": {
        "base_url": (text(pattern=r"https?://[^\s/]+(/\S*)?", hint="https://api.backpack.exchange"), DEFAULT_BASE_URL),
        "ws_url": (text(pattern=r"wss?://[^\s/]+(/\S*)?", hint="wss://ws.backpack.exchange"), DEFAULT_WS_URL),
        "api_key": (text(), ""),
        "api_secret": (text(), ""),
        "window_ms": (integer(1000, 60000), 5000),
        "requests_per_minute": (integer(30, 2000), 1800),
    },
    "trading": {
        "symbol": (text(pattern=r"[A-Z0-9]+_[A-Z0-9]+(_PERP)?", hint="BASE_QUOTE in capitals, e.g. SOL_USDC "
                                                                        "(SOL_USDC_PERP: a perp, plan only)"), REQUIRED),
        "grid_upper": (decimal(positive=True, nullable=True), None),
        "grid_lower": (decimal(positive=True, nullable=True), None),
        "grid_num": (integer(2, 1000), REQUIRED),
        "quantity": (decimal(positive=True, nullable=True), None),
        "investment": (decimal(positive=True, nullable=True), None),
        "entry": (text(ENTRY, nullable=True), None),
        "auto_price": (boolean, False),
        "price_range": (decimal(nullable=True), None),
        "duration": (seconds(1, TEN_YEARS, zero="to run until stopped"), 0.0),
        "interval": (seconds(1, 3600), 10.0),
        "use_websocket": (boolean, True),
        "grid_mode": (text(("arithmetic", "geometric")), "arithmetic"),
        "post_only": (boolean, True),
        "maker_fee": (decimal(nonneg=True, below=Decimal("0.05")), Decimal("0.001")),
        "taker_fee": (decimal(nonneg=True, below=Decimal("0.05")), Decimal("0.001")),
        "on_exit": (text(ON_EXIT), "cancel"),
        "trigger_price": (decimal(positive=True, nullable=True), None),
        # perps: the grid's direction and the leverage its investment is used at
        "direction": (text(DIRECTIONS), "neutral"),
        "leverage": (decimal(positive=True, nullable=True), None),
    },
    "risk": {
        "stop_loss_price": (decimal(positive=True, nullable=True), None),
        "take_profit_price": (decimal(positive=True, nullable=True), None),
        "stop_loss_return": (decimal(nullable=True), None),
        "take_profit_return": (decimal(nullable=True), None),
        "stop_delay": (seconds(0, 86400), 0.0),
        "on_stop": (text(ON_STOP), "keep"),
        "out_of_range": (text(OUT_OF_RANGE), "wait"),
        "trail_up_limit": (decimal(positive=True, nullable=True), None),
        "trail_down_limit": (decimal(positive=True, nullable=True), None),
        "max_slippage": (decimal(positive=True, below=Decimal("0.1")), Decimal("0.005")),
        "liquidation_buffer": (decimal(nonneg=True, below=Decimal("1")), Decimal("0.05")),
        "stop_margin_fraction": (decimal(positive=True, below=Decimal("1"), nullable=True), None),
    },
    "log": {
        "level": (text(LOG_LEVELS), "INFO"),
        "file": (text(), ""),
        "max_bytes": (integer(10_000), 10_000_000),
        "backup_count": (integer(0, 100), 5),
        "console": (boolean, True),
    },
    "state": {
        "file": (text(), ""),
    },
    "paper": {
        "balances": (balances, {}),
        "stale_after": (seconds(1, 3600), 30.0),
    },
    "notify": {
        "urls": (secret_urls, ()),
        "events": (string_list(EVENTS), DEFAULT_EVENTS),
        "digest_interval": (seconds(1, 7 * 86400), 3600.0),
        "error_after": (seconds(1, 86400), 300.0),
        "daily_hour": (integer(0, 23), 8),
        "heartbeat_url": (secret_http_url, ""),
        "heartbeat_interval": (seconds(1, 86400), 300.0),
        "heartbeat_fail_url": (secret_http_url, ""),
    },
}
REQUIRED_SECTIONS = ("trading",)


@dataclass(frozen=True)
class ApiConfig:
    base_url: str
    ws_url: str
    api_key: str
    api_secret: str = field(repr=False)
    window_ms: int = 5000
    requests_per_minute: int = 1800
    key_from: str = "api.api_key"         # where each came from: the file's key, or the environment variable
    secret_from: str = "api.api_secret"


@dataclass(frozen=True)
class TradingConfig:
    symbol: str
    grid_upper: Decimal | None
    grid_lower: Decimal | None
    grid_num: int
    quantity: Decimal | None
    auto_price: bool
    price_range: Decimal | None
    duration: float
    interval: float
    use_websocket: bool
    grid_mode: str
    post_only: bool
    maker_fee: Decimal
    on_exit: str
    trigger_price: Decimal | None = None
    investment: Decimal | None = None
    entry: str = "none"               # buy: buy the base the sells need before the grid starts
    taker_fee: Decimal = Decimal("0.001")   # the entry purchase's fee when the account does not say it
    direction: str = "neutral"        # perps: neutral, long or short
    leverage: Decimal | None = None   # perps: the investment's leverage (1 when not set)

    @property
    def is_perp(self) -> bool:
        return self.symbol.endswith("_PERP")


@dataclass(frozen=True)
class LogConfig:
    level: str
    file: str
    max_bytes: int
    backup_count: int
    console: bool


@dataclass(frozen=True)
class Config:
    api: ApiConfig
    trading: TradingConfig
    log: LogConfig
    state_file: str
    path: str
    name: str = "config"          # the grid's name: its config file's (sol.json -> sol)
    state_named: bool = True      # state.file set by the config or the environment (no move from an old place)
    warnings: tuple[str, ...] = ()
    notify: NotifyConfig = NotifyConfig()
    paper_balances: dict[str, Decimal] = field(default_factory=dict)
    paper_stale_after: float = 30.0
    risk: RiskConfig = RiskConfig()

    def replace_api(self, **changes: str) -> "Config":
        return replace(self, api=replace(self.api, **changes))


# ------------------------------------------------------------------------------ loading
MAX_CONFIG_BYTES = 1 << 20


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise ConfigError(f"a number in the config has {len(text)} digits; no setting needs more than 30")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ConfigError(f"{name} is not a number a setting can take (write a finite number)")


def read_json(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw_bytes = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        where = "" if os.path.isabs(path) else f" in {os.getcwd()}, the current folder"
        raise ConfigError(f"config file not found: {path}{where} (give --config with its path, or copy config.json "
                          f"from the project's folder and edit it)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
    if len(raw_bytes) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than 1 MiB: a config file is a few hundred bytes")
    try:
        raw = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    try:
        data = json.loads(raw, parse_float=Decimal, parse_int=_int, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply: a config has sections of settings, two levels") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object with the sections api, trading and log")
    return data


def _shape(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Pass 1: every key known, typed, in range; defaults filled."""
    # "$schema" points an editor at config.schema.json; it is not a setting.
    unknown = [k for k in data if k not in SCHEMA and k != "$schema"]
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}: the sections are {', '.join(SCHEMA)}")
    out: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = data.get(section)
        if given is None:
            if section in REQUIRED_SECTIONS:
                raise ConfigError(f"missing section {section!r}")
            given = {}
        if not isinstance(given, dict):
            raise ConfigError(f"{section} must be an object of settings (got {_show(given)})")
        for k in given:
            if k not in keys:
                close = [x for x in keys if _similar(k, x)]
                hint = f"; did you mean {section}.{close[0]}?" if close else f"; known keys: {', '.join(keys)}"
                raise ConfigError(f"unknown key {section}.{k}{hint}")
        values = {}
        for k, (check, default) in keys.items():
            name = f"{section}.{k}"
            if k not in given:
                if default is REQUIRED:
                    raise ConfigError(f"missing key {name}")
                values[k] = default
                continue
            values[k] = check(name, given[k])
        out[section] = values
    return out


def _similar(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    if a == b or a.replace("-", "_") == b or a.rstrip("s") == b.rstrip("s"):
        return True
    # one edit apart
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = sum(1 for x, y in zip(a, b) if x != y)
        return diffs == 1 or (diffs == 2 and sorted(a) == sorted(b))
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def check_keys(api_key: str, api_secret: str, *, key_from: str = "api.api_key",
               secret_from: str = "api.api_secret") -> None:
    """Pass 2 for the key pair: not a placeholder, base64 of 32 bytes, the key belongs to the secret.
    ``key_from``/``secret_from``: where each came from (the file's key, or the environment variable)."""
    in_file = key_from.startswith("api.") and secret_from.startswith("api.")
    for name, value in ((key_from, api_key), (secret_from, api_secret)):
        if PLACEHOLDER.fullmatch(value.strip()):
            env = "BACKPACK_API_KEY" if name.endswith(("key", "KEY")) else "BACKPACK_API_SECRET"
            raise ConfigError(f"{name} is not set: put your Backpack key in config.json or {env}, "
                              f"or try --paper to run without keys", from_file=name.startswith("api."))
    for name, value in ((secret_from, api_secret), (key_from, api_key)):
        try:
            decode_key(value, name)
        except KeyFormatError as e:
            raise ConfigError(f"{e}: copy it again from Backpack's API key page",
                              from_file=name.startswith("api.")) from None
    if public_key_of(api_secret) != api_key.strip():
        raise ConfigError(f"{key_from} is not the public key of {secret_from}: they must come from the same "
                          f"API key pair", from_file=in_file)


def _rules(v: dict[str, dict[str, Any]], *, need_keys: bool) -> list[str]:
    """Pass 2: rules between keys. Returns warnings worth logging."""
    warnings: list[str] = []
    t = v["trading"]
    if t["auto_price"]:
        if t["price_range"] is None:
            raise ConfigError("trading.price_range is needed when auto_price is true (e.g. 0.05 for +-5%)")
        if t["grid_upper"] is not None or t["grid_lower"] is not None:
            warnings.append("trading.auto_price is true: grid_upper and grid_lower are ignored")
    else:
        if t["grid_lower"] is None or t["grid_upper"] is None:
            missing = "grid_lower" if t["grid_lower"] is None else "grid_upper"
            raise ConfigError(f"trading.{missing} is needed when auto_price is false "
                              f"(or set auto_price to true with a price_range)")
        if t["grid_lower"] >= t["grid_upper"]:
            raise ConfigError(f"trading.grid_lower ({t['grid_lower']}) must be below trading.grid_upper "
                              f"({t['grid_upper']})")
    perp = t["symbol"].endswith("_PERP")
    if not perp and (t["direction"] != "neutral" or t["leverage"] is not None):
        raise ConfigError("trading.direction and trading.leverage are for perpetual futures (a _PERP symbol): "
                          "remove them for a spot grid")
    if perp:
        lev = t["leverage"] if t["leverage"] is not None else Decimal(1)
        if not Decimal(1) <= lev <= Decimal(50):
            raise ConfigError(f"trading.leverage must be from 1 to 50 (got {lev})")
        t["leverage"], t["entry"] = lev, "none"
        _perp_rules(v["risk"], t)
    elif v["risk"]["on_stop"] == "close" or v["risk"]["stop_margin_fraction"] is not None:
        raise ConfigError("risk.on_stop close and risk.stop_margin_fraction are for perpetual futures: on spot, "
                          "on_stop is keep or sell_base")
    if (t["quantity"] is None) == (t["investment"] is None):
        raise ConfigError("set exactly one of trading.quantity (base per order) and trading.investment (the quote "
                          "the grid may use; the bot sizes the orders)" + (": both are set" if t["quantity"] else ""))
    if t["entry"] is None:
        t["entry"] = "buy" if t["investment"] is not None else "none"
    pr = t["price_range"]
    if pr is not None and not (0 < pr < 1):
        raise ConfigError(f"trading.price_range must be between 0 and 1, e.g. 0.05 for +-5% (got {pr})")
    _risk_rules(v["risk"], t, warnings)
    if need_keys:
        check_keys(v["api"]["api_key"], v["api"]["api_secret"], key_from=v["api"].get("_key_from", "api.api_key"),
                   secret_from=v["api"].get("_secret_from", "api.api_secret"))
    return warnings


def _perp_rules(r: dict[str, Any], t: dict[str, Any]) -> None:
    """A perps grid's rules: what it does on a stop."""
    if r["on_stop"] == "sell_base":
        raise ConfigError("risk.on_stop sell_base is for spot: a perps grid's on_stop is keep (leave the position) "
                          "or close (a reduce-only, capped close of it)")


def _risk_rules(r: dict[str, Any], t: dict[str, Any], warnings: list[str]) -> None:
    """The risk section's rules between keys (those that need the grid's levels or the price are checked
    at start and by plan: ``risk.exit_notes``)."""
    sl, tp = r["stop_loss_price"], r["take_profit_price"]
    if sl is not None and tp is not None and sl >= tp:
        raise ConfigError(f"risk.stop_loss_price ({sl}) must be below risk.take_profit_price ({tp})")
    slr, tpr = r["stop_loss_return"], r["take_profit_return"]
    if slr is not None and not -1 < slr < 0:
        raise ConfigError(f"risk.stop_loss_return must be a loss between -1 and 0, e.g. -0.10 to stop at a 10% loss "
                          f"(got {slr})")
    if tpr is not None and not tpr > 0:
        raise ConfigError(f"risk.take_profit_return must be a gain above 0, e.g. 0.20 to stop at a 20% gain "
                          f"(got {tpr})")
    up, down = r["trail_up_limit"], r["trail_down_limit"]
    if r["out_of_range"] == "trail":
        if up is None and down is None:
            raise ConfigError("risk.out_of_range is trail but both risk.trail_up_limit and risk.trail_down_limit are "
                              "null: set the price the grid may follow up to, down to, or both")
        if up is not None and down is not None and down >= up:
            raise ConfigError(f"risk.trail_down_limit ({down}) must be below risk.trail_up_limit ({up})")
        if not t["auto_price"]:
            if up is not None and up <= t["grid_upper"]:
                raise ConfigError(f"risk.trail_up_limit ({up}) must be above trading.grid_upper ({t['grid_upper']}): "
                                  f"the grid follows the price up to it")
            if down is not None and down >= t["grid_lower"]:
                raise ConfigError(f"risk.trail_down_limit ({down}) must be below trading.grid_lower "
                                  f"({t['grid_lower']}): the grid follows the price down to it")
    elif up is not None or down is not None:
        warnings.append(f"risk.trail_up_limit and risk.trail_down_limit apply only with risk.out_of_range trail "
                        f"(it is {r['out_of_range']}): ignored")


def load_config(path: str, *, env: Mapping[str, str] | None = None, need_keys: bool = True,
                trading: Mapping[str, Any] | None = None, risk: Mapping[str, Any] | None = None,
                system: SystemDirs = SYSTEM) -> Config:
    """Read, check and freeze a config file. ``need_keys`` is False in paper mode and for commands
    that never sign a request. ``trading``: keys that override the file's (command-line flags), checked
    like the file's own. ``system``: the systemd layout (grid_files.py) that places the state and log of a
    config in its config folder."""
    env = os.environ if env is None else env
    data = read_json(path)
    for name, override in (("trading", trading), ("risk", risk)):
        if override:
            section = data.get(name)
            data[name] = {**(section if isinstance(section, dict) else {}), **override}
    v = _shape(data)
    for var, key in (("BACKPACK_API_KEY", "api_key"), ("BACKPACK_API_SECRET", "api_secret")):
        if env.get(var):
            v["api"][key] = env[var].strip()
            v["api"]["_key_from" if key == "api_key" else "_secret_from"] = var
    n = v["notify"]
    urls_from = "notify.urls"
    if env.get(URLS_ENV, "").strip():
        urls_from = URLS_ENV
        try:
            n["urls"] = secret_urls(URLS_ENV, env[URLS_ENV].split())
        except ConfigError as e:
            raise ConfigError(str(e), from_file=False) from None
    heartbeat = n["heartbeat_url"]
    if env.get(HEARTBEAT_ENV, "").strip():
        try:
            heartbeat = secret_http_url(HEARTBEAT_ENV, env[HEARTBEAT_ENV].strip())
        except ConfigError as e:
            raise ConfigError(str(e), from_file=False) from None
    warnings = _rules(v, need_keys=need_keys)
    base = os.path.dirname(os.path.abspath(path))

    def beside(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    if env.get(STATE_FILE_ENV):
        v["state"]["file"] = env[STATE_FILE_ENV]
    if env.get(LOG_FILE_ENV):
        v["log"]["file"] = env[LOG_FILE_ENV]
    t = v["trading"]
    log = v["log"]
    default_state, default_log = default_files(path, system)
    return Config(
        api=ApiConfig(v["api"]["base_url"].rstrip("/"), v["api"]["ws_url"], v["api"]["api_key"].strip(),
                      v["api"]["api_secret"].strip(), v["api"]["window_ms"], v["api"]["requests_per_minute"],
                      v["api"].get("_key_from", "api.api_key"), v["api"].get("_secret_from", "api.api_secret")),
        trading=TradingConfig(**t),
        log=LogConfig(log["level"], beside(log["file"]) if log["file"] else default_log, log["max_bytes"],
                      log["backup_count"], log["console"]),
        state_file=beside(v["state"]["file"]) if v["state"]["file"] else default_state,
        state_named=bool(v["state"]["file"]),
        name=grid_name(path),
        path=os.path.abspath(path),
        warnings=tuple(warnings),
        paper_balances=v["paper"]["balances"],
        paper_stale_after=v["paper"]["stale_after"],
        risk=RiskConfig(trigger_price=t["trigger_price"], **v["risk"]),
        notify=NotifyConfig(urls=n["urls"], urls_from=urls_from, events=n["events"],
                            digest_interval=n["digest_interval"], error_after=n["error_after"],
                            daily_hour=n["daily_hour"], heartbeat_url=heartbeat,
                            heartbeat_interval=n["heartbeat_interval"],
                            heartbeat_fail_url=n["heartbeat_fail_url"]),
    )
