"""Process configuration, read once from the environment (prefix STABLEGATE_)."""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STABLEGATE_", extra="ignore")

    # DATABASE_URL is the conventional name, so it is read without our prefix.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("stablegate")))
    secret_key: str | None = None
    # A fixed pool: overflow connections are opened and closed per burst, and that churn
    # (TCP + TLS negotiation + backend start) costs more than waiting for a pooled one.
    db_pool_size: int = 20
    db_max_overflow: int = 0

    max_body_bytes: int = 64 * 1024
    rate_limit_per_s: float = 100.0
    rate_limit_burst: int = 200
    idempotency_ttl_s: int = 24 * 3600
    idempotency_lock_s: int = 60

    # The local chain of `stablegate dev` (the `local` chain preset's RPC port).
    anvil_port: int = 8545

    # Where payers reach this deployment's hosted checkout (design 0007): every payment's
    # `hosted_url` is this plus /pay/{id}. Set it to the public origin behind the load
    # balancer (e.g. https://pay.example.com); no trailing slash needed.
    public_url: str = "http://127.0.0.1:8000"

    # Payments (design 0004). The key that signs payment intents: the signer our routers
    # were deployed with (`stablegate dev`/`demo` use the local chain's dev key).
    intent_signer_key: str | None = None
    fee_bps: int = 100  # the platform's default fee, for merchants without a schedule
    spread_bps: int = 0  # the default FX spread, for merchants without a profile
    # Static FX rates, "BASE/QUOTE=value": QUOTE currency per one BASE token.
    fx_rates: str = "USDC/USD=1,USDT/USD=1,DAI/USD=1,USDC/EUR=0.92,USDT/EUR=0.92,DAI/EUR=0.92"
    # Chainlink-style feeds, "BASE/QUOTE@chain:0xfeed,…", read on that configured chain;
    # they take precedence over the static rates for their pair.
    fx_feeds: str = ""
    rate_max_age_s: int = 300  # older rates are refused, never used
    quote_ttl_s: int = 1800  # a quote lives this long, or until the payment expires

    # Webhooks (design 0005). CIDRs or host names that delivery may reach although the SSRF
    # gate refuses them (comma-separated; for local development, e.g. "127.0.0.1,localhost").
    webhook_allow: str = ""
    webhook_timeout_s: float = 15.0  # one attempt, DNS to the last response byte
    # Multiplies every retry delay, Retry-After and the 5-day disable rule: tests compress time.
    webhook_schedule_scale: float = 1.0
    # Attempts in flight per endpoint across all workers (procrastinate lock stripes), so one
    # slow receiver cannot occupy every worker.
    webhook_endpoint_concurrency: int = 4

    # Settlement (design 0006). Signers: an encrypted keystore directory (dev; default
    # <data_dir>/keystore) and/or AWS KMS keys (ECC_SECG_P256K1), matched to each chain's
    # treasury and operator addresses.
    keystore_dir: Path | None = None
    keystore_passphrase: str | None = None
    kms_key_ids: str = ""  # comma-separated key ids or ARNs
    aws_region: str | None = None
    payout_fee_bps: int = 0  # default payout fee, for merchants without a 'payout' schedule
    destination_cooling_off_s: int = 24 * 3600  # a new payout address is usable after this
    # The transaction manager: EIP-1559 caps, replacement of stuck transactions, alerts.
    max_fee_per_gas_gwei: int = 500
    max_priority_fee_gwei: int = 10
    min_priority_fee_wei: int = 1_000_000
    fee_bump_permille: int = 125  # replacement raises both fee fields by at least 12.5 %
    tx_stuck_after_s: float = 120.0
    tx_poll_interval_ms: int = 1_000
    tx_fail_unsigned_after_s: int = 6 * 3600  # a transaction the treasury cannot fund fails then
    gas_low_wei: int = 10**16  # alert when a signer holds less native gas than this
    treasury_low_whole_tokens: int = 1_000  # alert when the treasury holds less of a token

    log_level: str = "INFO"
    log_format: str = "json"  # json | console
    otel_exporter: str = "none"  # none | console | otlp
    otel_service_name: str = "stablegate"

    def resolved_keystore_dir(self) -> Path:
        return self.keystore_dir or self.data_dir / "keystore"

    def webhook_allow_list(self) -> tuple[str, ...]:
        return tuple(entry.strip() for entry in self.webhook_allow.split(",") if entry.strip())

    def resolved_secret_key(self) -> bytes:
        """The HMAC key for API key hashes; generated once per data dir in dev."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
