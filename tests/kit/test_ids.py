from __future__ import annotations

from collections.abc import Callable
from unittest.mock import patch

from hypothesis import example, given
from hypothesis import strategies as st

from stablegate.kit import ids as ids_module
from stablegate.kit.ids import _ALPHABET, _encode, id_timestamp_ms, is_valid_id, new_id, new_ids


@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.integers(min_value=0, max_value=(1 << 48) - 1))
def test_ids_sort_by_time(a_ms: int, b_ms: int) -> None:
    a, b = new_id("cus", a_ms), new_id("cus", b_ms)
    assert id_timestamp_ms(a) == a_ms and id_timestamp_ms(b) == b_ms
    if a_ms < b_ms:
        assert a < b
    assert is_valid_id(a, "cus") and not is_valid_id(a, "pay")


def test_an_id_with_a_trailing_newline_is_not_an_id() -> None:
    """`$` in a pattern also matches before a final newline: a cursor "pay_…\n" would
    pass and repeat the item it names."""
    value = new_id("pay")
    assert is_valid_id(value, "pay") and not is_valid_id(value + "\n", "pay")


def test_ids_are_unique_and_shaped() -> None:
    ids = {new_id("pay") for _ in range(10_000)}
    assert len(ids) == 10_000
    sample = next(iter(ids))
    assert sample.startswith("pay_") and len(sample) == 30


@given(st.text(max_size=40))
def test_garbage_is_never_a_valid_id(value: str) -> None:
    if is_valid_id(value, "cus"):
        assert value.startswith("cus_") and len(value) == 30


def test_ids_made_in_one_process_are_strictly_increasing() -> None:
    ids = [new_id("txn") for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@given(st.integers(min_value=1, max_value=64))
def test_a_batch_of_ids_is_unique_increasing_and_followed_by_larger_ids(count: int) -> None:
    batch = new_ids("msg", count)
    after = new_id("msg")
    assert len(set(batch)) == count and batch == sorted(batch) and after > batch[-1]
    assert all(is_valid_id(i, "msg") for i in batch)


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_encoding_is_big_endian_crockford_base32(value: int) -> None:
    assert len(new_id("x", now_ms=value >> 80)) == 28
    assert _encode(value) == "".join(_ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _fixed_new_id(value: int) -> Callable[[str], str]:
    """new_id as it behaves when its draw gives `value`: the counter moves to it."""

    def fake(prefix: str) -> str:
        ids_module._last_value = value
        return f"{prefix}_{_encode(value)}"

    return fake


@given(
    st.integers(min_value=0, max_value=(1 << 107) - 1),
    st.integers(min_value=0, max_value=(1 << 20) - 1),
    st.integers(min_value=1, max_value=3000),
)
@example(high=(1 << 107) - 1, low=(1 << 20) - 2, count=5)  # the head carries at the second id
def test_a_batch_of_ids_encodes_each_value_in_full(high: int, low: int, count: int) -> None:
    # new_ids encodes an id's head once per 2**20 values: every id must still be the full
    # encoding of its value, including across a carry into the head.
    first = (high << 20) | low
    with patch.object(ids_module, "new_id", _fixed_new_id(first)):
        batch = new_ids("txn", count)
    assert batch == [f"txn_{_encode(first + i)}" for i in range(count)]
    assert ids_module._last_value == first + count - 1
