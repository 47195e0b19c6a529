"""ledger: a single transfer inserts its journal row first and locks its accounts last

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25

Design: docs/design/0002-ledger.md, "Locking". Migration 0004 moved the batch function to
insert-then-lock; the single-transfer function kept lock-then-insert, so it held both
account rows while it inserted the journal row (five index entries and the statement
trigger) as well as during the balance updates and the commit. Every transfer to a hot
account (a merchant's balance, the fee revenue account) queued behind that whole time.

Now the accounts are read without a lock (an account never changes asset and is never
deleted: refused by triggers, LG013), the journal row goes in, and only then are the two
balances updated, lower account id first, so two calls still never wait on each other in
opposite orders. What the lock protected before is protected the same way after: a
closed account refuses the balance update (trigger), a flag is a CHECK on the updated
row, and an idempotent replay returns before anything is locked.
"""

from __future__ import annotations

from alembic import op

from stablegate.migrations import revision_module

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ONE_TRANSFER_FUNCTION = r"""
CREATE OR REPLACE FUNCTION ledger_create_one_transfer(
    p_id text, p_public_id text, p_kind text, debit_acc bigint, credit_acc bigint, xfer_asset text,
    amt numeric, p_timeout_s bigint, p_code integer, p_metadata jsonb
)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    is_pending boolean := p_kind = 'pending';
    meta jsonb := coalesce(p_metadata, '{}'::jsonb);
    assets text[];
    new_seq bigint;
    existing record;
    first_acc bigint := least(debit_acc, credit_acc);
BEGIN
    -- No lock: an account's asset never changes and accounts are never deleted.
    SELECT array_agg(a.asset ORDER BY a.id) INTO assets FROM ledger_accounts a WHERE a.id IN (debit_acc, credit_acc);
    IF coalesce(cardinality(assets), 0) < 2 THEN
        RAISE EXCEPTION 'unknown account: %',
            CASE WHEN NOT EXISTS (SELECT 1 FROM ledger_accounts WHERE id = debit_acc) THEN debit_acc ELSE credit_acc END
            USING ERRCODE = 'LG010';
    END IF;
    IF assets[1] <> xfer_asset OR assets[2] <> xfer_asset THEN
        RAISE EXCEPTION 'transfer %: accounts do not hold its asset', p_id USING ERRCODE = 'LG011';
    END IF;

    INSERT INTO ledger_transfers AS lt (id, public_id, debit_account, credit_account, asset, amount, kind,
                                        timeout_at, code, metadata)
    VALUES (p_id, p_public_id, debit_acc, credit_acc, xfer_asset, amt, p_kind,
            CASE WHEN p_timeout_s IS NULL THEN NULL ELSE clock_timestamp() + make_interval(secs => p_timeout_s) END,
            p_code, meta)
    ON CONFLICT (id) DO NOTHING
    RETURNING lt.seq INTO new_seq;

    IF new_seq IS NULL THEN
        SELECT * INTO existing FROM ledger_transfers lt WHERE lt.id = p_id;
        IF (existing.kind, existing.debit_account, existing.credit_account, existing.asset, existing.amount,
            existing.code, existing.metadata, existing.pending_id)
           IS DISTINCT FROM (p_kind, debit_acc, credit_acc, xfer_asset, amt, p_code, meta, NULL::text) THEN
            RAISE EXCEPTION 'transfer % exists with different fields', existing.id USING ERRCODE = 'LG020';
        END IF;
        RETURN QUERY SELECT 1::bigint, existing.id, existing.public_id, existing.seq, false;
        RETURN;
    END IF;

    -- The balances last, lower account id first: the row locks are held only from here
    -- to the commit, and always taken in the same order.
    UPDATE ledger_accounts a SET
        debits_pending = a.debits_pending + CASE WHEN is_pending AND a.id = debit_acc THEN amt ELSE 0 END,
        credits_pending = a.credits_pending + CASE WHEN is_pending AND a.id = credit_acc THEN amt ELSE 0 END,
        debits_posted = a.debits_posted + CASE WHEN NOT is_pending AND a.id = debit_acc THEN amt ELSE 0 END,
        credits_posted = a.credits_posted + CASE WHEN NOT is_pending AND a.id = credit_acc THEN amt ELSE 0 END
    WHERE a.id = first_acc;
    UPDATE ledger_accounts a SET
        debits_pending = a.debits_pending + CASE WHEN is_pending AND a.id = debit_acc THEN amt ELSE 0 END,
        credits_pending = a.credits_pending + CASE WHEN is_pending AND a.id = credit_acc THEN amt ELSE 0 END,
        debits_posted = a.debits_posted + CASE WHEN NOT is_pending AND a.id = debit_acc THEN amt ELSE 0 END,
        credits_posted = a.credits_posted + CASE WHEN NOT is_pending AND a.id = credit_acc THEN amt ELSE 0 END
    WHERE a.id = greatest(debit_acc, credit_acc);
    RETURN QUERY SELECT 1::bigint, p_id, p_public_id, new_seq, true;
END $$;
"""


def upgrade() -> None:
    op.execute(ONE_TRANSFER_FUNCTION)


def downgrade() -> None:
    # 0004's single-transfer function: 0003's text with its lock mode, as 0004 made it
    # (0003's PLAIN_FUNCTION text holds it, the dispatcher and the batch function; the
    # batch function is then 0004's again).
    locking = revision_module("0004_ledger_locking.py")
    op.execute(locking._relocked(locking._revision_0003().PLAIN_FUNCTION, expected=2))
    op.execute(locking.PLAIN_FUNCTION)
