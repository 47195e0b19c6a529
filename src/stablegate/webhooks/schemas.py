from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from stablegate.kit.ssrf import MAX_URL_CHARS
from stablegate.kit.validation import NO_NUL_PATTERN, STORABLE, Integer

# Every event type an endpoint can subscribe to; "*" (or an empty list) means all.
EventType = Literal[
    "*",
    "payment.created",
    "payment.processing",
    "payment.succeeded",
    "payment.underpaid",
    "payment.overpaid",
    "payment.paid_late",
    "payment.late_accepted",
    "payment.expired",
    "payment.canceled",
    "payment.requires_payment",
    "payment.needs_review",
    "payout.created",
    "payout.broadcast",
    "payout.paid",
    "payout.failed",
    "payout.canceled",
    "refund.created",
    "refund.broadcast",
    "refund.succeeded",
    "refund.failed",
    "settlement.created",
    "payout_destination.created",
    "payout_destination.removed",
    "webhook_endpoint.disabled",
]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType)) - {"*"}

Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_CHARS, pattern=NO_NUL_PATTERN),
    STORABLE,
    Field(description="Where events are POSTed: https (http is accepted in test mode only)."),
]
EventTypes = Annotated[
    list[EventType],
    Field(
        max_length=len(get_args(EventType)),
        description="The event types to send; empty or `*` means every type.",
    ),
]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL_PATTERN), STORABLE]
MAX_OVERLAP_S = 7 * 24 * 3600
DEFAULT_OVERLAP_S = 24 * 3600


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: Url
    event_types: EventTypes = Field(default_factory=list)
    description: Description | None = None


class WebhookEndpointUpdate(BaseModel):
    """Fields present are replaced. `disabled: false` re-enables an endpoint that was
    disabled (by you, by a 410, or after five days of failures)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    disabled: bool | None = None


class RotateSecret(BaseModel):
    # Strict (a string or a boolean is refused); `Integer` still takes an integral 245.0.
    model_config = ConfigDict(extra="forbid", strict=True)

    overlap_s: Integer = Field(
        default=DEFAULT_OVERLAP_S,
        ge=0,
        le=MAX_OVERLAP_S,
        description="How long the old secret keeps signing beside the new one (seconds, ≤ 7 days).",
    )


class WebhookEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    livemode: bool
    url: str
    description: str | None
    event_types: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created: int


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="The signing secret (whsec_…): shown only when created or rotated.")


class DeletedWebhookEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    deleted: Literal[True] = True


class EventData(BaseModel):
    object: dict[str, Any]


class Event(BaseModel):
    """The body POSTed to your endpoints, as stored."""

    model_config = ConfigDict(extra="forbid")

    object: Literal["event"] = "event"
    id: str
    type: str
    created: int
    livemode: bool
    data: EventData


class WebhookAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: int
    created: int
    status_code: int | None = Field(description="The response status; null when no response came.")
    duration_ms: int
    error: str | None
    response_excerpt: str | None = Field(description="The first KiB of the response body.")


class WebhookDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    endpoint: str
    event: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt: int | None
    last_status_code: int | None
    created: int
    attempts: list[WebhookAttempt] = Field(description="The latest attempts, oldest first.")


def endpoint_schema(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        livemode=row.mode == "live",
        url=row.url,
        description=row.description,
        event_types=list(row.event_types),
        status=row.status,
        disabled_reason=row.disabled_reason,
        created=int(row.created_at.timestamp()),
    )


def event_schema(row: Any) -> Event:
    return Event.model_validate(row.data)


def attempt_schema(row: Any) -> WebhookAttempt:
    return WebhookAttempt(
        attempt=row.attempt,
        created=int(row.at.timestamp()),
        status_code=row.status_code,
        duration_ms=row.duration_ms,
        error=row.error,
        response_excerpt=row.response_excerpt,
    )


def delivery_schema(row: Any, event_type: str, attempts: list[Any]) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        endpoint=row.endpoint_id,
        event=row.event_id,
        event_type=event_type,
        status=row.status,
        attempt_count=row.attempts,
        next_attempt=int(row.next_attempt_at.timestamp()) if row.next_attempt_at is not None else None,
        last_status_code=row.last_status_code,
        created=int(row.created_at.timestamp()),
        attempts=[attempt_schema(a) for a in attempts],
    )
