"""The `stablegate` command: processes (api, worker, dev, demo) and admin commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate import migrations
from stablegate.config import Settings, get_settings
from stablegate.db import Database, libpq_url
from stablegate.errors import StablegateError
from stablegate.kit.runtime import freeze_startup_heap
from stablegate.merchants import service as merchants
from stablegate.observability import logging as obs_logging

app = typer.Typer(help="Stablegate: onchain stablecoin payments for merchants.", no_args_is_help=True)
db_app = typer.Typer(help="Database: migrations and the embedded server.", no_args_is_help=True)
merchants_app = typer.Typer(help="Create and list merchants.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(merchants_app, name="merchants")
app.add_typer(keys_app, name="keys")
ledger_app = typer.Typer(help="The ledger: exports for accountants.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")

console = Console()
T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit so atexit handlers run, above all the one that
    stops the embedded PostgreSQL. (uvicorn and procrastinate handle SIGTERM themselves
    and then re-raise it to the handler found before them: this one.)"""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _quiet() -> Settings:
    settings = get_settings()
    obs_logging.configure("WARNING", settings.log_format)
    return settings


def _run_in_session(fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    settings = _quiet()

    async def go() -> T:
        db = Database.connect(libpq_url(settings), settings)
        try:
            async with db.session() as session:
                return await fn(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except StablegateError as exc:
        console.print(f"[red]error[/red] ({exc.param or exc.code}): {exc.message}")
        raise typer.Exit(2) from None


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Run migrations first.")] = False,
) -> None:
    """Serve the merchant API, /metrics, /healthz and /readyz."""
    _exit_on_sigterm()
    import uvicorn

    settings = get_settings()
    obs_logging.configure(settings.log_level, settings.log_format)
    url = libpq_url(settings)
    if migrate:
        migrations.upgrade(url)
    uvicorn.run(
        "stablegate.main:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(concurrency: Annotated[int, typer.Option(help="Jobs run at once.")] = 4) -> None:
    """Run background jobs (procrastinate) until interrupted."""
    _exit_on_sigterm()
    from stablegate.jobs.app import run_worker_blocking

    settings = get_settings()
    obs_logging.configure(settings.log_level, settings.log_format)
    freeze_startup_heap()
    run_worker_blocking(libpq_url(settings), settings, concurrency)


def _chain_process(names: list[str] | None) -> tuple[Settings, list[Any], str]:
    """Settings, the configured chains (only `names`, if given) and the migrated database's
    URL for a process that works on chains (watcher, sender); exits 2 on a bad chain set-up."""
    from stablegate.chains import registry

    settings = get_settings()
    obs_logging.configure(settings.log_level, settings.log_format)
    try:
        chains = [c for c in registry.configured() if not names or c.name in names]
    except ValueError as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(2) from None
    if not chains:
        console.print("[red]error[/red]: no chain configured (set STABLEGATE_CHAINS, see docs/design/0003)")
        raise typer.Exit(2)
    url = libpq_url(settings)
    migrations.upgrade(url)
    return settings, chains, url


@app.command()
def watcher(
    chain: Annotated[
        list[str] | None, typer.Option(help="Follow only these chains (names); default: all configured.")
    ] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve /metrics on 127.0.0.1:PORT (0: off).")] = 9102,
) -> None:
    """Follow each configured chain's blocks (STABLEGATE_CHAINS, STABLEGATE_RPC_<NAME>,
    STABLEGATE_CHAINS_FILE); one leader per chain across processes."""
    import stablegate.payments.receipts  # registers its chain-event subscriber
    import stablegate.rails.service  # noqa: F401 (registers its chain-event subscriber)
    from stablegate.chains.watcher import run

    settings, chains, url = _chain_process(chain)
    freeze_startup_heap()
    asyncio.run(run(url, settings, chains, metrics_port or None))


@app.command()
def sender(
    chain: Annotated[
        list[str] | None, typer.Option(help="Send only on these chains (names); default: all configured.")
    ] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve /metrics on 127.0.0.1:PORT (0: off).")] = 9103,
) -> None:
    """Run the hot-wallet transaction manager: sign, send, replace and confirm payouts,
    refunds, settlement batches and sweeps (keys: STABLEGATE_KEYSTORE_DIR with
    STABLEGATE_KEYSTORE_PASSPHRASE, or STABLEGATE_KMS_KEY_IDS); one leader per signer."""
    from stablegate.settlement.sender import run

    settings, chains, url = _chain_process(chain)
    freeze_startup_heap()
    asyncio.run(run(url, settings, chains, metrics_port or None))


@app.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """API + worker in one process on the embedded (or DATABASE_URL) database, migrated."""
    _exit_on_sigterm()
    from stablegate.devserver import run_dev

    settings = get_settings()
    obs_logging.configure(settings.log_level, "console")
    url = libpq_url(settings)
    migrations.upgrade(url)
    freeze_startup_heap()
    asyncio.run(run_dev(url, settings, host, port))


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for the demo API server (0 = any free port).")] = 0,
) -> None:
    """A scripted end-to-end run on embedded defaults, with a readable summary."""
    _exit_on_sigterm()
    from stablegate.demo import run_demo

    settings = _quiet()
    url = libpq_url(settings)
    migrations.upgrade(url)
    ok = asyncio.run(run_demo(url, settings, port, console))
    raise typer.Exit(0 if ok else 1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations (to head by default)."""
    _quiet()
    url = libpq_url(get_settings())
    migrations.upgrade(url, revision)
    console.print(f"database at revision {migrations.current(url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the current migration revision."""
    _quiet()
    console.print(str(migrations.current(libpq_url(get_settings()))))


@db_app.command("url")
def db_url() -> None:
    """Print the libpq URL in use (starting the embedded server if needed)."""
    _quiet()
    print(libpq_url(get_settings()))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server."""
    from stablegate import embedded_pg

    settings = _quiet()
    embedded_pg.stop(settings.data_dir / "pg")


@merchants_app.command("create")
def merchants_create(name: Annotated[str, typer.Option(help="Display name.")], as_json: JsonOpt = False) -> None:
    """Create a merchant (test and live modes both exist from the start)."""
    merchant = _run_in_session(lambda s: merchants.create_merchant(s, name))
    _emit(
        as_json,
        {"id": merchant.id, "name": merchant.name, "created": merchant.created_at.isoformat()},
        f"created merchant [bold]{merchant.id}[/bold] ({merchant.name})",
    )


@merchants_app.command("list")
def merchants_list(as_json: JsonOpt = False) -> None:
    """List merchants, newest first."""
    rows = _run_in_session(merchants.list_merchants)
    data = [{"id": m.id, "name": m.name, "created": m.created_at.isoformat()} for m in rows]
    if as_json:
        print(json.dumps({"data": data}))
        return
    _table(["id", "name", "created"], [list(d.values()) for d in data])


@merchants_app.command("payment-profile")
def merchants_payment_profile(
    merchant: Annotated[str, typer.Option(help="Merchant id (mch_…).")],
    spread_bps: Annotated[int, typer.Option(help="FX spread added to quotes, 0–1000 basis points.")],
    accept: Annotated[
        list[str] | None, typer.Option(help="Default accepted option 'chain:SYMBOL'; repeat (none: all).")
    ] = None,
    mode: Annotated[str, typer.Option(help="test or live.")] = "test",
    as_json: JsonOpt = False,
) -> None:
    """Set a merchant's payment defaults: FX spread and accepted chains/tokens."""
    from stablegate.payments import service as payments

    async def apply(session: AsyncSession) -> None:
        await merchants.get_merchant(session, merchant)
        await payments.set_profile(session, merchant, mode, spread_bps=spread_bps, accepted=accept or [])

    _run_in_session(apply)
    payload = {"merchant": merchant, "mode": mode, "spread_bps": spread_bps, "accepted": accept or []}
    _emit(
        as_json, payload, f"payment profile of {merchant} ({mode}): spread {spread_bps} bps, accepts {accept or 'all'}"
    )


@merchants_app.command("fee-schedule")
def merchants_fee_schedule(
    merchant: Annotated[str, typer.Option(help="Merchant id (mch_…).")],
    bps: Annotated[int, typer.Option(help="Proportional fee in basis points.")],
    rail: Annotated[str, typer.Option(help="contract, deposit_address or * (both).")] = "*",
    asset: Annotated[str, typer.Option(help="Ledger asset code (e.g. USDC.base) or * (any).")] = "*",
    fixed: Annotated[int, typer.Option(help="Fixed fee in the asset's base units (needs an asset).")] = 0,
    minimum: Annotated[int, typer.Option(help="Minimum fee in base units (needs an asset).")] = 0,
    maximum: Annotated[int | None, typer.Option(help="Maximum fee in base units (needs an asset).")] = None,
    mode: Annotated[str, typer.Option(help="test or live.")] = "test",
    as_json: JsonOpt = False,
) -> None:
    """Set a fee schedule for a merchant; the most specific (rail, asset) one applies."""
    from stablegate.payments import service as payments

    async def apply(session: AsyncSession) -> None:
        await merchants.get_merchant(session, merchant)
        await payments.set_fee_schedule(
            session, merchant, mode, rail=rail, asset=asset, bps=bps, fixed=fixed, minimum=minimum, maximum=maximum
        )

    _run_in_session(apply)
    payload = {"merchant": merchant, "mode": mode, "rail": rail, "asset": asset, "bps": bps, "fixed": fixed}
    _emit(as_json, payload | {"minimum": minimum, "maximum": maximum}, f"fee schedule set: {payload}")


@merchants_app.command("settlement-schedule")
def merchants_settlement_schedule(
    merchant: Annotated[str, typer.Option(help="Merchant id (mch_…).")],
    chain: Annotated[str, typer.Option(help="A configured chain's name, e.g. base.")],
    asset: Annotated[str, typer.Option(help="Token symbol on that chain, e.g. USDC.")],
    destination: Annotated[str, typer.Option(help="Payout destination (dst_…) for that token.")],
    daily_at: Annotated[str | None, typer.Option(help="Settle daily at this UTC time, HH:MM.")] = None,
    threshold: Annotated[
        str | None, typer.Option(help="Or settle when the available balance reaches this (major units).")
    ] = None,
    minimum: Annotated[str | None, typer.Option(help="Settle nothing below this (major units).")] = None,
    mode: Annotated[str, typer.Option(help="test or live.")] = "test",
    as_json: JsonOpt = False,
) -> None:
    """Set when a merchant's balance in one token is paid out automatically (one schedule
    per mode and token; setting it again replaces it)."""
    from stablegate.chains import registry
    from stablegate.settlement import runs
    from stablegate.settlement.service import Context

    params = runs.ScheduleParams(merchant, mode, chain, asset, destination, daily_at, threshold, minimum)

    async def apply(session: AsyncSession) -> Any:
        await merchants.get_merchant(session, merchant)
        try:
            chains = registry.configured()
        except ValueError as exc:  # a bad chain configuration is the operator's input error
            raise StablegateError(str(exc), param="chain") from None
        return await runs.set_schedule(session, Context.from_settings(get_settings(), chains), params)

    row = _run_in_session(apply)
    payload = {
        "merchant": merchant,
        "mode": mode,
        "asset": row["asset"],
        "destination": row["destination_id"],
        "kind": row["kind"],
        "daily_at": None if row["daily_at_utc"] is None else row["daily_at_utc"].strftime("%H:%M"),
        "threshold_units": None if row["threshold"] is None else str(int(row["threshold"])),
        "minimum_units": str(int(row["minimum"])),
    }
    _emit(as_json, payload, f"settlement schedule set: {payload}")


@keys_app.command("create")
def keys_create(
    merchant: Annotated[str, typer.Option(help="Merchant id (mch_…).")],
    mode: Annotated[str, typer.Option(help="test or live.")] = "test",
    kind: Annotated[str, typer.Option(help="secret, publishable or restricted.")] = "secret",
    scope: Annotated[list[str] | None, typer.Option(help="Scope for a restricted key; repeat.")] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    expires_in_days: Annotated[int | None, typer.Option(help="Make the key lapse after this many days.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again."""
    secret = get_settings().resolved_secret_key()
    expires_in_s = expires_in_days * 86400 if expires_in_days is not None else None
    created = _run_in_session(
        lambda s: merchants.create_key(
            s, secret, merchant_id=merchant, mode=mode, kind=kind, scopes=scope, name=name, expires_in_s=expires_in_s
        )
    )
    payload = _key_json(created.key) | {"secret": created.secret}
    _emit(
        as_json,
        payload,
        f"created {created.key.kind} key [bold]{created.key.id}[/bold] ({mode})\n"
        f"  {created.secret}\n  store it now: it is not shown again",
    )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id (key_…).")], as_json: JsonOpt = False) -> None:
    """Revoke a key; the next request with it gets 401."""
    key = _run_in_session(lambda s: merchants.revoke_key(s, key_id))
    _emit(as_json, _key_json(key), f"revoked {key.id} ({key.prefix}…)")


@keys_app.command("list")
def keys_list(merchant: Annotated[str, typer.Option(help="Merchant id.")], as_json: JsonOpt = False) -> None:
    """List a merchant's keys (prefixes only)."""
    rows = _run_in_session(lambda s: merchants.list_keys(s, merchant))
    data = [_key_json(k) for k in rows]
    if as_json:
        print(json.dumps({"data": data}))
        return
    _table(
        ["id", "mode", "kind", "prefix", "revoked"],
        [[d["id"], d["mode"], d["kind"], d["prefix"] + "…", d["revoked"] or ""] for d in data],
    )


@ledger_app.command("export")
def ledger_export(
    format: Annotated[str, typer.Option("--format", help="Only 'beancount' for now.")] = "beancount",
    output: Annotated[str, typer.Option("--output", "-o", help="File to write; '-' for stdout.")] = "-",
) -> None:
    """Write the posted journal with closing balance assertions (checked by bean-check)."""
    from stablegate.ledger import export

    if format != "beancount":
        console.print("[red]error[/red] (format): only 'beancount' is supported")
        raise typer.Exit(2)

    async def write(session: AsyncSession) -> int:
        lines = 0
        # A CLI writing its own output file: nothing else runs on this loop meanwhile.
        sink = open(output, "w", encoding="utf-8") if output != "-" else contextlib.nullcontext(sys.stdout)  # noqa: ASYNC230, SIM115
        with sink as out:
            async for line in export.beancount(session):
                out.write(line)
                lines += 1
        return lines

    lines = _run_in_session(write)
    if output != "-":
        console.print(f"wrote {lines} lines to {output}")


def _key_json(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "merchant": key.merchant_id,
        "mode": key.mode,
        "kind": key.kind,
        "scopes": key.scopes,
        "prefix": key.prefix,
        "revoked": key.revoked_at.isoformat() if key.revoked_at else None,
        "expires": key.expires_at.isoformat() if key.expires_at else None,
    }


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    if as_json:
        print(json.dumps(payload))
    else:
        console.print(text)


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    table = Table(*headers)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    console.print(table)


def main() -> None:
    app()
