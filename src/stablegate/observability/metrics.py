"""Prometheus metrics. Route labels are templates (/v1/customers/{customer_id}), never raw
paths, so cardinality stays bounded."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "stablegate_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "stablegate_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IDEMPOTENCY_OUTCOMES = Counter("stablegate_idempotency_outcomes_total", "Idempotency-Key outcomes.", ["outcome"])
RATE_LIMITED = Counter("stablegate_rate_limited_total", "Requests refused by the per-key rate limit.")
JOBS_ENQUEUED = Counter("stablegate_jobs_enqueued_total", "Jobs enqueued in a domain transaction.", ["task"])
JOBS_RUN = Counter("stablegate_jobs_run_total", "Jobs run by this worker.", ["task", "outcome"])
DB_RETRIES = Counter(
    "stablegate_db_transaction_retries_total",
    "Transactions re-run after a deadlock or serialization failure.",
    ["sqlstate"],
)

# The block follower (chains/): one label set per configured chain, so cardinality is small.
CHAIN_HEAD_LAG = Gauge("stablegate_chain_head_lag_blocks", "Chain head minus the follower's cursor.", ["chain"])
CHAIN_SYNCED_AT = Gauge(
    "stablegate_chain_synced_timestamp_seconds",
    "When the follower last had every block up to the head (payments expire only behind it).",
    ["chain"],
)
CHAIN_OBSERVATIONS = Counter(
    "stablegate_chain_observations_total", "Observations by what happened to them.", ["chain", "status"]
)
CHAIN_REORGS = Counter(
    "stablegate_chain_reorgs_total", "Reorgs handled (deep: beyond confirmations).", ["chain", "deep"]
)
CHAIN_REORG_DEPTH = Histogram(
    "stablegate_chain_reorg_depth_blocks", "Depth of handled reorgs.", ["chain"], buckets=(1, 2, 3, 5, 10, 20, 64, 128)
)
CHAIN_RPC_ERRORS = Counter(
    "stablegate_chain_rpc_errors_total",
    "JSON-RPC failures by method, provider and kind.",
    ["chain", "method", "provider", "kind"],
)
CHAIN_RPC_LATENCY = Histogram(
    "stablegate_chain_rpc_duration_seconds",
    "JSON-RPC request latency (a batch counts once).",
    ["chain", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHAIN_LOOKALIKE_LOGS = Counter(
    "stablegate_chain_lookalike_logs_total", "Transfers to our addresses from unconfigured token contracts.", ["chain"]
)
CHAIN_LEADER = Gauge("stablegate_chain_follower_leader", "1 while this process follows the chain.", ["chain"])

# Payments (payments/).
PAYMENTS_CREATED = Counter("stablegate_payments_created_total", "Payments created.", ["mode"])
PAYMENT_EVENTS = Counter("stablegate_payment_events_total", "Payment events recorded, by type.", ["type"])
PAYMENT_RECEIPTS = Counter(
    "stablegate_payment_receipts_total", "Chain events that changed a payment's receipts (or matched none).", ["kind"]
)
PAYMENTS_EXPIRED = Counter("stablegate_payments_expired_total", "Payments expired by the expiry job.")

# Ledger (ledger/).
LEDGER_EXPIRIES_REFUSED = Counter(
    "stablegate_ledger_expiries_refused_total",
    "Timed-out pending transfers the ledger could not expire (each attempt; see the error log).",
)

# Webhooks (design 0005): labels are fixed sets (outcomes, reasons), never endpoint ids.
WEBHOOK_ATTEMPTS = Counter(
    "stablegate_webhook_attempts_total",
    "Delivery attempts by outcome (succeeded, http_error, timeout, transport_error, unsafe_destination).",
    ["outcome"],
)
WEBHOOK_ATTEMPT_LATENCY = Histogram(
    "stablegate_webhook_attempt_duration_seconds",
    "One delivery attempt, SSRF check to last response byte.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
WEBHOOK_DELIVERIES = Counter(
    "stablegate_webhook_deliveries_total", "Deliveries settled, by final status (succeeded, failed).", ["status"]
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "stablegate_webhook_endpoints_disabled_total", "Endpoints disabled automatically, by reason.", ["reason"]
)


# Settlement (design 0006): the transaction manager and the treasury.
TX_INTENTS = Counter("stablegate_tx_intents_total", "Outgoing transactions planned, by purpose.", ["purpose"])
TX_SIGNED = Counter("stablegate_tx_signed_total", "Outgoing transactions signed (first attempts).", ["chain"])
TX_BROADCAST = Counter("stablegate_tx_broadcast_total", "Attempts sent to the chain.", ["chain"])
TX_REPLACED = Counter("stablegate_tx_replaced_total", "Stuck transactions replaced with higher fees.", ["chain"])
TX_REORGED = Counter("stablegate_tx_reorged_total", "Mined transactions whose block was reorged out.", ["chain"])
TX_OUTCOMES = Counter(
    "stablegate_tx_outcomes_total",
    "Outgoing transactions finished, by purpose and outcome.",
    ["chain", "purpose", "outcome"],
)
TREASURY_LOW = Gauge(
    "stablegate_treasury_low", "1 while a signer's token balance is below its alert level.", ["chain", "token"]
)
GAS_LOW = Gauge(
    "stablegate_gas_low", "1 while a signer's native gas balance is below its alert level.", ["chain", "signer"]
)
PAYOUTS = Counter("stablegate_payouts_total", "Payouts by final status.", ["status"])
REFUNDS = Counter("stablegate_refunds_total", "Refunds by final status.", ["status"])
SWEEPS = Counter(
    "stablegate_sweeps_total",
    "Deposit-address sweeps by chain and status (planned, swept, failed).",
    ["chain", "status"],
)
SETTLEMENT_RUNS = Counter("stablegate_settlement_runs_total", "Settlement runs committed.")
SETTLEMENTS = Counter(
    "stablegate_settlements_total",
    "Due settlement schedules by run outcome: settled, or why skipped (below_minimum, destination_cooling_off, …).",
    ["outcome"],
)

# Checkout (design 0007): public pages, so labels are fixed sets, never payment ids.
CHECKOUT_VIEWS = Counter(
    "stablegate_checkout_views_total", "Hosted checkout pages served, by outcome (rendered, not_found).", ["outcome"]
)
CHECKOUT_STATUS_READS = Counter(
    "stablegate_checkout_status_reads_total", "Checkout status polls answered, by the page's state.", ["state"]
)
