"""Transforms: fast Walsh–Hadamard transform and KVarN's dual-axis variance normalization.

Fronts only: validate, move the axis, make contiguous, allocate, and call the kernel table of
the array's backend (``fwht``, ``hadamard_signs``, ``balance_tiles``).  Math and edge cases are
documented in docs/transforms.md.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from lowbit.arrays import (
    backend,
    contiguous,
    from_backend,
    is_dask,
    kernel_input,
    kernel_output,
    kernel_output_dtype,
    stream_for,
    to_backend,
    to_dtype,
    to_float,
    xp_of,
)
from lowbit.validate import check_iterations

#: Orders of the non-power-of-two core factors (Paley construction from quadratic residues).
CORE_ORDERS = (12, 20)
#: Largest exponent k in the supported lengths 2**k, 12 * 2**k and 20 * 2**k.
MAX_LOG2 = 15

_SUPPORTED_TEXT = (
    f"2**k, 12 * 2**k or 20 * 2**k for k in 0..{MAX_LOG2} "
    f"(1, 2, 4, ..., {2 ** MAX_LOG2}; 12, 24, ..., {12 * 2 ** MAX_LOG2}; "
    f"20, 40, ..., {20 * 2 ** MAX_LOG2})"
)


def _split_length(n: int) -> tuple[int, int] | None:
    """``(m, 2**k)`` with ``n == m * 2**k``, ``m in (1, 12, 20)``, ``k <= MAX_LOG2``; else None."""
    for m in (1, *CORE_ORDERS):
        if n >= m and n % m == 0:
            p = n // m
            if p & (p - 1) == 0 and p <= 2 ** MAX_LOG2:
                return m, p
    return None


def _check_length(n: int, what: str) -> tuple[int, int]:
    split = _split_length(n)
    if split is None:
        raise ValueError(f"{what} has length {n}, which the Hadamard transform does not support; "
                         f"supported lengths are {_SUPPORTED_TEXT}")
    return split


def _quadratic_character(q: int) -> list[int]:
    """Legendre symbol chi(a) mod the prime q for a = 0..q-1 (0 at 0, +1 on residues, -1 else)."""
    residues = {(a * a) % q for a in range(1, q)}
    return [0] + [1 if a in residues else -1 for a in range(1, q)]


@functools.cache
def _core_matrix(m: int) -> np.ndarray:
    """Symmetric Hadamard matrix of order m = q + 1 (q = 11 or 19, both 3 mod 4), read-only.

    Paley construction I: with the Jacobsthal matrix Q[i, j] = chi(j - i) (skew-symmetric since
    q = 3 mod 4) and the border matrix C = [[0, 1^T], [-1, Q]], P = I + C is a Hadamard matrix
    (P P^T = m I), skew-type, so not symmetric.  Permuting the last q columns by a -> -a mod q
    and negating column 0 keeps it Hadamard and makes it symmetric: the lower-right block becomes
    R + QR with (QR)[i, j] = chi(-i - j), a function of i + j; the border becomes [[-1, 1^T],
    [1, ...]].  A symmetric orthogonal matrix is its own inverse once divided by sqrt(m).
    """
    q = m - 1
    chi = _quadratic_character(q)
    jacobsthal = np.array([[chi[(j - i) % q] for j in range(q)] for i in range(q)], dtype=np.float64)
    paley = np.eye(m)
    paley[0, 1:] += 1.0
    paley[1:, 0] -= 1.0
    paley[1:, 1:] += jacobsthal
    perm = np.array([0] + [1 + (-a) % q for a in range(q)])
    sym = np.ascontiguousarray(paley[:, perm])  # fancy column indexing leaves Fortran order
    sym[:, 0] *= -1.0
    sym.setflags(write=False)
    return sym


def hadamard_matrix(n: int) -> np.ndarray:
    """The unnormalized Hadamard matrix of order ``n`` used by :func:`hadamard` (float64, ±1).

    ``H_n = H_{2**k} ⊗ P_m`` for ``n = m * 2**k``: Sylvester's construction in natural order
    (``H_1 = [[1]]``, ``H_2j = [[H_j, H_j], [H_j, -H_j]]``) started from ``P_1 = [[1]]`` or from
    the symmetric Paley-type matrix ``P_12`` / ``P_20`` (quadratic residues mod 11 / 19).  It is
    symmetric and ``H_n @ H_n == n * I``.

    Parameters
    ----------
    n : int
        A supported length: ``2**k``, ``12 * 2**k`` or ``20 * 2**k`` with ``k`` in 0..15.

    Returns
    -------
    numpy.ndarray, shape (n, n), float64
        A new array; entries are +1 or -1.

    Raises
    ------
    ValueError
        ``n`` is not a supported length (the message lists them).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {type(n).__name__}")
    m, p = _check_length(int(n), "n")
    sylvester = np.ones((1, 1))
    while sylvester.shape[0] < p:
        sylvester = np.block([[sylvester, sylvester], [sylvester, -sylvester]])
    core = _core_matrix(m) if m > 1 else np.ones((1, 1))
    return np.ascontiguousarray(np.kron(sylvester, core))


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be None or an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _check_axis(axis: Any, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"axis must be an integer in [{-ndim}, {ndim - 1}], got {axis!r}")
    return int(axis) % ndim


def _core_for(xp: Any, m: int, dtype: np.dtype) -> Any:
    """The core factor ``P_m`` (``[[1]]`` for m = 1) in ``dtype`` on xp's current device."""
    if xp is np:
        return np.ascontiguousarray(_core_matrix(m) if m > 1 else np.ones((1, 1)), dtype=dtype)
    return _device_core(m, dtype.name, int(xp.cuda.runtime.getDevice()))


@functools.cache
def _device_core(m: int, dtype: str, device: int) -> Any:
    # a constant of the algorithm (not user data), uploaded once per device and dtype
    import cupy

    # C order, as the kernel requires (and a new array: _core_matrix is cached, read-only)
    core = cupy.asarray(np.ascontiguousarray(_core_matrix(m) if m > 1 else np.ones((1, 1)), dtype=dtype))
    cupy.cuda.get_current_stream().synchronize()  # complete before any other stream reads it
    return core


def _transform(x: Any, axis: Any, normalize: Any, seed: Any, inverse: bool) -> Any:
    if is_dask(x):  # lazy, chunk by chunk (docs/dask.md)
        from lowbit import dask

        return dask.hadamard(x, axis, normalize, seed, inverse=inverse)
    arr, origin = to_backend(x, "x", allow_empty=True)
    if arr.ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    ax = _check_axis(axis, arr.ndim)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be a bool, got {normalize!r}")
    seed = _check_seed(seed)
    n = arr.shape[ax]
    m, _ = _check_length(n, f"x along axis {axis}")
    dtype = np.dtype("float64" if origin.dtype == "float64" else "float32")  # compute precision
    xp = xp_of(arr)
    kernels = backend(arr)
    with stream_for(origin):
        # a non-last axis is moved last by one copy in and one copy out (on the array's device)
        rows = xp.moveaxis(arr, ax, -1)
        moved_shape = rows.shape
        rows = kernel_input(rows, origin.dtype).reshape(-1, n)
        out = xp.empty(rows.shape, kernel_output_dtype(rows, origin.dtype))
        if rows.shape[0]:
            core = _core_for(xp, m, dtype)
            signs = xp.empty(n if seed is not None else 0, dtype=dtype)
            if seed is not None:
                kernels.hadamard_signs(np.uint64(seed), signs)
            if normalize:
                scale = 1.0 / math.sqrt(n)
            else:
                scale = 1.0 / n if inverse else 1.0
            # forward: H (D x); inverse: D (H y), because D and H/sqrt(n) are their own inverses
            kernels.fwht(rows, core, signs, not inverse, dtype.type(scale), out)
        result = xp.moveaxis(out.reshape(moved_shape), -1, ax)
        if ax != arr.ndim - 1:
            result = contiguous(result)
        result = kernel_output(result, origin.dtype)
    return from_backend(result, origin)


_HADAMARD_PARAMS = """
    Parameters
    ----------
    x : numpy.ndarray, cupy.ndarray, torch.Tensor or dask.array.Array, shape (..., n, ...)
        float16, bfloat16 (torch), float32 or float64 (dask: lazy, docs/dask.md).  float16 and bfloat16 are computed in
        float32 and rounded back once; float32 and float64 are computed in their own precision.
    axis : int, default -1
        The axis of length ``n`` to transform; ``n`` must be ``2**k``, ``12 * 2**k`` or
        ``20 * 2**k`` with ``k`` in 0..15.
    normalize : bool, default True
        Divide by ``sqrt(n)`` so that the transform is orthonormal and self-inverse.
    seed : int in [0, 2**64), optional
        Randomized Hadamard: random signs ``d[j] = 1 - 2 * (random_bits(seed, j) >> 63)`` keyed by
        the position ``j`` along ``axis`` (the counter-based generator of docs/rounding.md), the
        same for every other index.

    Returns
    -------
    array like ``x``
        Same library, device, dtype and shape.
"""


def hadamard(x: Any, axis: int = -1, normalize: bool = True, seed: int | None = None) -> Any:
    r"""Fast Walsh–Hadamard transform along ``axis`` (Sylvester order), O(n log n).

    Along ``axis`` every vector ``v`` of length ``n`` becomes ``c * H_n @ (d * v)`` with
    ``H_n = hadamard_matrix(n)`` (symmetric), ``c = 1/sqrt(n)`` if ``normalize`` else 1, and
    ``d`` the random signs of ``seed`` (all ones without a seed).  For the last axis and no seed,
    ``hadamard(x) == x @ hadamard_matrix(n) / sqrt(n)`` up to rounding.
    {params}
    Raises
    ------
    ValueError
        Unsupported length along ``axis``, 0 included (the message lists the supported ones), bad ``axis``,
        bad ``seed``, or a 0-d ``x``.
    TypeError
        ``x`` is not a floating numpy/CuPy/torch array, or ``normalize`` is not a bool.

    Notes
    -----
    The normalized transform preserves norms and dot products: ``hadamard(q) @ hadamard(k) ==
    q @ k``.  NaN or Inf in a vector spreads to every output of that vector (no error is
    raised).  float16 / bfloat16 outputs beyond their range round to ±inf (the unnormalized
    transform grows norms by ``sqrt(n)``).  An empty array whose ``axis`` has a supported length
    (no vectors, e.g. shape (0, 128)) is returned empty; a zero-length ``axis`` raises
    ``ValueError``, as ``numpy.fft.fft`` does (0 is not a supported length).  Lengths ``12 * 2**k`` and ``20 * 2**k`` apply the
    dense ``P_12`` / ``P_20`` core to chunks of 12 / 20 consecutive elements (O(n * 12) or
    O(n * 20) extra work), then the radix-2 butterflies.

    See Also
    --------
    inverse_hadamard, hadamard_matrix
    """
    return _transform(x, axis, normalize, seed, inverse=False)


def inverse_hadamard(x: Any, axis: int = -1, normalize: bool = True,
                     seed: int | None = None) -> Any:
    r"""Inverse of :func:`hadamard` with the same ``axis``, ``normalize`` and ``seed``.

    Every vector ``w`` along ``axis`` becomes ``d * (H_n @ w) / c'`` with ``c' = sqrt(n)`` if
    ``normalize`` else ``n``: ``inverse_hadamard(hadamard(x, seed=s), seed=s) == x`` up to
    rounding.  Without a seed and with ``normalize=True`` this is the same as :func:`hadamard`.
    {params}
    Raises
    ------
    ValueError, TypeError
        As :func:`hadamard`.

    See Also
    --------
    hadamard, hadamard_matrix
    """
    return _transform(x, axis, normalize, seed, inverse=True)


hadamard.__doc__ = (hadamard.__doc__ or "").replace("{params}", _HADAMARD_PARAMS)
inverse_hadamard.__doc__ = (inverse_hadamard.__doc__ or "").replace("{params}", _HADAMARD_PARAMS)


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def balance(tiles: Any, iterations: int = 8, *, std_min: float = 1e-3, std_max: float = 1e3,
            log_scale_min: float = -0.3, log_scale_max: float = 10.0,
            imbalance_floor: float = 1e-8, check_finite: bool = True,
            return_imbalance: bool = False) -> tuple[Any, ...]:
    r"""Dual-axis variance normalization of a batch of tiles (KVarN, DESIGN.md §4 step 2).

    For each tile ``T`` of shape (R, C), in float32, with ``σ`` the unbiased (ddof=1) std of
    each column (over rows) or row (over columns) and

    ``Imb(X) = max σ_col / max(min σ_col, floor) + max σ_row / max(min σ_row, floor)``::

        Lc = 0 (1, C); Lr = 0 (R, 1); best = Imb(T), best scales (1, 1)
        repeat iterations times:
            Lc = clip(Lc + ln clip(σ_col(cur), std_min, std_max), log_scale_min, log_scale_max)
            cur = T / e^Lc / e^Lr
            Lr = clip(Lr + ln clip(σ_row(cur), std_min, std_max), log_scale_min, log_scale_max)
            cur = T / e^Lc / e^Lr
            if Imb(cur) <= best: best = Imb(cur), best scales (e^Lc, e^Lr)   # ties: later wins
        balanced = T / col_scale / row_scale  with the best scales

    Parameters
    ----------
    tiles : numpy.ndarray, cupy.ndarray or torch.Tensor, shape (..., R, C)
        R >= 2 and C >= 2; float16, bfloat16 (torch), float32 or float64, converted to float32.
    iterations : int, default 8
        Number of column+row rounds, 0..1024 (:data:`lowbit.validate.MAX_ITERATIONS`; the
        iteration settles within a few dozen rounds).  0 returns the identity scales.
    std_min, std_max : float, default 1e-3, 1e3
        Clip applied to each std before its logarithm.
    log_scale_min, log_scale_max : float, default -0.3, 10.0
        Clip applied to the accumulated log scales (so scales lie in [e^-0.3, e^10]).
    imbalance_floor : float, default 1e-8
        Floor of the smallest std in the imbalance's denominators.
    check_finite : bool, default True
        Raise ``ValueError`` if a tile holds NaN or ±Inf (after conversion to float32).  With
        False such a tile gets a NaN imbalance, keeps the identity scales, and comes back as is.
    return_imbalance : bool, default False
        Also return the selected (best) imbalance of each tile.

    Returns
    -------
    balanced : array like ``tiles``, shape (..., R, C)
        ``tiles / col_scale / row_scale`` computed in float32 (in that order, so numpy float32
        reproduces it bit for bit), rounded to the input's dtype.
    col_scale : array, shape (..., 1, C), float32
    row_scale : array, shape (..., R, 1), float32
        Each entry is exactly 1 (the identity won) or lies in ``[e^log_scale_min,
        e^log_scale_max]``.  Same library and device as ``tiles``.
    imbalance : array, shape (...), float32
        Only with ``return_imbalance=True``: ``Imb`` of the selected candidate.  It never
        increases with ``iterations`` (best-so-far selection).

    Raises
    ------
    ValueError
        ``tiles.ndim < 2``, R < 2 or C < 2, ``iterations`` outside 0..1024, inconsistent constants
        (``0 < std_min <= std_max``, ``log_scale_min <= log_scale_max``, ``imbalance_floor > 0``),
        or non-finite values with ``check_finite=True``.
    TypeError
        ``tiles`` is not a floating numpy/CuPy/torch array, or an argument has the wrong type.

    Notes
    -----
    Edge cases (docs/transforms.md has the derivations):

    * Stds use a shifted two-pass formula, exact 0 for constant data.  A constant or all-zero
      tile has ``Imb = 0`` for every candidate, so the last iterate wins: both scales are
      uniformly ``e^log_scale_min`` (0.7408) and ``balanced = T * e^0.6`` (exactly 0 for a zero
      tile).
    * A zero (or constant) row or column keeps std 0 and is held at ``e^log_scale_min``; the
      imbalance is then about ``max σ / 1e-8`` (huge but finite).  No NaN is produced.
    * Tiles whose stds all stay below ``e^-0.3`` (tiny magnitude) can only be rescaled
      uniformly: every candidate is the identity or all scales at ``e^log_scale_min``, and their
      imbalances differ only by float32 rounding, so either may be selected.
    * ``iterations=0``: identity scales, ``balanced == tiles`` (in float32), ``Imb(T)``.
    * The iterate ``cur`` is never formed: a std along one axis factors out the other axis's
      scale (``σ_col = e^-Lc * std_r(T * e^-Lr)``), which differs from the literal formula by
      float32 rounding only.  Once a tile has converged, candidates tie in float32 while their
      scales drift by a common factor (columns ×c, rows ×1/c); which one wins is then decided
      by rounding, and ``balanced`` is the same either way.
    """
    arr, origin = to_backend(tiles, "tiles", allow_empty=True)
    if arr.ndim < 2:
        raise ValueError(f"tiles must have shape (..., R, C) with at least 2 dimensions, "
                         f"got shape {tuple(arr.shape)}")
    nrows, ncols = int(arr.shape[-2]), int(arr.shape[-1])
    if nrows < 2 or ncols < 2:
        raise ValueError(f"tiles need R >= 2 rows and C >= 2 columns for an unbiased std, "
                         f"got R={nrows}, C={ncols} (shape {tuple(arr.shape)})")
    iterations = check_iterations(iterations)
    lo_std, hi_std = _check_real(std_min, "std_min"), _check_real(std_max, "std_max")
    if not 0.0 < lo_std <= hi_std:
        raise ValueError(f"need 0 < std_min <= std_max, got std_min={std_min!r}, std_max={std_max!r}")
    lo_log = _check_real(log_scale_min, "log_scale_min")
    hi_log = _check_real(log_scale_max, "log_scale_max")
    if not lo_log <= hi_log:
        raise ValueError(f"need log_scale_min <= log_scale_max, got {log_scale_min!r} > {log_scale_max!r}")
    floor = _check_real(imbalance_floor, "imbalance_floor")
    if not floor > 0.0:
        raise ValueError(f"imbalance_floor must be > 0, got {imbalance_floor!r}")
    for flag, name in ((check_finite, "check_finite"), (return_imbalance, "return_imbalance")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {flag!r}")

    xp = xp_of(arr)
    batch_shape = tuple(arr.shape[:-2])
    with stream_for(origin):
        if origin.dtype == "float64":
            with np.errstate(over="ignore"):  # beyond the float32 range -> inf, reported below
                work = contiguous(to_float(arr, "float64", "float32"))
            work_dtype = "float32"
        else:  # the CPU kernel reads float32, the CUDA kernel float16/bfloat16/float32 natively
            work = kernel_input(arr, origin.dtype)
            work_dtype = "bfloat16" if work.dtype == np.uint16 else work.dtype.name
        work = work.reshape(-1, nrows, ncols)
        nt = work.shape[0]
        balanced = xp.empty_like(work)
        col_scale = xp.empty((nt, ncols), dtype=xp.float32)
        row_scale = xp.empty((nt, nrows), dtype=xp.float32)
        imbalance = xp.empty(nt, dtype=xp.float32)
        if nt:
            f32 = np.float32
            backend(work).balance_tiles(work, int(iterations), f32(lo_std), f32(hi_std), f32(lo_log),
                                        f32(hi_log), f32(floor), balanced, col_scale, row_scale,
                                        imbalance)
        if check_finite and nt:
            # A NaN or ±Inf anywhere in a tile makes its imbalance NaN (and nothing else can,
            # except float32 overflow of huge finite values), so only those tiles are scanned.
            suspect = xp.isnan(imbalance)
            if bool(suspect.any()):
                bad = int(xp.count_nonzero(~xp.isfinite(to_float(work[suspect], work_dtype))))
                if bad:
                    raise ValueError(f"tiles holds {bad} non-finite value(s) (NaN or ±Inf, or beyond "
                                     f"the float32 range); pass check_finite=False to keep identity "
                                     f"scales for such tiles instead")
        balanced = balanced.reshape(arr.shape)
        if origin.dtype == "float64":
            balanced = to_dtype(balanced, "float64")
        else:
            balanced = kernel_output(balanced, origin.dtype)
    out_balanced = from_backend(balanced, origin)
    scale_origin = type(origin)(origin.library, "float32", origin.device)
    out = [
        out_balanced,
        from_backend(col_scale.reshape(*batch_shape, 1, ncols), scale_origin),
        from_backend(row_scale.reshape(*batch_shape, nrows, 1), scale_origin),
    ]
    if return_imbalance:
        out.append(from_backend(imbalance.reshape(batch_shape), scale_origin))
    return tuple(out)
