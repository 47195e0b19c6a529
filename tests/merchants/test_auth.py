"""API keys: shown once, stored as a keyed hash, revocable, mode- and scope-bound."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from stablegate.db import Database
from stablegate.errors import InvalidRequest
from stablegate.merchants import service as merchants
from stablegate.merchants.models import ApiKey
from tests.conftest import TEST_SECRET, ApiServer, Tenant


async def test_keys_are_stored_as_hash_and_prefix_only(db: Database, tenant: Tenant) -> None:
    async with db.session() as session:
        rows = (await session.scalars(select(ApiKey).where(ApiKey.merchant_id == tenant.merchant_id))).all()
    assert {r.mode for r in rows} == {"test", "live"}
    for row in rows:
        stored = " ".join(str(v) for v in (row.id, row.prefix, row.name, row.secret_hash.hex()))
        assert tenant.test_key not in stored and tenant.live_key not in stored
        assert len(row.secret_hash) == 32
        assert tenant.test_key.startswith(row.prefix) or tenant.live_key.startswith(row.prefix)
    assert tenant.test_key.startswith("sk_test_") and tenant.live_key.startswith("sk_live_")


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("Basic abc", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer sk_test_" + "x" * 43, "invalid_api_key"),
        ("Bearer " + "x" * 500, "invalid_api_key"),
    ],
)
def test_bad_credentials_are_401(api: ApiServer, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with api.client() as client:
        r = client.get("/v1/account", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == {
        **r.json()["error"],
        "type": "authentication_error",
        "code": code,
        "param": "Authorization",
    }


async def test_revocation_applies_to_the_next_request(api: ApiServer, db: Database, tenant: Tenant) -> None:
    with api.client(tenant.test_key) as client:
        assert client.get("/v1/account").status_code == 200
        async with db.session() as session:
            revoked = await merchants.revoke_key(session, tenant.test_key_id)
        assert revoked.revoked_at is not None
        r = client.get("/v1/account")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_restricted_and_publishable_keys(api: ApiServer, db: Database, tenant: Tenant) -> None:
    secret = TEST_SECRET.encode()
    async with db.session() as session:
        reader = await merchants.create_key(
            session, secret, merchant_id=tenant.merchant_id, mode="test", kind="restricted", scopes=["customers:read"]
        )
        public = await merchants.create_key(
            session, secret, merchant_id=tenant.merchant_id, mode="test", kind="publishable"
        )
    assert reader.secret.startswith("rk_test_") and public.secret.startswith("pk_test_")
    with api.client(reader.secret) as client:
        assert client.get("/v1/customers").status_code == 200
        denied = client.post("/v1/customers", json={})
        assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
        assert client.get("/v1/account").status_code == 403
    with api.client(public.secret) as client:
        assert client.get("/v1/customers").status_code == 403


async def test_key_creation_validates_input(db: Database, tenant: Tenant) -> None:
    secret = TEST_SECRET.encode()
    async with db.session() as session:
        for kwargs, param in (
            ({"mode": "prod"}, "mode"),
            ({"mode": "test", "kind": "root"}, "kind"),
            ({"mode": "test", "kind": "restricted", "scopes": []}, "scopes"),
            ({"mode": "test", "kind": "restricted", "scopes": ["payouts:god"]}, "scopes"),
        ):
            with pytest.raises(InvalidRequest) as err:
                await merchants.create_key(session, secret, merchant_id=tenant.merchant_id, **kwargs)  # type: ignore[arg-type]
            assert err.value.param == param


def test_account_reflects_the_key_mode(api: ApiServer, tenant: Tenant) -> None:
    with api.client(tenant.live_key) as client:
        account = client.get("/v1/account").json()
    assert account["id"] == tenant.merchant_id and account["mode"] == "live" and account["livemode"] is True


async def test_expired_keys_are_refused(api: ApiServer, db: Database, tenant: Tenant) -> None:
    from sqlalchemy import update

    secret = TEST_SECRET.encode()
    async with db.session() as session:
        created = await merchants.create_key(
            session, secret, merchant_id=tenant.merchant_id, mode="test", expires_in_s=3600
        )
    assert created.key.expires_at is not None
    with api.client(created.secret) as client:
        assert client.get("/v1/account").status_code == 200
        async with db.session() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == created.key.id)
                .values(expires_at=func.now() - text("interval '1 second'"))
            )
        r = client.get("/v1/account")
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]


async def test_key_lifetime_is_bounded(db: Database, tenant: Tenant) -> None:
    with pytest.raises(InvalidRequest) as err:
        async with db.session() as session:
            await merchants.create_key(
                session, TEST_SECRET.encode(), merchant_id=tenant.merchant_id, mode="test", expires_in_s=5
            )
    assert err.value.param == "expires_in"
