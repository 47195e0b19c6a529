"""chains: when the follower last stood at the chain's head (for the payments expiry job)

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-25

Design: docs/design/0004-payments.md ("States"), 0003-evm-rail.md. The expiry job used to
expire an unpaid payment 30 s after its expiry by the clock alone; a follower lagging more
than that (an RPC outage) then found money mined before the expiry in an expired payment
and flagged it late. `synced_at` is the wall time at which the follower last had every
block up to the head it had just read: a payment expires once every chain it accepts was
followed to its head at least the grace past its expiry (or after an hour regardless).
NULL: never at the head yet, or rewound by a reorg since. Written only by the chain's
leader; the expiry job reads it in the statement that picks payments (and again once they
are locked), never locking it.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE chain_cursors ADD COLUMN synced_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE chain_cursors DROP COLUMN synced_at")
