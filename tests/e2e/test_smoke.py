"""A short end-to-end pass the fresh-clone check runs inside a new checkout."""

from __future__ import annotations

import uuid

from tests.conftest import ApiServer, Tenant


def test_smoke(api: ApiServer, tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    with api.client(tenant.test_key) as client:
        first = client.post("/v1/customers", json={"name": "Smoke"}, headers={"Idempotency-Key": key})
        again = client.post("/v1/customers", json={"name": "Smoke"}, headers={"Idempotency-Key": key})
        listed = client.get("/v1/customers").json()
        ready = client.get("/readyz")
    assert first.status_code == 200
    assert again.content == first.content
    assert [c["id"] for c in listed["data"]] == [first.json()["id"]]
    assert ready.status_code == 200
