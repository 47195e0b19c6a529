"""ledger: assets, accounts with CHECK-enforced flags, append-only transfers, posting function

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Design: docs/design/0002-ledger.md. Errors raised by the functions carry SQLSTATEs of our
own class `LG` (mapped to error codes in stablegate/ledger/repository.py).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = r"""
CREATE TABLE ledger_assets (
    code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9]{1,11}(\.[a-z0-9-]{1,24})?$'),
    kind text NOT NULL CHECK (kind IN ('fiat', 'token')),
    scale smallint NOT NULL CHECK (scale BETWEEN 0 AND 36),
    chain_id bigint,
    contract text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT token_has_chain CHECK ((kind = 'token') = (chain_id IS NOT NULL AND contract IS NOT NULL)),
    CONSTRAINT one_code_per_contract UNIQUE (chain_id, contract)
);

CREATE TABLE ledger_accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 200),
    asset text NOT NULL REFERENCES ledger_assets (code),
    type text NOT NULL CHECK (type IN ('asset', 'liability', 'equity', 'income', 'expense')),
    merchant_id text,
    mode text CHECK (mode IN ('test', 'live')),
    flags integer NOT NULL DEFAULT 0 CHECK (flags BETWEEN 0 AND 3),
    debits_pending numeric(78, 0) NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted numeric(78, 0) NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending numeric(78, 0) NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted numeric(78, 0) NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    closed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The flags are enforced here, on the balance row itself: no code path can break them.
    CONSTRAINT debits_must_not_exceed_credits
        CHECK (flags & 1 = 0 OR debits_posted + debits_pending <= credits_posted),
    CONSTRAINT credits_must_not_exceed_debits
        CHECK (flags & 2 = 0 OR credits_posted + credits_pending <= debits_posted),
    CONSTRAINT id_asset UNIQUE (id, asset)
);
CREATE INDEX ix_ledger_accounts_merchant ON ledger_accounts (merchant_id, mode) WHERE merchant_id IS NOT NULL;

CREATE TABLE ledger_transfers (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE CHECK (length(id) BETWEEN 1 AND 128),
    public_id text NOT NULL UNIQUE,
    debit_account bigint NOT NULL,
    credit_account bigint NOT NULL,
    asset text NOT NULL,
    amount numeric(78, 0) NOT NULL CHECK (amount > 0 AND amount < 2::numeric ^ 256),
    kind text NOT NULL CHECK (kind IN ('posted', 'pending', 'post', 'void', 'expire')),
    pending_id text REFERENCES ledger_transfers (id),
    timeout_at timestamptz,
    code integer NOT NULL CHECK (code BETWEEN 0 AND 65535),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Both sides hold the transfer's asset: enforced by the database, not by hope.
    FOREIGN KEY (debit_account, asset) REFERENCES ledger_accounts (id, asset),
    FOREIGN KEY (credit_account, asset) REFERENCES ledger_accounts (id, asset),
    CONSTRAINT distinct_accounts CHECK (debit_account <> credit_account),
    CONSTRAINT resolution_names_pending CHECK ((kind IN ('post', 'void', 'expire')) = (pending_id IS NOT NULL)),
    CONSTRAINT only_pending_times_out CHECK (timeout_at IS NULL OR kind = 'pending')
);
-- A pending transfer is resolved (posted, voided or expired) at most once.
CREATE UNIQUE INDEX ux_ledger_transfers_resolution ON ledger_transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX ix_ledger_transfers_debit ON ledger_transfers (debit_account, seq);
CREATE INDEX ix_ledger_transfers_credit ON ledger_transfers (credit_account, seq);
CREATE INDEX ix_ledger_transfers_timeout ON ledger_transfers (timeout_at) WHERE timeout_at IS NOT NULL;
"""

GUARDS = r"""
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_transfers is append-only: write a reversing transfer instead'
        USING ERRCODE = 'LG001';
END $$;

CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transfers_no_truncate BEFORE TRUNCATE ON ledger_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE FUNCTION ledger_refuse_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.debits_pending, NEW.debits_posted, NEW.credits_pending, NEW.credits_posted)
       IS DISTINCT FROM (OLD.debits_pending, OLD.debits_posted, OLD.credits_pending, OLD.credits_posted) THEN
        RAISE EXCEPTION 'account % is closed', OLD.code USING ERRCODE = 'LG012';
    END IF;
    RETURN NEW;
END $$;

-- WHEN keeps the trigger off the hot path: it only runs for accounts already closed.
CREATE TRIGGER ledger_accounts_closed BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW WHEN (OLD.closed_at IS NOT NULL) EXECUTE FUNCTION ledger_refuse_closed();
"""

POST_FUNCTION = r"""
-- The general path, transfer by transfer, for batches that post, void or expire pending
-- transfers (each resolution needs its pending row). See ledger_create_transfers.
CREATE FUNCTION ledger_create_transfers_stepwise(batch jsonb)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    p record;
    existing record;
    acc_ids bigint[];
    found_ids bigint[];
    debit_acc bigint;
    credit_acc bigint;
    xfer_asset text;
    amt numeric;
    release numeric;
    new_seq bigint;
BEGIN
    -- Pass 1: every account the batch touches (resolutions take the pending's accounts),
    -- locked in id order so that concurrent batches never deadlock on each other.
    SELECT array_agg(DISTINCT a) INTO acc_ids FROM (
        SELECT (x->>'debit_account')::bigint AS a FROM jsonb_array_elements(batch) x WHERE x->>'pending_id' IS NULL
        UNION ALL
        SELECT (x->>'credit_account')::bigint FROM jsonb_array_elements(batch) x WHERE x->>'pending_id' IS NULL
        UNION ALL
        SELECT unnest(ARRAY[lt.debit_account, lt.credit_account]) FROM ledger_transfers lt
            WHERE lt.id = ANY (ARRAY(SELECT x->>'pending_id' FROM jsonb_array_elements(batch) x))
    ) s WHERE a IS NOT NULL;
    SELECT array_agg(id ORDER BY id) INTO found_ids FROM (
        SELECT la.id FROM ledger_accounts la WHERE la.id = ANY (acc_ids) ORDER BY la.id FOR UPDATE
    ) locked;
    IF coalesce(cardinality(found_ids), 0) <> coalesce(cardinality(acc_ids), 0) THEN
        RAISE EXCEPTION 'unknown account: %',
            (SELECT min(a) FROM unnest(acc_ids) a WHERE a <> ALL (coalesce(found_ids, '{}')))
            USING ERRCODE = 'LG010';
    END IF;

    -- Pass 2: validate, insert, move balances, in input order.
    FOR t IN SELECT x.value AS v, x.ordinality AS n FROM jsonb_array_elements(batch) WITH ORDINALITY x LOOP
        IF t.v->>'pending_id' IS NULL THEN
            debit_acc := (t.v->>'debit_account')::bigint;
            credit_acc := (t.v->>'credit_account')::bigint;
            xfer_asset := t.v->>'asset';
            amt := (t.v->>'amount')::numeric;
            release := 0;
        ELSE
            SELECT * INTO p FROM ledger_transfers WHERE id = t.v->>'pending_id';
            IF NOT FOUND OR p.kind <> 'pending' THEN
                RAISE EXCEPTION 'no pending transfer %', t.v->>'pending_id' USING ERRCODE = 'LG021';
            END IF;
            -- Resolved already (by another transfer): say so before anything else. A replay
            -- of the resolution itself is an idempotent no-op further down.
            IF EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = p.id AND r.id <> t.v->>'id') THEN
                RAISE EXCEPTION 'pending transfer % is already resolved', p.id USING ERRCODE = 'LG022';
            END IF;
            debit_acc := p.debit_account;
            credit_acc := p.credit_account;
            xfer_asset := p.asset;
            release := p.amount;
            amt := coalesce((t.v->>'amount')::numeric, p.amount);
            IF t.v->>'kind' <> 'post' THEN
                amt := p.amount;
            ELSIF amt > p.amount THEN
                RAISE EXCEPTION 'cannot post % of a pending %', amt, p.amount USING ERRCODE = 'LG024';
            END IF;
        END IF;

        INSERT INTO ledger_transfers AS lt (id, public_id, debit_account, credit_account, asset, amount, kind,
                                            pending_id, timeout_at, code, metadata)
        VALUES (t.v->>'id', t.v->>'public_id', debit_acc, credit_acc, xfer_asset, amt, t.v->>'kind',
                t.v->>'pending_id',
                CASE WHEN t.v->>'timeout_s' IS NULL THEN NULL
                     ELSE clock_timestamp() + make_interval(secs => (t.v->>'timeout_s')::bigint) END,
                (t.v->>'code')::integer, coalesce(t.v->'metadata', '{}'::jsonb))
        ON CONFLICT (id) DO NOTHING
        RETURNING lt.seq INTO new_seq;

        IF new_seq IS NULL THEN
            SELECT * INTO existing FROM ledger_transfers WHERE id = t.v->>'id';
            IF existing.kind <> t.v->>'kind' OR existing.debit_account <> debit_acc
               OR existing.credit_account <> credit_acc OR existing.asset <> xfer_asset
               OR existing.amount <> amt OR existing.code <> (t.v->>'code')::integer
               OR existing.pending_id IS DISTINCT FROM t.v->>'pending_id'
               OR existing.metadata <> coalesce(t.v->'metadata', '{}'::jsonb) THEN
                RAISE EXCEPTION 'transfer % exists with different fields', existing.id USING ERRCODE = 'LG020';
            END IF;
            ord := t.n; transfer_id := existing.id; public_id := existing.public_id; seq := existing.seq;
            created := false;
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF t.v->>'pending_id' IS NOT NULL THEN
            IF t.v->>'kind' = 'expire' THEN
                IF p.timeout_at IS NULL OR p.timeout_at > clock_timestamp() THEN
                    RAISE EXCEPTION 'pending transfer % has not timed out', p.id USING ERRCODE = 'LG025';
                END IF;
            ELSIF p.timeout_at IS NOT NULL AND p.timeout_at <= clock_timestamp() THEN
                RAISE EXCEPTION 'pending transfer % expired at %', p.id, p.timeout_at USING ERRCODE = 'LG023';
            END IF;
        END IF;

        CASE t.v->>'kind'
        WHEN 'posted' THEN
            UPDATE ledger_accounts SET debits_posted = debits_posted + amt WHERE id = debit_acc;
            UPDATE ledger_accounts SET credits_posted = credits_posted + amt WHERE id = credit_acc;
        WHEN 'pending' THEN
            UPDATE ledger_accounts SET debits_pending = debits_pending + amt WHERE id = debit_acc;
            UPDATE ledger_accounts SET credits_pending = credits_pending + amt WHERE id = credit_acc;
        WHEN 'post' THEN
            UPDATE ledger_accounts SET debits_pending = debits_pending - release,
                                       debits_posted = debits_posted + amt WHERE id = debit_acc;
            UPDATE ledger_accounts SET credits_pending = credits_pending - release,
                                       credits_posted = credits_posted + amt WHERE id = credit_acc;
        ELSE  -- void, expire
            UPDATE ledger_accounts SET debits_pending = debits_pending - release WHERE id = debit_acc;
            UPDATE ledger_accounts SET credits_pending = credits_pending - release WHERE id = credit_acc;
        END CASE;

        ord := t.n; transfer_id := t.v->>'id'; public_id := t.v->>'public_id'; seq := new_seq; created := true;
        RETURN NEXT;
    END LOOP;
END $$;
"""


PLAIN_FUNCTION = r"""
-- The fast path for batches of plain (posted or pending) transfers, set-based: one lock
-- statement, one INSERT, one UPDATE per touched account with the batch's summed deltas.
-- Flags are checked on each account's balance after the whole batch (a linked batch is
-- one atomic movement).
CREATE FUNCTION ledger_create_plain_transfers(batch jsonb)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint[];
    ids text[];
    locked_count integer;
    inserted text[];
    mismatch text;
BEGIN
    -- Lookups below go through these arrays (`= ANY`), never a join against a set-returning
    -- function: a cached generic plan would guess its row count and may scan whole tables.
    SELECT array_agg(x->>'id') INTO ids FROM jsonb_array_elements(batch) x;
    SELECT array_agg(DISTINCT a) INTO wanted FROM (
        SELECT (x->>'debit_account')::bigint FROM jsonb_array_elements(batch) x
        UNION ALL
        SELECT (x->>'credit_account')::bigint FROM jsonb_array_elements(batch) x
    ) s(a);
    PERFORM 1 FROM ledger_accounts la WHERE la.id = ANY (wanted) ORDER BY la.id FOR UPDATE;
    GET DIAGNOSTICS locked_count = ROW_COUNT;
    IF locked_count <> cardinality(wanted) THEN
        RAISE EXCEPTION 'unknown account: %',
            (SELECT min(w) FROM unnest(wanted) w WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts la WHERE la.id = w))
            USING ERRCODE = 'LG010';
    END IF;
    -- Checked here, before any balance moves, so that the answer does not depend on
    -- whether the foreign key (end of statement) or a flag (per row) would fire first.
    -- Index probes on (id, asset): a join here can degrade into a nested loop of n².
    SELECT x.id INTO mismatch
    FROM jsonb_to_recordset(batch) AS x(id text, debit_account bigint, credit_account bigint, asset text)
    WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = x.debit_account AND a.asset = x.asset)
       OR NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = x.credit_account AND a.asset = x.asset)
    LIMIT 1;
    IF mismatch IS NOT NULL THEN
        RAISE EXCEPTION 'transfer %: accounts do not hold its asset', mismatch USING ERRCODE = 'LG011';
    END IF;

    WITH input AS (
        SELECT * FROM jsonb_to_recordset(batch) AS x(id text, public_id text, kind text, debit_account bigint,
            credit_account bigint, asset text, amount numeric, timeout_s bigint, code integer, metadata jsonb)
    ), ins AS (
        INSERT INTO ledger_transfers AS lt (id, public_id, debit_account, credit_account, asset, amount, kind,
                                            timeout_at, code, metadata)
        SELECT i.id, i.public_id, i.debit_account, i.credit_account, i.asset, i.amount, i.kind,
               CASE WHEN i.timeout_s IS NULL THEN NULL ELSE clock_timestamp() + make_interval(secs => i.timeout_s) END,
               i.code, coalesce(i.metadata, '{}'::jsonb)
        FROM input i
        ON CONFLICT (id) DO NOTHING
        RETURNING lt.id, lt.debit_account, lt.credit_account, lt.amount, lt.kind
    ), moves AS (
        SELECT ins.debit_account AS account, ins.kind, ins.amount AS debit, 0::numeric AS credit FROM ins
        UNION ALL
        SELECT ins.credit_account, ins.kind, 0::numeric, ins.amount FROM ins
    ), deltas AS (
        SELECT m.account,
               coalesce(sum(m.debit) FILTER (WHERE m.kind = 'pending'), 0) AS dp,
               coalesce(sum(m.debit) FILTER (WHERE m.kind = 'posted'), 0) AS dpo,
               coalesce(sum(m.credit) FILTER (WHERE m.kind = 'pending'), 0) AS cp,
               coalesce(sum(m.credit) FILTER (WHERE m.kind = 'posted'), 0) AS cpo
        FROM moves m GROUP BY m.account
    ), moved AS (
        UPDATE ledger_accounts a
        SET debits_pending = a.debits_pending + d.dp, debits_posted = a.debits_posted + d.dpo,
            credits_pending = a.credits_pending + d.cp, credits_posted = a.credits_posted + d.cpo
        FROM deltas d WHERE a.id = d.account AND a.id = ANY (wanted)
        RETURNING a.id
    )
    SELECT array_agg(ins.id) INTO inserted FROM ins;

    -- Ids that already existed must be exact replays (checked after the insert, which also
    -- catches a concurrent first writer of the same id).
    WITH found AS MATERIALIZED (
        SELECT * FROM ledger_transfers lt WHERE lt.id = ANY (ids) AND NOT (lt.id = ANY (coalesce(inserted, '{}')))
    )
    SELECT x.value->>'id' INTO mismatch
    FROM jsonb_array_elements(batch) x
    JOIN found t ON t.id = x.value->>'id'
    WHERE (t.kind, t.debit_account, t.credit_account, t.asset, t.amount, t.code, t.metadata, t.pending_id)
          IS DISTINCT FROM
          (x.value->>'kind', (x.value->>'debit_account')::bigint, (x.value->>'credit_account')::bigint,
           x.value->>'asset', (x.value->>'amount')::numeric, (x.value->>'code')::integer,
           coalesce(x.value->'metadata', '{}'::jsonb), NULL::text)
    LIMIT 1;
    IF mismatch IS NOT NULL THEN
        RAISE EXCEPTION 'transfer % exists with different fields', mismatch USING ERRCODE = 'LG020';
    END IF;

    -- MATERIALIZED: fetch by index (= ANY), then match in memory; a join the planner
    -- could turn into one index scan per input row, each returning the whole array.
    RETURN QUERY
    WITH found AS MATERIALIZED (SELECT lt.id, lt.public_id, lt.seq FROM ledger_transfers lt WHERE lt.id = ANY (ids))
    SELECT u.ord, t.id, t.public_id, t.seq,
           t.id = ANY (coalesce(inserted, '{}')) AND row_number() OVER (PARTITION BY t.id ORDER BY u.ord) = 1
    FROM unnest(ids) WITH ORDINALITY u(id, ord)
    JOIN found t ON t.id = u.id
    ORDER BY u.ord;
END $$;

-- The single plain transfer, the commonest call: typed arguments (callers may skip JSON
-- entirely), scalar statements only, no set work.
CREATE FUNCTION ledger_create_one_transfer(
    p_id text, p_public_id text, p_kind text, debit_acc bigint, credit_acc bigint, xfer_asset text,
    amt numeric, p_timeout_s bigint, p_code integer, p_metadata jsonb
)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    is_pending boolean := p_kind = 'pending';
    meta jsonb := coalesce(p_metadata, '{}'::jsonb);
    assets text[];
    new_seq bigint;
    existing record;
BEGIN
    SELECT array_agg(la.asset ORDER BY la.id) INTO assets
    FROM (SELECT a.id, a.asset FROM ledger_accounts a WHERE a.id IN (debit_acc, credit_acc) ORDER BY a.id FOR UPDATE) la;
    IF coalesce(cardinality(assets), 0) < 2 THEN
        RAISE EXCEPTION 'unknown account: %',
            CASE WHEN NOT EXISTS (SELECT 1 FROM ledger_accounts WHERE id = debit_acc) THEN debit_acc ELSE credit_acc END
            USING ERRCODE = 'LG010';
    END IF;
    IF assets[1] <> xfer_asset OR assets[2] <> xfer_asset THEN
        RAISE EXCEPTION 'transfer %: accounts do not hold its asset', p_id USING ERRCODE = 'LG011';
    END IF;

    INSERT INTO ledger_transfers AS lt (id, public_id, debit_account, credit_account, asset, amount, kind,
                                        timeout_at, code, metadata)
    VALUES (p_id, p_public_id, debit_acc, credit_acc, xfer_asset, amt, p_kind,
            CASE WHEN p_timeout_s IS NULL THEN NULL ELSE clock_timestamp() + make_interval(secs => p_timeout_s) END,
            p_code, meta)
    ON CONFLICT (id) DO NOTHING
    RETURNING lt.seq INTO new_seq;

    IF new_seq IS NULL THEN
        SELECT * INTO existing FROM ledger_transfers lt WHERE lt.id = p_id;
        IF (existing.kind, existing.debit_account, existing.credit_account, existing.asset, existing.amount,
            existing.code, existing.metadata, existing.pending_id)
           IS DISTINCT FROM (p_kind, debit_acc, credit_acc, xfer_asset, amt, p_code, meta, NULL::text) THEN
            RAISE EXCEPTION 'transfer % exists with different fields', existing.id USING ERRCODE = 'LG020';
        END IF;
        RETURN QUERY SELECT 1::bigint, existing.id, existing.public_id, existing.seq, false;
        RETURN;
    END IF;

    IF is_pending THEN
        UPDATE ledger_accounts SET debits_pending = debits_pending + amt WHERE id = debit_acc;
        UPDATE ledger_accounts SET credits_pending = credits_pending + amt WHERE id = credit_acc;
    ELSE
        UPDATE ledger_accounts SET debits_posted = debits_posted + amt WHERE id = debit_acc;
        UPDATE ledger_accounts SET credits_posted = credits_posted + amt WHERE id = credit_acc;
    END IF;
    RETURN QUERY SELECT 1::bigint, p_id, p_public_id, new_seq, true;
END $$;

-- Create a linked batch of transfers: all or nothing, one round trip.
-- Input: a JSON array of {id, public_id, kind, debit_account, credit_account, asset,
-- amount (string), pending_id, timeout_s, code, metadata}. Output: one row per input,
-- in input order, with created = false for an idempotent replay.
CREATE FUNCTION ledger_create_transfers(batch jsonb)
RETURNS TABLE (ord bigint, transfer_id text, public_id text, seq bigint, created boolean)
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_path_exists(batch, '$[*] ? (@.pending_id != null)') THEN
        RETURN QUERY SELECT * FROM ledger_create_transfers_stepwise(batch);
    ELSIF jsonb_array_length(batch) = 1 THEN
        RETURN QUERY SELECT * FROM ledger_create_one_transfer(
            batch->0->>'id', batch->0->>'public_id', batch->0->>'kind', (batch->0->>'debit_account')::bigint,
            (batch->0->>'credit_account')::bigint, batch->0->>'asset', (batch->0->>'amount')::numeric,
            (batch->0->>'timeout_s')::bigint, (batch->0->>'code')::integer, batch->0->'metadata');
    ELSE
        RETURN QUERY SELECT * FROM ledger_create_plain_transfers(batch);
    END IF;
END $$;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(GUARDS)
    op.execute(POST_FUNCTION)
    op.execute(PLAIN_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION ledger_create_transfers(jsonb)")
    op.execute("DROP FUNCTION ledger_create_plain_transfers(jsonb)")
    op.execute("DROP FUNCTION ledger_create_one_transfer(text, text, text, bigint, bigint, text, numeric, bigint, integer, jsonb)")
    op.execute("DROP FUNCTION ledger_create_transfers_stepwise(jsonb)")
    op.execute("DROP TABLE ledger_transfers")
    op.execute("DROP TABLE ledger_accounts")
    op.execute("DROP TABLE ledger_assets")
    op.execute("DROP FUNCTION ledger_refuse_change()")
    op.execute("DROP FUNCTION ledger_refuse_closed()")
