"""Merchants, API keys and authentication (a key string -> Principal)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.errors import AuthenticationError, InvalidRequest, NotFound, PermissionDenied
from stablegate.kit.ids import new_id
from stablegate.merchants import repository
from stablegate.merchants.models import ApiKey, Merchant

Mode = Literal["test", "live"]
KeyKind = Literal["secret", "publishable", "restricted"]

MODES: tuple[str, ...] = ("test", "live")
KIND_PREFIX: dict[str, str] = {"secret": "sk", "publishable": "pk", "restricted": "rk"}
# Every scope an endpoint can require; secret keys hold all of them.
SCOPES: frozenset[str] = frozenset(
    {
        "account:read",
        "balance:read",
        "customers:read",
        "customers:write",
        "payments:read",
        "payments:write",
        "events:read",
        "webhook_endpoints:read",
        "webhook_endpoints:write",
        "payouts:read",
        "payouts:write",
        "refunds:read",
        "refunds:write",
    }
)
_BASE62 = string.digits + string.ascii_letters
SECRET_LENGTH = 43  # 43 base62 characters ≈ 256 bits
VISIBLE_SECRET_CHARS = 6
MAX_KEY_LENGTH = 64
MAX_KEY_LIFETIME_S = 5 * 365 * 24 * 3600


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from an API key on every request."""

    merchant_id: str
    mode: str
    key_id: str
    kind: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        assert scope in SCOPES, scope
        if scope not in self.scopes:
            raise PermissionDenied(
                f"This API key does not have the '{scope}' permission.", code="insufficient_permissions"
            )


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown exactly once


def hash_key(server_secret: bytes, key: str) -> bytes:
    return hmac.new(server_secret, key.encode(), hashlib.sha256).digest()


async def create_merchant(session: AsyncSession, name: str) -> Merchant:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidRequest("name must be 1 to 200 characters.", param="name")
    return await repository.insert_merchant(session, Merchant(id=new_id("mch"), name=name))


async def get_merchant(session: AsyncSession, merchant_id: str) -> Merchant:
    merchant = await repository.get_merchant(session, merchant_id)
    if merchant is None:
        raise NotFound(f"No such merchant: '{merchant_id}'.", param="merchant")
    return merchant


async def list_merchants(session: AsyncSession, limit: int = 100) -> list[Merchant]:
    return await repository.list_merchants(session, limit)


async def create_key(
    session: AsyncSession,
    server_secret: bytes,
    *,
    merchant_id: str,
    mode: str,
    kind: str = "secret",
    scopes: list[str] | None = None,
    name: str | None = None,
    expires_in_s: int | None = None,
) -> CreatedKey:
    await get_merchant(session, merchant_id)
    if expires_in_s is not None and not 60 <= expires_in_s <= MAX_KEY_LIFETIME_S:
        raise InvalidRequest("A key may expire between one minute and five years from now.", param="expires_in")
    if mode not in MODES:
        raise InvalidRequest("mode must be 'test' or 'live'.", param="mode")
    if kind not in KIND_PREFIX:
        raise InvalidRequest("kind must be secret, publishable or restricted.", param="kind")
    granted = _granted_scopes(kind, scopes or [])
    body = "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))
    secret = f"{KIND_PREFIX[kind]}_{mode}_{body}"
    key = ApiKey(
        id=new_id("key"),
        merchant_id=merchant_id,
        mode=mode,
        kind=kind,
        name=name,
        scopes=sorted(granted),
        prefix=secret[: len(KIND_PREFIX[kind]) + len(mode) + 2 + VISIBLE_SECRET_CHARS],
        secret_hash=hash_key(server_secret, secret),
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in_s) if expires_in_s else None,
    )
    return CreatedKey(key=await repository.insert_key(session, key), secret=secret)


def _granted_scopes(kind: str, scopes: list[str]) -> frozenset[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise InvalidRequest(f"Unknown scopes: {', '.join(unknown)}.", param="scopes")
    if kind == "secret":
        return SCOPES
    if kind == "publishable":
        return frozenset()  # only public endpoints (hosted checkout) accept these
    if not scopes:
        raise InvalidRequest("A restricted key needs at least one scope.", param="scopes")
    return frozenset(scopes)


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey:
    key = await repository.revoke_key(session, key_id)
    if key is None:
        raise NotFound(f"No such API key: '{key_id}'.", param="key")
    return key


async def list_keys(session: AsyncSession, merchant_id: str) -> list[ApiKey]:
    await get_merchant(session, merchant_id)
    return await repository.list_keys(session, merchant_id)


def parse_bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError(
            "No API key provided. Send 'Authorization: Bearer sk_test_…'.",
            param="Authorization",
            code="missing_api_key",
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LENGTH:
        raise AuthenticationError("Malformed Authorization header; expected 'Bearer <key>'.", param="Authorization")
    return token


async def authenticate(session: AsyncSession, server_secret: bytes, authorization: str | None) -> Principal:
    """Resolve the key; no cache, so a revocation applies to the very next request."""
    token = parse_bearer(authorization)
    row = await repository.find_active_key(session, hash_key(server_secret, token))
    if row is None:
        shown = token[:12] + "…" if len(token) > 12 else "that key"
        raise AuthenticationError(f"Invalid, expired or revoked API key: {shown}.", param="Authorization")
    merchant_id, mode, key_id, kind, scopes = row.values()
    return Principal(merchant_id=merchant_id, mode=mode, key_id=key_id, kind=kind, scopes=frozenset(scopes))
