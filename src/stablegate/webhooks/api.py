from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator

from stablegate.kit.pagination import PageRequest
from stablegate.merchants.service import Principal
from stablegate.web import ListResponse, SessionDep, error_responses, page_params, require
from stablegate.webhooks import service
from stablegate.webhooks.schemas import (
    EVENT_TYPES,
    DeletedWebhookEndpoint,
    Event,
    RotateSecret,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
    delivery_schema,
    endpoint_schema,
    event_schema,
)

events_router = APIRouter(prefix="/v1/events", tags=["events"])
router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhook endpoints"])

EventReader = Annotated[Principal, Depends(require("events:read"))]
Reader = Annotated[Principal, Depends(require("webhook_endpoints:read"))]
Writer = Annotated[Principal, Depends(require("webhook_endpoints:write"))]
EventId = Annotated[str, Path(max_length=64, description="An `evt_` id.")]
EndpointId = Annotated[str, Path(max_length=64, description="A `we_` id.")]
MsgId = Annotated[str, Path(max_length=64, description="A `msg_` id (the `webhook-id` header).")]


def _known_type(value: str | None) -> str | None:
    # An unknown type would only ever list nothing: a typo, said as such.
    if value is not None and value not in EVENT_TYPES:
        raise ValueError(f"unknown event type {value!r}")
    return value


TypeFilter = Annotated[
    str | None,
    Query(max_length=100, description="Only events of this type.", json_schema_extra={"enum": sorted(EVENT_TYPES)}),
    AfterValidator(_known_type),
]


def _allow(request: Request) -> tuple[str, ...]:
    allow: tuple[str, ...] = request.app.state.settings.webhook_allow_list()
    return allow


@events_router.get("/{id}", response_model=Event, responses=error_responses(404))
async def retrieve_event(id: EventId, session: SessionDep, principal: EventReader) -> Event:
    return event_schema(await service.get_event(session, principal, id))


@events_router.get("", response_model=ListResponse[Event], responses=error_responses())
async def list_events(
    session: SessionDep,
    principal: EventReader,
    page: Annotated[PageRequest, Depends(page_params(service.EVENT_PREFIX))],
    type: TypeFilter = None,
) -> ListResponse[Event]:
    """Events, newest first, with cursor pagination: the same bodies your endpoints receive."""
    result = await service.list_events(session, principal, type, page)
    return ListResponse(url="/v1/events", has_more=result.has_more, data=[event_schema(e) for e in result.data])


@router.post("", response_model=WebhookEndpointWithSecret, responses=error_responses())
async def create_webhook_endpoint(
    request: Request, session: SessionDep, principal: Writer, params: WebhookEndpointCreate
) -> WebhookEndpointWithSecret:
    """Register a URL for events. The response carries the signing `secret`, shown only here
    (and on rotation). Live mode accepts https URLs of public hosts only."""
    created = await service.create_endpoint(session, principal, params, _allow(request))
    return WebhookEndpointWithSecret(**endpoint_schema(created.endpoint).model_dump(), secret=created.secret)


@router.get("/{id}", response_model=WebhookEndpoint, responses=error_responses(404))
async def retrieve_webhook_endpoint(id: EndpointId, session: SessionDep, principal: Reader) -> WebhookEndpoint:
    return endpoint_schema(await service.get_endpoint(session, principal, id))


@router.post("/{id}", response_model=WebhookEndpoint, responses=error_responses(404))
async def update_webhook_endpoint(
    request: Request, id: EndpointId, session: SessionDep, principal: Writer, params: WebhookEndpointUpdate
) -> WebhookEndpoint:
    """Change the URL, event types or description; `disabled` turns deliveries off or on."""
    return endpoint_schema(await service.update_endpoint(session, principal, id, params, _allow(request)))


@router.delete("/{id}", response_model=DeletedWebhookEndpoint, responses=error_responses(404))
async def delete_webhook_endpoint(id: EndpointId, session: SessionDep, principal: Writer) -> DeletedWebhookEndpoint:
    """Stop sending to this endpoint; its pending deliveries are abandoned."""
    await service.delete_endpoint(session, principal, id)
    return DeletedWebhookEndpoint(id=id)


@router.get("", response_model=ListResponse[WebhookEndpoint], responses=error_responses())
async def list_webhook_endpoints(
    session: SessionDep,
    principal: Reader,
    page: Annotated[PageRequest, Depends(page_params(service.ENDPOINT_PREFIX))],
) -> ListResponse[WebhookEndpoint]:
    result = await service.list_endpoints(session, principal, page)
    return ListResponse(
        url="/v1/webhook_endpoints", has_more=result.has_more, data=[endpoint_schema(e) for e in result.data]
    )


@router.post("/{id}/rotate_secret", response_model=WebhookEndpointWithSecret, responses=error_responses(404))
async def rotate_webhook_secret(
    id: EndpointId, session: SessionDep, principal: Writer, params: RotateSecret | None = None
) -> WebhookEndpointWithSecret:
    """A new signing secret. The old one keeps signing beside it for `overlap_s` (default
    24 h, at most 7 days): every attempt carries both signatures until then."""
    rotated = await service.rotate_secret(session, principal, id, params or RotateSecret())
    return WebhookEndpointWithSecret(**endpoint_schema(rotated.endpoint).model_dump(), secret=rotated.secret)


@router.get("/{id}/deliveries", response_model=ListResponse[WebhookDelivery], responses=error_responses(404))
async def list_webhook_deliveries(
    id: EndpointId,
    session: SessionDep,
    principal: Reader,
    page: Annotated[PageRequest, Depends(page_params(service.DELIVERY_PREFIX))],
) -> ListResponse[WebhookDelivery]:
    """The delivery log, newest first: each delivery with its latest attempts."""
    result = await service.list_deliveries(session, principal, id, page)
    return ListResponse(
        url=f"/v1/webhook_endpoints/{id}/deliveries",
        has_more=result.has_more,
        data=[delivery_schema(v.delivery, v.event_type, v.attempts) for v in result.data],
    )


@router.post("/{id}/deliveries/{msg_id}/redeliver", response_model=WebhookDelivery, responses=error_responses(404))
async def redeliver_webhook(id: EndpointId, msg_id: MsgId, session: SessionDep, principal: Writer) -> WebhookDelivery:
    """Send this delivery again now (same `webhook-id`, a fresh timestamp and signature).
    The attempt appears in the delivery log when it has been made."""
    view = await service.redeliver(session, principal, id, msg_id)
    return delivery_schema(view.delivery, view.event_type, view.attempts)
