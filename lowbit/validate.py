"""Argument checks shared by the fronts: each raises a clear error naming the argument."""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np


def check_bits(bits: Any, allowed: range = range(1, 9), name: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in allowed:
        raise ValueError(f"{name} must be an integer in {allowed.start}..{allowed.stop - 1}, got {bits!r}")
    return int(bits)


#: ``invalid=`` of the encoders that can meet values they cannot store (NaN / Inf input, scales
#: out of range): "raise" a ValueError (which on a GPU reads a flag back: one host
#: synchronization), or "nan": store the block / group with NaN fields (it decodes to NaN),
#: decided on the device, nothing read back (a CUDA-graph-capturable encode)
INVALID_POLICIES = ("raise", "nan")


def check_invalid(invalid: Any) -> str:
    if invalid not in INVALID_POLICIES:
        raise ValueError(f"invalid must be one of {INVALID_POLICIES}, got {invalid!r}")
    return str(invalid)


def check_axis(axis: Any, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be None or an integer in [{-ndim}, {ndim - 1}], got {axis!r}")
    return int(axis) % ndim


def check_group_size(group_size: Any, axis: int | None, length: int) -> int | None:
    if group_size is None:
        return None
    if axis is None:
        raise ValueError("group_size needs an axis to group along; got axis=None")
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if length % group_size:
        raise ValueError(f"group_size={group_size} does not divide the axis length {length}")
    return int(group_size)


def check_grouping(shape: tuple[int, ...], axis: Any, group_size: Any,
                   scaled: bool = True) -> tuple[int | None, int | None, int]:
    """(axis, group_size, elements per group) of a grouped scheme's flat, axis-last layout.

    ==========  ============  ==========================================================
    axis        group_size    one group (one scale) per
    ==========  ============  ==========================================================
    None        None          tensor
    a           None          fibre along axis a
    a           g             g consecutive elements along axis a (g divides the length)
    ==========  ============  ==========================================================

    ``scaled=False`` (a scheme called without a scale: values convert directly) ignores
    ``axis`` and takes the whole array as one group; ``group_size`` must then be None.
    A 0-d array has no axis.  The group of an empty array counts one element.

    Raises
    ------
    ValueError
        ``axis`` out of range; ``group_size`` not a positive integer, not dividing the axis
        length, given with ``axis=None`` or without a scale.
    """
    n = math.prod(shape)
    if not scaled:
        if group_size is not None:
            raise ValueError("group_size needs a scale (without one, values convert directly)")
        return None, None, max(n, 1)
    ax = check_axis(axis, max(len(shape), 1)) if shape else None
    gs = check_group_size(group_size, ax, shape[ax] if ax is not None else 0)
    return ax, gs, max(n if ax is None else (gs or shape[ax]), 1)


def check_seed(seed: Any, mode: str) -> int | None:
    """Validate ``seed``; for stochastic rounding with no seed, draw one (recorded in meta)."""
    if seed is None:
        return secrets.randbits(63) if mode == "stochastic" else None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def check_rbits(rbits: Any) -> int:
    return check_bits(rbits, range(1, 33), "rbits")


#: Largest ``iterations`` of :func:`lowbit.balance` and KVarN (``scheme="kvarn"``, the KV
#: caches).  The paper uses 8; on random and outlier-channel 128 x 128 tiles the selected
#: imbalance stops changing (to 6 significant digits) within 32 rounds.  The bound turns a
#: mistyped count (``iterations=10**9``: a pass over every tile per round, for hours) into a
#: clear error, and keeps the count within the CUDA kernels' int32.
MAX_ITERATIONS = 1024


def check_iterations(iterations: Any) -> int:
    """``iterations`` of the variance normalization: an integer in 0..MAX_ITERATIONS.

    Raises
    ------
    TypeError
        Not an integer (bools included).
    ValueError
        Negative or above :data:`MAX_ITERATIONS`.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)):
        raise TypeError(f"iterations must be an integer, got {iterations!r}")
    if not 0 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in 0..{MAX_ITERATIONS} (MAX_ITERATIONS), got {iterations}")
    return int(iterations)


#: The block kernels' ``fixed`` argument (bits, frac_bits, qmin, qmax) for a MiniFloat element.
NOT_FIXED = (0, 0, 0, 0)


def check_block_operands(n: int, length: int, block_size: int, bits: int, n_scales: int, n_packed: int,
                         what: str = "x") -> int:
    """Blocks of the block-format kernels (lowbit/cpu/blockcodec.py and its CUDA twin), the same
    check on both: ``block_size`` a power of two 8 .. 256, ``n`` elements in whole rows of
    ``length``, n_blocks = n_rows * ceil(length / block_size) scale codes and n_blocks *
    block_size * bits / 8 packed bytes.  Returns n_blocks; ValueError otherwise."""
    if not (8 <= block_size <= 256 and block_size & (block_size - 1) == 0):
        raise ValueError(f"block_size must be a power of two from 8 to 256, got {block_size}")
    if length <= 0 or n % length:
        raise ValueError(f"{what} of {n} elements does not hold rows of length {length}")
    n_blocks = n // length * -(-length // block_size)
    if n_scales != n_blocks or n_packed != n_blocks * block_size * bits // 8:
        raise ValueError(f"{n_blocks} blocks need {n_blocks} scales and {n_blocks * block_size * bits // 8} "
                         f"packed bytes, got {n_scales} and {n_packed}")
    return n_blocks


def check_tensor_scale(tensor_scale: Any) -> float:
    """0 (E8M0 block scales) or a finite positive float32 tensor scale (NVFP4)."""
    t = float(tensor_scale)
    if not (t == 0 or 0 < t < math.inf):
        raise ValueError(f"tensor_scale must be 0 (E8M0 scales) or a finite positive number, got {tensor_scale!r}")
    return t
