"""payments: a merchant accepts money that arrived late (late_accepted_at)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-25

Design: docs/design/0004-payments.md ("States"). Money that arrives after a payment
expired or was canceled is credited and the payment flagged `late`, for the merchant to
accept or refund. Refunds existed; accepting did not, so a late payment stayed undecided
for ever. `POST /v1/payments/{id}/accept` sets this column (once) and records
`payment.late_accepted`; only a late payment can be accepted. New late money after an
acceptance clears it (the merchant decides again, told by `payment.paid_late`).
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT VALID: the column is new, so every existing row holds NULL and satisfies the
    # check; validating would only scan the whole table under this statement's ACCESS
    # EXCLUSIVE lock. The check applies to every row written from now on.
    op.execute(
        "ALTER TABLE payments ADD COLUMN late_accepted_at timestamptz,"
        " ADD CONSTRAINT payments_only_late_is_accepted CHECK (late_accepted_at IS NULL OR late) NOT VALID"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE payments DROP COLUMN late_accepted_at")
