"""ledger: account checks without row locks; batches insert first and lock accounts last

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Design: docs/design/0002-ledger.md, "Locking". Profiling 8 concurrent 1000-transfer batches
showed backends waiting on MultiXact buffers and tuple locks: the foreign keys from a transfer
to its two accounts take a KEY SHARE lock on every account row for every inserted transfer,
so concurrent batches piled several lockers onto each account (multixacts), and the batch
function held its account locks while it inserted the journal rows.

- The foreign keys (debit_account, asset) and (credit_account, asset) become one
  statement-level trigger that checks the inserted rows as a set. It needs no lock: accounts
  can no longer be deleted or change asset (refused by triggers), which is all the foreign
  key's lock protected against.
- Accounts are locked FOR NO KEY UPDATE (what an UPDATE of the balances takes) instead of
  FOR UPDATE.
- The batch function inserts its journal rows before it locks accounts, so the critical
  section is only the balance update; batches that touch many accounts queue once on one
  advisory lock instead of meeting each other row lock by row lock.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Batches that lock more accounts than this take WIDE_BATCH_LOCK first (see the design doc).
WIDE_BATCH_ACCOUNTS = 64
WIDE_BATCH_LOCK = 0x5354_4C47_0001  # "STLG" + 1: the ledger's only advisory lock key

ACCOUNT_GUARDS = r"""
ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfers_debit_account_asset_fkey;
ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfers_credit_account_asset_fkey;

CREATE FUNCTION ledger_check_transfer_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT n.id INTO bad FROM new_transfers n
    WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = n.debit_account AND a.asset = n.asset)
       OR NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = n.credit_account AND a.asset = n.asset)
    LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'transfer %: accounts do not hold its asset', bad USING ERRCODE = 'LG011';
    END IF;
    RETURN NULL;
END $$;

-- Both sides hold the transfer's asset, checked once per statement for all its rows.
CREATE TRIGGER ledger_transfers_accounts AFTER INSERT ON ledger_transfers
    REFERENCING NEW TABLE AS new_transfers FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_transfer_accounts();

CREATE FUNCTION ledger_refuse_account_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger accounts are never deleted and never change asset: close the account instead'
        USING ERRCODE = 'LG013';
END $$;

CREATE TRIGGER ledger_accounts_keep_asset BEFORE UPDATE OF asset ON ledger_accounts
    FOR EACH ROW WHEN (OLD.asset IS DISTINCT FROM NEW.asset) EXECUTE FUNCTION ledger_refuse_account_change();
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_account_change();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_account_change();
"""

DROP_ACCOUNT_GUARDS = r"""
DROP TRIGGER ledger_accounts_no_truncate ON ledger_accounts;
DROP TRIGGER ledger_accounts_no_delete ON ledger_accounts;
DROP TRIGGER ledger_accounts_keep_asset ON ledger_accounts;
DROP FUNCTION ledger_refuse_account_change();
DROP TRIGGER ledger_transfers_accounts ON ledger_transfers;
DROP FUNCTION ledger_check_transfer_accounts();
ALTER TABLE ledger_transfers ADD FOREIGN KEY (debit_account, asset) REFERENCES ledger_accounts (id, asset);
ALTER TABLE ledger_transfers ADD FOREIGN KEY (credit_account, asset) REFERENCES ledger_accounts (id, asset);
"""

PLAIN_FUNCTION = rf"""
-- Batches of plain (posted or pending) transfers, set-based. Order matters for concurrency:
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
    SELECT array_agg(x->>'id') INTO ids FROM jsonb_array_elements(batch) x;
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
        RETURNING lt.id, lt.debit_account, lt.credit_account, lt.amount, lt.kind
    )
    SELECT array_agg(ins.id), array_agg(ins.debit_account), array_agg(ins.credit_account),
           array_agg(ins.amount), array_agg(ins.kind)
    INTO inserted, debit_accs, credit_accs, amounts, kinds FROM ins;

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


def _revision_0003() -> ModuleType:
    """Migration 0003's module: its function texts are history and never change."""
    path = Path(__file__).with_name("0003_ledger.py")
    spec = importlib.util.spec_from_file_location("stablegate_migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _relocked(function_sql: str, expected: int) -> str:
    """0003's function text with FOR UPDATE account locks turned into FOR NO KEY UPDATE."""
    assert function_sql.count("FOR UPDATE") == expected, "migration 0003's text is frozen"
    return function_sql.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION").replace(
        "FOR UPDATE", "FOR NO KEY UPDATE"
    )


def upgrade() -> None:
    old = _revision_0003()
    op.execute(ACCOUNT_GUARDS)
    op.execute(_relocked(old.POST_FUNCTION, expected=1))
    # 0003's PLAIN_FUNCTION also holds the single-transfer function and the dispatcher:
    # they are re-created with the new lock mode, then the batch function is replaced.
    op.execute(_relocked(old.PLAIN_FUNCTION, expected=2))
    op.execute(PLAIN_FUNCTION)


def downgrade() -> None:
    old = _revision_0003()
    replace = "CREATE OR REPLACE FUNCTION"
    op.execute(old.POST_FUNCTION.replace("CREATE FUNCTION", replace))
    op.execute(old.PLAIN_FUNCTION.replace("CREATE FUNCTION", replace))
    op.execute(DROP_ACCOUNT_GUARDS)
