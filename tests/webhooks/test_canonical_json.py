"""An event body's one serialisation (webhooks.service.canonical_json): orjson, byte for
byte what the standard library's sorted, compact, UTF-8 form would be for the values an
event holds, and the standard library itself for integers orjson refuses."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stablegate.webhooks.service import canonical_json

# What jsonb gives back and what our views render: no floats (amounts and rates are text).
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5)
)


def stdlib(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@given(VALUES)
def test_same_bytes_as_the_standard_library(value: Any) -> None:
    assert canonical_json(value) == stdlib(value)


def test_integers_beyond_64_bits_fall_back_to_the_standard_library() -> None:
    value = {"b": 2**200, "a": [-(2**70)]}
    expected = b'{"a":[-1180591620717411303424],"b":' + str(2**200).encode() + b"}"
    assert canonical_json(value) == stdlib(value) == expected
