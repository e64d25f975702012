"""Bit packing: exact layout, round trips, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowbit
from lowbit.packing import PACK_BITS, packed_size


def reference_pack(codes: list[int], bits: int) -> bytes:
    """Little-endian bit stream, written the slow way."""
    acc = 0
    for i, c in enumerate(codes):
        acc |= c << (i * bits)
    return acc.to_bytes((len(codes) * bits + 7) // 8, "little")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PACK_BITS), st.data())
def test_pack_matches_reference_and_round_trips(bits, data):
    codes = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=0, max_size=70))
    arr = np.array(codes, np.uint8)
    packed = lowbit.pack(arr, bits)
    assert packed.dtype == np.uint8 and packed.shape == (packed_size(len(codes), bits),)
    assert packed.tobytes() == reference_pack(codes, bits)
    np.testing.assert_array_equal(lowbit.unpack(packed, bits, len(codes)), arr)


def test_layout_pinned_by_hand():
    # 2-bit: code c in byte c // 4 at shift 2 * (c % 4)
    assert lowbit.pack(np.array([1, 2, 3, 0, 3], np.uint8), 2).tolist() == [0b00111001, 0b11]
    # 4-bit: low nibble first
    assert lowbit.pack(np.array([0xA, 0x5, 0xF], np.uint8), 4).tolist() == [0x5A, 0x0F]
    # 3-bit codes straddle bytes: 0b111 at c=2 covers bits 6..8
    assert lowbit.pack(np.array([0, 0, 7], np.uint8), 3).tolist() == [0b11000000, 0b1]
    # 1-bit: least significant first
    assert lowbit.pack(np.array([1, 0, 0, 0, 0, 0, 0, 1, 1], np.uint8), 1).tolist() == [0x81, 0x01]


def test_multidimensional_codes_are_flattened_in_c_order():
    c = np.arange(16, dtype=np.uint8).reshape(4, 4) % 4
    np.testing.assert_array_equal(lowbit.pack(c, 2), lowbit.pack(c.ravel(), 2))
    np.testing.assert_array_equal(lowbit.pack(c.T, 2), lowbit.pack(np.ascontiguousarray(c.T).ravel(), 2))


def test_torch_codes_stay_torch():
    torch = pytest.importorskip("torch")
    c = torch.tensor([1, 2, 3, 0, 3], dtype=torch.uint8)
    p = lowbit.pack(c, 2)
    assert isinstance(p, torch.Tensor) and p.tolist() == [0b00111001, 0b11]
    assert torch.equal(lowbit.unpack(p, 2, 5), c)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: lowbit.pack(np.array([4], np.uint8), 2), ValueError, "codes must be < 2\\*\\*bits = 4"),
        (lambda: lowbit.pack(np.array([1], np.uint8), 9), ValueError, "bits must be one of"),
        (lambda: lowbit.pack(np.array([1], np.int32), 2), TypeError, "dtype in"),
        (lambda: lowbit.unpack(np.zeros(1, np.uint8), 3, 5), ValueError, "5 codes of 3 bits need 2"),
        (lambda: lowbit.unpack(np.zeros(1, np.uint8), 3, -1), ValueError, "count must be"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
