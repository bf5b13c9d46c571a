"""Backpack's request signing (docs/exchange.md §2): keys, the signing string, and the ``requests``
auth hook that signs a prepared request. Pure but for the clock; ``backpack_api`` re-exports all of it.

- The signing string is built by one pure function, ``signing_payload``, pinned by the golden vectors
  of docs/exchange.md §2.5: instruction first, parameters sorted by key, raw values (no
  percent-encoding), booleans ``true``/``false``, decimals as plain text, ``&timestamp=&window=`` last;
  a batch signs each order with its own ``instruction=`` prefix.
- ``BackpackAuth`` signs the final prepared request, looking the instruction up in one table. It
  holds no per-request state, so the WebSocket thread reuses the same ``Signer``.
- A key's or secret's text never reaches a message: errors name the key, never its value.
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

import requests
from nacl.signing import SigningKey

from gridbot.core.errors import InputError

DEFAULT_WINDOW_MS = 5000
MAX_WINDOW_MS = 60000

# (METHOD, path) -> instruction (docs/exchange.md §3). Paths not listed are public and unsigned.
INSTRUCTIONS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/account"): "accountQuery",
    ("GET", "/api/v1/capital"): "balanceQuery",
    ("GET", "/api/v1/order"): "orderQuery",
    ("POST", "/api/v1/order"): "orderExecute",
    ("DELETE", "/api/v1/order"): "orderCancel",
    ("GET", "/api/v1/orders"): "orderQueryAll",
    ("POST", "/api/v1/orders"): "orderExecute",
    ("DELETE", "/api/v1/orders"): "orderCancelAll",
    ("GET", "/wapi/v1/history/fills"): "fillHistoryQueryAll",
    ("GET", "/wapi/v1/history/orders"): "orderHistoryQueryAll",
    # perps (docs/exchange.md §12)
    ("PATCH", "/api/v1/account"): "accountUpdate",
    ("GET", "/api/v1/position"): "positionQuery",
    ("GET", "/api/v1/capital/collateral"): "collateralQuery",
    ("GET", "/wapi/v1/history/funding"): "fundingHistoryQueryAll",
}

class KeyFormatError(InputError):
    """A key that is not base64 of 32 bytes. The message never contains the key."""


# ------------------------------------------------------------------------------------ signing
def format_value(value: Any) -> str:
    """A parameter value as Backpack signs it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, (int, str)):
        return str(value)
    raise TypeError(f"cannot sign a value of type {type(value).__name__}")


def _render(instruction: str, params: Mapping[str, Any]) -> str:
    parts = [f"instruction={instruction}"]
    parts.extend(f"{k}={format_value(params[k])}" for k in sorted(params))
    return "&".join(parts)


def signing_payload(instruction: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
                    ts_ms: int, window_ms: int) -> str:
    """The exact string to sign. ``params`` is the query (GET) or the body: an object, or a list of
    objects for a batch."""
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        head = "&".join(_render(instruction, p) for p in params) or f"instruction={instruction}"
    else:
        head = _render(instruction, params or {})
    return f"{head}&timestamp={ts_ms}&window={window_ms}"


def decode_key(text: Any, name: str) -> bytes:
    """Base64 of exactly 32 bytes, or KeyFormatError naming ``name`` (never the value)."""
    if not isinstance(text, str) or not text.strip():
        raise KeyFormatError(f"{name} is empty")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"{name} is not valid base64") from None
    if len(raw) != 32:
        raise KeyFormatError(f"{name} decodes to {len(raw)} bytes, expected 32 (an ED25519 key)")
    return raw


class Signer:
    """An ED25519 signing key. Its repr and str never show the secret."""

    def __init__(self, secret_b64: str) -> None:
        self._key = SigningKey(decode_key(secret_b64, "api_secret"))
        self.api_key = base64.b64encode(bytes(self._key.verify_key)).decode()

    def __repr__(self) -> str:
        return f"Signer(api_key={self.api_key!r})"

    def sign(self, message: str) -> str:
        return base64.b64encode(self._key.sign(message.encode("utf-8")).signature).decode()

    def headers(self, instruction: str, params: Any, ts_ms: int,
                window_ms: int = DEFAULT_WINDOW_MS) -> dict[str, str]:
        message = signing_payload(instruction, params, ts_ms, window_ms)
        return {"X-API-Key": self.api_key, "X-Signature": self.sign(message),
                "X-Timestamp": str(ts_ms), "X-Window": str(window_ms)}

    def ws_signature(self, ts_ms: int, window_ms: int = DEFAULT_WINDOW_MS) -> list[str]:
        """The four strings of a private-stream SUBSCRIBE (docs/exchange.md §9.4)."""
        sig = self.sign(signing_payload("subscribe", None, ts_ms, window_ms))
        return [self.api_key, sig, str(ts_ms), str(window_ms)]


def generate_keypair() -> tuple[str, str]:
    """A fresh (api_key, api_secret) pair, both base64."""
    key = SigningKey.generate()
    return (base64.b64encode(bytes(key.verify_key)).decode(), base64.b64encode(bytes(key)).decode())


def public_key_of(secret_b64: str) -> str:
    return Signer(secret_b64).api_key


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class BackpackAuth(requests.auth.AuthBase):
    """Signs the final prepared request; leaves public endpoints alone."""

    def __init__(self, signer: Signer, window_ms: int = DEFAULT_WINDOW_MS,
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.signer = signer
        self.window_ms = window_ms
        self.clock_ms = clock_ms

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(r.url or "")
        instruction = INSTRUCTIONS.get(((r.method or "").upper(), url.path))
        if instruction is None:
            return r
        params: Any
        if r.method == "GET":
            params = dict(parse_qsl(url.query, keep_blank_values=True))
        else:
            params = json.loads(r.body) if isinstance(r.body, (str, bytes)) and r.body else {}
        r.headers.update(self.signer.headers(instruction, params, self.clock_ms(), self.window_ms))
        return r


# ------------------------------------------------------------------------------------ requests
