"""Public checkout routes (design 0007): the page, its status JSON, QR codes and the two
static files. No API key: these live outside /v1, which is all the pipeline authenticates.
Every response under these prefixes carries the security headers (SecurityHeaders)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any

import jinja2
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains.registry import ChainConfig
from stablegate.checkout import messages, qr, service
from stablegate.checkout.service import CheckoutNotFound
from stablegate.db import Database
from stablegate.errors import NotFound
from stablegate.observability import metrics
from stablegate.observability.tracing import span
from stablegate.payments.service import Context as PaymentsContext

log = structlog.get_logger(__name__)

router = APIRouter(include_in_schema=False)

PAGE_PREFIX = "/pay/"
STATIC_PREFIX = "/static/checkout/"
STATIC_FILES = {"checkout.js": "text/javascript; charset=utf-8", "checkout.css": "text/css; charset=utf-8"}
MAX_LOGGED_ID_CHARS = 64
# The script's strings, as JSON for a data attribute (the template escapes the quotes).
JS_MESSAGES = json.dumps(messages.js_messages(), ensure_ascii=False)

# Design 0007: no inline script or style anywhere, no framing, no referrer to the merchant,
# nothing cached (a shared cache must never hold a payment page).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_REPLACED = {name for name, _ in SECURITY_HEADERS}


class SecurityHeaders:
    """ASGI middleware: the checkout's headers on every response under its prefixes,
    whoever produced it (our routes, a 405 from the router, an error handler)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith(PAGE_PREFIX) or path.startswith(STATIC_PREFIX)):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
                message["headers"] = [*kept, *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- dependencies ------------------------------------------------------------------------


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A read-only session of our own: the /v1 pipeline's unit of work does not run here."""
    db = request.app.state.db
    assert isinstance(db, Database)
    async with db.sessionmaker() as session:
        yield session


async def get_chains(request: Request) -> tuple[ChainConfig, ...]:
    ctx = request.app.state.payments
    assert isinstance(ctx, PaymentsContext)
    return ctx.chains


SessionDep = Annotated[AsyncSession, Depends(get_session)]
ChainsDep = Annotated[tuple[ChainConfig, ...], Depends(get_chains)]


# --- templates and static files ----------------------------------------------------------


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stablegate.checkout", "templates"),
        autoescape=True,  # every template is HTML
        undefined=jinja2.StrictUndefined,  # a typo in a template fails the test, not the payer
    )
    env.globals["t"] = messages.translate
    return env


@lru_cache(maxsize=len(STATIC_FILES))
def static_file(name: str) -> tuple[bytes, str]:
    """The file's bytes and a content hash (the ETag, and the ?v= that busts caches)."""
    body = (resources.files("stablegate.checkout") / "static" / name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:16]


def _render(name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    values["asset_version"] = {n: static_file(n)[1] for n in STATIC_FILES}
    return HTMLResponse(templates().get_template(name).render(**values), status_code=status_code)


def not_found() -> HTMLResponse:
    metrics.CHECKOUT_VIEWS.labels("not_found").inc()
    return _render("not_found.html", status_code=404)


# --- routes ------------------------------------------------------------------------------


@router.get(STATIC_PREFIX + "{name}")
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return not_found()
    body, version = static_file(name)
    return Response(body, media_type=STATIC_FILES[name], headers={"ETag": f'"{version}"'})


@router.get(PAGE_PREFIX + "{payment_id}")
async def checkout_page(payment_id: str, session: SessionDep, chains: ChainsDep) -> HTMLResponse:
    with span("checkout.page"):
        try:
            checkout = await service.load(session, payment_id)
        except CheckoutNotFound:
            log.info("checkout.not_found", payment_id=payment_id[:MAX_LOGGED_ID_CHARS])
            return not_found()
        view = service.page(checkout, chains, service.now_s())
    metrics.CHECKOUT_VIEWS.labels("rendered").inc()
    log.info("checkout.viewed", payment_id=payment_id, state=view.status.state)
    return _render("page.html", view=view, status_text=service.status_text(view.status), js_messages=JS_MESSAGES)


@router.get(PAGE_PREFIX + "{payment_id}/status")
async def checkout_status(payment_id: str, request: Request, session: SessionDep, chains: ChainsDep) -> Response:
    with span("checkout.status"):
        try:
            checkout = await service.load(session, payment_id)
        except CheckoutNotFound:
            error = NotFound("No such payment.", param="id")
            return JSONResponse(error.body(getattr(request.state, "request_id", None)), status_code=404)
        current = service.status(checkout, chains, service.now_s())
    metrics.CHECKOUT_STATUS_READS.labels(current.state).inc()
    return Response(current.model_dump_json(), media_type="application/json")


@router.get(PAGE_PREFIX + "{payment_id}/qr/{position:int}.svg")
async def checkout_qr(payment_id: str, position: int, session: SessionDep) -> Response:
    with span("checkout.qr"):
        try:
            payload, title = service.qr_payload(await service.load(session, payment_id), position)
        except CheckoutNotFound:
            return not_found()
        return Response(qr.svg(payload, title), media_type="image/svg+xml")


@router.get(PAGE_PREFIX + "{rest:path}")
async def checkout_unknown(rest: str) -> HTMLResponse:
    """Anything else under /pay/ gets the same 404 page as an unknown payment."""
    return not_found()
