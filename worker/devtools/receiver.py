"""A webhook receiver on 127.0.0.1, for the demo and the tests: a threaded ``http.server`` that
verifies each request's signature with ``tasks.webhooks.verify_signature`` (as a receiving
service would) and keeps what it received.

``answers`` scripts its behaviour, one entry per request in arrival order, then 200 for the
rest: an HTTP status, or ``("sleep", seconds, status)`` to answer late (slower than a
delivery's timeout, for instance).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tasks.webhooks import SIGNATURE_HEADER, SignatureVerificationError, verify_signature

Answer = int | tuple[str, float, int]


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    verified: bool
    error: str | None
    at: float
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    secret: str | None = None
    answers: list[Answer] = field(default_factory=list)
    on_event: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                self.send_response(405)
                self.end_headers()

            def log_message(self, *_: Any) -> None:  # quiet: the demo prints what it wants
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            answer: Answer = self.answers.pop(0) if self.answers else 200
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            length = int(request.headers.get("Content-Length") or 0)
            body = request.rfile.read(length)
            status = answer if isinstance(answer, int) else answer[2]
            if not isinstance(answer, int):
                time.sleep(answer[1])
            verified, error = True, None
            if self.secret is not None:
                try:
                    verify_signature(body, request.headers.get(SIGNATURE_HEADER), self.secret)
                except SignatureVerificationError as exc:
                    verified, error = False, f"{exc.reason}: {exc}"
                    status = 400
            seen = Received(body, dict(request.headers.items()), verified, error, time.time(), status)
            with self._lock:
                self.received.append(seen)
            if self.on_event is not None:
                self.on_event(seen)
            try:
                request.send_response(status)
                request.send_header("Content-Type", "application/json")
                request.end_headers()
                request.wfile.write(json.dumps({"received": status < 300}).encode())
            except OSError:  # the sender gave up (timeout) and closed: nothing to answer
                pass
        finally:
            with self._lock:
                self._in_flight -= 1

    def event_ids(self, *, answered: int | None = 200) -> list[str]:
        """The ids of the events received (those answered ``answered``; None: all)."""
        with self._lock:
            return [r.event["id"] for r in self.received if answered is None or r.answered == answered]
