"""Prometheus metrics. Route labels are templates (/v1/customers/{customer_id}), never raw
paths, so cardinality stays bounded."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "stablegate_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "stablegate_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IDEMPOTENCY_OUTCOMES = Counter("stablegate_idempotency_outcomes_total", "Idempotency-Key outcomes.", ["outcome"])
RATE_LIMITED = Counter("stablegate_rate_limited_total", "Requests refused by the per-key rate limit.")
JOBS_ENQUEUED = Counter("stablegate_jobs_enqueued_total", "Jobs enqueued in a domain transaction.", ["task"])
JOBS_RUN = Counter("stablegate_jobs_run_total", "Jobs run by this worker.", ["task", "outcome"])
DB_RETRIES = Counter(
    "stablegate_db_transaction_retries_total",
    "Transactions re-run after a deadlock or serialization failure.",
    ["sqlstate"],
)
