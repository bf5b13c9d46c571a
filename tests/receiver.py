"""A real HTTP receiver on 127.0.0.1 for notification tests: Apprise's ``json://`` URLs post to it,
heartbeats GET it. It records every request; it can answer slowly, with 500, or never."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    body: Any
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """``mode``: ``ok`` (200 at once), ``slow`` (200 after ``delay`` s), ``error`` (500), ``hang``
    (never answers until stopped)."""

    def __init__(self, mode: str = "ok", delay: float = 5.0) -> None:
        self.mode, self.delay = mode, delay
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with outer.lock:
                    outer.received.append(Received(self.command, self.path, body))
                if outer.mode == "hang":
                    outer.stopping.wait(60)
                    return
                if outer.mode == "slow":
                    outer.stopping.wait(outer.delay)
                status = 500 if outer.mode == "error" else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up waiting (a slow receiver's usual fate)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/notify") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def http_url(self, path: str = "/ping/abc123secret") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def messages(self) -> list[dict]:
        with self.lock:
            return [r.body for r in self.received if r.method == "POST" and isinstance(r.body, dict)]

    def gets(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.method == "GET"]

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
