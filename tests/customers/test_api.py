"""Customers: create, retrieve, update (metadata merge) and cursor pagination both ways."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter, ValidationError

from stablegate.customers.schemas import Email
from tests.conftest import ApiServer, Tenant


def test_create_retrieve_update(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        created = client.post(
            "/v1/customers", json={"email": "a@example.com", "metadata": {"tier": "gold", "x": "1"}}
        ).json()
        assert created["object"] == "customer" and created["id"].startswith("cus_") and created["livemode"] is False
        fetched = client.get(f"/v1/customers/{created['id']}").json()
        assert fetched == created
        updated = client.post(
            f"/v1/customers/{created['id']}", json={"name": "Ada", "metadata": {"x": "", "y": "2"}}
        ).json()
    assert updated["name"] == "Ada" and updated["email"] == "a@example.com"
    assert updated["metadata"] == {"tier": "gold", "y": "2"}


def test_empty_body_creates_a_customer(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        r = client.post("/v1/customers")
    assert r.status_code == 200, r.text


def test_pagination_walks_forwards_and_backwards(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        made = [client.post("/v1/customers", json={"name": f"c{i}"}).json()["id"] for i in range(7)]
        newest_first = list(reversed(made))
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3} | ({"starting_after": cursor} if cursor else {})
            page = client.get("/v1/customers", params=params).json()
            seen += [c["id"] for c in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["data"][-1]["id"]
        assert seen == newest_first
        back = client.get("/v1/customers", params={"limit": 3, "ending_before": newest_first[5]}).json()
        assert [c["id"] for c in back["data"]] == newest_first[2:5]
        assert back["has_more"] is True


def test_both_cursors_select_the_range_between(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        made = [client.post("/v1/customers", json={"name": f"r{i}"}).json()["id"] for i in range(5)]
        page = client.get("/v1/customers", params={"starting_after": made[4], "ending_before": made[0]}).json()
    assert [c["id"] for c in page["data"]] == [made[3], made[2], made[1]]
    assert page["has_more"] is False


@pytest.mark.parametrize(
    ("email", "accepted"),
    [("ada@example.com", True), ("a\u00a0b@example.com", True), ("a\u0085b@example.com", False), ("a b@c.d", False)],
)
def test_email_pattern_means_the_same_to_every_regex_dialect(email: str, accepted: bool) -> None:
    """The server (pydantic's Rust regex) and the schema's readers (schemathesis, ECMA-262
    clients) must agree: the pattern avoids `\\s`, whose meaning differs between them."""
    pattern = TypeAdapter(Email).json_schema()["pattern"]
    assert (re.fullmatch(pattern, email, flags=re.ASCII) is not None) == accepted
    try:
        TypeAdapter(Email).validate_python(email)
        server_accepts = True
    except ValidationError:
        server_accepts = False
    assert server_accepts == accepted
