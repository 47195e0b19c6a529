"""ledger: a single transfer leaves the account check to the journal's trigger, one balance update

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-25

Design: docs/design/0002-ledger.md ("Performance"). Three changes to the single-transfer
function, each a statement less per call:

- It read its two accounts (one aggregate query) to refuse an unknown account or another
  asset before its insert; since migration 0013 the journal's statement trigger makes both
  refusals itself, with the same codes (LG010 naming the unknown account, LG011), so every
  single transfer checked its accounts twice. The read goes.
- The two balances are moved by one UPDATE instead of one per account. Its row locks are
  still taken lower id first: `id = ANY (...)` through the primary key visits the keys in
  sorted order, and the function pins that plan (no sequential or bitmap scan, which
  would visit rows in their physical order).
- The result row is returned from variables, not from a query.

pgbench driving the function, 8 clients, alternating rounds: the read alone against the
0011 function, 2838-3095 -> 3071-3554 calls/s (four 6 s rounds); the other two against
the function without the read, 14 674 -> 16 852 calls summed over six 5 s rounds (+15 %).

What a caller sees changes in one case only, as it did for batches in 0013: an unknown
account named by a transfer that replays a stored id is reported as the replay's
different fields (LG020). Nothing is written either way.
"""

from __future__ import annotations

from alembic import op

from stablegate.migrations import revision_module

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ONE_TRANSFER_FUNCTION = r"""
CREATE OR REPLACE FUNCTION ledger_create_one_transfer(
    p_id text, p_public_id text, p_kind text, debit_acc bigint, credit_acc bigint, xfer_asset text,
    amt numeric, p_timeout_s bigint, p_code integer, p_metadata jsonb
)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql
-- The balance update below locks its two rows in the order its scan visits them: only a
-- plain index scan of the primary key visits them in id order, whatever the table's size.
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    is_pending boolean := p_kind = 'pending';
    meta jsonb := coalesce(p_metadata, '{}'::jsonb);
    new_seq bigint;
    existing record;
BEGIN
    -- No account read here: the journal's insert trigger checks that both accounts exist
    -- and hold the asset (LG010, LG011), for this insert as for any other.
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

    -- The balances last, lower account id first (`= ANY` over the primary key: the index
    -- scan visits the keys sorted): the row locks are held only from here to the commit,
    -- and always taken in the same order. One statement, not one per account: each
    -- statement's executor start (the table's CHECK constraints prepared again) is paid once.
    UPDATE ledger_accounts a SET
        debits_pending = a.debits_pending + CASE WHEN is_pending AND a.id = debit_acc THEN amt ELSE 0 END,
        credits_pending = a.credits_pending + CASE WHEN is_pending AND a.id = credit_acc THEN amt ELSE 0 END,
        debits_posted = a.debits_posted + CASE WHEN NOT is_pending AND a.id = debit_acc THEN amt ELSE 0 END,
        credits_posted = a.credits_posted + CASE WHEN NOT is_pending AND a.id = credit_acc THEN amt ELSE 0 END
    WHERE a.id = ANY (ARRAY[debit_acc, credit_acc]);
    ord := 1; transfer_id := p_id; public_id := p_public_id; seq := new_seq; created := true;
    RETURN NEXT;
END $$;
"""


def upgrade() -> None:
    op.execute(ONE_TRANSFER_FUNCTION)


def downgrade() -> None:
    op.execute(revision_module("0011_ledger_single_lock_late.py").ONE_TRANSFER_FUNCTION)
