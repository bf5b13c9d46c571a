"""Shared test helpers: raw signed requests (to craft good and bad ones), condition waits, keys."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Callable

import requests

from backpack_api import INSTRUCTIONS, Signer, generate_keypair, signing_payload, wall_clock_ms


# Every process a test starts, so that the suite's finaliser (conftest.py) ends whatever is still
# running when the test is over, however it ended.
STARTED: list[subprocess.Popen] = []


def start_process(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, **kwargs)
    STARTED.append(proc)
    return proc


def end_started_processes() -> None:
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=30)
        except (ValueError, OSError, subprocess.TimeoutExpired):
            pass


def new_signer() -> Signer:
    return Signer(generate_keypair()[1])


def signed_request(base: str, signer: Signer, method: str, path: str, *,
                   params: dict | None = None, body: Any = None, ts: int | None = None,
                   window: int | None = 5000, headers: dict | None = None,
                   sign_as: str | None = None) -> requests.Response:
    """A request signed by hand, so tests can vary every part of it."""
    ts = wall_clock_ms() if ts is None else ts
    instruction = sign_as or INSTRUCTIONS[(method, path)]
    sign_params = {k: str(v) for k, v in (params or {}).items()} if method == "GET" else body
    message = signing_payload(instruction, sign_params, ts, window or 5000)
    h = {"X-API-Key": signer.api_key, "X-Signature": signer.sign(message), "X-Timestamp": str(ts)}
    if window is not None:
        h["X-Window"] = str(window)
    if body is not None:
        h["Content-Type"] = "application/json; charset=utf-8"
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}
    return requests.request(method, base + path, params=params,
                            data=json.dumps(body) if body is not None else None, headers=h, timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll a condition until it holds (returns its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def order_body(price: str, qty: str = "1", side: str = "Bid", symbol: str = "SOL_USDC",
               client_id: int | None = None, post_only: bool = True, **extra: Any) -> dict:
    body = {"symbol": symbol, "side": side, "orderType": "Limit", "price": price, "quantity": qty,
            "timeInForce": "GTC", "postOnly": post_only}
    if client_id is not None:
        body["clientId"] = client_id
    body.update(extra)
    return body
