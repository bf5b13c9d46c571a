"""An HTTP answer as the simulator's REST routes and control API build it."""
from __future__ import annotations

from typing import Any


class Reply:
    def __init__(self, status: int, payload: Any = None, *, text: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.payload = payload
        self.text = text
        self.headers = headers or {}
