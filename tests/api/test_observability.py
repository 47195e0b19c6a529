"""Request ids, structured logs without secrets, Prometheus metrics, traces, health."""

from __future__ import annotations

import json

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stablegate import migrations
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.main import create_app
from stablegate.observability import tracing
from tests.conftest import ApiServer, Tenant


def test_health_and_readiness(api: ApiServer) -> None:
    with api.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["migration"] == migrations.head_revision()


def test_every_response_has_a_request_id(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/v1/nope"),
            ("GET", "/v1/account"),
            ("POST", "/v1/customers"),
        ):
            r = client.request(method, path)
            assert r.headers["request-id"].startswith("req_")
    with api.client() as client:
        unauth = client.get("/v1/account")
    assert unauth.json()["error"]["request_id"] == unauth.headers["request-id"]


def test_metrics_are_labelled_by_route_template(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        cus = client.post("/v1/customers", json={}).json()["id"]
        client.get(f"/v1/customers/{cus}")
        text = client.get("/metrics").text
    assert 'stablegate_http_requests_total{method="GET",route="/v1/customers/{id}",status="200"}' in text
    assert "stablegate_http_request_duration_seconds_bucket" in text
    assert cus not in text, "raw ids never become labels"


def test_logs_are_json_with_context_and_no_secrets(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        request_id = client.get("/v1/account").headers["request-id"]
    with api.client("sk_test_" + "z" * 43) as client:
        client.get("/v1/account")
    lines = [json.loads(line) for line in api.log_path.read_text().splitlines() if line.startswith("{")]
    mine = [event for event in lines if event.get("request_id") == request_id]
    assert mine, "the request was logged"
    assert mine[0]["merchant_id"] == tenant.merchant_id
    assert mine[0]["mode"] == "test"
    assert mine[0]["route"] == "/v1/account"
    raw = api.log_path.read_text()
    assert tenant.test_key not in raw and tenant.test_key[8:] not in raw
    assert "z" * 43 not in raw


async def test_requests_and_sql_are_traced(db: Database, settings: Settings, tenant: Tenant) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure("none", "stablegate-test", span_exporter=exporter)
    tracing.instrument_engine(db.engine.sync_engine)
    transport = httpx.ASGITransport(app=create_app(settings, db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/v1/customers", headers={"Authorization": f"Bearer {tenant.test_key}"})
    provider = trace.get_tracer_provider()
    provider.force_flush()  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()
    # FastAPI adds its own route span inside ours; ours wraps auth and idempotency too.
    server = [s for s in spans if s.name == "GET /v1/customers" and s.instrumentation_scope.name == "stablegate"]
    assert len(server) == 1
    trace_id = server[0].context.trace_id
    sql = [s for s in spans if s.name.startswith("sql ") and s.context.trace_id == trace_id]
    assert len(sql) >= 2, "authentication and the list query are traced inside the request"
    assert all(s.parent is not None for s in sql)
    assert all("sk_test" not in (s.attributes or {}).get("db.statement", "") for s in sql)
    assert server[0].attributes["merchant_id"] == tenant.merchant_id
