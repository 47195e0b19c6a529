"""One delivery attempt over HTTP (design 0005): sign what the claim returned, pass the
SSRF gate again (DNS may have changed since registration), POST to the checked address.
The dispatcher (dispatch.py) claims before and records after.

No database transaction is open during the HTTP call: an attempt may take the whole
timeout, and a pooled connection held that long would be the scarcer resource.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable

import httpx
import structlog
from opentelemetry import trace

from stablegate.config import Settings
from stablegate.kit import ssrf
from stablegate.observability import metrics
from stablegate.observability.tracing import tracer
from stablegate.webhooks import schedule, service, signing

log = structlog.get_logger(__name__)

USER_AGENT = "Stablegate-Webhooks/1 (+https://docs.standardwebhooks.com)"
EXCERPT_BYTES = 1024
MAX_ERROR_CHARS = 500
# Connections kept per worker process: attempts of all endpoints share one pool.
MAX_CONNECTIONS = 200
MAX_KEEPALIVE = 100


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def attempt(
    target: service.Target, settings: Settings, clock: Callable[[], dt.datetime]
) -> service.AttemptResult:
    """POST the body once. Never raises for anything the receiver or the network does:
    every failure becomes a recorded result."""
    started_at = clock()
    started_s = time.perf_counter()
    timestamp_s = int(started_at.timestamp())
    headers = {
        **signing.headers(target.secrets, target.delivery_id, timestamp_s, target.body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",  # the excerpt is cut raw: a cut gzip stream would not decode
    }
    schemes = ("https",) if target.mode == "live" else ("https", "http")
    status_code: int | None = None
    excerpt: str | None = None
    retry_after_s: float | None = None
    error: str | None = None
    attributes = {"webhook.delivery_id": target.delivery_id, "webhook.endpoint_id": target.endpoint_id}
    with tracer.start_as_current_span("webhook.attempt", kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
        try:
            async with asyncio.timeout(settings.webhook_timeout_s):
                destination = await ssrf.check_url(target.url, settings.webhook_allow_list(), schemes)
                response = await ssrf.pinned_request(
                    client(settings), "POST", destination, content=target.body, headers=headers
                )
            status_code = response.status_code
            excerpt = _excerpt(response.content)
            retry_after_s = schedule.parse_retry_after(response.headers.get("retry-after"), started_at)
            span.set_attribute("http.response.status_code", status_code)
        except ssrf.UnsafeDestination as exc:
            error = f"unsafe_destination: {exc.reason}"
        except (TimeoutError, httpx.TimeoutException):
            error = f"timeout: no complete response within {settings.webhook_timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not strand the delivery: record it, retry later
            log.exception("webhook.attempt_crashed", delivery_id=target.delivery_id)
            error = f"internal_error: {type(exc).__name__}"
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error[:200]))
    duration_s = time.perf_counter() - started_s
    metrics.WEBHOOK_ATTEMPT_LATENCY.observe(duration_s)
    metrics.WEBHOOK_ATTEMPTS.labels(_outcome_label(status_code, error)).inc()
    return service.AttemptResult(
        started_at=started_at,
        status_code=status_code,
        duration_ms=round(duration_s * 1000),
        error=error[:MAX_ERROR_CHARS] if error is not None else None,
        response_excerpt=excerpt,
        retry_after_s=retry_after_s,
    )


def _outcome_label(status_code: int | None, error: str | None) -> str:
    if status_code is not None:
        return "succeeded" if 200 <= status_code < 300 else "http_error"
    assert error is not None
    return error.split(":", 1)[0] if error.startswith(("unsafe_destination", "timeout")) else "transport_error"


def _excerpt(content: bytes) -> str | None:
    if not content:
        return None
    # `ignore` drops a character cut in half, so the text stays within EXCERPT_BYTES;
    # PostgreSQL text cannot hold NUL.
    return content[:EXCERPT_BYTES].decode("utf-8", "ignore").replace("\x00", "")


class _Clients:
    client: ssrf.PinnedClient | None = None
    loop: asyncio.AbstractEventLoop | None = None


def client(settings: Settings) -> ssrf.PinnedClient:
    """One pooled client per worker process (per event loop: tests start several)."""
    loop = asyncio.get_running_loop()
    if _Clients.client is None or _Clients.loop is not loop:
        _Clients.client = ssrf.pinned_client(
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE),
            wrap=lambda transport: _CappedTransport(transport, EXCERPT_BYTES),
            timeout=settings.webhook_timeout_s,
        )
        _Clients.loop = loop
    return _Clients.client


class _CappedStream(httpx.AsyncByteStream):
    """A response body cut at `cap` bytes: a receiver cannot make a worker buffer a
    gigabyte. The rest is never read (the connection is closed, not reused)."""

    def __init__(self, inner: httpx.AsyncByteStream, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            part = chunk[: self._cap - seen]
            seen += len(part)
            if part:
                yield part
            if seen >= self._cap:
                break

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        # Undecoded: a truncated compressed body must not raise (we asked for identity).
        headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_CappedStream(response.stream, self._cap),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()
