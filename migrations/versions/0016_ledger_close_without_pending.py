"""ledger: an account with pending transfers cannot be closed

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-25

Design: docs/design/0002-ledger.md ("Closing an account"). A closed account refuses every
balance change (0003), the release of a reservation included. Closing an account that
still held a pending transfer therefore made that transfer impossible to post, void or
expire: the expiry job's batch failed on it with LG012, every minute, for every other
timed-out transfer too. Closing now requires no pending amounts, checked by the database
in the closing update itself: a transfer that reserves funds concurrently holds the row
lock, and the closing update re-reads the row after it and is refused.

The trigger fires only on the update that sets closed_at (its WHEN), never on the
posting path. Accounts closed before this revision with pending amounts keep them: find
them with `SELECT id FROM ledger_accounts WHERE closed_at IS NOT NULL AND (debits_pending
<> 0 OR credits_pending <> 0)`.
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
CREATE FUNCTION ledger_refuse_close_with_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.debits_pending <> 0 OR NEW.credits_pending <> 0 THEN
        RAISE EXCEPTION 'account % holds pending transfers: post or void them before closing it', OLD.code
            USING ERRCODE = 'LG014';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_accounts_close_without_pending BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW WHEN (OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL)
    EXECUTE FUNCTION ledger_refuse_close_with_pending();
"""
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_accounts_close_without_pending ON ledger_accounts")
    op.execute("DROP FUNCTION ledger_refuse_close_with_pending()")
