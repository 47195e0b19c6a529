"""ledger: balance rows keep room on their page for their next versions (fillfactor 10)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-25

Design: docs/design/0002-ledger.md ("Performance"). Every transfer updates two balance
rows; a 1000-transfer batch updates most accounts of its asset at once. An update that
finds no room on the row's page writes the new version elsewhere and adds an entry to
each of the table's four indexes (not a HOT update), and the table and its indexes grow:
after one bench run (autovacuum off on that server) ledger_accounts held 1001 rows in
3105 pages. A page can only reclaim a dead version once no running transaction can still
see it, so with eight writers several versions of each row stay alive at once; at the
default fillfactor of 100 a page of ~45 rows has no room for them.

At fillfactor 10 a page starts with ~5 rows and keeps the rest free for their newer
versions. Nine measurements (single, batched, hot, three times), 8 clients, each on a
fresh database with the table vacuumed before each, as pgbench vacuums its own:
batched 11 494-23 254 -> 22 434-29 992 transfers/s in the same sitting, single and hot
within the noise; the table ended at 266 pages instead of 1347.

The cost is space: a balance row takes ~125 bytes of a page, ~6 rows to a page at this
setting, so 1000 accounts take ~1.4 MB instead of ~0.15 MB. Rows that exist already keep their packing until the table is rewritten
(VACUUM FULL, or pg_repack online); new rows and pages follow the setting at once.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BALANCE_FILLFACTOR = 10


def upgrade() -> None:
    op.execute(f"ALTER TABLE ledger_accounts SET (fillfactor = {BALANCE_FILLFACTOR})")


def downgrade() -> None:
    op.execute("ALTER TABLE ledger_accounts RESET (fillfactor)")
