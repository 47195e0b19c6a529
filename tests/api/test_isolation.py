"""Another merchant's or the other mode's objects are 404 on every endpoint, never 403.

Table-driven: every route with an id in its path must appear in OWNED_ROUTES (a meta-test
fails when a new endpoint is added without a row here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.main import create_app
from tests.conftest import ApiServer, Tenant


@dataclass(frozen=True)
class OwnedRoute:
    method: str
    path: str  # with {id} where the object's id goes
    create: Callable[[Any], str]  # makes an object with the owner's client, returns its id
    read: str  # where the owner reads the object, to check nothing changed
    body: dict[str, Any] | None = None


def _customer(client: Any) -> str:
    r = client.post("/v1/customers", json={"name": "owned"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _payment(client: Any) -> str:
    r = client.post("/v1/payments", json={"amount": "1.00", "currency": "USD"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _event(client: Any) -> str:
    payment_id = _payment(client)
    events = client.get("/v1/events", params={"type": "payment.created", "limit": 100}).json()["data"]
    return next(str(e["id"]) for e in events if e["data"]["object"]["id"] == payment_id)


def _endpoint(client: Any) -> str:
    r = client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hooks"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


OWNED_ROUTES = [
    OwnedRoute("GET", "/v1/customers/{id}", _customer, "/v1/customers/{id}"),
    OwnedRoute("POST", "/v1/customers/{id}", _customer, "/v1/customers/{id}", {"name": "hijacked"}),
    OwnedRoute("GET", "/v1/payments/{id}", _payment, "/v1/payments/{id}"),
    OwnedRoute("POST", "/v1/payments/{id}/cancel", _payment, "/v1/payments/{id}"),
    OwnedRoute("GET", "/v1/events/{id}", _event, "/v1/events/{id}"),
    OwnedRoute("GET", "/v1/webhook_endpoints/{id}", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("POST", "/v1/webhook_endpoints/{id}", _endpoint, "/v1/webhook_endpoints/{id}", {"description": "x"}),
    OwnedRoute("DELETE", "/v1/webhook_endpoints/{id}", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("POST", "/v1/webhook_endpoints/{id}/rotate_secret", _endpoint, "/v1/webhook_endpoints/{id}"),
    OwnedRoute("GET", "/v1/webhook_endpoints/{id}/deliveries", _endpoint, "/v1/webhook_endpoints/{id}"),
]


def test_every_route_with_an_id_is_in_the_table(db: Database, settings: Settings) -> None:
    paths = create_app(settings, db).openapi()["paths"]
    with_ids = {(method.upper(), path.split("{")[0]) for path, item in paths.items() if "{" in path for method in item}
    assert with_ids, "the API has routes with ids"
    covered = {(r.method, r.path.split("{")[0]) for r in OWNED_ROUTES}
    assert with_ids <= covered, f"add rows to OWNED_ROUTES for {sorted(with_ids - covered)}"


@pytest.mark.parametrize("route", OWNED_ROUTES, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize("intruder", ["other_merchant_test", "other_merchant_live", "same_merchant_live"])
def test_foreign_objects_are_not_found(
    api: ApiServer, tenant: Tenant, other_tenant: Tenant, route: OwnedRoute, intruder: str
) -> None:
    with api.client(tenant.test_key) as owner:
        object_id = route.create(owner)
        before = owner.get(route.read.format(id=object_id)).content
    key = {
        "other_merchant_test": other_tenant.test_key,
        "other_merchant_live": other_tenant.live_key,
        "same_merchant_live": tenant.live_key,
    }[intruder]
    with api.client(key) as client:
        r = client.request(route.method, route.path.format(id=object_id), json=route.body)
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "resource_missing" and error["param"] == "id"
    # Same answer as for an id that never existed: nothing confirms the object exists.
    with api.client(key) as client:
        ghost_id = object_id[: object_id.index("_") + 1] + "01M86R214T1G6P3KR5DXGSB94F"
        ghost = client.request(route.method, route.path.format(id=ghost_id), json=route.body)
    assert ghost.status_code == 404 and ghost.json()["error"]["code"] == error["code"]
    with api.client(tenant.test_key) as owner:
        assert owner.get(route.read.format(id=object_id)).content == before, "nothing changed"


def test_lists_show_only_own_mode_and_merchant(api: ApiServer, tenant: Tenant, other_tenant: Tenant) -> None:
    with api.client(tenant.test_key) as mine:
        mine_id = mine.post("/v1/customers", json={"name": "mine"}).json()["id"]
    with api.client(other_tenant.test_key) as theirs:
        theirs.post("/v1/customers", json={"name": "theirs"})
        listed = [c["id"] for c in theirs.get("/v1/customers", params={"limit": 100}).json()["data"]]
    with api.client(tenant.live_key) as live:
        live_listed = [c["id"] for c in live.get("/v1/customers", params={"limit": 100}).json()["data"]]
    assert mine_id not in listed
    assert mine_id not in live_listed
