"""webhooks: events, endpoints and their secrets, deliveries, attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

Design: docs/design/0005-webhooks.md. `events` is the platform's event log (every domain
writes to it through webhooks.service.emit); its shape is relied on by later revisions.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE events (
    id text PRIMARY KEY,  -- evt_…, time-sortable: list pagination orders by it
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    type text NOT NULL,
    object_id text,
    -- The event's full JSON body exactly as delivered (jsonb for querying; the delivered
    -- bytes are re-serialised from it with the same stable separators every time).
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_events_owner_id ON events (merchant_id, mode, id);
CREATE INDEX ix_events_owner_type ON events (merchant_id, mode, type, id);

CREATE TABLE webhook_endpoints (
    id text PRIMARY KEY,  -- we_…
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    url text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description text CHECK (length(description) <= 1000),
    event_types text[] NOT NULL DEFAULT '{}',  -- empty: every type
    status text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason text,
    -- When the current run of failed attempts began (NULL after a success): the 5-day
    -- disable rule reads it instead of scanning attempts.
    failing_since timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,  -- deleted endpoints keep their delivery log
    CONSTRAINT disabled_has_reason CHECK ((status = 'disabled') = (disabled_reason IS NOT NULL))
);
CREATE INDEX ix_webhook_endpoints_owner_id ON webhook_endpoints (merchant_id, mode, id);

-- Signing secrets, stored retrievably: HMAC signing needs the secret itself (no KMS or
-- encryption library in this deployment; see the design). A rotated-out secret keeps
-- signing until not_after (the overlap window); the current one has not_after NULL.
CREATE TABLE webhook_endpoint_secrets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (id),
    secret text NOT NULL CHECK (secret LIKE 'whsec\_%'),
    created_at timestamptz NOT NULL DEFAULT now(),
    not_after timestamptz
);
CREATE INDEX ix_webhook_endpoint_secrets_endpoint_id ON webhook_endpoint_secrets (endpoint_id);

CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,  -- msg_…: the webhook-id header, the same on every attempt
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (id),
    event_id text NOT NULL REFERENCES events (id),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),  -- all, redeliveries included
    -- The position in the retry schedule of the next automatic attempt: the one job that
    -- may make it carries this number, so a job run twice cannot fork the schedule.
    schedule_step integer NOT NULL DEFAULT 0 CHECK (schedule_step >= 0),
    next_attempt_at timestamptz,
    last_status_code smallint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_webhook_deliveries_endpoint_id UNIQUE (endpoint_id, event_id),
    CONSTRAINT pending_has_next CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The delivery log of one endpoint, newest first.
CREATE INDEX ix_webhook_deliveries_endpoint_log ON webhook_deliveries (endpoint_id, id);
CREATE INDEX ix_webhook_deliveries_event_id ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    delivery_id text NOT NULL REFERENCES webhook_deliveries (id),
    attempt integer NOT NULL CHECK (attempt >= 1),
    at timestamptz NOT NULL DEFAULT now(),
    status_code smallint,  -- NULL: no HTTP response (refused, timeout, unsafe destination)
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    error text,
    response_excerpt text CHECK (octet_length(response_excerpt) <= 1024),
    PRIMARY KEY (delivery_id, attempt)
);

-- Per-endpoint concurrency is procrastinate's job lock (one of N per endpoint). A worker
-- whose fetch found only locked jobs sleeps until a job is inserted or its polling
-- interval passes; nothing tells it when a lock is released. This does, on the channel
-- and in the message format procrastinate's own insert trigger uses (schema v1), so an
-- idle worker fetches again the moment an attempt to a busy endpoint finishes.
-- procrastinate's fetch rejects a job whose lock has an earlier job waiting: for each
-- candidate it looks for one, and its own (id, lock) index cannot seek by lock, so every
-- look scanned the whole waiting queue (fetches slowed with the backlog: 50 -> 20
-- deliveries/s from 1000 to 2000 waiting). This one answers each look with a seek.
CREATE INDEX webhook_jobs_waiting_by_lock ON procrastinate_jobs (lock, priority DESC, id)
    WHERE status = 'todo' AND lock IS NOT NULL;

CREATE FUNCTION webhook_notify_lock_released() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('type', 'job_inserted', 'job_id', NEW.id)::text;
BEGIN
    PERFORM pg_notify('procrastinate_queue_v1#' || NEW.queue_name, payload);
    PERFORM pg_notify('procrastinate_any_queue_v1', payload);
    RETURN NEW;
END $$;
CREATE TRIGGER webhook_jobs_lock_released AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status = 'doing' AND NEW.status <> 'doing' AND NEW.queue_name = 'webhooks'
                       AND NEW.lock IS NOT NULL)
    EXECUTE FUNCTION webhook_notify_lock_released();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP TRIGGER webhook_jobs_lock_released ON procrastinate_jobs")
    op.execute("DROP FUNCTION webhook_notify_lock_released()")
    op.execute("DROP INDEX webhook_jobs_waiting_by_lock")
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_endpoint_secrets", "webhook_endpoints", "events"):
        op.execute(f"DROP TABLE {table}")
