"""Webhook rules: events and their fan-out, endpoints and secrets, and what an attempt's
outcome means for its delivery and endpoint (design 0005). Flushes only; the request or
job boundary commits."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.errors import InvalidRequest, NotFound
from stablegate.kit import ssrf
from stablegate.kit.ids import new_id, new_ids
from stablegate.kit.pagination import Page, PageRequest
from stablegate.merchants.service import MODES, Principal
from stablegate.observability import metrics
from stablegate.webhooks import repository, schedule, signing
from stablegate.webhooks.models import Event, WebhookAttempt, WebhookDelivery
from stablegate.webhooks.schemas import (
    EVENT_TYPES,
    RotateSecret,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
    endpoint_schema,
)

log = structlog.get_logger(__name__)

EVENT_PREFIX = "evt"
ENDPOINT_PREFIX = "we"
DELIVERY_PREFIX = "msg"
# Endpoints per (merchant, mode), as at Stripe: bounds the fan-out of every event.
MAX_ENDPOINTS = 16
# Automatic attempts (10) plus manual redeliveries: the log of one delivery stays small.
MAX_ATTEMPTS_PER_DELIVERY = 50
ATTEMPTS_SHOWN = 20
DNS_TIMEOUT_S = 5.0
DISABLED_GONE = "gone"  # the receiver answered 410
DISABLED_FAILING = "failing"  # every attempt failed for DISABLE_AFTER_FAILING_S
DISABLED_REQUESTED = "requested"  # the merchant disabled it


def canonical_json(value: Any) -> bytes:
    """The one serialisation of an event body: sorted keys, no spaces, UTF-8. Applied to
    the stored jsonb value, it gives the same bytes on every attempt. orjson writes what
    the standard library would here (12 µs → 0.8 µs for a payment event); integers beyond
    64 bits, which it refuses, go through the standard library."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# --- events --------------------------------------------------------------------------------


async def emit(
    session: AsyncSession, *, merchant_id: str, mode: str, type: str, object_id: str | None, data: dict[str, Any]
) -> str:
    """Record an event (evt_…) in the caller's transaction and fan it out: one
    webhook_deliveries row per enabled endpoint of (merchant, mode) whose event_types match
    (or are empty), due now, and a NOTIFY that wakes the dispatchers at commit — one
    statement in the caller's transaction, so an event and its deliveries commit or vanish
    together (the table is the outbox: a rolled-back emit leaves nothing to deliver).
    Returns the event id. `data` is the object snapshot (e.g. the payment as the API
    renders it)."""
    assert mode in MODES, mode
    assert type in EVENT_TYPES, f"unknown event type {type!r}: add it to webhooks.schemas.EventType"
    event_id = new_id(EVENT_PREFIX)
    body = {
        "id": event_id,
        "object": "event",
        "type": type,
        "created": int(time.time()),
        "livemode": mode == "live",
        "data": {"object": data},
    }
    values = {
        "event_id": event_id,
        "merchant_id": merchant_id,
        "mode": mode,
        "type": type,
        "object_id": object_id,
        "data": canonical_json(body).decode(),
    }
    msg_ids = new_ids(DELIVERY_PREFIX, MAX_ENDPOINTS)
    deliveries = await repository.insert_event_and_deliveries(session, values, msg_ids)
    log.info("webhook.event", event_id=event_id, type=type, deliveries=len(deliveries))
    return event_id


async def get_event(session: AsyncSession, principal: Principal, event_id: str) -> Event:
    event = await repository.get_event(session, principal.merchant_id, principal.mode, event_id)
    if event is None:
        raise NotFound(f"No such event: '{event_id[:64]}'.", param="id")
    return event


async def list_events(
    session: AsyncSession, principal: Principal, event_type: str | None, page: PageRequest
) -> Page[Event]:
    return await repository.list_events(session, principal.merchant_id, principal.mode, event_type, page)


# --- endpoints -----------------------------------------------------------------------------


async def check_url(url: str, mode: str, allow: Sequence[str]) -> None:
    """The SSRF gate at registration (every attempt checks again: DNS changes)."""
    schemes = ("https",) if mode == "live" else ("https", "http")
    try:
        async with asyncio.timeout(DNS_TIMEOUT_S):
            await ssrf.check_url(url, allow, schemes)
    except ssrf.UnsafeDestination as exc:
        # The reason, not the detail: the detail would tell a merchant what our resolver
        # answers for internal names.
        allowed = "an https" if mode == "live" else "an http(s)"
        raise InvalidRequest(
            f"url must be {allowed} URL of a public host ({exc.reason}).", param="url", code="url_invalid"
        ) from None
    except TimeoutError:
        raise InvalidRequest("url's host did not resolve in time.", param="url", code="url_invalid") from None


@dataclass(frozen=True)
class EndpointWithSecret:
    endpoint: Row[Any]
    secret: str  # shown once, in the response to create or rotate


async def create_endpoint(
    session: AsyncSession, principal: Principal, params: WebhookEndpointCreate, allow: Sequence[str]
) -> EndpointWithSecret:
    await check_url(params.url, principal.mode, allow)
    count = await repository.lock_and_count_endpoints(session, principal.merchant_id, principal.mode)
    if count >= MAX_ENDPOINTS:
        raise InvalidRequest(
            f"An account may have at most {MAX_ENDPOINTS} webhook endpoints per mode; delete one first.",
            code="limit_exceeded",
        )
    values = {
        "id": new_id(ENDPOINT_PREFIX),
        "merchant_id": principal.merchant_id,
        "mode": principal.mode,
        "url": params.url,
        "description": params.description,
        "event_types": _normalised_types(params.event_types),
    }
    secret = signing.new_secret()
    return EndpointWithSecret(await repository.insert_endpoint(session, values, secret), secret)


def _normalised_types(event_types: Sequence[str]) -> list[str]:
    """Sorted and unique; `*` alone is stored as the empty list (every type)."""
    unique = sorted(set(event_types))
    return [] if "*" in unique else unique


async def get_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: str, *, for_update: bool = False
) -> Row[Any]:
    row = await repository.get_endpoint(
        session, principal.merchant_id, principal.mode, endpoint_id, for_update=for_update
    )
    if row is None:
        # Same answer whether the id exists for another merchant/mode or not at all.
        raise NotFound(f"No such webhook endpoint: '{endpoint_id[:64]}'.", param="id")
    return row


async def list_endpoints(session: AsyncSession, principal: Principal, page: PageRequest) -> Page[Any]:
    return await repository.list_endpoints(session, principal.merchant_id, principal.mode, page)


async def update_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: str, params: WebhookEndpointUpdate, allow: Sequence[str]
) -> Row[Any]:
    current = await get_endpoint(session, principal, endpoint_id, for_update=True)
    if params.url is not None:
        await check_url(params.url, principal.mode, allow)
    fields = params.model_dump(exclude_unset=True)
    status, reason = current.status, current.disabled_reason
    if params.disabled is True and status == "enabled":
        status, reason = "disabled", DISABLED_REQUESTED
    elif params.disabled is False:
        status, reason = "enabled", None
    values = {
        "id": endpoint_id,
        "url": params.url if params.url is not None else current.url,
        "description": fields.get("description", current.description),
        "event_types": (
            _normalised_types(params.event_types) if params.event_types is not None else list(current.event_types)
        ),
        "status": status,
        "disabled_reason": reason,
    }
    if status == "disabled" and current.status == "enabled":
        await repository.abandon_pending(session, endpoint_id)
    return await repository.update_endpoint(session, values)


async def delete_endpoint(session: AsyncSession, principal: Principal, endpoint_id: str) -> None:
    await get_endpoint(session, principal, endpoint_id, for_update=True)
    await repository.delete_endpoint(session, endpoint_id)
    await repository.abandon_pending(session, endpoint_id)


async def rotate_secret(
    session: AsyncSession, principal: Principal, endpoint_id: str, params: RotateSecret
) -> EndpointWithSecret:
    """A new current secret; the ones in force keep signing (a second signature in each
    attempt) for `overlap_s`, so receivers can switch without missing a delivery."""
    endpoint = await get_endpoint(session, principal, endpoint_id, for_update=True)
    secret = signing.new_secret()
    old_not_after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=params.overlap_s)
    await repository.rotate_secret(session, endpoint_id, secret, old_not_after)
    return EndpointWithSecret(endpoint, secret)


# --- the delivery log ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDelivery
    event_type: str
    attempts: list[WebhookAttempt]


async def list_deliveries(
    session: AsyncSession, principal: Principal, endpoint_id: str, page: PageRequest
) -> Page[DeliveryView]:
    await get_endpoint(session, principal, endpoint_id)
    found = await repository.list_deliveries(session, endpoint_id, page)
    attempts = await repository.attempts_of(session, [d.id for d, _ in found.data], ATTEMPTS_SHOWN)
    views = [DeliveryView(d, event_type, attempts[d.id]) for d, event_type in found.data]
    return Page(data=views, has_more=found.has_more)


async def redeliver(session: AsyncSession, principal: Principal, endpoint_id: str, delivery_id: str) -> DeliveryView:
    """Make one manual attempt due now (it never schedules retries of its own, and a
    request still waiting is the same request)."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    found = await repository.get_delivery(session, endpoint_id, delivery_id)
    if found is None:
        raise NotFound(f"No such delivery: '{delivery_id[:64]}'.", param="msg_id")
    delivery, event_type = found
    if endpoint.status != "enabled":
        raise InvalidRequest("The endpoint is disabled; enable it first.", param="id", code="endpoint_disabled")
    if delivery.attempts >= MAX_ATTEMPTS_PER_DELIVERY:
        raise InvalidRequest(
            f"A delivery may be attempted at most {MAX_ATTEMPTS_PER_DELIVERY} times.",
            param="msg_id",
            code="limit_exceeded",
        )
    await repository.request_manual(session, delivery_id)
    attempts = await repository.attempts_of(session, [delivery_id], ATTEMPTS_SHOWN)
    return DeliveryView(delivery, event_type, attempts[delivery_id])


# --- attempts (the worker) -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What one attempt sends, as its claim returned it (no transaction held across it)."""

    delivery_id: str
    endpoint_id: str
    mode: str
    url: str
    body: bytes
    secrets: tuple[str, ...]
    failing: bool  # the endpoint's current run of failures has begun


@dataclass(frozen=True)
class Claim:
    """A leased delivery and which attempt it is: `step` is its place in the schedule
    (None: the manual attempt requested at `manual_requested_at`)."""

    target: Target
    step: int | None
    manual_requested_at: dt.datetime | None
    lease_expired: bool  # claimed again after another worker's lease ran out


@dataclass(frozen=True)
class AttemptResult:
    started_at: dt.datetime
    status_code: int | None  # None: no response (refused, timeout, unsafe destination)
    duration_ms: int
    error: str | None
    response_excerpt: str | None
    retry_after_s: float | None


async def claim(session: AsyncSession, limit: int, endpoint_bound: int, lease_s: float) -> list[Claim]:
    """Lease up to `limit` due deliveries. A claimed delivery whose endpoint was disabled
    or deleted since is given up here (it has nothing to send). A manual request goes
    before a due scheduled attempt; the scheduled one is the next claim's."""
    return await _claims(session, await repository.claim(session, limit, endpoint_bound, lease_s))


async def _claims(session: AsyncSession, rows: Sequence[Any]) -> list[Claim]:
    """Leased rows (claim's fields) as attempts to make; a delivery whose endpoint was
    disabled or deleted since is given up instead (it has nothing to send)."""
    claims: list[Claim] = []
    for row in rows:
        if row["endpoint_deleted"] or row["endpoint_status"] != "enabled":
            await repository.give_up(session, row["id"])
            if row["status"] == "pending":
                metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
                log.info("webhook.abandoned", delivery_id=row["id"], endpoint_id=row["endpoint_id"])
            continue
        assert row["secrets"], "an endpoint always has a secret in force"
        manual = row["manual_requested_at"]
        assert manual is not None or row["status"] == "pending", "claimed but not due"
        target = Target(
            delivery_id=row["id"],
            endpoint_id=row["endpoint_id"],
            mode=row["mode"],
            url=row["url"],
            body=canonical_json(json.loads(row["event_json"])),
            secrets=tuple(row["secrets"]),
            failing=row["failing_since"] is not None,
        )
        step = None if manual is not None else int(row["schedule_step"])
        claims.append(Claim(target, step, manual, bool(row["lease_expired"])))
    return claims


def is_plain_success(claim: Claim, result: AttemptResult) -> bool:
    """A success that changes nothing but its delivery (see record_successes)."""
    return schedule.classify(result.status_code) is schedule.Outcome.SUCCEEDED and not claim.target.failing


async def record_successes(
    session: AsyncSession,
    done: Sequence[tuple[Claim, AttemptResult]],
    *,
    handoff_max: int = 0,
    lease_s: float = 60.0,
) -> list[Claim]:
    """Plain successes in one statement (repository.record_successes), sent outside any
    transaction: log each attempt, settle each delivery, release each lease — and lease
    up to `handoff_max` next due deliveries of the same endpoints (no more per endpoint
    than it released), returned as claims to attempt."""
    assert all(is_plain_success(c, r) for c, r in done)
    before, handed = await repository.record_successes(
        session,
        [
            {
                "delivery_id": c.target.delivery_id,
                # -1 never matches: a manual attempt does not move the schedule.
                "step": c.step if c.step is not None else -1,
                "status_code": r.status_code,
                "at": r.started_at,
                "duration_ms": r.duration_ms,
                "response_excerpt": r.response_excerpt,
                "manual_requested_at": c.manual_requested_at,
            }
            for c, r in done
        ],
        handoff_max,
        lease_s,
    )
    assert len(before) == len(done), "a leased delivery vanished"
    assert len(handed) <= handoff_max
    settled = sum(1 for status in before.values() if status != "succeeded")
    if settled:
        metrics.WEBHOOK_DELIVERIES.labels("succeeded").inc(settled)
    return await _claims(session, handed) if handed else []


async def record_attempt(
    session: AsyncSession,
    claim: Claim,
    result: AttemptResult,
    *,
    scale: float,
    rand: Callable[[], float] = random.random,
) -> str:
    """Log the attempt and decide what follows: success, the next attempt (its due time,
    written here), or giving up; keep the endpoint's health; release the lease. Returns
    the delivery's status afterwards. Call it on a fresh session: a plain success is one
    self-contained statement sent before any transaction begins (batched by the
    dispatcher through record_successes)."""
    target, step = claim.target, claim.step
    if is_plain_success(claim, result):
        await record_successes(session, [(claim, result)])
        return "succeeded"
    row = await repository.lock_delivery(session, target.delivery_id)
    attempt = row.attempts + 1
    await repository.insert_attempt(
        session,
        {
            "delivery_id": target.delivery_id,
            "attempt": attempt,
            "at": result.started_at,
            "status_code": result.status_code,
            "duration_ms": result.duration_ms,
            "error": result.error,
            "response_excerpt": result.response_excerpt,
        },
    )
    now = result.started_at + dt.timedelta(milliseconds=result.duration_ms)
    outcome = schedule.classify(result.status_code)
    stopped = await _keep_health(session, target, outcome, now, scale)
    # Only the attempt of the current schedule step moves the schedule (a manual attempt,
    # or a second attempt of a step after its lease expired, does not fork it).
    current = step is not None and row.status == "pending" and row.schedule_step == step
    status, next_at = row.status, row.next_attempt_at
    if outcome is schedule.Outcome.SUCCEEDED:
        status, next_at = "succeeded", None
    elif stopped and row.status == "pending":  # 410, or five days of failures
        status, next_at = "failed", None
    elif current:
        assert step is not None
        delay_s = schedule.next_delay_s(step + 1, result.status_code, result.retry_after_s, rand)
        if delay_s is None:
            status, next_at = "failed", None
        else:
            next_at = now + dt.timedelta(seconds=delay_s * scale)
    await repository.update_delivery(
        session,
        {
            "id": target.delivery_id,
            "attempts": attempt,
            "status": status,
            "schedule_step": step + 1 if current and step is not None else row.schedule_step,
            "next_attempt_at": next_at,
            "last_status_code": result.status_code,
            "manual_requested_at": claim.manual_requested_at,
        },
    )
    if status != row.status:
        metrics.WEBHOOK_DELIVERIES.labels(status).inc()
    return str(status)


async def _keep_health(
    session: AsyncSession, target: Target, outcome: schedule.Outcome, now: dt.datetime, scale: float
) -> bool:
    """Track the endpoint's run of failures; True if this attempt stopped the endpoint."""
    if outcome is schedule.Outcome.SUCCEEDED:
        if target.failing:
            await repository.mark_healthy(session, target.endpoint_id)
        return False
    if outcome is schedule.Outcome.GONE:
        await disable_endpoint(session, target.endpoint_id, DISABLED_GONE)
        return True
    since = await repository.mark_failing(session, target.endpoint_id, now)
    if schedule.should_disable(since, now, scale):
        await disable_endpoint(session, target.endpoint_id, DISABLED_FAILING)
        return True
    return False


async def disable_endpoint(session: AsyncSession, endpoint_id: str, reason: str) -> None:
    """Disable and tell the merchant (a `webhook_endpoint.disabled` event to its other
    endpoints); nothing if it is already disabled or deleted."""
    row = await repository.disable_endpoint(session, endpoint_id, reason)
    if row is None:
        return
    await repository.abandon_pending(session, endpoint_id)
    metrics.WEBHOOK_ENDPOINTS_DISABLED.labels(reason).inc()
    log.warning("webhook.endpoint_disabled", endpoint_id=endpoint_id, reason=reason)
    await emit(
        session,
        merchant_id=row.merchant_id,
        mode=row.mode,
        type="webhook_endpoint.disabled",
        object_id=endpoint_id,
        data=endpoint_schema(row).model_dump(),
    )
