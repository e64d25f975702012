"""Numba kernels for the fast Walsh–Hadamard transform (Sylvester order, optional core factor).

The transform of a row of length ``n = 2**k * m`` is ``(H_{2**k} ⊗ core) @ x``: the ``m × m``
``core`` matrix (``[[1]]``, or a symmetric Paley-type Hadamard matrix of order 12 or 20 built by
the front) is applied to each of the ``2**k`` consecutive chunks of ``m`` elements
(``acc = 0; acc = acc + core[i, j] * v[j]``, j ascending), then the radix-2 Sylvester levels run
in order of increasing stride ``m, 2m, 4m, ...``, the lower index of each pair keeping ``a + b``
and the upper ``a - b``.  Every output is that sequence of IEEE operations, however the levels
are grouped (the CUDA twin, lowbit/cuda/hadamard.cuh, computes the same bits).

Two layouts:

- ``m == 1`` (rows of ``2**k``): natural layout, no scratch.  A *segment* of up to 16 vector
  registers (64-byte vectors: 256 float32 or 128 float64 consecutive elements, or several
  whole rows when a row is shorter than a vector) is loaded, transformed there -- strides below
  the vector width by a lane permutation, ``p = v[i ^ h]``, then ``select(bit h of i, p - v,
  v + p)``, which is ``a + b`` / ``a - b`` with the operands in order; longer strides between
  registers -- and stored once.  Rows longer than a segment are cache-blocked along the transform axis: all
  segments of the row first, then the remaining levels in radix-8 sweeps over the row (in L2),
  the last sweep applying the scale.  The register code is emitted as LLVM vector IR by
  :func:`_butterfly_kernel` (Numba intrinsics), because LLVM does not vectorize the in-vector
  levels from scalar loops.
- ``m > 1`` (12 * 2**k, 20 * 2**k): SIMD lanes run across rows: each thread copies a block of
  ``lanes`` rows into a transposed scratch buffer ``[n, lanes]`` (whole ``w × w`` tiles
  transposed in registers by :func:`_transpose_tile`, the rest element by element), so the core
  factor and every butterfly is an operation on contiguous ``lanes``-long vectors.  The core
  factor runs in registers (:func:`_core_kernel`: the m input vectors of a chunk loaded once,
  each output accumulated in a register).

No fast-math flags anywhere: no reassociation, no contraction of a multiply and an add.
"""

from __future__ import annotations

import functools
from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from lowbit.cpu.scalar import random_bits

_U64 = nb.uint64

#: Rows per block of the ``m > 1`` path (SIMD lanes across rows) for rows up to 1024; longer
#: rows use one vector register of lanes.  Measured: 16 and 64 lanes were slower on the 2-core
#: dev box for short rows; for float32 rows of 1280 and 5120, 16 tiled lanes are 1.75x 8 lanes.
_LANES = 32
#: Most scratch blocks allocated per call of the ``m > 1`` path.
_CHUNKS = 256
#: log2 of the most elements transformed in registers at once: 256 float32 or 128 float64
#: (16 AVX-512 registers).  Measured on the 2-core Zen 4 dev box, one thread: 32 registers
#: spill and are slower (float64 n = 256: 1.04 vs 0.64 ns per element, n = 512: 1.33 vs 0.64).
SEGMENT_LOG2 = 8
#: Most vector registers a segment occupies.
_SEGMENT_VECTORS = 16
#: Bytes per vector register of the emitted code (AVX-512; LLVM splits it on narrower targets).
_VECTOR_BYTES = 64


@nb.njit(parallel=True, cache=True)
def hadamard_signs(seed: np.uint64, out: np.ndarray) -> None:
    """Random signs for a randomized Hadamard: ``out[j] = 1 - 2 * (random_bits(seed, j) >> 63)``."""
    for j in nb.prange(out.shape[0]):
        bit = random_bits(_U64(seed), np.int64(j)) >> _U64(63)
        out[j] = 1.0 - 2.0 * np.float64(bit)


# -- m == 1: butterflies in vector registers ----------------------------------------------------

@functools.cache
def _butterfly_kernel(levels: int, in_vector: bool) -> Any:
    """A Numba intrinsic ``(src, si, dst, di, stride, signs, sj, pre, finish, post, scale)``.

    It loads ``count`` vectors of ``w`` lanes (w = 64 bytes / itemsize) from ``src`` at element
    offsets ``si + t * stride`` (t = 0 .. count - 1), multiplies them by ``signs`` at ``sj + t *
    stride`` if ``pre``, applies ``levels`` butterfly levels, then (if ``finish``) multiplies by
    ``scale`` and, if ``post``, by the signs, and stores them to ``dst`` at ``di + t * stride``.

    ``in_vector``: the levels are the first ``levels`` of a segment of ``max(2**levels, w)``
    consecutive elements (``stride`` is ignored, taken as w): strides 1, 2, ... inside each
    vector, then strides w, 2w, ... between the vectors; ``count = max(2**levels // w, 1)``.
    Otherwise ``count = 2**levels`` vectors at a runtime ``stride`` (a multiple of w), and the
    levels run between them (strides ``stride, 2 * stride, ...``): a radix-``2**levels`` sweep.
    """

    @intrinsic
    def butterflies(typingctx: Any, src: Any, si: Any, dst: Any, di: Any, stride: Any,
                    signs: Any, sj: Any, pre: Any, finish: Any, post: Any, scale: Any) -> Any:
        sig = types.void(src, si, dst, di, stride, signs, sj, pre, finish, post, scale)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            src_v, si_v, dst_v, di_v, stride_v, signs_v, sj_v, pre_v, finish_v, post_v, scale_v = args
            arg_types = signature.args
            dtype = arg_types[0].dtype
            fty = context.get_value_type(dtype)
            width = _VECTOR_BYTES // dtype.bitwidth * 8
            vty = ir.VectorType(fty, width)
            intp = context.get_value_type(types.intp)
            align = dtype.bitwidth // 8

            def as_intp(value: Any, ty: Any) -> Any:
                return context.cast(builder, value, ty, types.intp)

            si_i, di_i, sj_i = (as_intp(args[k], arg_types[k]) for k in (1, 3, 6))
            if in_vector:
                low = min(levels, width.bit_length() - 1)  # levels inside a vector
                count = max((1 << levels) // width, 1)
                stride_i = ir.Constant(intp, width)
            else:
                low = 0
                count = 1 << levels
                stride_i = as_intp(stride_v, arg_types[4])

            def address(arr_v: Any, arr_ty: Any, start: Any, t: int) -> Any:
                data = context.make_array(arr_ty)(context, builder, arr_v).data
                offset = builder.add(start, builder.mul(stride_i, ir.Constant(intp, t)))
                return builder.bitcast(builder.gep(data, [offset]), vty.as_pointer())

            def load(arr_v: Any, arr_ty: Any, start: Any, t: int) -> Any:
                return builder.load(address(arr_v, arr_ty, start, t), align=align)

            v = [load(src_v, arg_types[0], si_i, t) for t in range(count)]
            # load_signed: signs[j] * x[j] when pre
            entry = builder.block
            with builder.if_then(pre_v):
                signed = [builder.fmul(load(signs_v, arg_types[5], sj_i, t), v[t])
                          for t in range(count)]
                signed_end = builder.block
            for t in range(count):
                phi = builder.phi(vty)
                phi.add_incoming(v[t], entry)
                phi.add_incoming(signed[t], signed_end)
                v[t] = phi
            # butterfly_in_vector: p = v[i ^ h]; lower lanes v + p (a + b), upper p - v (a - b)
            lanes32 = ir.VectorType(ir.IntType(32), width)
            for level in range(low):
                h = 1 << level
                partner = ir.Constant(lanes32, [i ^ h for i in range(width)])
                upper = ir.Constant(ir.VectorType(ir.IntType(1), width),
                                    [bool(i & h) for i in range(width)])
                for t in range(count):
                    p = builder.shuffle_vector(v[t], v[t], partner)
                    v[t] = builder.select(upper, builder.fsub(p, v[t]), builder.fadd(v[t], p))
            # butterfly_across_vectors: strides of whole vectors
            for level in range(levels - low):
                hv = 1 << level
                for t in range(count):
                    if t & hv == 0:
                        a, b = v[t], v[t + hv]
                        v[t] = builder.fadd(a, b)
                        v[t + hv] = builder.fsub(a, b)
            # store: scale * v, then signs[j] * (scale * v) when post; raw when not finish
            with builder.if_else(finish_v) as (then, otherwise):
                with then:
                    splat = builder.insert_element(ir.Constant(vty, ir.Undefined), scale_v,
                                                   ir.Constant(ir.IntType(32), 0))
                    splat = builder.shuffle_vector(splat, splat, ir.Constant(lanes32, [0] * width))
                    scaled = [builder.fmul(splat, v[t]) for t in range(count)]
                    with builder.if_else(post_v) as (signed_store, plain_store):
                        with signed_store:
                            for t in range(count):
                                s = load(signs_v, arg_types[5], sj_i, t)
                                builder.store(builder.fmul(s, scaled[t]),
                                              address(dst_v, arg_types[2], di_i, t), align=align)
                        with plain_store:
                            for t in range(count):
                                builder.store(scaled[t], address(dst_v, arg_types[2], di_i, t),
                                              align=align)
                with otherwise:
                    for t in range(count):
                        builder.store(v[t], address(dst_v, arg_types[2], di_i, t), align=align)
            return context.get_dummy_value()

        return sig, codegen

    return butterflies


_segment_0, _segment_1, _segment_2, _segment_3, _segment_4, _segment_5, _segment_6, _segment_7, \
    _segment_8 = (_butterfly_kernel(levels, True) for levels in range(SEGMENT_LOG2 + 1))
_sweep_1, _sweep_2, _sweep_3 = (_butterfly_kernel(levels, False) for levels in (1, 2, 3))


def _transpose_kernel() -> Any:
    @intrinsic
    def _transpose_tile(typingctx: Any, src: Any, si: Any, src_stride: Any, dst: Any, di: Any,
                        dst_stride: Any) -> Any:
        """Copy a w x w tile transposed (w = 64 bytes / itemsize): ``dst[di + c * dst_stride + r] =
        src[si + r * src_stride + c]``, in registers (log2(w) stages of two-vector lane shuffles)."""
        sig = types.void(src, si, src_stride, dst, di, dst_stride)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            arg_types = signature.args
            dtype = arg_types[0].dtype
            width = _VECTOR_BYTES // dtype.bitwidth * 8
            vty = ir.VectorType(context.get_value_type(dtype), width)
            intp = context.get_value_type(types.intp)
            align = dtype.bitwidth // 8
            si_i, ss_i, di_i, ds_i = (context.cast(builder, args[k], arg_types[k], types.intp)
                                      for k in (1, 2, 4, 5))

            def address(k: int, start: Any, step: Any, t: int) -> Any:
                data = context.make_array(arg_types[k])(context, builder, args[k]).data
                offset = builder.add(start, builder.mul(step, ir.Constant(intp, t)))
                return builder.bitcast(builder.gep(data, [offset]), vty.as_pointer())

            v = [builder.load(address(0, si_i, ss_i, t), align=align) for t in range(width)]
            lanes32 = ir.VectorType(ir.IntType(32), width)
            s = 1
            while s < width:
                # rows t and t + s swap their off-diagonal s x s blocks
                low = ir.Constant(lanes32, [lane if lane & s == 0 else width + lane - s
                                            for lane in range(width)])
                high = ir.Constant(lanes32, [lane + s if lane & s == 0 else width + lane
                                             for lane in range(width)])
                for t in range(width):
                    if t & s == 0:
                        a, b = v[t], v[t + s]
                        v[t] = builder.shuffle_vector(a, b, low)
                        v[t + s] = builder.shuffle_vector(a, b, high)
                s *= 2
            for t in range(width):
                builder.store(v[t], address(3, di_i, ds_i, t), align=align)
            return context.get_dummy_value()

        return sig, codegen

    return _transpose_tile


_transpose_tile = _transpose_kernel()


@functools.cache
def _core_kernel(m: int) -> Any:
    """A Numba intrinsic ``(buf, bi, stride, core)``: the ``m × m`` core factor on ``m`` vectors
    of w lanes at ``buf[bi + j * stride]`` (j < m), in registers and in place: ``acc = 0; acc =
    acc + core[i, j] * v[j]`` (j ascending) for each output vector i."""

    @intrinsic
    def core_factor(typingctx: Any, buf: Any, bi: Any, stride: Any, core: Any) -> Any:
        sig = types.void(buf, bi, stride, core)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            arg_types = signature.args
            dtype = arg_types[0].dtype
            width = _VECTOR_BYTES // dtype.bitwidth * 8
            fty = context.get_value_type(dtype)
            vty = ir.VectorType(fty, width)
            intp = context.get_value_type(types.intp)
            align = dtype.bitwidth // 8
            bi_i, stride_i = (context.cast(builder, args[k], arg_types[k], types.intp) for k in (1, 2))
            data = context.make_array(arg_types[0])(context, builder, args[0]).data
            core_data = context.make_array(arg_types[3])(context, builder, args[3]).data

            def address(t: int) -> Any:
                offset = builder.add(bi_i, builder.mul(stride_i, ir.Constant(intp, t)))
                return builder.bitcast(builder.gep(data, [offset]), vty.as_pointer())

            v = [builder.load(address(j), align=align) for j in range(m)]
            zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * width)
            lanes32 = ir.VectorType(ir.IntType(32), width)
            for i in range(m):
                acc = zero
                for j in range(m):
                    w = builder.load(builder.gep(core_data, [ir.Constant(intp, i * m + j)]))
                    splat = builder.insert_element(ir.Constant(vty, ir.Undefined), w,
                                                   ir.Constant(ir.IntType(32), 0))
                    splat = builder.shuffle_vector(splat, splat, ir.Constant(lanes32, [0] * width))
                    acc = builder.fadd(acc, builder.fmul(splat, v[j]))
                builder.store(acc, address(i), align=align)  # every input is in registers
            return context.get_dummy_value()

        return sig, codegen

    return core_factor


_core_12, _core_20 = _core_kernel(12), _core_kernel(20)


@nb.njit(inline="always", cache=True)
def _segment(levels: int, src: np.ndarray, si: int, dst: np.ndarray, di: int, signs: np.ndarray,
             sj: int, pre: bool, finish: bool, post: bool, scale: np.floating) -> None:
    """The first ``levels`` levels (<= SEGMENT_LOG2) on ``max(2**levels, w)`` elements at si."""
    if levels == 0:
        _segment_0(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 1:
        _segment_1(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 2:
        _segment_2(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 3:
        _segment_3(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 4:
        _segment_4(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 5:
        _segment_5(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 6:
        _segment_6(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    elif levels == 7:
        _segment_7(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)
    else:
        _segment_8(src, si, dst, di, 0, signs, sj, pre, finish, post, scale)


@nb.njit(inline="always", cache=True)
def _sweep(buf: np.ndarray, base: int, n: int, h: int, levels: int, width: int,
           signs: np.ndarray, finish: bool, post: bool, scale: np.floating) -> None:
    """Levels of strides ``h, 2h, ...`` (``levels`` of them, 1 to 3) over ``buf[base:base + n]``,
    in place, ``width`` elements at a time (h is a multiple of width)."""
    span = h << levels
    for b0 in range(0, n, span):
        for i in range(b0, b0 + h, width):
            if levels == 3:
                _sweep_3(buf, base + i, buf, base + i, h, signs, i, False, finish, post, scale)
            elif levels == 2:
                _sweep_2(buf, base + i, buf, base + i, h, signs, i, False, finish, post, scale)
            else:
                _sweep_1(buf, base + i, buf, base + i, h, signs, i, False, finish, post, scale)


@nb.njit(cache=True)
def _log2(n: int) -> int:
    k = 0
    while (1 << k) < n:
        k += 1
    return k


@nb.njit(parallel=True, cache=True)
def _fwht_pow2(x: np.ndarray, signs: np.ndarray, signs_first: bool, scale: np.floating,
               out: np.ndarray) -> None:
    """:func:`fwht` for rows of ``n = 2**k`` (natural layout, butterflies in registers)."""
    rows, n = x.shape
    width = _VECTOR_BYTES // x.itemsize
    src = x.reshape(rows * n)
    dst = out.reshape(rows * n)
    has_signs = signs.shape[0] == n
    pre = has_signs and signs_first
    post = has_signs and not signs_first
    log_n = _log2(n)
    levels = min(log_n, _log2(_SEGMENT_VECTORS * width))
    size = max(1 << levels, width)  # elements per segment (several rows when n < width)
    if n < width:  # signs tiled over a vector of width // n rows
        tiled = np.empty(width if has_signs else 0, dtype=x.dtype)
        for e in range(tiled.shape[0]):
            tiled[e] = signs[e % n]
    else:
        tiled = signs
    if n <= size:
        groups = rows * n // size
        for g in nb.prange(groups):
            _segment(levels, src, g * size, dst, g * size, tiled, 0, pre, True, post, scale)
        # the last rows when n < width and rows * n is no multiple of width: scalar code
        for r in range(groups * size // n, rows):
            for j in range(n):
                out[r, j] = signs[j] * x[r, j] if pre else x[r, j]
            h = 1
            while h < n:
                for b0 in range(0, n, 2 * h):
                    for i in range(b0, b0 + h):
                        a0 = out[r, i]
                        a1 = out[r, i + h]
                        out[r, i] = a0 + a1
                        out[r, i + h] = a0 - a1
                h *= 2
            for j in range(n):
                out[r, j] = signs[j] * (scale * out[r, j]) if post else scale * out[r, j]
        return
    for r in nb.prange(rows):
        # cache-blocked along the row: segments, then radix-8 sweeps of the longer strides
        base = r * n
        for s0 in range(0, n, size):
            _segment(levels, src, base + s0, dst, base + s0, signs, s0, pre, False, post, scale)
        h = size
        left = log_n - levels
        while left > 0:
            step = min(left, 3) if left != 4 else 2  # 4 levels: 2 + 2, not 3 + 1
            _sweep(dst, base, n, h, step, width, signs, left == step, post, scale)
            h <<= step
            left -= step


# -- m > 1: lanes across rows -------------------------------------------------------------------

@nb.njit(inline="always", cache=True)
def _butterflies(buf: np.ndarray, tmp: np.ndarray, core: np.ndarray, lanes: int) -> None:
    """Apply ``H_{2**k} ⊗ core`` in place to the columns of ``buf[:, :lanes]`` (rows = positions)."""
    n = buf.shape[0]
    m = core.shape[0]
    width = _VECTOR_BYTES // buf.itemsize
    if m == 12 or m == 20:
        # core factor on each chunk of m consecutive positions, w lanes at a time in registers
        # (the buffer holds whole vectors of lanes, so the last one may read unused lanes)
        stride = buf.shape[1]
        for c0 in range(0, n, m):
            for r in range(0, lanes, width):
                if m == 12:
                    _core_12(buf, c0 * stride + r, stride, core)
                else:
                    _core_20(buf, c0 * stride + r, stride, core)
    elif m > 1:
        # core factor on each chunk of m consecutive positions
        for c0 in range(0, n, m):
            for i in range(m):
                for r in range(lanes):
                    tmp[i, r] = 0.0
                for j in range(m):
                    w = core[i, j]
                    for r in range(lanes):
                        tmp[i, r] += w * buf[c0 + j, r]
            for i in range(m):
                for r in range(lanes):
                    buf[c0 + i, r] = tmp[i, r]
    h = m
    # radix-4 passes (two butterfly levels per sweep over the buffer)
    while 4 * h <= n:
        for b0 in range(0, n, 4 * h):
            for i in range(b0, b0 + h):
                for r in range(lanes):
                    a0 = buf[i, r]
                    a1 = buf[i + h, r]
                    a2 = buf[i + 2 * h, r]
                    a3 = buf[i + 3 * h, r]
                    s01 = a0 + a1
                    d01 = a0 - a1
                    s23 = a2 + a3
                    d23 = a2 - a3
                    buf[i, r] = s01 + s23
                    buf[i + h, r] = d01 + d23
                    buf[i + 2 * h, r] = s01 - s23
                    buf[i + 3 * h, r] = d01 - d23
        h *= 4
    if 2 * h <= n:
        for b0 in range(0, n, 2 * h):
            for i in range(b0, b0 + h):
                for r in range(lanes):
                    a0 = buf[i, r]
                    a1 = buf[i + h, r]
                    buf[i, r] = a0 + a1
                    buf[i + h, r] = a0 - a1


@nb.njit(parallel=True, cache=True)
def _fwht_lanes(x: np.ndarray, core: np.ndarray, signs: np.ndarray, signs_first: bool,
                scale: np.floating, out: np.ndarray) -> None:
    """:func:`fwht` with SIMD lanes across rows (any core; used for ``m > 1``)."""
    rows, n = x.shape
    m = core.shape[0]
    width = _VECTOR_BYTES // x.itemsize
    lanes = _LANES if n <= 1024 else width  # long rows: a smaller scratch block
    nblocks = (rows + lanes - 1) // lanes
    nchunks = min(nblocks, _CHUNKS)
    has_signs = signs.shape[0] == n
    src = x.reshape(rows * n)
    dst = out.reshape(rows * n)
    for chunk in nb.prange(nchunks):
        # one scratch block per chunk of consecutive row blocks
        flat = np.empty(n * lanes, dtype=x.dtype)
        buf = flat.reshape(n, lanes)
        tmp = np.empty((m, lanes), dtype=x.dtype)
        for blk in range(chunk * nblocks // nchunks, (chunk + 1) * nblocks // nchunks):
            r0 = blk * lanes
            nr = min(lanes, rows - r0)
            # whole width x width tiles: transposed in registers
            tiled = nr == lanes and n % width == 0
            # load_block: rows become SIMD lanes (with the signs of a forward randomized transform)
            if tiled:
                for j0 in range(0, n, width):
                    for r in range(0, lanes, width):
                        _transpose_tile(src, (r0 + r) * n + j0, n, flat, j0 * lanes + r, lanes)
                if has_signs and signs_first:
                    for j in range(n):
                        for r in range(lanes):
                            buf[j, r] = signs[j] * buf[j, r]
            elif has_signs and signs_first:
                for r in range(nr):
                    for j in range(n):
                        buf[j, r] = signs[j] * x[r0 + r, j]
            else:
                for r in range(nr):
                    for j in range(n):
                        buf[j, r] = x[r0 + r, j]
            _butterflies(buf, tmp, core, nr)
            # store_block
            if tiled:
                if has_signs and not signs_first:
                    for j in range(n):
                        for r in range(lanes):
                            buf[j, r] = signs[j] * (scale * buf[j, r])
                else:
                    for j in range(n):
                        for r in range(lanes):
                            buf[j, r] = scale * buf[j, r]
                for j0 in range(0, n, width):
                    for r in range(0, lanes, width):
                        _transpose_tile(flat, j0 * lanes + r, lanes, dst, (r0 + r) * n + j0, n)
            elif has_signs and not signs_first:
                for r in range(nr):
                    for j in range(n):
                        out[r0 + r, j] = signs[j] * (scale * buf[j, r])
            else:
                for r in range(nr):
                    for j in range(n):
                        out[r0 + r, j] = scale * buf[j, r]


@nb.njit(cache=True)
def fwht(x: np.ndarray, core: np.ndarray, signs: np.ndarray, signs_first: bool,
         scale: np.floating, out: np.ndarray) -> None:
    """``out[i] = scale * (H_{2**k} ⊗ core) @ (signs * x[i])`` for every row ``i`` of ``x [rows, n]``.

    ``signs`` has length ``n`` or 0 (no signs).  With ``signs_first`` False the signs multiply
    the transformed row instead: ``out[i] = signs * (scale * (H ⊗ core) @ x[i])``.
    ``x`` and ``out`` are C-contiguous with the same shape and float dtype (they may be the
    same array); ``core [m, m]``, ``signs`` and ``scale`` have that dtype too, ``n % m == 0``
    and ``n // m`` is a power of two.
    """
    if core.shape[0] == 1:
        _fwht_pow2(x, signs, signs_first, scale, out)
    else:
        _fwht_lanes(x, core, signs, signs_first, scale, out)
