"""Numba kernels: KVarN tile encode / decode (DESIGN.md section 4; layout in docs/kv.md).

A batch of ``n`` blocks of ``T`` tokens x ``D`` channels, already rotated along D, is
read token-major (``x[i, t, d]``).  ``key=True`` views each block as a K tile [D, T]
(rows = channels), ``key=False`` as a V tile [T, D] (rows = tokens).  One ``prange``
iteration does a whole tile: balance -> per-row asymmetric RTN (nearest-even) -> fold
of the RTN scale/offset into the row scale -> packing.

Stored per tile (``R`` rows, ``C`` columns): ``packed`` (R*C codes of ``bits`` bits,
element ``r*C + c`` in the little-endian bit stream of :mod:`lowbit.cpu.packing`),
``row_scale`` A [R], ``row_offset`` Z [R] and ``col_scale`` s_col [C], reconstructing
``x_hat[r, c] = (code[r, c] * A[r] + Z[r]) * s_col[c]``.

``scale_format``: 0 = A, Z, s_col as float16 bits (uint16); 1 = A and s_col as
float8 e4m3 codes, Z as float16 bits.  Both are written by the shared codec
(``lowbit/cpu/codec.py``: one nearest-even rounding from float64, saturating at the format's
largest finite).

Per-tile exponent (``normalize=True``; issue 12 item 2): the tile is multiplied by ``2**-e``
before the balance and each column scale by ``2**e`` in the decode
(``x_hat = (code * A + Z) * (s_col * 2**e)``), with ``e`` the binade of the
tile's median nonzero magnitude (:func:`tile_exponent_of`), so that every tile reaches the
balance, the RTN and the scale storage at the same magnitude whatever its input scale (the
balance's clips and the float16 / e4m3 ranges are absolute).  Both scalings are float32
multiplications by a power of two (exact unless a result is subnormal).  ``e`` is stored as
int8; a tile it cannot represent gets :data:`EXPONENT_INVALID` and the front raises.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from lowbit.cpu.balance import balance_tile_t, transpose
from lowbit.cpu.codec import SATURATE, Spec, minifloat_decode_one, minifloat_encode_one
from lowbit.cpu.packing import get_code, load_unit, pack_unit, unit_bytes
from lowbit.cpu.scalar import NEAREST_EVEN
from lowbit.formats import FLOAT16, FP8_E4M3

_U64 = nb.uint64
_F32 = np.float32

#: scale_format codes
SCALES_FLOAT16, SCALES_FLOAT8 = 0, 1
#: codec specs of the A / s_col storage by scale_format, and of Z (always float16)
_SCALE_SPECS = (FLOAT16.spec, FP8_E4M3.spec)
_F16 = FLOAT16.spec

#: The normalized tile's median nonzero magnitude lies in [2**MEDIAN_LOG, 2**(MEDIAN_LOG + 1)):
#: [0.5, 1) holds the median |x| of N(0, 1) data (0.674), so unit-scale tiles keep e = 0; the
#: error of the un-normalized algorithm was flat (within 1%) for bulk stds in [0.7, 6].
MEDIAN_LOG = -1
#: Stored exponents lie in [-EXPONENT_LIMIT, EXPONENT_LIMIT]; EXPONENT_INVALID marks a tile the
#: storage cannot represent.
EXPONENT_LIMIT = 127
EXPONENT_INVALID = -128
#: Largest binade of a normalized tile's largest magnitude: the balance's float32 sums of
#: squares (2**(2 * 49) per term, at most 2**28 terms) stay finite.
RANGE_LOG = 48
#: Histogram bins of float32 binades, floor(log2|v|) = -149 .. 127.
_BINS = 277
_BIN0 = 149


@nb.njit(inline="always", cache=True)
def _code(v: float, spec: Spec) -> np.int64:
    """Code of the finite ``v``: nearest-even, saturating (the shared codec)."""
    return np.int64(minifloat_encode_one(v, spec, SATURATE, NEAREST_EVEN, _U64(0), np.int64(0), 16)[0])


@nb.njit(cache=True)
def half_value(code: int | np.integer) -> float:
    """Value of a stored Z (float16 bits)."""
    return minifloat_decode_one(_U64(code), _F16)


@nb.njit(cache=True)
def scale_value(code: int | np.integer, scale_format: int) -> float:
    """Value of a stored A / s_col code (float16 bits or e4m3 code)."""
    return minifloat_decode_one(_U64(code), _SCALE_SPECS[scale_format])


@nb.njit(cache=True, error_model="numpy")
def _balance(tile: np.ndarray, tt: np.ndarray, iterations: int, s_col: np.ndarray,
             s_row: np.ndarray) -> None:
    """DESIGN.md's constants around :func:`lowbit.cpu.balance.balance_tile_t` (``tt`` = tile.T).

    A plain (not inlined) call: inlining the balance into the ``prange`` body of
    :func:`kvarn_encode` multiplied its compile time (about 90 s instead of 15 s).
    """
    balance_tile_t(tile, tt, iterations, _F32(1e-3), _F32(1e3), _F32(-0.3),  # type: ignore[arg-type]
                   _F32(10.0), _F32(1e-8), s_col, s_row)


@nb.njit(inline="always", cache=True)
def _binade(a: float) -> int:
    """floor(log2(a)) of a positive finite float32 value (subnormals included)."""
    return math.frexp(np.float64(a))[1] - 1


@nb.njit(cache=True)
def tile_exponent_of(tile: np.ndarray) -> int:
    """The exponent e of a tile [R, C] (float32, C-contiguous): the binade of its lower-median
    nonzero magnitude, minus MEDIAN_LOG; 0 for an all-zero tile; EXPONENT_INVALID when ``|e|``
    exceeds EXPONENT_LIMIT, the largest magnitude reaches 2**127 (or overflowed to Inf in the
    rotation), or it exceeds the median by more than 2**RANGE_LOG.

    A histogram of the 8-bit exponent fields (four interleaved copies, so that consecutive
    increments do not wait on each other): for a normal value the field minus 127 is its binade.
    Exact integers, the same in any order, so the result equals the histogram of binades of
    :func:`_tile_exponent_exact`, which handles tiles holding subnormals.
    """
    n = tile.shape[0] * tile.shape[1]
    u = tile.reshape(n).view(np.uint32)
    hist = np.zeros(4 * 256, np.int64)
    zeros = 0
    for k in range(n):
        b = u[k] & np.uint32(0x7FFFFFFF)
        hist[((k & 3) << 8) + np.int64(b >> np.uint32(23))] += 1
        zeros += int(b == 0)
    for f in range(256):
        hist[f] += hist[256 + f] + hist[512 + f] + hist[768 + f]
    if hist[255]:  # Inf or NaN: finite input that overflowed in the rotation
        return EXPONENT_INVALID
    if hist[0] != zeros:  # subnormals: their binade is not the field
        return _tile_exponent_exact(tile)
    nnz = n - zeros
    if nnz == 0:
        return 0
    k = (nnz - 1) // 2
    cum = 0
    med = 0
    top = 0
    for f in range(1, 255):
        if hist[f]:
            if cum <= k:
                med = f - 127
            top = f - 127
        cum += hist[f]
    e = med - MEDIAN_LOG
    if e < -EXPONENT_LIMIT or e > EXPONENT_LIMIT or top >= 127 or top - e > RANGE_LOG:
        return EXPONENT_INVALID
    return e


@nb.njit(cache=True)
def _tile_exponent_exact(tile: np.ndarray) -> int:
    """:func:`tile_exponent_of` from a histogram of binades (frexp), subnormals included."""
    hist = np.zeros(_BINS, np.int64)
    nnz = 0
    finite = True
    for r in range(tile.shape[0]):
        for c in range(tile.shape[1]):
            a = abs(tile[r, c])
            if not a < np.inf:  # Inf or NaN: finite input that overflowed in the rotation
                finite = False
            elif a > 0:
                hist[_binade(a) + _BIN0] += 1
                nnz += 1
    if not finite:
        return EXPONENT_INVALID
    if nnz == 0:
        return 0
    k = (nnz - 1) // 2
    cum = 0
    med = 0
    top = 0
    for b in range(_BINS):
        if hist[b]:
            if cum <= k:
                med = b - _BIN0
            top = b - _BIN0
        cum += hist[b]
    e = med - MEDIAN_LOG
    if e < -EXPONENT_LIMIT or e > EXPONENT_LIMIT or top >= 127 or top - e > RANGE_LOG:
        return EXPONENT_INVALID
    return e


@nb.njit(inline="always", cache=True)
def pow2_f32(e: int) -> np.float32:
    """2**e as float32 for -149 <= e <= 127 (exact)."""
    return _F32(math.ldexp(1.0, e))


# -- tile encode / decode ----------------------------------------------------------------------

@nb.njit(inline="always", cache=True)
def _sylvester(v: np.ndarray) -> None:
    """v = H_n @ v in place (n = len(v) a power of two): radix-2 butterflies of increasing
    stride, the lower index keeping a + b -- the operations of lowbit/cpu/hadamard.py's fwht
    (its radix-4 sweeps are two of these levels) and of lowbit/cuda/hadamard.cuh."""
    n = v.shape[0]
    h = 1
    while h < n:
        for b0 in range(0, n, 2 * h):
            for j in range(b0, b0 + h):
                a = v[j]
                b = v[j + h]
                v[j] = a + b
                v[j + h] = a - b
        h *= 2


@nb.njit(inline="always", cache=True)
def rotation_scale(dim: int) -> np.float32:
    """float32(1 / sqrt(D)), the normalization of the Hadamard rotation (lowbit.transforms')."""
    return _F32(1.0 / math.sqrt(dim))


@nb.njit(inline="always", cache=True)
def _rotate_columns(v: np.ndarray, scale: np.float32) -> None:
    """Every column of v [D, T] (in place) = ``scale * (H_D @ column)``: the butterflies of
    :func:`_sylvester`, each applied to all T columns at once (contiguous rows, vectorized;
    the same operations on every element), the scaling fused into the last level."""
    n, m = v.shape
    h = 1
    while h < n:
        last = 2 * h >= n
        for b0 in range(0, n, 2 * h):
            for j in range(b0, b0 + h):
                lo = v[j]
                hi = v[j + h]
                if last:
                    for t in range(m):
                        a = lo[t]
                        b = hi[t]
                        lo[t] = scale * (a + b)
                        hi[t] = scale * (a - b)
                else:
                    for t in range(m):
                        a = lo[t]
                        b = hi[t]
                        lo[t] = a + b
                        hi[t] = a - b
        h *= 2
    if n == 1:
        for t in range(m):
            v[0, t] = scale * v[0, t]


@nb.njit(inline="always", cache=True)
def _load_tile(x: np.ndarray, i: int, key: bool, rotate: bool, tile: np.ndarray) -> None:
    """tile = block i of x, each token rotated first, channel-major: the K tile [D, T] itself,
    for values the V tile's transpose [D, T] (the same values as rotating token by token with
    :func:`_sylvester` and scaling)."""
    transpose(x[i], tile)
    if rotate:
        _rotate_columns(tile, rotation_scale(x.shape[2]))


@nb.njit(inline="always", cache=True)
def _row_range(v: np.ndarray) -> tuple[np.float32, np.float32]:
    """(min, max) of the finite float32 row ``v`` as float32, equal to the sequential
    ``lo = min(lo, v[c])``, ``hi = max(hi, v[c])`` from +-inf: eight running minima / maxima
    (independent chains), combined at the end.  Without NaN the extremes' values do not depend
    on the order; only the sign of a zero extreme can, so a row whose min or max is zero is
    redone sequentially."""
    n = v.shape[0]
    lo = np.inf
    hi = -np.inf
    n8 = n - n % 8
    if n8:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = v[0]
        b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = v[0]
        for c0 in range(0, n8, 8):
            x0, x1, x2, x3 = v[c0], v[c0 + 1], v[c0 + 2], v[c0 + 3]
            x4, x5, x6, x7 = v[c0 + 4], v[c0 + 5], v[c0 + 6], v[c0 + 7]
            a0, a1, a2, a3 = min(a0, x0), min(a1, x1), min(a2, x2), min(a3, x3)
            a4, a5, a6, a7 = min(a4, x4), min(a5, x5), min(a6, x6), min(a7, x7)
            b0, b1, b2, b3 = max(b0, x0), max(b1, x1), max(b2, x2), max(b3, x3)
            b4, b5, b6, b7 = max(b4, x4), max(b5, x5), max(b6, x6), max(b7, x7)
        lo = min(min(min(a0, a1), min(a2, a3)), min(min(a4, a5), min(a6, a7)))
        hi = max(max(max(b0, b1), max(b2, b3)), max(max(b4, b5), max(b6, b7)))
    for c in range(n8, n):
        lo = min(lo, v[c])
        hi = max(hi, v[c])
    if lo == 0 or hi == 0:
        lo = np.inf
        hi = -np.inf
        for c in range(n):
            lo = min(lo, v[c])
            hi = max(hi, v[c])
    return _F32(lo), _F32(hi)


@nb.njit(inline="always", cache=True)
def _pack_tile(codes: np.ndarray, bits: int, packed: np.ndarray) -> None:
    """:func:`lowbit.cpu.packing.pack_unit` over all units of ``codes``: whole units of 1/2/4/8-bit
    codes byte by byte (the same bit stream: byte b holds codes b*8/bits .. at shifts j*bits, least
    significant first), the others and a partial last unit by pack_unit."""
    nel = codes.shape[0]
    whole = nel // 8
    done = 0
    if bits == 2:
        for b in range(whole * 2):
            c = codes[4 * b:4 * b + 4]
            packed[b] = c[0] | (c[1] << 2) | (c[2] << 4) | (c[3] << 6)
        done = whole
    elif bits == 4:
        for b in range(whole * 4):
            packed[b] = codes[2 * b] | (codes[2 * b + 1] << 4)
        done = whole
    elif bits == 8:
        for b in range(whole * 8):
            packed[b] = codes[b]
        done = whole
    elif bits == 1:
        for b in range(whole):
            c = codes[8 * b:8 * b + 8]
            packed[b] = (c[0] | (c[1] << 1) | (c[2] << 2) | (c[3] << 3) | (c[4] << 4) | (c[5] << 5)
                         | (c[6] << 6) | (c[7] << 7))
        done = whole
    for u in range(done, (nel + 7) // 8):
        pack_unit(codes, u, bits, packed)


@nb.njit(parallel=True, cache=True, error_model="numpy")
def kvarn_encode(x: np.ndarray, rotate: bool, key: bool, bits: int, iterations: int,
                 scale_format: int, normalize: bool, packed: np.ndarray, row_scale: np.ndarray,
                 row_offset: np.ndarray, col_scale: np.ndarray, tile_exponent: np.ndarray) -> None:
    """Encode ``x`` [n, T, D] (float32; with ``rotate`` each token is first multiplied by the
    normalized Sylvester Hadamard matrix, D a power of two) into KVarN tiles.

    packed [n, ceil(T*D*bits/8)] uint8; row_scale [n, R] (uint16 float16 bits, or uint8
    e4m3 codes when ``scale_format == 1``); row_offset [n, R] uint16 (float16 bits);
    col_scale [n, C] like row_scale; tile_exponent [n] int8 (0 without ``normalize``).
    R, C = (D, T) for keys, (T, D) for values.  With ``normalize`` the tile t below is
    ``x * 2**-e`` (module docstring).

    float16 scales (DESIGN.md literal): b = t / s_col / s_row; lo, hi = row min/max;
    scale = max((hi - lo) / L, 1e-10); code = clip(rint((b - lo) / scale), 0, L);
    A = s_row * scale, Z = s_row * lo, L = 2**bits - 1.
    e4m3 scales: s_col is rounded to e4m3 first and u = t / s_col8 (the row scale folds
    away); A = e4m3((hi_u - lo_u) / L) (at least the smallest e4m3 subnormal); Z =
    float16(mid_u - A * L / 2), the grid centred on the row's range; codes are then
    computed against the stored grid: clip(rint((u - Z) / A), 0, L).
    """
    n, tokens, dim = x.shape
    rows, cols = (dim, tokens) if key else (tokens, dim)
    levels = (1 << bits) - 1
    lf = _F32(levels)
    nel = rows * cols
    for i in nb.prange(n):
        # cm: the tile channel-major [D, T] (the K tile, or the V tile's transpose)
        cm = np.empty((dim, tokens), np.float32)
        _load_tile(x, i, key, rotate, cm)
        e = tile_exponent_of(cm) if normalize else 0  # the same multiset of values as the tile
        tile_exponent[i] = e
        if e == EXPONENT_INVALID:
            continue
        if e != 0:
            p = pow2_f32(-e)
            for d in range(dim):
                row = cm[d]
                for t in range(tokens):
                    row[t] = row[t] * p
        tm = np.empty((tokens, dim), np.float32)  # token-major
        transpose(cm, tm)
        tile, tt = (cm, tm) if key else (tm, cm)  # tt = tile.T
        s_col = np.empty(cols, np.float32)
        s_row = np.empty(rows, np.float32)
        if rows >= 2 and cols >= 2:
            _balance(tile, tt, iterations, s_col, s_row)
        else:  # a 1-token tile has no token std: identity scales
            s_col[:] = _F32(1.0)
            s_row[:] = _F32(1.0)
        scv = np.empty(cols, np.float32)
        for c in range(cols):
            code = _code(np.float64(s_col[c]), _SCALE_SPECS[scale_format])
            col_scale[i, c] = code
            scv[c] = s_col[c] if scale_format == 0 else _F32(scale_value(code, 1))
        codes = np.empty(nel, np.uint8)
        v = np.empty(cols, np.float32)
        for r in range(rows):
            sr = s_row[r]
            tr = tile[r]
            if scale_format == 0:
                for c in range(cols):
                    v[c] = tr[c] / scv[c] / sr
            else:
                for c in range(cols):
                    v[c] = tr[c] / scv[c]
            lo32, hi32 = _row_range(v)
            if scale_format == 0:
                step = max((hi32 - lo32) / lf, _F32(1e-10))
                base = lo32
                row_scale[i, r] = _code(np.float64(sr * step), _F16)
                row_offset[i, r] = _code(np.float64(sr * lo32), _F16)
            else:
                acode = _code(np.float64((hi32 - lo32) / lf), _SCALE_SPECS[SCALES_FLOAT8])
                if acode == 0:
                    acode = np.int64(1)  # smallest positive e4m3 subnormal, 2**-9
                step = _F32(scale_value(acode, SCALES_FLOAT8))
                mid = (np.float64(lo32) + np.float64(hi32)) * 0.5
                zcode = _code(mid - np.float64(step) * levels * 0.5, _F16)
                base = _F32(half_value(zcode))
                row_scale[i, r] = acode
                row_offset[i, r] = zcode
            cr = codes[r * cols:(r + 1) * cols]
            for c in range(cols):
                q = np.rint((v[c] - base) / step)
                cr[c] = np.uint8(min(max(q, _F32(0.0)), lf))
        _pack_tile(codes, bits, packed[i])


@nb.njit(parallel=True, cache=True, error_model="numpy")
def kvarn_decode(packed: np.ndarray, rotate: bool, key: bool, bits: int, scale_format: int,
                 row_scale: np.ndarray, row_offset: np.ndarray, col_scale: np.ndarray,
                 tile_exponent: np.ndarray, out: np.ndarray) -> None:
    """Reconstruct ``out`` [n, T, D] float32 from :func:`kvarn_encode` output:
    ``(code * A + Z) * (s_col * 2**e)``, float32 operations in that order (``s_col * 2**e``
    once per column; docs/transforms.md, "KVarN decode"), then (``rotate``) each token
    multiplied by the normalized Hadamard matrix (its own inverse) as in encode."""
    n, tokens, dim = out.shape
    rows, cols = (dim, tokens) if key else (tokens, dim)
    nel = rows * cols
    units = (nel + 7) // 8
    scale = rotation_scale(dim)
    for i in nb.prange(n):
        a = np.empty(rows, np.float32)
        z = np.empty(rows, np.float32)
        s = np.empty(cols, np.float32)
        for r in range(rows):
            a[r] = scale_value(row_scale[i, r], scale_format)
            z[r] = half_value(row_offset[i, r])
        pe = pow2_f32(int(tile_exponent[i]))
        for c in range(cols):
            s[c] = _F32(scale_value(col_scale[i, c], scale_format)) * pe
        for u in range(units):
            start = u * 8
            stop = min(start + 8, nel)
            acc = load_unit(packed[i], u, bits, unit_bytes(packed[i], u, bits))
            for e in range(start, stop):
                q = _F32(get_code(acc, e - start, bits))
                r = e // cols
                c = e - r * cols
                val = (q * a[r] + z[r]) * s[c]
                if key:
                    out[i, c, r] = val
                else:
                    out[i, r, c] = val
        if rotate:
            v = np.empty(dim, np.float32)
            for t in range(tokens):
                for d in range(dim):
                    v[d] = out[i, t, d]
                _sylvester(v)
                for d in range(dim):
                    out[i, t, d] = scale * v[d]
