from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stablegate.kit.idempotency import fingerprint

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_key_order_and_whitespace_do_not_matter(body: dict[str, object]) -> None:
    import json

    compact = json.dumps(body, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    assert fingerprint("POST", "/v1/x", b"", compact) == fingerprint("POST", "/v1/x", b"", spaced)


def test_parameters_and_targets_matter() -> None:
    base = fingerprint("POST", "/v1/customers", b"", b'{"a":1}')
    assert base != fingerprint("POST", "/v1/customers", b"", b'{"a":2}')
    assert base != fingerprint("POST", "/v1/customers/cus_1", b"", b'{"a":1}')
    assert base != fingerprint("POST", "/v1/customers", b"expand=x", b'{"a":1}')
    assert fingerprint("POST", "/a", b"", b"not json") != fingerprint("POST", "/a", b"", b"not  json")
