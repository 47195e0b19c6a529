"""webhooks: deliveries are claimed by a dispatcher with leases, not one job per attempt

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

Design: docs/design/0005-webhooks.md ("Dispatch"). `webhook_deliveries` becomes the queue
itself: a dispatcher claims due rows in batches (`FOR UPDATE SKIP LOCKED`) and leases them
(`leased_until`) for the length of an attempt; a crashed worker's leases simply expire.
A manual redelivery is a request on the row (`manual_requested_at`), served by the next
claim without moving the schedule.

Upgrade turns what procrastinate still holds for webhooks into that form (a waiting
scheduled attempt is already the delivery's `next_attempt_at`; a waiting manual one
becomes a request) and drops 0006's job-lock index and lock-release trigger, which only
webhook jobs used. Downgrade restores them; deliveries pending at that point have no job
and need a redelivery (or a re-emit) under the old code.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- Held by the dispatcher that claimed the row until it records the attempt (the attempt's
-- timeout plus a margin); a row whose lease passed is claimable again.
ALTER TABLE webhook_deliveries ADD COLUMN leased_until timestamptz;
-- A manual redelivery asked for at this time (NULL: none): one attempt outside the
-- schedule, on any status.
ALTER TABLE webhook_deliveries ADD COLUMN manual_requested_at timestamptz;

-- The due queue: pending deliveries by their next automatic attempt (next_attempt_at is
-- set exactly while pending: CHECK pending_has_next)...
CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
-- ...the same per endpoint (the lease hand-off takes an endpoint's next due deliveries)...
CREATE INDEX ix_webhook_deliveries_endpoint_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
-- ...manual requests (few)...
CREATE INDEX ix_webhook_deliveries_manual ON webhook_deliveries (manual_requested_at)
    WHERE manual_requested_at IS NOT NULL;
-- ...and the leases held, by endpoint: the per-endpoint bound counts them (rows in flight
-- only: recording clears the lease).
CREATE INDEX ix_webhook_deliveries_leased ON webhook_deliveries (endpoint_id) WHERE leased_until IS NOT NULL;

-- A queue table churns (every delivery is inserted, leased and settled): vacuum and analyze
-- it sooner than the defaults (20 % / 10 % of the table), so dead index entries stay few
-- and the claim's plan sees how few rows are due or leased.
ALTER TABLE webhook_deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.01);

UPDATE webhook_deliveries SET manual_requested_at = now()
WHERE id IN (SELECT args->>'delivery_id' FROM procrastinate_jobs
             WHERE task_name = 'webhooks.deliver' AND status = 'todo' AND args->>'step' IS NULL);
DELETE FROM procrastinate_jobs WHERE task_name = 'webhooks.deliver' AND status = 'todo';

DROP TRIGGER webhook_jobs_lock_released ON procrastinate_jobs;
DROP FUNCTION webhook_notify_lock_released();
DROP INDEX webhook_jobs_waiting_by_lock;
"""

# As migration 0006 created them.
RESTORE_0006 = r"""
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
    op.execute(RESTORE_0006)
    op.execute("DROP INDEX ix_webhook_deliveries_leased")
    op.execute("DROP INDEX ix_webhook_deliveries_manual")
    op.execute("DROP INDEX ix_webhook_deliveries_endpoint_due")
    op.execute("DROP INDEX ix_webhook_deliveries_due")
    op.execute("ALTER TABLE webhook_deliveries RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)")
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN manual_requested_at")
    op.execute("ALTER TABLE webhook_deliveries DROP COLUMN leased_until")
