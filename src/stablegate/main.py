"""The ASGI application: routers, error handlers, pipeline middleware, health and metrics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from stablegate import migrations, web
from stablegate.chains import registry
from stablegate.chains.registry import ChainConfig
from stablegate.checkout.api import SecurityHeaders as CheckoutSecurityHeaders
from stablegate.checkout.api import router as checkout_router
from stablegate.config import Settings, get_settings
from stablegate.customers.api import router as customers_router
from stablegate.db import Database, libpq_url
from stablegate.errors import InvalidRequest, MethodNotAllowed, NotFound, StablegateError
from stablegate.kit.idempotency import HEADER as IDEMPOTENCY_HEADER
from stablegate.kit.idempotency import KEY_PATTERN, MAX_KEY_LENGTH
from stablegate.kit.ratelimit import RateLimiter
from stablegate.kit.runtime import freeze_startup_heap
from stablegate.ledger.api import router as ledger_router
from stablegate.merchants.api import router as account_router
from stablegate.observability import logging as obs_logging
from stablegate.observability import tracing
from stablegate.payments import receipts as _payment_receipts  # noqa: F401 (subscribes to chain events)
from stablegate.payments import service as payments
from stablegate.payments import views as payment_views
from stablegate.payments.api import router as payments_router
from stablegate.pipeline import ObservabilityMiddleware, PipelineConfig, UnitOfWorkMiddleware
from stablegate.settlement import service as settlement
from stablegate.settlement.api import router as settlement_router
from stablegate.webhooks.api import events_router
from stablegate.webhooks.api import router as webhook_endpoints_router

log = structlog.get_logger(__name__)
MAX_PARAM_PART_CHARS = 64

API_DESCRIPTION = """\
The Stablegate merchant API. Authenticate with `Authorization: Bearer sk_test_…`.
Test keys see only test-mode objects and live keys only live ones.

* Every `POST` accepts an `Idempotency-Key` header: the first response is stored for 24 h
  and replayed byte-for-byte for retries with the same key and parameters.
* Lists are cursor-paginated (`limit`, `starting_after`, `ending_before`, `has_more`).
* A query parameter a route does not declare, or one given twice, is a 400 naming it.
* Every error is `{"error": {"type", "code", "message", "param", "request_id"}}`.
"""


def create_app(settings: Settings, db: Database, chains: Sequence[ChainConfig] | None = None) -> FastAPI:
    """The app; `chains` overrides the configured ones (`stablegate dev` passes its local chain)."""
    app = FastAPI(
        title="Stablegate API",
        version="2026-11-24",
        description=API_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        # A trailing slash is a 404, not a 307 to the other spelling: a redirect would be
        # stored under the request's Idempotency-Key, and the followed request refused.
        redirect_slashes=False,
        dependencies=[Depends(web.known_query)],
    )
    app.state.db = db
    app.state.settings = settings
    configured = registry.configured() if chains is None else chains
    app.state.payments = payments.Context.from_settings(settings, configured)
    app.state.settlement = settlement.Context.from_settings(settings, configured)
    payment_views.set_public_url(settings.public_url)
    app.include_router(account_router)
    app.include_router(customers_router)
    app.include_router(ledger_router)
    app.include_router(events_router)
    app.include_router(webhook_endpoints_router)
    app.include_router(payments_router)
    app.include_router(settlement_router)
    app.include_router(checkout_router)  # public: /pay/… and /static/checkout/…, outside /v1
    _add_error_handlers(app)
    _add_ops_routes(app, db)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Added last = outermost: observability wraps the unit of work.
    app.add_middleware(
        UnitOfWorkMiddleware,
        config=PipelineConfig(
            sessionmaker=db.sessionmaker,
            server_secret=settings.resolved_secret_key(),
            rate_limiter=RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
            max_body_bytes=settings.max_body_bytes,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            idempotency_lock_s=settings.idempotency_lock_s,
        ),
    )
    app.add_middleware(CheckoutSecurityHeaders)
    app.add_middleware(ObservabilityMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (`stablegate api` with several workers imports this)."""
    settings = get_settings()
    obs_logging.configure(settings.log_level, settings.log_format)
    tracing.configure(settings.otel_exporter, settings.otel_service_name)
    db = Database.connect(libpq_url(settings), settings)
    tracing.instrument_engine(db.engine.sync_engine)
    app = create_app(settings, db)
    # Everything imported and built so far lives for the whole process: out of the
    # collector's full passes (tail-latency spikes), which then scan only new objects.
    freeze_startup_heap()
    return app


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _error(exc: StablegateError, request: Request) -> JSONResponse:
    return JSONResponse(exc.body(_request_id(request)), status_code=exc.status_code, headers=exc.headers)


def _param_from_loc(loc: tuple[Any, ...]) -> str | None:
    """('body', 'metadata', 'x') -> 'metadata[x]'; ('query', 'limit') -> 'limit'."""
    parts = (
        [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header") else [str(p) for p in loc]
    )
    parts = [p[:MAX_PARAM_PART_CHARS] for p in parts if p != "[key]"]  # pydantic marks dict-key errors so
    if not parts:
        return "body" if loc and loc[0] == "body" else None
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def _validation_message(err: dict[str, Any], param: str | None) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"Received unknown parameter: {param}."
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    if kind == "missing":
        return f"Missing required parameter: {param}."
    return f"Invalid {param or 'request'}: {err.get('msg', 'invalid value')}."


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StablegateError)
    async def on_domain_error(request: Request, exc: StablegateError) -> JSONResponse:
        return _error(exc, request)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The endpoint never ran: the idempotency key is released so a corrected retry can use it.
        request.state.release_idempotency = True
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        param = _param_from_loc(loc)
        code = "json_invalid" if err.get("type") == "json_invalid" else "parameter_invalid"
        if err.get("type") == "json_invalid":
            param = "body"
        return _error(InvalidRequest(_validation_message(err, param), param=param, code=code), request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing and body parsing, before any endpoint ran (ours raise StablegateError):
        # the idempotency key is released, so the corrected request can use it.
        request.state.release_idempotency = True
        if exc.status_code == 405:
            # RFC 9110: a 405 lists what is allowed.
            allowed = ", ".join(_allowed_methods(app, request))
            error = MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}.", headers={"Allow": allowed}
            )
            return _error(error, request)
        if exc.status_code == 404:
            return _error(
                NotFound(f"Unrecognized request URL ({request.method} {request.url.path}).", code="url_not_found"),
                request,
            )
        if exc.status_code == 400:  # a body FastAPI could not parse (bad UTF-8, a number too long)
            return _error(InvalidRequest(f"The request body could not be read: {exc.detail}.", param="body"), request)
        generic = InvalidRequest(str(exc.detail))
        generic.status_code = exc.status_code
        return _error(generic, request)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method the API documents at this path (Starlette reports only one route's)."""
    methods: set[str] = set()
    for path, item in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), request.url.path):
            methods |= {m.upper() for m in item}
    return sorted(methods)


def _add_ops_routes(app: FastAPI, db: Database) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            async with db.engine.connect() as conn:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception as exc:  # any failure means "not ready"; the reason goes to the body
            return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
        head = migrations.head_revision()
        if current != head:
            return JSONResponse({"status": "migrations_pending", "current": current, "head": head}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "migration": current})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "sk_/rk_ key for test or live mode."}
    }
    schema["security"] = [{"bearerAuth": []}]
    for path_item in schema["paths"].values():
        for method, operation in path_item.items():
            operation["responses"].pop("422", None)  # validation errors are 400 error objects
            if method == "post":
                operation.setdefault("parameters", []).append(_idempotency_parameter())
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"].get("schemas", {}).pop(name, None)
    app.openapi_schema = schema
    return schema


def _idempotency_parameter() -> dict[str, Any]:
    return {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": "A unique key (e.g. a UUID) that makes retries of this POST safe for 24 hours.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": KEY_PATTERN},
    }
