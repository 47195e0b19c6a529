"""payments: an underpaid payment expires too (its index for the expiry job)

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-25

Design: docs/design/0004-payments.md ("States"). Only an unpaid payment expired; one that
had received part of its amount stayed `processing` for ever, holding its quote, and
money arriving days later completed it as if on time. An underpaid payment with nothing
waiting for confirmations now expires like an unpaid one (its `paid` stays `underpaid`),
and money after that is late. The expiry job finds such payments through this index, as
it finds unpaid ones through ix_payments_due_to_expire (0007).
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_payments_processing_to_expire ON payments (expires_at) WHERE status = 'processing'")


def downgrade() -> None:
    op.execute("DROP INDEX ix_payments_processing_to_expire")
