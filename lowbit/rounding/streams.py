"""Skipping ahead in the counter-based generator (docs/rounding.md): ``seed_at``.

``random_bits(seed, index) = mix64(mix64(seed) + GOLDEN * (index + 1))`` (mod 2**64), and
mix64 is a bijection.  So the stream of ``seed`` read from element ``start`` on is itself the
stream of another seed, from element 0::

    random_bits(seed_at(seed, start), i) == random_bits(seed, start + i)   for every i >= 0

with ``seed_at(seed, start) = mix64^-1(mix64(seed) + GOLDEN * start)``.  A chunk of a larger
array (lowbit.dask) is quantized with ``seed_at(seed, first element's global index)`` and gets
the random bits the whole array would have given it, whatever kernel consumes them.
"""

from __future__ import annotations

import numpy as np

from lowbit.rounding.reference import GOLDEN, MASK64, mix64

_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_M1_INV = pow(_M1, -1, 1 << 64)
_M2_INV = pow(_M2, -1, 1 << 64)


def _unshift(z: int, s: int) -> int:
    """Inverse of ``z ^ (z >> s)`` on 64-bit integers (s >= 1)."""
    out = z
    for _ in range(64 // s + 1):
        out = z ^ (out >> s)
    return out & MASK64


def unmix64(z: int) -> int:
    """Inverse of :func:`lowbit.rounding.reference.mix64`: ``unmix64(mix64(z)) == z``."""
    z = _unshift(z & MASK64, 31)
    z = _unshift((z * _M2_INV) & MASK64, 27)
    return _unshift((z * _M1_INV) & MASK64, 30)


def seed_at(seed: int, start: int) -> int:
    """The seed whose stream is ``seed``'s stream from element ``start`` on (module docstring).

    Parameters
    ----------
    seed : int in [0, 2**64)
    start : int >= 0
        Global index of the element that becomes index 0.

    Returns
    -------
    int in [0, 2**64); ``seed_at(seed, 0) == seed``.
    """
    return unmix64((mix64(seed) + GOLDEN * start) & MASK64)


def random_bits_array(seed: int, start: int, count: int) -> np.ndarray:
    """``random_bits(seed, i)`` for i in ``start .. start + count - 1``, as a uint64 numpy array.

    The same generator as the kernels (lowbit/cpu/scalar.py) and
    :func:`lowbit.rounding.reference.random_bits`, vectorized in numpy (uint64 array
    arithmetic wraps modulo 2**64) for small host-side tables such as random rotations.
    """
    key = np.uint64(mix64(seed & MASK64))
    index = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    z = index * np.uint64(GOLDEN) + key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def standard_normal(seed: int, start: int, count: int) -> np.ndarray:
    """``count`` float64 N(0, 1) samples from the counter-based generator (Box–Muller).

    Sample j uses the random bits of elements ``start + 2j`` and ``start + 2j + 1``:
    u1 = (top 53 bits + 1/2) / 2**53 in (0, 1), u2 = top 53 bits / 2**53 in [0, 1),
    z_j = sqrt(-2 ln u1) cos(2 pi u2).  Deterministic for (seed, start, count) on every machine
    (up to the libm's last-ulp differences in log, sqrt and cos).
    """
    bits = random_bits_array(seed, start, 2 * count).reshape(count, 2) >> np.uint64(11)
    u1 = (bits[:, 0].astype(np.float64) + 0.5) * 2.0 ** -53
    u2 = bits[:, 1].astype(np.float64) * 2.0 ** -53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
