"""chains: observations keep hashes and addresses as bytes; two unused indexes go

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25

Design: docs/design/0003-evm-rail.md ("Data model", "Performance"). The follower writes
one `chain_observations` row per log, thousands per range, and the row's cost was the
ingest's largest: five hex-text columns with a regex domain check each, and a unique
index over 66-character text. As `bytea` (32-byte hashes, 20-byte addresses) a row is
~130 bytes smaller, its unique index half the size, and its checks a length compare:
inserting 20 000 observations took 190–230 ms instead of 340–390 ms on the same server.

Nothing outside `chains.repository` reads the table; it converts at the boundary (bytes
staged from Python, `evm_hex` below on the way out), so every other domain still sees
lower-case 0x text.
`ix_chain_observations_owner` and `ix_chain_observations_intent` served no query (the
payments domain finds its receipts by observation id, rails its intents by their own
table) and cost an index entry per log. A small partial index of orphaned observations
lets the follower tell a fresh range (plain INSERT) from one that may revive some (ON
CONFLICT, which costs a speculative insertion per row).
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

HEX_COLUMNS = {"tx_hash": 32, "block_hash": 32, "token": 20, "from_address": 20, "to_address": 20}

FUNCTIONS = r"""
-- 0x text -> bytes, NULL unless the text is 0x-prefixed hex (decode raises on
-- non-hex digits): the NOT NULL and length checks of the column then refuse it. Used by
-- this upgrade, by the repository's reads (evm_hex) and by hand in SQL. Plain SQL
-- functions that the planner inlines, so a statement over many rows pays no function
-- call per value; not STRICT, which would stop the inlining (a CASE is not provably
-- strict): declared STRICT, an upsert of 20 000 rows through them took 1.2-1.5 s instead
-- of 0.6-0.9 s. NULL in gives NULL out all the same.
CREATE FUNCTION evm_bytes(text) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN left($1, 2) = '0x' THEN decode(substr($1, 3), 'hex') END
$$;
CREATE FUNCTION evm_hex(bytea) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '0x' || encode($1, 'hex')
$$;
"""


def upgrade() -> None:
    op.execute(FUNCTIONS)
    op.execute("DROP INDEX ix_chain_observations_owner")
    op.execute("DROP INDEX ix_chain_observations_intent")
    changes = ", ".join(f"ALTER COLUMN {c} TYPE bytea USING evm_bytes({c})" for c in HEX_COLUMNS)
    op.execute(f"ALTER TABLE chain_observations {changes}")
    checks = ", ".join(
        f"ADD CONSTRAINT chain_observations_{c}_length CHECK (octet_length({c}) = {n})" for c, n in HEX_COLUMNS.items()
    )
    op.execute(f"ALTER TABLE chain_observations {checks}")
    # Orphaned observations, for the follower's "is this range fresh" check (rare rows).
    op.execute(
        "CREATE INDEX ix_chain_observations_orphaned ON chain_observations (chain_id, tx_hash)"
        " WHERE status = 'orphaned'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_chain_observations_orphaned")
    checks = ", ".join(f"DROP CONSTRAINT chain_observations_{c}_length" for c in HEX_COLUMNS)
    op.execute(f"ALTER TABLE chain_observations {checks}")
    changes = ", ".join(
        f"ALTER COLUMN {c} TYPE {'evm_hash' if n == 32 else 'evm_address'} USING evm_hex({c})"
        for c, n in HEX_COLUMNS.items()
    )
    op.execute(f"ALTER TABLE chain_observations {changes}")
    op.execute("CREATE INDEX ix_chain_observations_owner ON chain_observations (owner_ref) WHERE owner_ref IS NOT NULL")
    op.execute(
        "CREATE INDEX ix_chain_observations_intent ON chain_observations (intent_id) WHERE intent_id IS NOT NULL"
    )
    op.execute("DROP FUNCTION evm_hex(bytea)")
    op.execute("DROP FUNCTION evm_bytes(text)")
