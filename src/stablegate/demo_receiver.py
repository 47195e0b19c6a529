"""The demo merchant's webhook endpoint: an HTTP server on 127.0.0.1 (a thread) that checks
every delivery with the `standardwebhooks` package — the reference implementation of the
spec, not our own signing code — answers 200 when the signature holds and 400 when it
does not, and records what came."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class Delivery:
    webhook_id: str  # the same on every attempt of one delivery
    event_type: str
    verified: bool
    error: str | None = None


@dataclass
class Receiver:
    url: str = ""
    secret: str | None = None  # the endpoint's whsec_…, set when the endpoint is created
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            from standardwebhooks.webhooks import Webhook
        except ImportError:  # a dev dependency (bin/setup installs it)
            self._record(headers, body, "the standardwebhooks package is not installed")
            return False
        try:
            assert self.secret is not None, "no endpoint secret yet"
            Webhook(self.secret).verify(body, headers)  # raises on a bad signature or an old timestamp
        except Exception as exc:  # any failure to verify is the finding, whatever raised it
            self._record(headers, body, f"{type(exc).__name__}: {exc}")
            return False
        self._record(headers, body, None)
        return True

    def _record(self, headers: dict[str, str], body: bytes, error: str | None) -> None:
        try:
            event_type = str(json.loads(body)["type"])
        except (ValueError, KeyError, TypeError):
            event_type = "?"
        delivery = Delivery(headers.get("webhook-id", "?"), event_type, error is None, error)
        with self.lock:
            self.deliveries.append(delivery)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def verified_ids(self) -> set[str]:
        return {d.webhook_id for d in self.snapshot() if d.verified}

    def failures(self) -> list[Delivery]:
        return [d for d in self.snapshot() if not d.verified]

    def verified_by_type(self) -> Counter[str]:
        """Verified deliveries per event type, each delivery once (however many attempts)."""
        seen: dict[str, str] = {d.webhook_id: d.event_type for d in self.snapshot() if d.verified}
        return Counter(seen.values())


@contextlib.contextmanager
def running() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY_BYTES)
            body = self.rfile.read(length)
            ok = receiver.receive({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(200 if ok else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass  # the demo prints its own summary

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks"
    thread = threading.Thread(target=server.serve_forever, name="demo-webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
