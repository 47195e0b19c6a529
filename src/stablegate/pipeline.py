"""The ASGI request pipeline around the FastAPI app (design 0001, "Request lifecycle").

ObservabilityMiddleware: Request-Id, log context, span, metrics.
UnitOfWorkMiddleware (only /v1): body cap, authentication, rate limit, idempotency, one
session per request committed together with the stored idempotent response.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stablegate.errors import (
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StablegateError,
)
from stablegate.kit import idempotency
from stablegate.kit.ids import new_id
from stablegate.kit.ratelimit import RateLimiter
from stablegate.merchants import service as merchants
from stablegate.observability import metrics
from stablegate.observability.tracing import tracer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("stablegate.http")
JSON_HEADERS = [(b"content-type", b"application/json")]


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def error_response(exc: StablegateError, request_id: str | None) -> idempotency.StoredResponse:
    headers = [*JSON_HEADERS, *((k.lower().encode(), v.encode()) for k, v in exc.headers.items())]
    return idempotency.StoredResponse(exc.status_code, headers, json_bytes(exc.body(request_id)))


async def send_response(
    send: Send, response: idempotency.StoredResponse, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [h for h in response.headers if h[0] != b"content-length"]
    headers += [*(extra or []), (b"content-length", str(len(response.body)).encode())]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = {"code": 500}
        started_s = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"request-id", request_id.encode())]
            await send(message)

        with tracer.start_as_current_span(f"{scope['method']} request", kind=trace.SpanKind.SERVER) as span:
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = _route_template(scope)
                span.update_name(f"{scope['method']} {route}")
                span.set_attributes({"http.route": route, "http.status_code": status["code"], "request_id": request_id})
                elapsed_s = time.perf_counter() - started_s
                metrics.HTTP_REQUESTS.labels(route, scope["method"], str(status["code"])).inc()
                metrics.HTTP_LATENCY.labels(route, scope["method"]).observe(elapsed_s)
                log.info(
                    "http.request",
                    method=scope["method"],
                    route=route,
                    status=status["code"],
                    duration_ms=round(elapsed_s * 1000, 2),
                )


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


@dataclass
class PipelineConfig:
    sessionmaker: async_sessionmaker[AsyncSession]
    server_secret: bytes
    rate_limiter: RateLimiter
    max_body_bytes: int
    idempotency_ttl_s: int
    idempotency_lock_s: int
    api_prefix: str = "/v1/"


class UnitOfWorkMiddleware:
    def __init__(self, app: ASGIApp, config: PipelineConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.config.api_prefix):
            await self.app(scope, receive, send)
            return
        request_id = scope["state"]["request_id"]
        try:
            headers = _headers(scope)
            body = await read_body(headers, receive, self.config.max_body_bytes)
            async with self.config.sessionmaker() as session:
                response = await self._handle(scope, headers, body, session)
        except StablegateError as exc:
            response = error_response(exc, request_id)
        except Exception:
            # Database unreachable, pool exhausted…: an error object, never a bare 500 page.
            log.exception("http.pipeline_failed")
            response = error_response(ServiceUnavailable("The service is temporarily unavailable."), request_id)
        extra = [(b"idempotent-replayed", b"true")] if scope["state"].get("replayed") else []
        await send_response(send, response, extra)

    async def _handle(
        self, scope: Scope, headers: dict[str, str], body: bytes, session: AsyncSession
    ) -> idempotency.StoredResponse:
        principal = await merchants.authenticate(session, self.config.server_secret, headers.get("authorization"))
        if "\x00" in scope["path"]:
            # No route or id holds a NUL byte, and PostgreSQL text cannot: answer as for any
            # unknown URL instead of letting a lookup fail in the driver.
            raise NotFound(f"Unrecognized request URL ({scope['method']} {scope['path']!r}).", code="url_not_found")
        structlog.contextvars.bind_contextvars(
            merchant_id=principal.merchant_id, mode=principal.mode, api_key_id=principal.key_id
        )
        trace.get_current_span().set_attributes({"merchant_id": principal.merchant_id, "mode": principal.mode})
        try:
            self.config.rate_limiter.check(principal.key_id)
        except StablegateError:
            metrics.RATE_LIMITED.inc()
            raise
        scope["state"].update(session=session, principal=principal)
        idem = _idempotency_scope(scope, headers, principal)
        if idem is not None:
            fp = idempotency.fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body)
            stored = await idempotency.claim(
                session, idem, fp, ttl_s=self.config.idempotency_ttl_s, lock_s=self.config.idempotency_lock_s
            )
            if stored is not None:
                metrics.IDEMPOTENCY_OUTCOMES.labels("replayed").inc()
                scope["state"]["replayed"] = True
                return stored
            metrics.IDEMPOTENCY_OUTCOMES.labels("claimed").inc()
        return await self._run(scope, body, session, idem)

    async def _run(
        self, scope: Scope, body: bytes, session: AsyncSession, idem: idempotency.Scope | None
    ) -> idempotency.StoredResponse:
        response = await self._call_app(scope, body)
        if response.status < 400:
            try:
                if idem is not None:
                    await idempotency.complete(session, idem, response)
                await session.commit()
                return response
            except Exception:
                log.exception("http.commit_failed")
                response = error_response(
                    InternalError("The request could not be completed."), scope["state"]["request_id"]
                )
        await session.rollback()
        if idem is not None:
            # A 503 ("retry later": a rate source down) did nothing; the retry the client is
            # told to make, with the same key, must run again rather than replay the 503.
            release = scope["state"].get("release_idempotency", False) or response.status == 503
            await self._record_failure(session, idem, response, release=release)
        return response

    async def _record_failure(
        self, session: AsyncSession, idem: idempotency.Scope, response: idempotency.StoredResponse, release: bool
    ) -> None:
        """4xx/5xx: domain writes are rolled back. Invalid parameters and a 503 free the key
        (the client fixes or waits, and retries); anything else the endpoint answered is
        stored for replay."""
        if release:
            await idempotency.release(session, idem)
        else:
            await idempotency.complete(session, idem, response)
        await session.commit()

    async def _call_app(self, scope: Scope, body: bytes) -> idempotency.StoredResponse:
        """Run the route, buffering its response so we can commit before sending it."""
        started: dict[str, Any] = {}
        chunks: list[bytes] = []
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("http.unhandled_exception")
            return error_response(InternalError("An unexpected error occurred."), scope["state"]["request_id"])
        return idempotency.StoredResponse(started["status"], list(started.get("headers", [])), b"".join(chunks))


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _idempotency_scope(
    scope: Scope, headers: dict[str, str], principal: merchants.Principal
) -> idempotency.Scope | None:
    raw = headers.get(idempotency.HEADER.lower())
    if raw is None or scope["method"] != "POST":
        return None
    name = idempotency.HEADER.lower().encode("latin-1")
    if sum(1 for k, _ in scope["headers"] if k.lower() == name) > 1:  # which one would be the key?
        raise InvalidRequest(
            f"Send one {idempotency.HEADER} header, not several.",
            param=idempotency.HEADER,
            code="invalid_idempotency_key",
        )
    return idempotency.Scope(principal.merchant_id, principal.mode, idempotency.validate_key(raw))


async def read_body(headers: dict[str, str], receive: Receive, max_bytes: int) -> bytes:
    """Read the whole body, refusing more than `max_bytes` without buffering it all."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("Content-Length must be a number.", param="Content-Length")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"Request bodies are limited to {max_bytes} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"Request bodies are limited to {max_bytes} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
