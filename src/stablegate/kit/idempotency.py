"""Idempotency keys: claim, replay, complete (SQL for the idempotency_keys table).

A POST with an Idempotency-Key first *claims* the key in its own committed transaction
(so concurrent duplicates see it), then the request's own transaction stores the
response together with its domain writes. See docs/design/0001-architecture.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_fetchrow
from stablegate.errors import IdempotencyError, IdempotencyInUse, InvalidRequest
from stablegate.kit.idempotency_models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII only: keys are opaque tokens (UUIDs in practice) that must survive proxies.
KEY_PATTERN = r"^[!-~]{1,255}$"
_KEY_RE = re.compile(KEY_PATTERN)
# Headers that describe this particular delivery rather than the stored response.
_VOLATILE_HEADERS = {b"content-length", b"request-id", b"date", b"server"}
PURGE_BATCH_SIZE = 1000


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True)
class Scope:
    merchant_id: str
    mode: str
    key: str


def validate_key(raw: str) -> str:
    if not _KEY_RE.fullmatch(raw):
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID works).",
            param=HEADER,
            code="invalid_idempotency_key",
        )
    return raw


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> bytes:
    """Hash of the request's parameters; JSON bodies are canonicalised so that key order
    and whitespace do not count as different parameters."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


# The claim runs on the driver connection in autocommit: it must be visible to concurrent
# duplicates at once, and skipping the ORM here halves the CPU cost of an idempotent POST.
_CLAIM_SQL = (
    "INSERT INTO idempotency_keys (merchant_id, mode, key, fingerprint, state, locked_until, expires_at)"
    " VALUES ($1, $2, $3, $4, 'in_progress', clock_timestamp() + $5::interval, clock_timestamp() + $6::interval)"
    " ON CONFLICT DO NOTHING RETURNING key"
)
# Statements are built once; per-request construction was the largest CPU cost here.
# Completion joins the request's transaction (begun by its domain writes); with no domain
# write it stands alone, which is just as atomic.
_COMPLETE_SQL = (
    "UPDATE idempotency_keys SET state = 'completed', response_status = $4, response_headers = $5::jsonb,"
    " response_body = $6 WHERE merchant_id = $1 AND mode = $2 AND key = $3 AND state = 'in_progress'"
    " RETURNING key"
)


async def claim(session: AsyncSession, scope: Scope, fp: bytes, *, ttl_s: int, lock_s: int) -> StoredResponse | None:
    """Claim the key for this request, or return the stored response to replay.

    The claim autocommits on the driver connection; a conflicting key is resolved in a short
    transaction committed before returning. Raises IdempotencyError for a
    reused key with other parameters, IdempotencyInUse while the first is running.
    """
    inserted = await driver_fetchrow(
        session,
        _CLAIM_SQL,
        scope.merchant_id,
        scope.mode,
        scope.key,
        fp,
        dt.timedelta(seconds=lock_s),
        dt.timedelta(seconds=ttl_s),
        outside_transaction=True,
    )
    if inserted is not None:
        return None
    try:
        return await _resolve_existing(session, scope, fp, lock_s)
    finally:
        await session.commit()


async def _resolve_existing(session: AsyncSession, scope: Scope, fp: bytes, lock_s: int) -> StoredResponse | None:
    found = (
        await session.execute(
            select(IdempotencyKey, (IdempotencyKey.locked_until > func.clock_timestamp()).label("locked"))
            .where(
                IdempotencyKey.merchant_id == scope.merchant_id,
                IdempotencyKey.mode == scope.mode,
                IdempotencyKey.key == scope.key,
            )
            .with_for_update(of=IdempotencyKey)
        )
    ).first()
    if found is None:  # purged between our insert and select: treat as in use, client retries
        raise IdempotencyInUse("A request with this Idempotency-Key is in progress.", param=HEADER)
    row, locked = found
    if row.fingerprint != fp:
        raise IdempotencyError(
            "This Idempotency-Key was already used with different request parameters.",
            param=HEADER,
        )
    if row.state == "completed":
        assert row.response_status is not None and row.response_body is not None
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in row.response_headers or []]
        return StoredResponse(row.response_status, headers, row.response_body)
    if locked:
        raise IdempotencyInUse(
            "A request with this Idempotency-Key is still being processed; retry later.",
            param=HEADER,
            headers={"Retry-After": "1"},
        )
    # The earlier attempt died without committing anything (completion is atomic with its
    # domain writes), so this request may take the key over.
    row.locked_until = func.clock_timestamp() + dt.timedelta(seconds=lock_s)
    await session.flush()
    return None


def storable_headers(headers: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers if k.lower() not in _VOLATILE_HEADERS]


async def complete(session: AsyncSession, scope: Scope, response: StoredResponse) -> None:
    """Store the response; the caller commits it with the request's domain writes."""
    headers = json.dumps(storable_headers(response.headers))
    updated = await driver_fetchrow(
        session, _COMPLETE_SQL, scope.merchant_id, scope.mode, scope.key, response.status, headers, response.body
    )
    assert updated is not None, "idempotency claim vanished before completion"


async def release(session: AsyncSession, scope: Scope) -> None:
    """Forget a claim whose request never reached the endpoint (invalid parameters),
    so the client can fix the request and retry with the same key."""
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.merchant_id == scope.merchant_id,
            IdempotencyKey.mode == scope.mode,
            IdempotencyKey.key == scope.key,
            IdempotencyKey.state == "in_progress",
        )
    )


async def purge_expired(session: AsyncSession, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete at most `batch_size` expired keys; returns how many went."""
    result = await session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE ctid IN ("
            " SELECT ctid FROM idempotency_keys WHERE expires_at < now()"
            " LIMIT :batch FOR UPDATE SKIP LOCKED)"
        ),
        {"batch": batch_size},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
