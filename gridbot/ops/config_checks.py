"""The value checkers of config.json's keys: each takes (the key's name, the value as read) and returns
the value typed, or raises one ``ConfigError`` line that names the key and what is wrong (never echoing
a secret). Each carries the JSON Schema fragment it accepts (``described``), from which
``config_schema.py`` writes ``config.schema.json``.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Callable

from gridbot.core.errors import InputError


class ConfigError(InputError):
    """A configuration problem, as one line that names the key and what to do. ``from_file`` is False
    when the bad value came from elsewhere (an environment variable, a command-line flag): then the
    config file is not named in the message."""

    def __init__(self, message: str, *, from_file: bool = True) -> None:
        super().__init__(message)
        self.from_file = from_file


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# A decimal as text: ASCII digits only (Decimal itself would take "١٥٠"), an optional exponent.
_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,9})?")
# What a price, a quantity or a fee may be: the bot multiplies and quantises them in a 28-digit context,
# so a value must keep its digits within it (a bound of 1e30 or a quantity of 1e999999 would not).
MAX_DECIMAL = Decimal(10) ** 12
MAX_PLACES = 12
MAX_DIGITS = 18


def _decimal(v: Any) -> Decimal | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, Decimal):
        d = v
    elif _is_int(v):
        d = Decimal(v)
    elif isinstance(v, str) and _DECIMAL_TEXT.fullmatch(v.strip()):
        d = Decimal(v.strip())
    else:
        return None
    return d if d.is_finite() else None


def _fits(d: Decimal) -> bool:
    """Within what the grid maths can hold exactly: below 10^12, at most 12 decimal places, 18 digits."""
    if d == 0:
        return True
    if abs(d.adjusted()) > 40:      # 1e999999999: out of range before normalize() could overflow on it
        return False
    t = d.normalize().as_tuple()
    places = -t.exponent if isinstance(t.exponent, int) and t.exponent < 0 else 0
    return abs(d) < MAX_DECIMAL and places <= MAX_PLACES and len(t.digits) <= MAX_DIGITS


Check = Callable[[str, Any], Any]


def described(schema: dict[str, Any]) -> Callable[[Check], Check]:
    """Attach the JSON Schema fragment a checker accepts (``config_schema.py`` builds the schema of the
    whole file from them: one table for the validator and the editor's schema)."""
    def attach(check: Check) -> Check:
        check.schema = schema  # type: ignore[attr-defined]
        return check
    return attach


_DECIMAL_SCHEMA_PATTERN = r"^\s*" + _DECIMAL_TEXT.pattern + r"\s*$"


def text(allowed: tuple[str, ...] | None = None, pattern: str | None = None, hint: str = "",
         nullable: bool = False) -> Check:
    def check(key: str, v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str):
            raise ConfigError(f"{key} must be a string{hint} (got {_show(v)})")
        if "\0" in v:
            raise ConfigError(f"{key} must not contain a NUL character")
        if len(v) > 4096:
            raise ConfigError(f"{key} is too long ({len(v)} characters; at most 4096)")
        if allowed is not None and v not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)} (got {_show(v)})")
        if pattern is not None and not re.fullmatch(pattern, v):
            raise ConfigError(f"{key} must look like {hint} (got {_show(v)})")
        return v
    schema: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "maxLength": 4096}
    if allowed is not None:
        schema["enum"] = list(allowed) + ([None] if nullable else [])
    if pattern is not None:
        schema["pattern"] = f"^(?:{pattern})$"
    return described(schema)(check)


@described({"type": "boolean"})
def boolean(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false (got {_show(v)})")
    return v


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(key: str, v: Any) -> int:
        if not _is_int(v):
            raise ConfigError(f"{key} must be a whole number (got {_show(v)})")
        if lo is not None and v < lo:
            raise ConfigError(f"{key} must be at least {lo} (got {v})")
        if hi is not None and v > hi:
            raise ConfigError(f"{key} must be at most {hi} (got {v})")
        return v
    schema: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return described(schema)(check)


def decimal(*, positive: bool = False, nonneg: bool = False, below: Decimal | None = None,
            nullable: bool = False) -> Check:
    def check(key: str, v: Any) -> Decimal | None:
        if v is None and nullable:
            return None
        d = _decimal(v)
        if d is None:
            raise ConfigError(f"{key} must be a number (got {_show(v)})")
        if not _fits(d):
            raise ConfigError(f"{key} must be below {MAX_DECIMAL:,} with at most {MAX_PLACES} decimal places "
                              f"(got {_show(v)})")
        if positive and d <= 0:
            raise ConfigError(f"{key} must be greater than 0 (got {d})")
        if nonneg and d < 0:
            raise ConfigError(f"{key} must not be negative (got {d})")
        if below is not None and d >= below:
            raise ConfigError(f"{key} must be below {below} (got {d})")
        return d
    # A number, or a decimal written as a string (the bounds bind numbers; strings are checked on load).
    schema: dict[str, Any] = {"type": ["number", "string"] + (["null"] if nullable else []),
                              "pattern": _DECIMAL_SCHEMA_PATTERN}
    if positive:
        schema["exclusiveMinimum"] = 0
    elif nonneg:
        schema["minimum"] = 0
    if below is not None:
        schema["exclusiveMaximum"] = float(below)
    return described(schema)(check)


def seconds(lo: int, hi: int, *, zero: str = "") -> Check:
    """A number of seconds from ``lo`` to ``hi``; with ``zero``, 0 is allowed too and means that."""
    def check(key: str, v: Any) -> float:
        d = _decimal(v)
        if d is not None and not isinstance(v, str) and (lo <= d <= hi or (zero and d == 0)):
            return float(d)
        also = f", or 0 {zero}" if zero else ""
        raise ConfigError(f"{key} must be a number of seconds from {lo:g} to {hi:,}{also} (got {_show(v)})")
    span = {"minimum": lo, "maximum": hi}
    return described({"type": "number", "anyOf": [span, {"const": 0}]} if zero else {"type": "number", **span})(check)


TEN_YEARS = 10 * 365 * 86400


def string_list(allowed: tuple[str, ...]) -> Check:
    def check(key: str, v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{key} must be a list of names from {', '.join(allowed)} (got {_show(v)})")
        for x in v:
            if x not in allowed:
                raise ConfigError(f"{key}: {_show(x)} is not one of {', '.join(allowed)}")
        return tuple(dict.fromkeys(v))
    return described({"type": "array", "items": {"enum": list(allowed)}})(check)


@described({"type": "object", "propertyNames": {"pattern": "^[A-Z0-9]{1,20}$"},
            "additionalProperties": {"type": ["number", "string"], "pattern": _DECIMAL_SCHEMA_PATTERN, "minimum": 0}})
def balances(key: str, v: Any) -> dict[str, Decimal]:
    """``{"USDC": "1000", "SOL": "10"}``: asset names in capitals, amounts not negative."""
    if not isinstance(v, dict):
        raise ConfigError(f"{key} must be an object of asset amounts, e.g. {{\"USDC\": \"1000\"}} (got {_show(v)})")
    out = {}
    for asset, amount in v.items():
        if not re.fullmatch(r"[A-Z0-9]{1,20}", asset):
            raise ConfigError(f"{key}: {_show(asset)} is not an asset name (capitals, e.g. USDC)")
        out[asset] = decimal(nonneg=True)(f"{key}.{asset}", amount)
    return out


def _secret_url_problem(v: Any, schemes: str = "") -> str:
    """What is wrong with a URL that holds a secret (never echoed back), or ''."""
    if not isinstance(v, str) or "\0" in v or len(v) > 4096 or any(c.isspace() for c in v):
        return "must be a URL without spaces"
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", v):
        return f"must look like {schemes or 'scheme://...'}"
    return ""


@described({"type": "array", "items": {"type": "string", "pattern": r"^[a-zA-Z][a-zA-Z0-9+.-]*://\S+$"}})
def secret_urls(key: str, v: Any) -> tuple[str, ...]:
    """Apprise URLs (they hold tokens: an error names the entry, never its text)."""
    if not isinstance(v, list):
        got = "a string" if isinstance(v, str) else _show(v)
        raise ConfigError(f"{key} must be a list of Apprise URLs, e.g. [\"tgram://TOKEN/CHAT_ID\"] (got {got})")
    for i, x in enumerate(v):
        problem = _secret_url_problem(x, "tgram://TOKEN/CHAT_ID or discord://ID/TOKEN")
        if problem:
            raise ConfigError(f"{key}[{i}] {problem}")
    return tuple(v)


@described({"type": "string", "anyOf": [{"const": ""}, {"pattern": r"^https?://\S+$"}]})
def secret_http_url(key: str, v: Any) -> str:
    if v == "":
        return v
    problem = _secret_url_problem(v, "https://hc-ping.com/UUID")
    if not problem and not re.match(r"https?://", v):
        problem = "must be an http:// or https:// URL"
    if problem:
        raise ConfigError(f"{key} {problem}")
    return v


def _show(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v if len(v) <= 40 else v[:37] + "...")
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (dict, list)):
        return "an object" if isinstance(v, dict) else "a list"
    return str(v)
