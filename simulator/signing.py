"""The simulator's own ED25519 request verification (docs/exchange.md §2, §3, §9.4).

This module deliberately shares no code with the bot's signer: the simulator is the independent
party that catches a signing bug, so it rebuilds the signing string from what arrived on the wire.

Rules (as the official Rust client signs, which the contract adopts):
- ``instruction=<instr>`` first, then the query pairs (GET) or the top-level body fields (POST/DELETE),
  sorted by key, rendered raw: strings without quotes or percent-encoding, numbers as their JSON text,
  booleans as ``true``/``false``; then ``&timestamp=<ms>&window=<ms>``.
- A JSON array body (batch orders) is signed item by item, each with its own ``instruction=`` prefix,
  joined by ``&``, with one ``timestamp``/``window`` suffix.
- ``X-Window`` defaults to 5000 when absent and may not exceed 60000.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

DEFAULT_WINDOW_MS = 5000
MAX_WINDOW_MS = 60000

# (method, path) -> instruction, for the endpoints the simulator serves (docs/exchange.md §3).
INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/capital"): "balanceQuery",
    ("GET", "/api/v1/capital/collateral"): "collateralQuery",
    ("GET", "/api/v1/account"): "accountQuery",
    ("GET", "/api/v1/account/limits/order"): "maxOrderQuantity",
    ("GET", "/api/v1/order"): "orderQuery",
    ("POST", "/api/v1/order"): "orderExecute",
    ("DELETE", "/api/v1/order"): "orderCancel",
    ("GET", "/api/v1/orders"): "orderQueryAll",
    ("POST", "/api/v1/orders"): "orderExecute",
    ("DELETE", "/api/v1/orders"): "orderCancelAll",
    ("GET", "/wapi/v1/history/fills"): "fillHistoryQueryAll",
    ("GET", "/wapi/v1/history/orders"): "orderHistoryQueryAll",
    ("PATCH", "/api/v1/account"): "accountUpdate",
    ("GET", "/api/v1/position"): "positionQuery",
    ("GET", "/wapi/v1/history/position"): "positionHistoryQueryAll",
    ("GET", "/wapi/v1/history/funding"): "fundingHistoryQueryAll",
    ("GET", "/wapi/v1/history/settlement"): "settlementHistoryQueryAll",
}


class AuthFailure(Exception):
    """A request the exchange refuses before looking at it; ``message`` is Backpack's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def render_value(value: Any) -> str:
    """One value as it appears in the signing string (serde_json ``to_string`` minus quotes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        # Numbers keep the text they arrived with (parsed with parse_float=Decimal).
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"))


def _pairs(instruction: str, items: list[tuple[str, Any]]) -> str:
    parts = [f"instruction={instruction}"]
    parts.extend(f"{k}={render_value(v)}" for k, v in sorted(items, key=lambda kv: kv[0]))
    return "&".join(parts)


def signing_string(instruction: str, query: list[tuple[str, str]], body: Any,
                   timestamp_ms: int, window_ms: int) -> str:
    """The exact text a client must have signed for this request."""
    if isinstance(body, list):
        pieces = []
        for item in body:
            if not isinstance(item, dict):
                raise AuthFailure("Invalid signature")
            pieces.append(_pairs(instruction, list(item.items())))
        head = "&".join(pieces) if pieces else f"instruction={instruction}"
    else:
        items: list[tuple[str, Any]] = list(query)
        head = _pairs(instruction, items)
        if isinstance(body, dict) and body:
            head += "&" + "&".join(f"{k}={render_value(v)}" for k, v in sorted(body.items()))
    return f"{head}&timestamp={timestamp_ms}&window={window_ms}"


def decode_key(text: str) -> bytes:
    """Base64 of a 32-byte ED25519 public key, or AuthFailure."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuthFailure("Invalid X-API-Key header") from None
    if len(raw) != 32:
        raise AuthFailure("Invalid X-API-Key header")
    return raw


@dataclass(frozen=True)
class SignedHeaders:
    api_key: str
    signature: str
    timestamp_ms: int
    window_ms: int


def parse_headers(get: Any) -> SignedHeaders:
    """Read and check the four X- headers; ``get`` looks a header up case-insensitively."""
    api_key = get("X-API-Key")
    signature = get("X-Signature")
    timestamp = get("X-Timestamp")
    window = get("X-Window")
    if not api_key:
        raise AuthFailure("Missing X-API-Key header")
    if not signature:
        raise AuthFailure("Missing X-Signature header")
    if not timestamp:
        raise AuthFailure("Missing X-Timestamp header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise AuthFailure("Invalid X-Timestamp header") from None
    if window is None or window == "":
        win = DEFAULT_WINDOW_MS
    else:
        try:
            win = int(window)
        except ValueError:
            raise AuthFailure("Invalid X-Window header") from None
        if win <= 0 or win > MAX_WINDOW_MS:
            raise AuthFailure("Invalid X-Window header")
    return SignedHeaders(api_key, signature, ts, win)


def check_time(timestamp_ms: int, window_ms: int, now_ms: int) -> None:
    """Backpack refuses a request that arrives after timestamp + window.

    How far ahead of the server clock a timestamp may be is undocumented; the simulator takes the
    strict reading (no more than one window ahead) so that a bot with a fast clock finds out here.
    """
    if now_ms > timestamp_ms + window_ms:
        raise AuthFailure("Request has expired")
    if timestamp_ms > now_ms + window_ms:
        raise AuthFailure("Invalid timestamp")


def verify(api_key: str, signature_b64: str, message: str) -> None:
    """Verify an ED25519 signature over ``message``; AuthFailure when it does not hold."""
    key = decode_key(api_key)
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise AuthFailure("Invalid X-Signature header") from None
    if len(sig) != 64:
        raise AuthFailure("Invalid X-Signature header")
    try:
        VerifyKey(key).verify(message.encode("utf-8"), sig)
    except BadSignatureError:
        raise AuthFailure("Invalid signature") from None
