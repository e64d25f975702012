"""Scheme ``rtn``: affine integer quantization per tensor, per axis or per group.

Grids (DESIGN.md section 2), b = ``bits``:

==============  =====================================  ==================================
symmetric       codes q                                reconstruction
==============  =====================================  ==================================
False           0 .. 2^b - 1                            x_hat = q * scale + offset
True, b >= 2    -(2^(b-1) - 1) .. 2^(b-1) - 1           x_hat = q * scale
True, b == 1    {-1, +1}                                x_hat = sign(x) * mean|x|
==============  =====================================  ==================================

with offset = min (rounded down to ``scale_dtype``), scale = (max - offset) / (2^b - 1)
(asymmetric) or max|x| / (2^(b-1) - 1) (symmetric), rounded up to ``scale_dtype``; a group
whose values are all equal gets scale 1.  Codes are ``round((x - offset) / scale)`` in
float64, clipped to the grid, then packed (``docs/packing.md``).  Symmetric codes are stored
biased by 2^(b-1) - 1; 1-bit symmetric stores (x >= 0).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from lowbit import scales
from lowbit.arrays import (
    Array,
    Origin,
    axis_back,
    axis_last,
    backend,
    decode_output_dtype,
    done_event,
    kernel_input,
    kernel_output,
    xp_of,
    zero,
)
from lowbit.quantized import QuantizedArray
from lowbit.rounding.modes import mode_code
from lowbit.schema import RtnMeta
from lowbit.validate import check_bits, check_grouping, check_rbits, check_seed

#: Group sizes with a single-pass kernel (one warp per group on the GPU); others take two passes.
#: Both paths give identical codes and fields.
FUSED_GROUP_SIZES = (32, 64, 128, 256, 512)


def _quantize_fused(k: Any, x: Array, g: int, bits: int, symmetric: bool, scale_dtype: str,
                    mode: int, seed: np.uint64, rbits: int, packed: Array) -> tuple[dict[str, Array], Array]:
    xp = xp_of(x)
    n_groups = x.size // g
    # one allocation for what is kept (scales, offsets unless symmetric) and the status word in
    # which the kernel flags NaN/Inf groups (1) and overflows (2)
    kept = n_groups if symmetric else 2 * n_groups
    buf = xp.empty(kept + 1, xp.float32)
    scale32 = buf[:n_groups]
    offset32 = xp.empty(n_groups, xp.float32) if symmetric else buf[n_groups:kept]  # zeros, dropped
    status = buf[kept:].view(xp.int32)
    zero(status)
    fmt = scales.kernel_code(scale_dtype)
    k.rtn_quantize_groups(x, g, bits, symmetric, fmt, mode, seed, rbits, packed, scale32, offset32, status)
    fields = {"scale": scales.from_f32(scale32, scale_dtype)}
    if not symmetric:
        fields["offset"] = scales.from_f32(offset32, scale_dtype)
    return fields, status


def _check_status(status: Array, scale_dtype: str, done: Any = None) -> None:
    """Raise for the fused kernel's flags (read last, so that the caller's host work overlaps
    the kernel on a GPU: the read waits for it).  ``done``: an event recorded after the kernel,
    for a deferred check that may run under another stream."""
    if done is not None:
        done.synchronize()
    flags = int(status.get()[0]) if hasattr(status, "get") else int(status[0])  # one 4-byte copy
    if flags & 1:
        raise ValueError("x contains NaN or Inf; rtn quantization needs finite values")
    if flags & 2:
        raise scales.overflow_error(scale_dtype)


def _quantize_two_pass(k: Any, x: Array, g: int, bits: int, symmetric: bool, scale_dtype: str,
                       mode: int, seed: np.uint64, rbits: int, packed: Array, order: int = 1,
                       check_finite: bool = True) -> tuple[dict[str, Array], Array | None]:
    """(fields, status): the group range, then the stored scales (scales.py), then the codes.

    ``check_finite=True`` raises at once for NaN/Inf input or a scale or offset overflowing
    ``scale_dtype`` (status None); False decides on the device, reading nothing back: a
    flawed group gets a NaN scale (its codes are unspecified; it decodes to NaN), and
    ``status`` (int32 [1]) the fused kernel's flags (bit 0: NaN/Inf input, bit 1: an
    overflow) for :func:`_check_status`.
    """
    xp = xp_of(x)
    n_groups = x.size // g
    lo = xp.empty(n_groups, xp.float64)
    hi = xp.empty(n_groups, xp.float64)
    k.group_range(x, g, lo, hi)  # NaN for a group holding NaN/Inf
    if check_finite and not bool(xp.isfinite(lo).all()):
        raise ValueError("x contains NaN or Inf; rtn quantization needs finite values")
    invalid = "raise" if check_finite else "nan"

    def store(values: Array, direction: scales.Direction) -> Array:
        return scales.store(values, scale_dtype, direction, invalid=invalid)

    def step_scale(step: Array) -> Array:  # 1 for a constant group; NaN stays NaN
        return store(xp.where(step <= 0, 1.0, step), "up")

    fields: dict[str, Array] = {}
    if symmetric and bits == 1:
        mean = xp.empty(n_groups, xp.float64)
        k.group_abs_mean(x, g, mean)
        fields["scale"] = store(mean, "nearest")
        offset32 = xp.zeros(n_groups, xp.float32)
    elif symmetric:
        amax = xp.maximum(xp.abs(lo), xp.abs(hi))
        fields["scale"] = step_scale(amax / float(2 ** (bits - 1) - 1))
        offset32 = xp.zeros(n_groups, xp.float32)
    else:
        fields["offset"] = store(lo, "down")
        offset32 = scales.load(fields["offset"], scale_dtype)
        fields["scale"] = step_scale((hi - offset32.astype(xp.float64)) / float(2**bits - 1))
    scale32 = scales.load(fields["scale"], scale_dtype)
    status = None
    if not check_finite:
        flawed = xp.isnan(scale32)  # a NaN offset (NaN input, overflow) makes the scale NaN too
        nan_input = xp.isnan(lo)
        status = (nan_input.any().astype(xp.int32)
                  | ((flawed & ~nan_input).any().astype(xp.int32) << 1)).reshape(1)
    if mode >= 0:
        k.rtn_encode(x, g, scale32, offset32, bits, symmetric, mode, seed, rbits, packed)
        return fields, status
    # error diffusion (order 1 or 2) along each group, on the same grid
    grid = (x.reshape(n_groups, g).astype(xp.float64) - offset32.astype(xp.float64)[:, None]) / scale32.astype(
        xp.float64
    )[:, None]
    if status is not None:  # flawed groups (NaN scale): codes 0, not a cast of NaN
        grid = xp.where(xp.isnan(scale32)[:, None], 0.0, grid)
    m = float(2 ** (bits - 1) - 1) if symmetric else 0.0
    top = m if symmetric else float(2**bits - 1)
    out = xp.empty_like(grid)
    k.diffuse_rows(grid, order, -m, top, out)
    k.pack_codes((out + m).astype(xp.uint8).reshape(-1), bits, packed)
    return fields, status


def encode_groups(x: Array, group_size: int, bits: int, symmetric: bool, scale_dtype: str,
                  rounding: str, seed: np.uint64, rbits: int, order: int = 1,
                  check_finite: bool = True) -> tuple[Array, dict[str, Array], Array | None]:
    """(packed codes, fields, status) of flat ``x`` (a kernel input) in groups of ``group_size``:
    the encoder of :func:`quantize` (arguments checked there), also for callers that keep no
    :class:`QuantizedArray` (the KV codecs).

    ``check_finite=True`` raises for NaN/Inf input or a scale or offset overflowing
    ``scale_dtype`` (status None).  False reads nothing back (no host synchronization on a
    GPU): a flawed group gets a non-finite scale (NaN; +Inf for an overflow on the single-pass
    path, whose codes are then 0) and decodes to non-finite values, and ``status`` (int32 [1],
    on x's device) holds the flags for :func:`_check_status` (bit 0: NaN/Inf input, bit 1: an
    overflow).
    """
    xp = xp_of(x)
    k = backend(x)
    mode = mode_code(rounding)
    packed = xp.empty((x.size * bits + 7) // 8, xp.uint8)
    if rounding == "diffuse":
        fields, status = _quantize_two_pass(k, x, group_size, bits, symmetric, scale_dtype, -1, seed, rbits,
                                            packed, order, check_finite)
    elif group_size in FUSED_GROUP_SIZES and not (symmetric and bits == 1):
        fields, status = _quantize_fused(k, x, group_size, bits, symmetric, scale_dtype, mode, seed, rbits,
                                         packed)
        if check_finite:
            _check_status(status, scale_dtype)
            status = None
    else:
        fields, status = _quantize_two_pass(k, x, group_size, bits, symmetric, scale_dtype, mode, seed,
                                            rbits, packed, check_finite=check_finite)
    return packed, fields, status


def quantize(
    arr: Array,
    origin: Origin,
    bits: int,
    *,
    axis: int | None = -1,
    group_size: int | None = None,
    symmetric: bool = False,
    rounding: str = "nearest_even",
    seed: int | None = None,
    rbits: int = 16,
    scale_dtype: str = "float32",
    check_finite: bool = True,
    order: int = 1,
) -> QuantizedArray:
    """Affine integer quantization (front of ``lowbit.quantize(x, scheme="rtn")``).

    Parameters
    ----------
    arr, origin
        The input as given by :func:`lowbit.arrays.to_backend`.
    bits : int
        Code width, 1..8.
    axis : int or None
        Axis along which groups are formed (see table); ``None`` means per tensor.
    group_size : int or None
        Elements per group along ``axis``; must divide its length.
    symmetric : bool
        Symmetric grid around zero (no offset stored).
    rounding : str
        A rounding mode name (``lowbit.rounding.modes``).  ``diffuse`` is error diffusion
        along ``axis`` within each group, of order ``order`` (first order: the residual of
        each code is carried to the next element; partial sums of x_hat track those of x
        within half a step; second order: noise transfer (1 - z^-1)**2, docs/rounding.md).
    seed, rbits
        Stochastic rounding key and random bits per element (seed drawn and recorded
        in ``meta`` when omitted).
    scale_dtype : {"float32", "float16", "bfloat16"}
        Storage of scales and offsets.
    check_finite : bool, default True
        Raise at once if ``x`` holds NaN/Inf or a scale or offset overflows ``scale_dtype``.
        On a GPU that means waiting for the kernel (one synchronization per call).  With
        False, it returns without waiting and leaves the check to :meth:`QuantizedArray.check`
        (also run by ``save``); until then a flawed group decodes to non-finite values (NaN;
        -Inf for a symmetric overflow on the single-pass path), as its scale is NaN (NaN/Inf
        input; the two-pass paths (other group sizes, 1-bit symmetric, ``diffuse``): overflow
        too) or +Inf (overflow, single-pass path, group sizes in ``FUSED_GROUP_SIZES``), and
        no other group is affected.  The codes of a flawed group are 0 on the single-pass
        path and unspecified on the two-pass paths.
    order : {1, 2}, default 1
        Order of ``rounding="diffuse"`` (``lowbit.round``'s ``order``); other roundings take
        only 1.  Decoding does not depend on it, so it is not recorded in ``meta``.

    ==========  ============  ==============================================
    axis        group_size    one scale (and offset) per
    ==========  ============  ==============================================
    None        None          tensor
    a           None          fibre along axis a (e.g. per token for a = -1)
    a           g             g consecutive elements along axis a
    ==========  ============  ==============================================

    Raises
    ------
    ValueError
        Bad ``bits``/``axis``/``group_size``/``rounding``/``seed``/``rbits``/``scale_dtype``/``order``,
        or NaN/Inf in ``x`` or a scale overflowing ``scale_dtype`` (unless deferred by
        ``check_finite=False``).
    TypeError
        ``symmetric`` or ``check_finite`` is not a bool.
    """
    bits = check_bits(bits)
    if not isinstance(symmetric, (bool, np.bool_)):
        raise TypeError(f"symmetric must be a bool, got {symmetric!r}")
    symmetric = bool(symmetric)
    mode_code(rounding)  # ValueError for an unknown mode
    if rounding == "diffuse" and symmetric and bits == 1:
        raise ValueError("rounding='diffuse' needs a uniform grid; 1-bit symmetric (sign) has none")
    if isinstance(order, (bool, np.bool_)) or order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    if order != 1 and rounding != "diffuse":
        raise ValueError(f"order={order!r} applies to rounding='diffuse' only, got rounding={rounding!r}")
    seed = check_seed(seed, rounding)
    rbits = check_rbits(rbits)
    scale_dtype = scales.check_scale_dtype(scale_dtype)
    if not isinstance(check_finite, (bool, np.bool_)):
        raise TypeError(f"check_finite must be a bool, got {check_finite!r}")
    shape = tuple(int(s) for s in arr.shape)
    ax, gs, g = check_grouping(shape, axis, group_size)

    x = kernel_input(axis_last(arr, ax), origin.dtype).reshape(-1)
    packed, fields, status = encode_groups(x, g, bits, symmetric, scale_dtype, rounding,
                                           np.uint64(seed or 0), rbits, int(order), bool(check_finite))
    meta = RtnMeta(shape=shape, dtype=origin.dtype, bits=bits, axis=ax, group_size=gs,
                   symmetric=symmetric, scale_dtype=scale_dtype, rounding=rounding, seed=seed,
                   rbits=rbits).to_meta()
    q = QuantizedArray(packed, fields, meta, origin)
    if status is not None:  # check_finite=False
        q._pending = functools.partial(_check_status, status, scale_dtype, done_event(status))
    return q


def dequantize(q: QuantizedArray) -> Array:
    """x_hat in ``q.origin.dtype``: code * scale + offset, exact in float64 (scales stored by
    :func:`quantize` keep it within 53 bits), rounded once to the output dtype (CPU: the kernel
    writes float64 for 16-bit outputs and :func:`lowbit.arrays.to_dtype` rounds it; CUDA: the
    kernel rounds itself, bit-identically)."""
    meta = q.meta
    shape = tuple(meta["shape"])
    ax, sd = meta["axis"], meta["scale_dtype"]
    xp = xp_of(q.codes)
    scale32 = scales.load(q.fields["scale"], sd)
    offset32 = (
        scales.load(q.fields["offset"], sd) if "offset" in q.fields else xp.zeros_like(scale32)
    )
    n = math.prod(shape)
    _, _, g = check_grouping(shape, ax, meta["group_size"])
    out = xp.empty(n, decode_output_dtype(q.codes, q.origin.dtype))
    backend(q.codes).rtn_decode(q.codes, g, scale32, offset32, int(meta["bits"]), bool(meta["symmetric"]), out)
    return axis_back(kernel_output(out, q.origin.dtype), shape, ax)
