"""Our Standard Webhooks signatures verify with the spec's official library (the
`standardwebhooks` package), also with two secrets during a rotation; a tampered body or
an old timestamp fails."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from stablegate.webhooks import signing


def official(secret: str) -> Webhook:
    return Webhook(secret)


@given(body=st.binary(max_size=2000).map(lambda b: json.dumps({"data": b.hex()}).encode()), msg=st.uuids())
def test_official_library_verifies_our_signatures(body: bytes, msg: object) -> None:
    secret = signing.new_secret()
    now_s = int(time.time())
    sent = signing.headers([secret], f"msg_{msg}", now_s, body)
    assert official(secret).verify(body, sent) == json.loads(body)
    assert signing.verify(secret, sent, body, now_s)


def test_during_rotation_both_secrets_verify() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body, now_s = b'{"type":"payment.succeeded"}', int(time.time())
    sent = signing.headers([old, new], "msg_1", now_s, body)
    assert len(sent["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        official(secret).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        official(signing.new_secret()).verify(body, sent)


def test_tampered_body_and_old_timestamp_fail() -> None:
    secret = signing.new_secret()
    body, now_s = b'{"amount":"25.00"}', int(time.time())
    sent = signing.headers([secret], "msg_2", now_s, body)
    with pytest.raises(WebhookVerificationError):
        official(secret).verify(b'{"amount":"2500.00"}', sent)
    stale = signing.headers([secret], "msg_2", now_s - 3600, body)
    with pytest.raises(WebhookVerificationError):
        official(secret).verify(body, stale)
    assert not signing.verify(secret, stale, body, now_s)
    assert not signing.verify(secret, sent, b'{"amount":"2500.00"}', now_s)


def test_secrets_have_the_prefix_and_enough_entropy() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(signing._key(secret)) == signing.SECRET_BYTES
    with pytest.raises(ValueError, match="whsec_"):
        signing.signature("not-a-secret", "msg", 0, b"")
