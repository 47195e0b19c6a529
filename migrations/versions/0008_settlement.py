"""settlement: the transaction manager (intents, attempts, nonces), payout destinations
with their audit trail, payouts, refunds, settlement schedules and records, sweeps

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

Design: docs/design/0006-settlement.md. An outgoing transaction is a `tx_intents` row
before it is anything else; its signed attempts are stored before they are broadcast.
`UNIQUE (chain_id, signer, nonce)` and `UNIQUE (owner_ref)` are the exactly-once
guarantees: one nonce never carries two intents, and one payout, refund, batch or sweep
never gets two transactions.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- The nonce authority: one row per (chain, signer), locked to allocate.
CREATE TABLE tx_signers (
    chain_id bigint NOT NULL,
    signer text NOT NULL CHECK (signer ~ '^0x[0-9a-f]{40}$'),
    next_nonce bigint NOT NULL CHECK (next_nonce >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, signer)
);

CREATE TABLE tx_intents (
    id text PRIMARY KEY,  -- txi_…
    chain_id bigint NOT NULL,
    signer text NOT NULL CHECK (signer ~ '^0x[0-9a-f]{40}$'),
    purpose text NOT NULL CHECK (purpose IN ('payout', 'payout_batch', 'refund', 'sweep', 'allowance')),
    owner_ref text NOT NULL UNIQUE,  -- po_…, re_…, stb_…, swp_…: one transaction per owner
    to_address text NOT NULL CHECK (to_address ~ '^0x[0-9a-f]{40}$'),
    value numeric(78, 0) NOT NULL DEFAULT 0 CHECK (value >= 0),
    data bytea NOT NULL,
    gas_limit bigint NOT NULL CHECK (gas_limit BETWEEN 21000 AND 30000000),
    -- What the transaction takes from the signer's token balance: checked before signing.
    token text CHECK (token ~ '^0x[0-9a-f]{40}$'),
    token_amount numeric(78, 0) NOT NULL DEFAULT 0 CHECK (token_amount >= 0),
    nonce bigint CHECK (nonce >= 0),
    status text NOT NULL DEFAULT 'planned'
        CHECK (status IN ('planned', 'signed', 'broadcast', 'mined', 'confirmed', 'failed', 'canceled')),
    tx_hash text,  -- the attempt that was mined
    block_number bigint,
    block_hash text,
    gas_used bigint,
    error text CHECK (length(error) <= 500),
    fail_unsigned_at timestamptz NOT NULL,  -- a planned intent still unsignable then fails
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chain_id, signer, nonce),
    -- A nonce is owned from signing on; only an intent that never signed has none.
    CONSTRAINT nonce_when_signed CHECK (
        (status IN ('planned', 'canceled') AND nonce IS NULL)
        OR (status IN ('signed', 'broadcast', 'mined', 'confirmed') AND nonce IS NOT NULL)
        OR status = 'failed'),
    CONSTRAINT mined_has_block CHECK (
        (status IN ('mined', 'confirmed')) = (tx_hash IS NOT NULL AND block_number IS NOT NULL)
        OR (status = 'failed' AND tx_hash IS NOT NULL AND block_number IS NOT NULL))
);
CREATE INDEX ix_tx_intents_open ON tx_intents (chain_id, signer, status, created_at)
    WHERE status IN ('planned', 'signed', 'broadcast', 'mined');

CREATE TABLE tx_attempts (
    intent_id text NOT NULL REFERENCES tx_intents (id),
    attempt smallint NOT NULL CHECK (attempt BETWEEN 0 AND 99),
    nonce bigint NOT NULL CHECK (nonce >= 0),
    max_fee_per_gas numeric(78, 0) NOT NULL,
    max_priority_fee_per_gas numeric(78, 0) NOT NULL CHECK (max_priority_fee_per_gas <= max_fee_per_gas),
    raw_tx bytea NOT NULL,
    tx_hash text NOT NULL UNIQUE CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    status text NOT NULL DEFAULT 'signed' CHECK (status IN ('signed', 'broadcast', 'replaced', 'mined')),
    created_at timestamptz NOT NULL DEFAULT now(),
    broadcast_at timestamptz,
    PRIMARY KEY (intent_id, attempt)
);

CREATE FUNCTION settlement_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;

CREATE TABLE payout_destinations (
    id text PRIMARY KEY,  -- dst_…
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    chain_id bigint NOT NULL,
    chain text NOT NULL,
    asset text NOT NULL,  -- ledger asset code, e.g. USDC.base
    address text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    label text CHECK (length(label) <= 200),
    usable_after timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz
);
CREATE INDEX ix_payout_destinations_owner ON payout_destinations (merchant_id, mode, id);
CREATE UNIQUE INDEX ux_payout_destinations_live ON payout_destinations (merchant_id, mode, asset, address)
    WHERE removed_at IS NULL;

-- Who added or removed which address when: never rewritten.
CREATE TABLE payout_destination_events (
    id bigserial PRIMARY KEY,
    destination_id text NOT NULL REFERENCES payout_destinations (id),
    merchant_id text NOT NULL,
    mode text NOT NULL,
    action text NOT NULL CHECK (action IN ('created', 'removed')),
    address text NOT NULL,
    actor text NOT NULL,  -- the API key id (or 'cli')
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER payout_destination_events_append_only BEFORE UPDATE OR DELETE ON payout_destination_events
    FOR EACH ROW EXECUTE FUNCTION settlement_refuse_change();

CREATE TABLE settlement_records (
    id text PRIMARY KEY,  -- stl_…
    run_id text NOT NULL,
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    asset text NOT NULL,
    gross numeric(78, 0) NOT NULL CHECK (gross >= 0),      -- payments covered, fee included
    payment_fees numeric(78, 0) NOT NULL CHECK (payment_fees >= 0),
    refunds numeric(78, 0) NOT NULL CHECK (refunds >= 0),
    payout_amount numeric(78, 0) NOT NULL CHECK (payout_amount > 0),  -- debited from available
    payout_fee numeric(78, 0) NOT NULL CHECK (payout_fee >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_settlement_records_owner ON settlement_records (merchant_id, mode, id);

-- What a settlement covers; a payment or refund is covered by one live settlement. A
-- settlement whose payout failed releases its items (kept as history) for the next one.
CREATE TABLE settlement_items (
    settlement_id text NOT NULL REFERENCES settlement_records (id),
    kind text NOT NULL CHECK (kind IN ('payment', 'refund')),
    object_id text NOT NULL,
    amount numeric(78, 0) NOT NULL CHECK (amount >= 0),
    fee numeric(78, 0) NOT NULL DEFAULT 0 CHECK (fee >= 0),
    released boolean NOT NULL DEFAULT false,
    PRIMARY KEY (settlement_id, kind, object_id)
);
CREATE UNIQUE INDEX ux_settlement_items_live ON settlement_items (kind, object_id) WHERE NOT released;

CREATE TABLE payouts (
    id text PRIMARY KEY,  -- po_…
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    destination_id text NOT NULL REFERENCES payout_destinations (id),
    chain_id bigint NOT NULL,
    asset text NOT NULL,
    address text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    amount numeric(78, 0) NOT NULL CHECK (amount > 0),  -- debited from the available balance
    fee numeric(78, 0) NOT NULL CHECK (fee >= 0 AND fee < amount),  -- the destination gets amount - fee
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'broadcast', 'paid', 'failed', 'canceled')),
    tx_intent_id text NOT NULL REFERENCES tx_intents (id),
    settlement_id text REFERENCES settlement_records (id),
    tx_hash text,
    failure_code text,
    description text CHECK (length(description) <= 1000),
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_payouts_owner ON payouts (merchant_id, mode, id);
CREATE INDEX ix_payouts_intent ON payouts (tx_intent_id);

CREATE TABLE refunds (
    id text PRIMARY KEY,  -- re_…
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    payment_id text NOT NULL REFERENCES payments (id),
    chain_id bigint NOT NULL,
    asset text NOT NULL,
    address text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    amount numeric(78, 0) NOT NULL CHECK (amount > 0),
    reason text CHECK (length(reason) <= 500),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'broadcast', 'paid', 'failed', 'canceled')),
    tx_intent_id text NOT NULL REFERENCES tx_intents (id),
    tx_hash text,
    failure_code text,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_refunds_owner ON refunds (merchant_id, mode, id);
CREATE INDEX ix_refunds_payment ON refunds (payment_id);
CREATE INDEX ix_refunds_intent ON refunds (tx_intent_id);

-- When a merchant's balance in an asset is paid out automatically.
CREATE TABLE settlement_schedules (
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    asset text NOT NULL,
    destination_id text NOT NULL REFERENCES payout_destinations (id),
    kind text NOT NULL CHECK (kind IN ('daily', 'threshold')),
    daily_at_utc time,  -- daily: the time of day
    threshold numeric(78, 0) CHECK (threshold > 0),  -- threshold: pay out once available reaches it
    minimum numeric(78, 0) NOT NULL DEFAULT 1 CHECK (minimum > 0),
    last_run_on date,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, mode, asset),
    CONSTRAINT kind_has_parameter CHECK (
        (kind = 'daily' AND daily_at_utc IS NOT NULL) OR (kind = 'threshold' AND threshold IS NOT NULL))
);

CREATE TABLE sweeps (
    id text PRIMARY KEY,  -- swp_…
    chain_id bigint NOT NULL,
    tx_intent_id text NOT NULL REFERENCES tx_intents (id),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'swept', 'failed')),
    items jsonb NOT NULL,  -- [{address, salt, token, asset, amount}]
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_sweeps_intent ON sweeps (tx_intent_id);

-- Payout fee schedules live beside the payment ones.
ALTER TABLE payment_fee_schedules DROP CONSTRAINT payment_fee_schedules_rail_check;
ALTER TABLE payment_fee_schedules ADD CONSTRAINT payment_fee_schedules_rail_check
    CHECK (rail IN ('contract', 'deposit_address', 'payout', '*'));
"""

DROP = """
ALTER TABLE payment_fee_schedules DROP CONSTRAINT payment_fee_schedules_rail_check;
DELETE FROM payment_fee_schedules WHERE rail = 'payout';
ALTER TABLE payment_fee_schedules ADD CONSTRAINT payment_fee_schedules_rail_check
    CHECK (rail IN ('contract', 'deposit_address', '*'));
DROP TABLE sweeps;
DROP TABLE settlement_schedules;
DROP TABLE refunds;
DROP TABLE payouts;
DROP TABLE settlement_items;
DROP TABLE settlement_records;
DROP TABLE payout_destination_events;
DROP TABLE payout_destinations;
DROP FUNCTION settlement_refuse_change();
DROP TABLE tx_attempts;
DROP TABLE tx_intents;
DROP TABLE tx_signers;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
