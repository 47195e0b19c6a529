"""payments: payments, their per-asset options (quote + instructions), on-chain receipts,
per-merchant payment settings and fee schedules

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Design: docs/design/0004-payments.md. Amounts are integers in base units (numeric(78,0)
holds any uint256); rates are numeric. The state columns are written only by
payments.service after `payments.state.transition`; CHECKs keep impossible combinations out.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE payments (
    id text PRIMARY KEY,  -- pay_…, time-sortable
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    status text NOT NULL DEFAULT 'requires_payment'
        CHECK (status IN ('requires_payment', 'processing', 'succeeded', 'expired', 'canceled')),
    paid text NOT NULL DEFAULT 'none' CHECK (paid IN ('none', 'underpaid', 'exact', 'overpaid')),
    late boolean NOT NULL DEFAULT false,
    needs_review boolean NOT NULL DEFAULT false,
    amount numeric(78, 0) NOT NULL CHECK (amount > 0),  -- minor units of `currency`
    currency text NOT NULL CHECK (currency ~ '^[A-Z][A-Z0-9]{2,11}$'),
    currency_scale smallint NOT NULL CHECK (currency_scale BETWEEN 0 AND 36),
    amount_received numeric(78, 0) NOT NULL DEFAULT 0 CHECK (amount_received >= 0),
    description text CHECK (length(description) <= 1000),
    metadata jsonb NOT NULL DEFAULT '{}',
    reference text CHECK (length(reference) <= 200),
    success_url text CHECK (length(success_url) <= 2048),
    cancel_url text CHECK (length(cancel_url) <= 2048),
    expires_at timestamptz NOT NULL,
    canceled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT canceled_has_time CHECK ((status = 'canceled') = (canceled_at IS NOT NULL))
);
CREATE INDEX ix_payments_owner_id ON payments (merchant_id, mode, id);
CREATE INDEX ix_payments_owner_status ON payments (merchant_id, mode, status, id);
CREATE INDEX ix_payments_owner_reference ON payments (merchant_id, mode, reference, id) WHERE reference IS NOT NULL;
-- The expiry job's queue: only open, unpaid payments are candidates.
CREATE INDEX ix_payments_due_to_expire ON payments (expires_at) WHERE status = 'requires_payment';

-- One row per accepted (chain, token): its quote, fee terms fixed at quote time, and the
-- two ways to pay it.
CREATE TABLE payment_options (
    payment_id text NOT NULL REFERENCES payments (id),
    position smallint NOT NULL CHECK (position BETWEEN 0 AND 19),
    chain_id bigint NOT NULL,
    chain text NOT NULL,
    symbol text NOT NULL,
    asset text NOT NULL,  -- the ledger's asset code, e.g. USDC.base
    token evm_address NOT NULL,
    decimals smallint NOT NULL CHECK (decimals BETWEEN 0 AND 36),
    token_amount numeric(78, 0) NOT NULL CHECK (token_amount > 0),
    rate numeric NOT NULL CHECK (rate > 0),  -- price currency per token, before the spread
    rate_source text NOT NULL,
    rate_as_of timestamptz NOT NULL,
    spread_bps integer NOT NULL CHECK (spread_bps BETWEEN 0 AND 1000),
    quote_expires_at timestamptz NOT NULL,
    fee_bps integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    fee_fixed numeric(78, 0) NOT NULL CHECK (fee_fixed >= 0),
    fee_minimum numeric(78, 0) NOT NULL CHECK (fee_minimum >= 0),
    fee_maximum numeric(78, 0) CHECK (fee_maximum >= fee_minimum),
    deposit_address evm_address NOT NULL,
    intent_id evm_hash,  -- NULL when the chain has no router
    intent jsonb,  -- the signed intent as shown to the payer
    PRIMARY KEY (payment_id, position),
    CONSTRAINT uq_payment_options_chain_token UNIQUE (payment_id, chain_id, token),
    CONSTRAINT uq_payment_options_intent UNIQUE (intent_id)
);

-- What arrived on chain for a payment, one row per observation (exactly once: the
-- observation's id is the key). Status follows the follower's events.
CREATE TABLE payment_receipts (
    observation_id bigint PRIMARY KEY,
    payment_id text NOT NULL REFERENCES payments (id),
    position smallint NOT NULL,
    rail text NOT NULL CHECK (rail IN ('contract', 'deposit_address')),
    chain_id bigint NOT NULL,
    tx_hash evm_hash NOT NULL,
    log_index integer NOT NULL,
    block_number bigint NOT NULL,
    from_address evm_address NOT NULL,
    amount numeric(78, 0) NOT NULL CHECK (amount > 0),  -- token base units, fee included
    fee numeric(78, 0) NOT NULL CHECK (fee >= 0 AND fee <= amount),
    status text NOT NULL CHECK (status IN ('seen', 'confirmed', 'orphaned', 'reorged')),
    generation integer NOT NULL,
    late boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (payment_id, position) REFERENCES payment_options (payment_id, position),
    CONSTRAINT uq_payment_receipts_log UNIQUE (chain_id, tx_hash, log_index)
);
CREATE INDEX ix_payment_receipts_payment ON payment_receipts (payment_id, observation_id);

-- Per-merchant defaults; a merchant without a row uses the platform's settings.
CREATE TABLE payment_profiles (
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    spread_bps integer NOT NULL CHECK (spread_bps BETWEEN 0 AND 1000),
    accepted text[] NOT NULL DEFAULT '{}',  -- 'chain:SYMBOL'; empty: every configured one
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, mode)
);

-- Fee schedules by (rail, asset); '*' matches any. The most specific row wins.
CREATE TABLE payment_fee_schedules (
    merchant_id text NOT NULL REFERENCES merchants (id),
    mode text NOT NULL CHECK (mode IN ('test', 'live')),
    rail text NOT NULL CHECK (rail IN ('contract', 'deposit_address', '*')),
    asset text NOT NULL,
    bps integer NOT NULL CHECK (bps BETWEEN 0 AND 10000),
    fixed numeric(78, 0) NOT NULL DEFAULT 0 CHECK (fixed >= 0),
    minimum numeric(78, 0) NOT NULL DEFAULT 0 CHECK (minimum >= 0),
    maximum numeric(78, 0) CHECK (maximum >= minimum),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, mode, rail, asset),
    -- A fixed amount is in some asset's base units: only meaningful for one asset.
    CONSTRAINT fixed_needs_asset CHECK (asset <> '*' OR (fixed = 0 AND minimum = 0 AND maximum IS NULL))
);
"""

DROP = """
DROP TABLE payment_fee_schedules;
DROP TABLE payment_profiles;
DROP TABLE payment_receipts;
DROP TABLE payment_options;
DROP TABLE payments;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
