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

from sqlalchemy import Interval, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

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
    if not _KEY_RE.match(raw):
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


# Statements are built once; per-request construction was the largest CPU cost here.
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")
_CLAIM = (
    insert(IdempotencyKey)
    .values(
        merchant_id=bindparam("b_merchant_id"),
        mode=bindparam("b_mode"),
        key=bindparam("b_key"),
        fingerprint=bindparam("b_fingerprint"),
        state="in_progress",
        locked_until=func.clock_timestamp() + bindparam("b_lock", type_=Interval),
        expires_at=func.clock_timestamp() + bindparam("b_ttl", type_=Interval),
    )
    .on_conflict_do_nothing()
    .returning(IdempotencyKey.key)
)
_SCOPE = (
    (IdempotencyKey.merchant_id == bindparam("b_merchant_id"))
    & (IdempotencyKey.mode == bindparam("b_mode"))
    & (IdempotencyKey.key == bindparam("b_key"))
)
_COMPLETE = (
    update(IdempotencyKey)
    .where(_SCOPE, IdempotencyKey.state == "in_progress")
    .values(
        state="completed",
        response_status=bindparam("b_status"),
        response_headers=bindparam("b_headers", type_=JSONB),
        response_body=bindparam("b_body"),
    )
)


async def claim(session: AsyncSession, scope: Scope, fp: bytes, *, ttl_s: int, lock_s: int) -> StoredResponse | None:
    """Claim the key for this request, or return the stored response to replay.

    Runs and commits its own transaction on `session`. Raises IdempotencyError for a
    reused key with other parameters, IdempotencyInUse while the first is running.
    """
    # The claim may skip the WAL flush: if the server crashes before the request's own
    # (synchronous) commit, losing the claim is harmless, since nothing else committed;
    # and that later commit flushes the WAL up to and including the claim.
    await session.execute(_ASYNC_COMMIT)
    inserted = await session.scalar(
        _CLAIM,
        {
            "b_merchant_id": scope.merchant_id,
            "b_mode": scope.mode,
            "b_key": scope.key,
            "b_fingerprint": fp,
            "b_lock": dt.timedelta(seconds=lock_s),
            "b_ttl": dt.timedelta(seconds=ttl_s),
        },
    )
    if inserted is not None:
        await session.commit()
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
    result = await session.execute(
        _COMPLETE,
        {
            "b_merchant_id": scope.merchant_id,
            "b_mode": scope.mode,
            "b_key": scope.key,
            "b_status": response.status,
            "b_headers": storable_headers(response.headers),
            "b_body": response.body,
        },
    )
    assert result.rowcount == 1, "idempotency claim vanished before completion"  # type: ignore[attr-defined]


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
