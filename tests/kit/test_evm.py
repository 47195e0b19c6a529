"""kit.evm's keccak and EIP-55 checksums against eth-utils (the reference), and the
inputs it refuses."""

from __future__ import annotations

import pytest
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from stablegate.kit.evm import cached_checksum_address, checksum_address, keccak256


@given(st.binary(max_size=300))
def test_keccak_matches_eth_utils(data: bytes) -> None:
    assert keccak256(data) == keccak(data)


@given(st.binary(min_size=20, max_size=20))
def test_checksum_matches_eth_utils_in_every_spelling(raw: bytes) -> None:
    expected = to_checksum_address(raw)
    for spelling in (raw, raw.hex(), "0x" + raw.hex(), "0x" + raw.hex().upper(), expected):
        assert checksum_address(spelling) == expected
    assert cached_checksum_address(raw.hex()) == expected


NOT_ADDRESSES = ["", "0x", "0x" + "ab" * 19, "0x" + "ab" * 21, "0x" + "zz" * 20, "ab" * 19 + "g1", b"\x00" * 19]


@pytest.mark.parametrize("bad", [*NOT_ADDRESSES, b"\x00" * 21])
def test_anything_but_an_address_is_refused(bad: str | bytes) -> None:
    with pytest.raises(ValueError, match="address"):
        checksum_address(bad)
