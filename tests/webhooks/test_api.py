"""The merchant API for events and webhook endpoints, through the real server: secrets shown
once, bad input refused naming the parameter with nothing written, other merchants' and
modes' objects 404, scopes, pagination, the delivery log and redelivery."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from stablegate.db import Database
from stablegate.merchants import service as merchants
from tests.conftest import TEST_SECRET, ApiServer, Tenant
from tests.webhooks.conftest import Receiver, Reply, WorkerRunner, attempt_rows, delivery_rows, emit


def create(client: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    r = client.post("/v1/webhook_endpoints", json={"url": url, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def endpoint_count(db: Database, tenant: Tenant) -> int:
    async with db.session() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM webhook_endpoints WHERE merchant_id = :m"), {"m": tenant.merchant_id}
        )
    assert isinstance(count, int)
    return count


def test_create_get_list_delete(webhook_api: ApiServer, tenant: Tenant) -> None:
    with webhook_api.client(tenant.test_key) as client:
        created = create(
            client,
            "http://127.0.0.1:9/hook",
            event_types=["payment.succeeded", "payment.succeeded", "payment.expired"],
            description="orders",
        )
        assert created["object"] == "webhook_endpoint" and created["id"].startswith("we_")
        assert created["secret"].startswith("whsec_")
        assert created["event_types"] == ["payment.expired", "payment.succeeded"]
        assert created["status"] == "enabled" and created["livemode"] is False
        fetched = client.get(f"/v1/webhook_endpoints/{created['id']}").json()
        assert "secret" not in fetched
        assert fetched == {k: v for k, v in created.items() if k != "secret"}
        second = create(client, "http://127.0.0.1:9/other", event_types=["*"])
        assert second["event_types"] == [] and second["secret"] != created["secret"]
        listed = client.get("/v1/webhook_endpoints", params={"limit": 1}).json()
        assert [e["id"] for e in listed["data"]] == [second["id"]] and listed["has_more"] is True
        assert all("secret" not in e for e in listed["data"])
        older = client.get("/v1/webhook_endpoints", params={"starting_after": second["id"]}).json()
        assert [e["id"] for e in older["data"]] == [created["id"]]

        deleted = client.delete(f"/v1/webhook_endpoints/{created['id']}")
        assert deleted.json() == {"object": "webhook_endpoint", "id": created["id"], "deleted": True}
        assert client.get(f"/v1/webhook_endpoints/{created['id']}").status_code == 404
        assert client.delete(f"/v1/webhook_endpoints/{created['id']}").status_code == 404
        remaining = client.get("/v1/webhook_endpoints").json()["data"]
        assert [e["id"] for e in remaining] == [second["id"]]


def test_update_and_reenable(webhook_api: ApiServer, tenant: Tenant) -> None:
    with webhook_api.client(tenant.test_key) as client:
        created = create(client, "http://127.0.0.1:9/hook")
        path = f"/v1/webhook_endpoints/{created['id']}"
        off = client.post(path, json={"disabled": True, "description": "paused"}).json()
        assert off["status"] == "disabled" and off["disabled_reason"] == "requested" and off["description"] == "paused"
        on = client.post(path, json={"disabled": False, "event_types": ["payment.canceled"]}).json()
        assert on["status"] == "enabled" and on["disabled_reason"] is None
        assert on["event_types"] == ["payment.canceled"] and on["description"] == "paused"
        bad = client.post(path, json={"url": "http://10.0.0.1/x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "url"
        assert client.get(path).json()["url"] == "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("mode", "url", "reason"),
    [
        ("test", "ftp://127.0.0.1/hook", "scheme"),
        ("test", "http://user:pw@127.0.0.1/hook", "userinfo"),
        ("test", "http:///nohost", "bad_url"),
        ("test", "http://10.0.0.1/hook", "private"),
        ("test", "http://169.254.169.254/latest/meta-data", "metadata"),
        ("test", "http://[::ffff:192.168.0.1]/hook", "private"),
        ("test", "http://0x0a000001/hook", "private"),
        ("test", "http://no-such-host.invalid/hook", "dns"),
        ("live", "http://127.0.0.1:9/hook", "scheme"),
        ("live", "https://127.0.0.2/hook", "loopback"),
        ("live", "https://192.168.1.10/hook", "private"),
        ("live", "https://100.64.0.1/hook", "cgnat"),
    ],
)
async def test_bad_urls_are_refused_naming_url(
    webhook_api: ApiServer, db: Database, tenant: Tenant, mode: str, url: str, reason: str
) -> None:
    key = tenant.test_key if mode == "test" else tenant.live_key
    with webhook_api.client(key) as client:
        r = client.post("/v1/webhook_endpoints", json={"url": url})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "url" and error["code"] == "url_invalid" and f"({reason})" in error["message"]
    assert await endpoint_count(db, tenant) == 0, "nothing written"


async def test_bad_event_types_and_fields(webhook_api: ApiServer, db: Database, tenant: Tenant) -> None:
    with webhook_api.client(tenant.test_key) as client:
        unknown = client.post(
            "/v1/webhook_endpoints",
            json={"url": "http://127.0.0.1:9/x", "event_types": ["payment.succeeded", "payment.teleported"]},
        )
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "event_types[1]"
        missing = client.post("/v1/webhook_endpoints", json={"event_types": []})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "url"
        extra = client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/x", "secret": "whsec_x"})
        assert extra.status_code == 400 and extra.json()["error"]["param"] == "secret"
        created = create(client, "http://127.0.0.1:9/x")
        too_long = client.post(f"/v1/webhook_endpoints/{created['id']}/rotate_secret", json={"overlap_s": 8 * 86400})
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "overlap_s"
        rotate = f"/v1/webhook_endpoints/{created['id']}/rotate_secret"
        for wrong in ("100", True, 1.5):
            refused = client.post(rotate, json={"overlap_s": wrong})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "overlap_s", wrong
        assert client.post(rotate, json={"overlap_s": 60.0}).status_code == 200  # JSON's integral number
        for wrong_type in ("Bad Type", "payment.bogus", "*"):
            refused = client.get("/v1/events", params={"type": wrong_type})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "type", wrong_type
    assert await endpoint_count(db, tenant) == 1


async def test_endpoint_limit(webhook_api: ApiServer, db: Database, tenant: Tenant) -> None:
    with webhook_api.client(tenant.test_key) as client:
        for n in range(16):
            create(client, f"http://127.0.0.1:9/{n}")
        r = client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/17"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "limit_exceeded"
        # The other mode has its own allowance.
        with webhook_api.client(tenant.live_key) as live:
            assert live.get("/v1/webhook_endpoints").json()["data"] == []
    assert await endpoint_count(db, tenant) == 16


def _owned_paths(endpoint_id: str, msg_id: str, event_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/v1/webhook_endpoints/{endpoint_id}"
    return [
        ("GET", base, None),
        ("POST", base, {"description": "hijacked"}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate_secret", None),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/deliveries/{msg_id}/redeliver", None),
        ("GET", f"/v1/events/{event_id}", None),
    ]


async def test_other_merchants_and_modes_get_404(
    webhook_api: ApiServer, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    with webhook_api.client(tenant.test_key) as owner:
        endpoint = create(owner, "http://127.0.0.1:9/mine")
    event_id = await emit(db, tenant)
    [delivery] = await delivery_rows(db, event_id)
    for key in (other_tenant.test_key, other_tenant.live_key, tenant.live_key):
        with webhook_api.client(key) as intruder:
            for method, path, body in _owned_paths(endpoint["id"], delivery.id, event_id):
                r = intruder.request(method, path, json=body)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "resource_missing" and r.json()["error"]["param"] == "id"
            assert intruder.get("/v1/events").json()["data"] == []
            assert intruder.get("/v1/webhook_endpoints").json()["data"] == []
    with webhook_api.client(tenant.test_key) as owner:
        after = owner.get(f"/v1/webhook_endpoints/{endpoint['id']}").json()
        assert after == {k: v for k, v in endpoint.items() if k != "secret"}, "nothing changed"
        ghost = owner.post(
            f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/msg_01M86R214T1G6P3KR5DXGSB94F/redeliver"
        )
        assert ghost.status_code == 404 and ghost.json()["error"]["param"] == "msg_id"


async def test_restricted_key_scopes(webhook_api: ApiServer, db: Database, tenant: Tenant) -> None:
    async with db.session() as session:
        reader = await merchants.create_key(
            session,
            TEST_SECRET.encode(),
            merchant_id=tenant.merchant_id,
            mode="test",
            kind="restricted",
            scopes=["events:read", "webhook_endpoints:read"],
        )
    with webhook_api.client(reader.secret) as client:
        assert client.get("/v1/events").status_code == 200
        assert client.get("/v1/webhook_endpoints").status_code == 200
        denied = client.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/x"})
        assert denied.status_code == 403 and "webhook_endpoints:write" in denied.json()["error"]["message"]


async def test_events_list_filter_and_get(webhook_api: ApiServer, db: Database, tenant: Tenant) -> None:
    created = await emit(db, tenant, "payment.created")
    succeeded = [await emit(db, tenant, "payment.succeeded", n=str(n)) for n in range(3)]
    with webhook_api.client(tenant.test_key) as client:
        page = client.get("/v1/events", params={"limit": 2}).json()
        assert [e["id"] for e in page["data"]] == [succeeded[2], succeeded[1]] and page["has_more"]
        only = client.get("/v1/events", params={"type": "payment.created"}).json()["data"]
        assert [e["id"] for e in only] == [created]
        event = client.get(f"/v1/events/{succeeded[0]}").json()
        assert event["object"] == "event" and event["type"] == "payment.succeeded"
        assert event["data"]["object"] == {"id": "pay_test", "object": "payment", "n": "0"}
        missing = client.get("/v1/events/evt_01M86R214T1G6P3KR5DXGSB94F")
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "id"
        bad_cursor = client.get("/v1/events", params={"starting_after": "we_x"})
        assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["param"] == "starting_after"


async def test_delivery_log_and_redeliver(
    webhook_api: ApiServer, db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    with webhook_api.client(tenant.test_key) as client:
        endpoint = create(client, receiver.url("/log", Reply(200, body=b"thanks")))
    event_id = await emit(db, tenant)
    [delivery] = await delivery_rows(db, event_id)

    async def attempts_made(n: int) -> bool:
        return len(await attempt_rows(db, delivery.id)) >= n

    await worker.until(lambda: attempts_made(1))
    path = f"/v1/webhook_endpoints/{endpoint['id']}/deliveries"
    with webhook_api.client(tenant.test_key) as client:
        [logged] = client.get(path).json()["data"]
        assert logged["id"] == delivery.id and logged["event"] == event_id
        assert logged["event_type"] == "payment.succeeded" and logged["status"] == "succeeded"
        assert logged["attempt_count"] == 1 and logged["next_attempt"] is None
        [attempt] = logged["attempts"]
        assert attempt["attempt"] == 1 and attempt["status_code"] == 200 and attempt["response_excerpt"] == "thanks"
        again = client.post(f"{path}/{delivery.id}/redeliver")
        assert again.status_code == 200 and again.json()["id"] == delivery.id
    await worker.until(lambda: attempts_made(2))
    first, second = receiver.to("/log")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.id
    assert first.body == second.body
    Webhook(endpoint["secret"]).verify(second.body, second.headers)
    with webhook_api.client(tenant.test_key) as client:
        [logged] = client.get(path).json()["data"]
    assert logged["attempt_count"] == 2 and [a["attempt"] for a in logged["attempts"]] == [1, 2]


async def test_redeliver_refused_while_disabled(webhook_api: ApiServer, db: Database, tenant: Tenant) -> None:
    with webhook_api.client(tenant.test_key) as client:
        endpoint = create(client, "http://127.0.0.1:9/x")
    event_id = await emit(db, tenant)
    [delivery] = await delivery_rows(db, event_id)
    with webhook_api.client(tenant.test_key) as client:
        client.post(f"/v1/webhook_endpoints/{endpoint['id']}", json={"disabled": True})
        r = client.post(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/{delivery.id}/redeliver")
    assert r.status_code == 400 and r.json()["error"]["code"] == "endpoint_disabled"


def test_rotate_returns_a_new_secret_once(webhook_api: ApiServer, tenant: Tenant) -> None:
    with webhook_api.client(tenant.test_key) as client:
        created = create(client, "http://127.0.0.1:9/x")
        rotated = client.post(f"/v1/webhook_endpoints/{created['id']}/rotate_secret", json={"overlap_s": 60}).json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
        assert rotated["id"] == created["id"]
        default = client.post(f"/v1/webhook_endpoints/{created['id']}/rotate_secret")
        assert default.status_code == 200 and default.json()["secret"] not in (created["secret"], rotated["secret"])
        assert "secret" not in client.get(f"/v1/webhook_endpoints/{created['id']}").json()
