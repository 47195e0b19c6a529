"""chains: follower cursor, block window, observations exactly once, events, reorgs; rails:
payment intents and deposit addresses

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

Design: docs/design/0003-evm-rail.md. Hashes and addresses are lower-case 0x hex text (the
form JSON-RPC returns), checked by CHECK constraints so that no mixed-case duplicate can
slip past a unique index.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- length + an unbounded class, not `{64}`: PostgreSQL's regex engine expands a counted
-- repetition into that many states, which made these checks 11x slower (0.8 vs 9 us) and
-- the largest single cost of ingesting a range.
CREATE DOMAIN evm_hash AS text CHECK (length(VALUE) = 66 AND VALUE ~ '^0x[0-9a-f]+$');
CREATE DOMAIN evm_address AS text CHECK (length(VALUE) = 42 AND VALUE ~ '^0x[0-9a-f]+$');

CREATE TABLE chain_cursors (
    chain_id bigint PRIMARY KEY,
    block_number bigint NOT NULL CHECK (block_number >= -1),
    block_hash evm_hash,  -- NULL only before the first block (-1)
    -- The look-alike scan (monitoring, not money) trails the follower and catches up when
    -- it is idle at the head: the last block it checked.
    lookalike_block bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every block the follower processed (canonical at the time): parent-hash continuity and
-- the reorg walk-back read its recent end.
CREATE TABLE chain_blocks (
    chain_id bigint NOT NULL,
    number bigint NOT NULL CHECK (number >= 0),
    hash evm_hash NOT NULL,
    parent_hash evm_hash NOT NULL,
    timestamp_s bigint NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, number)
);

-- Addresses whose incoming token transfers count (deposit addresses, registered by rails).
CREATE TABLE chain_watched_addresses (
    chain_id bigint NOT NULL,
    address evm_address NOT NULL,
    owner_ref text NOT NULL CHECK (length(owner_ref) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, address)
);
CREATE INDEX ix_chain_watched_recent ON chain_watched_addresses (chain_id, created_at DESC);

CREATE TABLE chain_observations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id bigint NOT NULL,
    tx_hash evm_hash NOT NULL,
    log_index integer NOT NULL CHECK (log_index >= 0),
    block_number bigint NOT NULL,
    block_hash evm_hash NOT NULL,
    kind text NOT NULL CHECK (kind IN ('transfer', 'intent_paid')),
    token evm_address NOT NULL,
    from_address evm_address NOT NULL,
    to_address evm_address NOT NULL,
    amount numeric(78, 0) NOT NULL CHECK (amount >= 0 AND amount < 2::numeric ^ 256),
    fee numeric(78, 0) NOT NULL DEFAULT 0 CHECK (fee >= 0),
    intent_id evm_hash,
    owner_ref text,
    status text NOT NULL CHECK (status IN ('seen', 'confirmed', 'orphaned')),
    needs_review boolean NOT NULL DEFAULT false,
    generation integer NOT NULL DEFAULT 1,  -- +1 each time a re-included log revives it
    seen_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    -- The generation in which the log was first confirmed: set once, never again, so a log
    -- is reported confirmed at most once whatever reorgs revive it.
    confirmed_generation integer CHECK (confirmed_generation BETWEEN 1 AND generation),
    CONSTRAINT one_observation_per_log UNIQUE (chain_id, tx_hash, log_index),
    CONSTRAINT intent_has_id CHECK ((kind = 'intent_paid') = (intent_id IS NOT NULL)),
    CONSTRAINT confirmed_has_time CHECK ((status = 'confirmed') <= (confirmed_at IS NOT NULL)),
    CONSTRAINT confirmed_has_generation CHECK ((status = 'confirmed') <= (confirmed_generation IS NOT NULL))
);
-- Observations are history: corrected by status (orphaned, needs_review), never deleted,
-- which is what lets chain_events reference them without a per-row foreign-key check.
CREATE FUNCTION chain_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'chain observations are never deleted: they change status instead' USING ERRCODE = 'CH001';
END $$;
CREATE TRIGGER chain_observations_no_delete BEFORE DELETE ON chain_observations
    FOR EACH ROW EXECUTE FUNCTION chain_refuse_delete();

CREATE INDEX ix_chain_observations_block ON chain_observations (chain_id, block_number);
CREATE INDEX ix_chain_observations_unconfirmed ON chain_observations (chain_id, block_number) WHERE status = 'seen';
CREATE INDEX ix_chain_observations_owner ON chain_observations (owner_ref) WHERE owner_ref IS NOT NULL;
CREATE INDEX ix_chain_observations_intent ON chain_observations (intent_id) WHERE intent_id IS NOT NULL;

-- The rare events that take something back, for review: a seen log orphaned, a confirmed
-- one orphaned by a reorg deeper than the depth. (Seen and confirmed are recorded on the
-- observation row itself: its generation and confirmed_generation.)
CREATE TABLE chain_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id bigint NOT NULL,
    observation_id bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('orphaned', 'deep_reorg')),
    generation integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT one_event_per_generation UNIQUE (observation_id, kind, generation)
);

CREATE TABLE chain_reorgs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain_id bigint NOT NULL,
    fork_block bigint NOT NULL,
    depth integer NOT NULL CHECK (depth >= 1),
    deep boolean NOT NULL,
    orphaned_observations integer NOT NULL,
    orphaned_confirmed integer NOT NULL,
    reviewed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rails_intents (
    id evm_hash PRIMARY KEY,
    chain_id bigint NOT NULL,
    router evm_address NOT NULL,
    token evm_address NOT NULL,
    amount numeric(78, 0) NOT NULL CHECK (amount > 0),
    fee numeric(78, 0) NOT NULL CHECK (fee >= 0 AND fee <= amount),
    recipient evm_address NOT NULL,
    fee_recipient evm_address NOT NULL,
    deadline_s bigint NOT NULL,
    owner_ref text NOT NULL,
    signature text NOT NULL,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid')),
    paid_observation_id bigint REFERENCES chain_observations (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT paid_has_observation CHECK ((status = 'paid') = (paid_observation_id IS NOT NULL))
);

CREATE TABLE rails_deposit_addresses (
    chain_id bigint NOT NULL,
    address evm_address NOT NULL,
    salt evm_hash NOT NULL,
    factory evm_address NOT NULL,
    owner_ref text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, address),
    CONSTRAINT one_address_per_owner UNIQUE (chain_id, owner_ref)
);
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    for table in (
        "rails_deposit_addresses",
        "rails_intents",
        "chain_reorgs",
        "chain_events",
        "chain_observations",
        "chain_watched_addresses",
        "chain_blocks",
        "chain_cursors",
    ):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP FUNCTION chain_refuse_delete()")
    op.execute("DROP DOMAIN evm_address")
    op.execute("DROP DOMAIN evm_hash")
