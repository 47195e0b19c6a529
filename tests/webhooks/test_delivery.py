"""Delivery by the real worker to a real receiver on 127.0.0.1: signatures that the official
`standardwebhooks` library verifies, the same webhook-id and body on every attempt, and each
outcome of design 0005 (500, timeout, 410, 429 + Retry-After, 302, exhaustion, SSRF)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from stablegate.db import Database
from stablegate.webhooks import service
from tests.conftest import Tenant
from tests.webhooks.conftest import (
    Receiver,
    Reply,
    WorkerRunner,
    attempt_rows,
    delivery_rows,
    emit,
    make_endpoint,
    worker_settings,
)


async def stored_body(db: Database, event_id: str) -> bytes:
    async with db.session() as session:
        data = await session.scalar(text("SELECT data FROM events WHERE id = :e"), {"e": event_id})
    return service.canonical_json(data)


async def settled(db: Database, event_id: str) -> bool:
    rows = await delivery_rows(db, event_id)
    return bool(rows) and all(r.status != "pending" for r in rows)


async def test_success_verifies_with_the_official_library(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    _, secret = await make_endpoint(db, tenant, receiver.url("/hook"))
    event_id = await emit(db, tenant, amount="10.00")
    await worker.until(lambda: settled(db, event_id))

    [request] = receiver.to("/hook")
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.status == "succeeded" and delivery.attempts == 1 and delivery.last_status_code == 200
    assert request.headers["webhook-id"] == delivery.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Stablegate-Webhooks/")
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["id"] == event_id and payload["type"] == "payment.succeeded" and payload["object"] == "event"
    assert payload["data"]["object"] == {"id": "pay_test", "object": "payment", "amount": "10.00"}
    assert payload["livemode"] is False
    assert request.body == await stored_body(db, event_id)
    [attempt] = await attempt_rows(db, delivery.id)
    assert attempt.status_code == 200 and attempt.response_excerpt == "ok" and attempt.error is None


async def test_tampered_body_or_old_timestamp_fails_verification(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    _, secret = await make_endpoint(db, tenant, receiver.url("/hook"))
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id))
    [request] = receiver.to("/hook")
    tampered = request.body.replace(b"payment.succeeded", b"payment.canceled")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, request.headers)
    old = {**request.headers, "webhook-timestamp": str(int(request.headers["webhook-timestamp"]) - 600)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body, old)
    with pytest.raises(WebhookVerificationError):
        Webhook(service.signing.new_secret()).verify(request.body, request.headers)


async def test_500_is_retried_with_the_same_id_and_identical_body(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    url = receiver.url("/flaky", Reply(500, body=b"oops"), Reply(500), Reply(200))
    _, secret = await make_endpoint(db, tenant, url)
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id))

    requests = receiver.to("/flaky")
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    for r in requests:
        Webhook(secret).verify(r.body, r.headers)
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.status == "succeeded" and delivery.attempts == 3 and delivery.next_attempt_at is None
    attempts = await attempt_rows(db, delivery.id)
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert attempts[0].response_excerpt == "oops"
    # Exactly one attempt per schedule step, no fork of the schedule, nothing left leased.
    assert delivery.schedule_step == 3 and delivery.leased_until is None and delivery.manual_requested_at is None


async def test_timeout_is_recorded_and_retried(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    url = receiver.url("/slow", Reply(200, delay_s=1.5), Reply(200))
    await make_endpoint(db, tenant, url)
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id), worker_settings(webhook_timeout_s=0.3))
    [delivery] = await delivery_rows(db, event_id)
    first, second = await attempt_rows(db, delivery.id)
    assert first.status_code is None and first.error.startswith("timeout")
    assert 250 <= first.duration_ms < 1000
    assert second.status_code == 200 and delivery.status == "succeeded"


async def test_410_disables_the_endpoint_with_an_event(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    gone_id, _ = await make_endpoint(db, tenant, receiver.url("/gone", Reply(410)), ["payment.succeeded"])
    watcher_id, secret = await make_endpoint(db, tenant, receiver.url("/watcher"), ["webhook_endpoint.disabled"])
    event_id = await emit(db, tenant)
    await worker.until(lambda: _has_request(receiver, "/watcher"))

    assert len(receiver.to("/gone")) == 1, "410 is not retried"
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.status == "failed" and delivery.last_status_code == 410
    async with db.session() as session:
        endpoint = (
            await session.execute(text("SELECT * FROM webhook_endpoints WHERE id = :id"), {"id": gone_id})
        ).one()
    assert endpoint.status == "disabled" and endpoint.disabled_reason == "gone"
    [notice] = receiver.to("/watcher")
    payload = Webhook(secret).verify(notice.body, notice.headers)
    assert payload["type"] == "webhook_endpoint.disabled"
    assert payload["data"]["object"]["id"] == gone_id and payload["data"]["object"]["status"] == "disabled"
    assert watcher_id != gone_id
    # A disabled endpoint gets nothing more.
    later = await emit(db, tenant)
    assert await delivery_rows(db, later) == []


async def _has_request(receiver: Receiver, path: str) -> bool:
    return bool(receiver.to(path))


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner, status: int
) -> None:
    # At scale 0.01 the schedule's second attempt comes 50 ms after the first; Retry-After:
    # 40 s asks for 400 ms (times scale too), which must win, on a 429 and on a 5xx alike.
    url = receiver.url("/limited", Reply(status, headers={"Retry-After": "40"}), Reply(200))
    await make_endpoint(db, tenant, url)
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id), worker_settings(webhook_schedule_scale=0.01))
    first, second = receiver.to("/limited")
    assert second.at_s - first.at_s >= 0.4
    [delivery] = await delivery_rows(db, event_id)
    attempts = await attempt_rows(db, delivery.id)
    assert [a.status_code for a in attempts] == [status, 200]


async def test_redirect_is_not_followed_and_counts_as_failure(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    target = receiver.url("/elsewhere")
    url = receiver.url("/moved", Reply(302, headers={"Location": target}), Reply(200))
    await make_endpoint(db, tenant, url)
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id))
    assert receiver.to("/elsewhere") == []
    [delivery] = await delivery_rows(db, event_id)
    assert [a.status_code for a in await attempt_rows(db, delivery.id)] == [302, 200]


async def test_schedule_exhausted_fails_the_delivery(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    await make_endpoint(db, tenant, receiver.url("/down", Reply(503)))
    event_id = await emit(db, tenant)
    # ~75.5 h of schedule in ~3 s.
    await worker.until(lambda: settled(db, event_id), worker_settings(webhook_schedule_scale=0.00001))
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.status == "failed" and delivery.attempts == 10 and delivery.next_attempt_at is None
    assert len(receiver.to("/down")) == 10


async def test_five_days_of_failures_disable_the_endpoint(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    endpoint_id, _ = await make_endpoint(db, tenant, receiver.url("/failing", Reply(500)))
    async with db.session() as session:
        await session.execute(
            text("UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute' WHERE id = :id"),
            {"id": endpoint_id},
        )
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id), worker_settings(webhook_schedule_scale=1.0))
    async with db.session() as session:
        endpoint = (
            await session.execute(text("SELECT * FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id})
        ).one()
        notices = await session.scalar(
            text("SELECT count(*) FROM events WHERE type = 'webhook_endpoint.disabled' AND object_id = :id"),
            {"id": endpoint_id},
        )
    assert endpoint.status == "disabled" and endpoint.disabled_reason == "failing"
    assert notices == 1
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.status == "failed" and delivery.attempts == 1


async def test_success_ends_a_run_of_failures(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    endpoint_id, _ = await make_endpoint(db, tenant, receiver.url("/recovers", Reply(500), Reply(200)))
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id))
    async with db.session() as session:
        since = await session.scalar(
            text("SELECT failing_since FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        )
    assert since is None


async def test_destination_is_checked_again_on_every_attempt(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    # Registered while 127.0.0.1 was allowed; the worker no longer allows it (as if DNS
    # now answered with a private address): refused before any connection.
    await make_endpoint(db, tenant, receiver.url("/internal"))
    event_id = await emit(db, tenant)

    async def attempted() -> bool:
        rows = await delivery_rows(db, event_id)
        return bool(rows) and rows[0].attempts >= 1

    await worker.until(attempted, worker_settings(webhook_allow=""))
    assert receiver.requests == []
    [delivery] = await delivery_rows(db, event_id)
    [attempt, *_] = await attempt_rows(db, delivery.id)
    assert attempt.status_code is None and attempt.error == "unsafe_destination: loopback"


async def test_response_excerpt_is_capped(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    await make_endpoint(db, tenant, receiver.url("/big", Reply(200, body="é".encode() * 100_000)))
    event_id = await emit(db, tenant)
    await worker.until(lambda: settled(db, event_id))
    [delivery] = await delivery_rows(db, event_id)
    [attempt] = await attempt_rows(db, delivery.id)
    assert delivery.status == "succeeded"
    assert 1000 <= len(attempt.response_excerpt.encode()) <= 1024


async def test_rotation_sends_both_signatures_until_the_overlap_ends(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    endpoint_id, old_secret = await make_endpoint(db, tenant, receiver.url("/rotating"))
    from tests.webhooks.conftest import principal

    async with db.session() as session:
        rotated = await service.rotate_secret(
            session, principal(tenant), endpoint_id, service.RotateSecret(overlap_s=3600)
        )
    new_secret = rotated.secret
    first = await emit(db, tenant)
    await worker.until(lambda: settled(db, first))
    [request] = receiver.to("/rotating")
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(request.body, request.headers)
    Webhook(new_secret).verify(request.body, request.headers)

    async with db.session() as session:  # the overlap ends
        await session.execute(
            text("UPDATE webhook_endpoint_secrets SET not_after = now() WHERE endpoint_id = :id AND secret = :s"),
            {"id": endpoint_id, "s": old_secret},
        )
    second = await emit(db, tenant)
    await worker.until(lambda: settled(db, second))
    later = receiver.to("/rotating")[-1]
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(later.body, later.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(later.body, later.headers)


async def test_a_far_retry_does_not_hold_back_new_deliveries(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    """With a per-endpoint bound of 1, a retry waiting for its due time holds no slot: a
    later delivery to the same endpoint goes first."""
    settings = worker_settings(webhook_schedule_scale=1.0, webhook_endpoint_concurrency=1)
    await make_endpoint(db, tenant, receiver.url("/once-down", Reply(500), Reply(200)))
    failed = await emit(db, tenant)

    async def retry_scheduled() -> bool:
        rows = await delivery_rows(db, failed)
        return bool(rows) and rows[0].attempts == 1

    await worker.until(retry_scheduled, settings)
    [delivery] = await delivery_rows(db, failed)
    assert delivery.next_attempt_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    fresh = await emit(db, tenant)
    await worker.until(lambda: settled(db, fresh), settings, timeout_s=3)
    assert len(receiver.to("/once-down")) == 2


async def test_body_is_canonical_json(db: Database, tenant: Tenant) -> None:
    event_id = await emit(db, tenant, note="naïve ✓", nested={"b": 1, "a": [1, 2]})
    body = await stored_body(db, event_id)
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert "naïve ✓".encode() in body


async def test_one_slow_endpoint_cannot_occupy_every_worker_slot(
    db: Database, tenant: Tenant, other_tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    settings = worker_settings(webhook_endpoint_concurrency=2)
    await make_endpoint(db, tenant, receiver.url("/slow", Reply(200, delay_s=0.4)))
    await make_endpoint(db, other_tenant, receiver.url("/fast"))
    slow = [await emit(db, tenant) for _ in range(8)]
    fast = await emit(db, other_tenant)
    fast_done_at: list[float] = []

    async def all_settled() -> bool:
        if not fast_done_at and await settled(db, fast):
            fast_done_at.append(len(receiver.to("/slow")))
        return all([await settled(db, e) for e in [*slow, fast]])

    await worker.until(all_settled, settings, concurrency=6)
    assert receiver.max_in_flight["/slow"] == 2
    assert len(receiver.to("/slow")) == 8
    assert fast_done_at[0] <= 4, "the other merchant's delivery did not wait for the slow backlog"
