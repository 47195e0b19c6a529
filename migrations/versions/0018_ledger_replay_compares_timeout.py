"""ledger: a replay must ask for the same timeout (timeout_s stored)

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-25

Design: docs/design/0002-ledger.md ("Idempotency"). A transfer id replayed with the same
fields returns the original; with different fields it is refused (LG020). The timeout of
a pending transfer was not among the compared fields: the journal kept only `timeout_at`,
the request's clock plus its `timeout_s`, which a replay cannot reproduce. So `hold 100
for 60 s` replayed as `hold 100 for 90 days` answered as a replay, and the caller believed
in a reservation that would lapse in a minute.

The journal now stores the requested `timeout_s` beside `timeout_at`, and the three
functions that insert transfers (one transfer, a plain batch, the stepwise batch) compare
it like every other field. They are the previous revisions' texts with only those edits,
each asserted to apply exactly once (the texts are frozen history).

Rows written before this revision hold no `timeout_s`. A pending one with a timeout
cannot be checked, and a replay of it is compared on its other fields as before
(`ledger_replay_timeout_s`); one without a timeout still refuses a replay that asks for
one. The journal is append-only (its triggers refuse UPDATE), so they are not backfilled.
"""

from __future__ import annotations

from alembic import op

from stablegate.migrations import revision_module

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

COLUMN = """
-- NOT VALID: the column is new, so every stored row satisfies the check; validating would
-- scan the whole journal under this statement's lock, which blocks every posting.
ALTER TABLE ledger_transfers ADD COLUMN timeout_s bigint,
    ADD CONSTRAINT timeout_s_sets_timeout_at CHECK (timeout_s IS NULL OR timeout_at IS NOT NULL) NOT VALID;

-- What a replay's timeout_s is compared with: the stored one, or, for a timed-out-able
-- transfer written before timeout_s was stored, the replay's own (nothing to compare).
CREATE FUNCTION ledger_replay_timeout_s(stored_s bigint, stored_at timestamptz, asked_s bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN stored_s IS NULL AND stored_at IS NOT NULL THEN asked_s ELSE stored_s END
$$;
"""

DROP_COLUMN = """
ALTER TABLE ledger_transfers DROP COLUMN timeout_s;
DROP FUNCTION ledger_replay_timeout_s(bigint, timestamptz, bigint);
"""


def _edited(sql: str, *edits: tuple[str, str]) -> str:
    """`sql` with each (old, new) applied; each `old` must occur exactly once."""
    for old, new in edits:
        assert sql.count(old) == 1, f"expected one {old!r} in a frozen function text"
        sql = sql.replace(old, new)
    return sql


def _one_transfer() -> tuple[str, str]:
    before = revision_module("0014_ledger_single_trigger_checks.py").ONE_TRANSFER_FUNCTION
    after = _edited(
        before,
        ("                                        timeout_at, code, metadata)",
         "                                        timeout_at, timeout_s, code, metadata)"),
        ("            p_code, meta)\n    ON CONFLICT", "            p_timeout_s, p_code, meta)\n    ON CONFLICT"),
        ("            existing.code, existing.metadata, existing.pending_id)",
         "            existing.code, existing.metadata, existing.pending_id,\n"
         "            ledger_replay_timeout_s(existing.timeout_s, existing.timeout_at, p_timeout_s))"),
        ("p_code, meta, NULL::text) THEN", "p_code, meta, NULL::text, p_timeout_s) THEN"),
    )
    return before, after


def _plain_batch() -> tuple[str, str]:
    before = revision_module("0013_ledger_account_check_once.py").PLAIN_FUNCTION
    asked = "(x.value->>'timeout_s')::bigint"
    after = _edited(
        before,
        ("                                            timeout_at, code, metadata)",
         "                                            timeout_at, timeout_s, code, metadata)"),
        ("               i.code, coalesce(i.metadata, '{}'::jsonb)",
         "               i.timeout_s, i.code, coalesce(i.metadata, '{}'::jsonb)"),
        ("t.code, t.metadata, t.pending_id)",
         f"t.code, t.metadata, t.pending_id,\n           ledger_replay_timeout_s(t.timeout_s, t.timeout_at, {asked}))"),
        ("coalesce(x.value->'metadata', '{}'::jsonb), NULL::text)",
         f"coalesce(x.value->'metadata', '{{}}'::jsonb), NULL::text, {asked})"),
    )
    return before, after


def _stepwise_batch() -> tuple[str, str]:
    locking = revision_module("0004_ledger_locking.py")
    before = locking._relocked(revision_module("0003_ledger.py").POST_FUNCTION, expected=1)
    asked = "(t.v->>'timeout_s')::bigint"
    after = _edited(
        before,
        ("pending_id, timeout_at, code, metadata)", "pending_id, timeout_at, timeout_s, code, metadata)"),
        ("                (t.v->>'code')::integer, coalesce(t.v->'metadata', '{}'::jsonb))\n        ON CONFLICT",
         f"                {asked}, (t.v->>'code')::integer, coalesce(t.v->'metadata', '{{}}'::jsonb))\n"
         "        ON CONFLICT"),
        ("               OR existing.pending_id IS DISTINCT FROM t.v->>'pending_id'",
         "               OR existing.pending_id IS DISTINCT FROM t.v->>'pending_id'\n"
         f"               OR ledger_replay_timeout_s(existing.timeout_s, existing.timeout_at, {asked})\n"
         f"                  IS DISTINCT FROM {asked}"),
    )
    return before, after


FUNCTIONS = (_one_transfer, _plain_batch, _stepwise_batch)


def upgrade() -> None:
    op.execute(COLUMN)
    for function in FUNCTIONS:
        op.execute(function()[1])


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(function()[0])
    op.execute(DROP_COLUMN)
