"""Standard Webhooks signatures (design 0005): `whsec_` secrets, the three headers, and
several signatures at once while a rotated secret overlaps with its successor.

signature = base64(HMAC-SHA256(secret bytes, f"{msg_id}.{timestamp}.{body}")), sent as
`v1,<signature>`; several are space-separated in one `webhook-signature` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes
TOLERANCE_S = 300  # the spec's window for a receiver's timestamp check


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("webhook secrets start with whsec_")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def signature(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_in_force: Sequence[str], msg_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt; one signature per secret in force (rotation)."""
    assert secrets_in_force, "an endpoint always has a secret"
    signatures = " ".join(signature(s, msg_id, timestamp_s, body) for s in secrets_in_force)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp_s), "webhook-signature": signatures}


def verify(secret: str, received: dict[str, str], body: bytes, now_s: int) -> bool:
    """A receiver's check (for our tests and docs): a fresh timestamp and one matching
    signature, compared in constant time."""
    try:
        timestamp_s = int(received["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp_s) > TOLERANCE_S:
        return False
    expected = signature(secret, received.get("webhook-id", ""), timestamp_s, body)
    offered = received.get("webhook-signature", "").split(" ")
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
