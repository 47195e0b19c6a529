"""ledger: a batch of new transfers skips the replay comparison and the second lookup

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25

Design: docs/design/0002-ledger.md ("Performance"). auto_explain with nested statements on
one 1000-transfer batch (bench/ledger.py's workload): of ~72 ms in the batch function, the
INSERT took 22 ms and its statement trigger 7 ms, but the replay comparison (17 ms) and the
final lookup of every id (19 ms) took half: both test each stored row against the array
of inserted ids, a linear scan per row in the generic plan, 1000 × 1000 comparisons.

When the insert stored as many transfers as the batch holds, there is no replay to compare
(no id twice, none stored before) and the insert's RETURNING already has every seq: the
function answers from it. Any other batch takes the path it took before.
"""

from __future__ import annotations

from alembic import op

from stablegate.migrations import revision_module

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


_LOCKING = revision_module("0004_ledger_locking.py")
WIDE_BATCH_ACCOUNTS = _LOCKING.WIDE_BATCH_ACCOUNTS
WIDE_BATCH_LOCK = _LOCKING.WIDE_BATCH_LOCK

PLAIN_FUNCTION = rf"""
-- Batches of plain (posted or pending) transfers, set-based (as migration 0004 made it, plus
-- migration 0012's path for a batch of new transfers). Order matters for concurrency:
-- the journal rows go in first (no account lock needed: the insert trigger checks the
-- accounts without locking them), then the touched accounts are locked in id order and
-- moved once each by the batch's summed deltas. Flags are checked on each account's
-- balance after the whole batch (a linked batch is one atomic movement).
CREATE OR REPLACE FUNCTION ledger_create_plain_transfers(batch jsonb)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint[];
    ids text[];
    public_ids text[];
    made jsonb;
    known_count integer;
    inserted text[];
    debit_accs bigint[];
    credit_accs bigint[];
    amounts numeric[];
    kinds text[];
    mismatch text;
BEGIN
    -- Lookups below go through these arrays (`= ANY`), never a join against a set-returning
    -- function: a cached generic plan would guess its row count and may scan whole tables.
    SELECT array_agg(x->>'id'), array_agg(x->>'public_id') INTO ids, public_ids FROM jsonb_array_elements(batch) x;
    SELECT array_agg(DISTINCT a ORDER BY a) INTO wanted FROM (
        SELECT (x->>'debit_account')::bigint FROM jsonb_array_elements(batch) x
        UNION ALL
        SELECT (x->>'credit_account')::bigint FROM jsonb_array_elements(batch) x
    ) s(a);
    SELECT count(*) INTO known_count FROM ledger_accounts la WHERE la.id = ANY (wanted);
    IF known_count <> cardinality(wanted) THEN
        RAISE EXCEPTION 'unknown account: %',
            (SELECT min(w) FROM unnest(wanted) w WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts la WHERE la.id = w))
            USING ERRCODE = 'LG010';
    END IF;

    WITH ins AS (
        INSERT INTO ledger_transfers AS lt (id, public_id, debit_account, credit_account, asset, amount, kind,
                                            timeout_at, code, metadata)
        SELECT i.id, i.public_id, i.debit_account, i.credit_account, i.asset, i.amount, i.kind,
               CASE WHEN i.timeout_s IS NULL THEN NULL ELSE clock_timestamp() + make_interval(secs => i.timeout_s) END,
               i.code, coalesce(i.metadata, '{{}}'::jsonb)
        FROM jsonb_to_recordset(batch) AS i(id text, public_id text, kind text, debit_account bigint,
            credit_account bigint, asset text, amount numeric, timeout_s bigint, code integer, metadata jsonb)
        ON CONFLICT (id) DO NOTHING
        RETURNING lt.id, lt.seq, lt.debit_account, lt.credit_account, lt.amount, lt.kind
    )
    SELECT array_agg(ins.id), jsonb_object_agg(ins.id, ins.seq), array_agg(ins.debit_account),
           array_agg(ins.credit_account), array_agg(ins.amount), array_agg(ins.kind)
    INTO inserted, made, debit_accs, credit_accs, amounts, kinds FROM ins;

    IF inserted IS NOT NULL THEN
        -- A wide batch locks most accounts anyway: wide batches queue on one lock rather
        -- than take turns row lock by row lock (measured: 1.6x at 8 clients).
        IF cardinality(wanted) > {WIDE_BATCH_ACCOUNTS} THEN
            PERFORM pg_advisory_xact_lock({WIDE_BATCH_LOCK});
        END IF;
        PERFORM 1 FROM ledger_accounts la WHERE la.id = ANY (wanted) ORDER BY la.id FOR NO KEY UPDATE;
        WITH moves AS (
            SELECT m.account, m.kind, m.amount AS debit, 0::numeric AS credit
            FROM unnest(debit_accs, amounts, kinds) m(account, amount, kind)
            UNION ALL
            SELECT m.account, m.kind, 0::numeric, m.amount
            FROM unnest(credit_accs, amounts, kinds) m(account, amount, kind)
        ), deltas AS (
            SELECT m.account,
                   coalesce(sum(m.debit) FILTER (WHERE m.kind = 'pending'), 0) AS dp,
                   coalesce(sum(m.debit) FILTER (WHERE m.kind = 'posted'), 0) AS dpo,
                   coalesce(sum(m.credit) FILTER (WHERE m.kind = 'pending'), 0) AS cp,
                   coalesce(sum(m.credit) FILTER (WHERE m.kind = 'posted'), 0) AS cpo
            FROM moves m GROUP BY m.account
        )
        UPDATE ledger_accounts a
        SET debits_pending = a.debits_pending + d.dp, debits_posted = a.debits_posted + d.dpo,
            credits_pending = a.credits_pending + d.cp, credits_posted = a.credits_posted + d.cpo
        FROM deltas d WHERE a.id = d.account AND a.id = ANY (wanted);
    END IF;

    -- Every transfer new (the common case: as many inserted as asked for, so no id twice
    -- and none stored before): nothing to compare, and each seq comes from the insert.
    -- The general path below looks every id up again and tests it against `inserted`,
    -- an array scan per row in a generic plan: ~35 ms of a 1000-transfer batch's ~70.
    IF cardinality(inserted) = cardinality(ids) THEN
        RETURN QUERY
        SELECT u.ord, u.id, u.public_id, (made->>u.id)::bigint, true
        FROM unnest(ids, public_ids) WITH ORDINALITY u(id, public_id, ord)
        ORDER BY u.ord;
        RETURN;
    END IF;

    -- Ids that already existed must be exact replays (checked after the insert, which also
    -- catches a concurrent first writer of the same id).
    WITH found AS MATERIALIZED (
        SELECT * FROM ledger_transfers lt WHERE lt.id = ANY (ids) AND NOT (lt.id = ANY (coalesce(inserted, '{{}}')))
    )
    SELECT x.value->>'id' INTO mismatch
    FROM jsonb_array_elements(batch) x
    JOIN found t ON t.id = x.value->>'id'
    WHERE (t.kind, t.debit_account, t.credit_account, t.asset, t.amount, t.code, t.metadata, t.pending_id)
          IS DISTINCT FROM
          (x.value->>'kind', (x.value->>'debit_account')::bigint, (x.value->>'credit_account')::bigint,
           x.value->>'asset', (x.value->>'amount')::numeric, (x.value->>'code')::integer,
           coalesce(x.value->'metadata', '{{}}'::jsonb), NULL::text)
    LIMIT 1;
    IF mismatch IS NOT NULL THEN
        RAISE EXCEPTION 'transfer % exists with different fields', mismatch USING ERRCODE = 'LG020';
    END IF;

    -- MATERIALIZED: fetch by index (= ANY), then match in memory; a join the planner
    -- could turn into one index scan per input row, each returning the whole array.
    RETURN QUERY
    WITH found AS MATERIALIZED (SELECT lt.id, lt.public_id, lt.seq FROM ledger_transfers lt WHERE lt.id = ANY (ids))
    SELECT u.ord, t.id, t.public_id, t.seq,
           t.id = ANY (coalesce(inserted, '{{}}')) AND row_number() OVER (PARTITION BY t.id ORDER BY u.ord) = 1
    FROM unnest(ids) WITH ORDINALITY u(id, ord)
    JOIN found t ON t.id = u.id
    ORDER BY u.ord;
END $$;
"""


def upgrade() -> None:
    op.execute(PLAIN_FUNCTION)


def downgrade() -> None:
    op.execute(_LOCKING.PLAIN_FUNCTION)
