"""``lowbit.round``: rounding of values already expressed in grid units."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.arrays import (
    Array,
    backend,
    from_backend,
    is_dask,
    kernel_input,
    kernel_output_dtype,
    to_backend,
    to_dtype,
    xp_of,
)
from lowbit.rounding.diffusion import ERROR_KERNELS
from lowbit.rounding.modes import mode_code
from lowbit.validate import check_rbits, check_seed

#: Scan orders of 2-D error diffusion.
SCANS = ("raster", "serpentine")


def check_clip(clip: Any) -> tuple[float, float]:
    """(lo, hi) saturation bounds in grid units: integers or +-inf, lo <= hi."""
    if clip is None:
        return -math.inf, math.inf
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clip must be None or a pair (lo, hi) of numbers, got {clip!r}") from None
    for v in (lo, hi):
        if math.isnan(v) or (math.isfinite(v) and not v.is_integer()):
            raise ValueError(f"clip bounds must be integers or +-inf (grid units), got {clip!r}")
    if lo > hi:
        raise ValueError(f"clip must have lo <= hi, got {clip!r}")
    return lo, hi


def check_first_index(first_index: Any) -> int:
    if isinstance(first_index, bool) or not isinstance(first_index, (int, np.integer)) or not 0 <= first_index < 2**62:
        raise ValueError(f"first_index must be a non-negative integer (a global element index), got {first_index!r}")
    return int(first_index)


def _axes(axis: Any, ndim: int, count: int) -> tuple[int, ...]:
    """Normalize ``axis`` to ``count`` distinct non-negative axes."""
    items = (axis,) if count == 1 else axis
    if count == 2 and isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and axis == -1:
        items = (-2, -1)  # the default axis=-1 means "the last two axes" for 2-D kernels
    try:
        items = tuple(items)
    except TypeError:
        items = ()
    ok = len(items) == count and all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) and -ndim <= a < ndim
        for a in items
    )
    out = tuple(int(a) % ndim for a in items) if ok else ()
    if not ok or len(set(out)) != count:
        want = "an integer" if count == 1 else "a pair of distinct integers"
        raise ValueError(f"axis must be {want} in [{-ndim}, {ndim - 1}] for x.ndim={ndim}, got {axis!r}")
    return out


def round(  # noqa: A001 - the public name is lowbit.round
    x: Any,
    mode: str = "nearest_even",
    *,
    seed: int | None = None,
    rbits: int = 16,
    axis: Any = -1,
    order: int = 1,
    kernel: str | None = None,
    scan: str = "raster",
    clip: Any = None,
    first_index: int = 0,
    return_seed: bool = False,
) -> Any:
    """Round values already in grid units to integers.

    Parameters
    ----------
    x : array (numpy, cupy or torch), float16 / bfloat16 / float32 / float64, any shape
        Values in grid units (one unit = one step of the target grid).  A ``dask.array.Array``
        gives a lazy result, bit-identical to rounding the whole in memory (docs/dask.md).
    mode : str
        A :class:`lowbit.rounding.modes.RoundMode` name:

        ============  ======================================================================
        nearest_even  nearest integer, ties to even (IEEE 754 default)
        nearest_away  nearest integer, ties away from zero
        toward_zero   truncation
        up / down     ceiling / floor
        odd           v if integral, else the odd one of floor(v), ceil(v)
        stochastic    away from zero with probability ~ |v| - floor(|v|) (docs/rounding.md)
        diffuse       error diffusion along ``axis`` (``order`` 1 or 2), or 2-D with ``kernel``
        ============  ======================================================================
    seed : int in [0, 2**64), optional
        Key of the counter-based generator (``stochastic``).  If omitted, one is drawn once
        (``secrets``); pass ``return_seed=True`` to get it back.
    rbits : int, 1..32
        Random bits per element for ``stochastic``.
    axis : int, or pair of ints with ``kernel``
        Axis of 1-D diffusion; for 2-D diffusion the (row, column) axes (default -1 means
        (-2, -1)).  Other dimensions are independent sequences / images.
    order : {1, 2}
        1-D diffusion order: noise transfer (1 - z^-1)**order.
    kernel : {"floyd_steinberg", "jarvis_judice_ninke", "stucki", "atkinson"}, optional
        2-D error-diffusion filter (``mode="diffuse"`` only).
    scan : {"raster", "serpentine"}
        2-D scan order: every row left to right, or alternate rows right to left.
    clip : (lo, hi), optional
        Saturation bounds (integers or +-inf): results are clipped to [lo, hi]; in
        ``diffuse`` the carried error is clamped to [-1/2, 1/2] (it leaves that interval
        only when the output saturates).
    first_index : int
        Global flat index of ``x``'s first element, for the generator's counter: rounding a
        C-contiguous chunk ``x.flat[o:o+m]`` with ``first_index=o`` equals the same slice of the
        rounded whole.
    return_seed : bool
        Return ``(result, seed)`` instead of ``result``.

    Returns
    -------
    array of x's library, device, dtype and shape (integer-valued; NaN stays NaN, +-Inf stays
    +-Inf unless clipped, zero results keep the sign of x).

    Raises
    ------
    ValueError
        Unknown ``mode``/``kernel``/``scan``; ``rbits`` outside 1..32; bad ``seed``, ``clip``,
        ``first_index`` or ``order``; ``axis`` missing or invalid for ``diffuse``; NaN or Inf in
        ``x`` with ``diffuse``.

    See Also
    --------
    numpy.rint : the ``nearest_even`` mode.
    """
    if is_dask(x):  # lazy, chunk by chunk (docs/dask.md)
        from lowbit import dask

        return dask.round(x, mode, seed=seed, rbits=rbits, axis=axis, order=order, kernel=kernel,
                          scan=scan, clip=clip, first_index=first_index, return_seed=return_seed)
    code = mode_code(mode, "mode")
    rbits = check_rbits(rbits)
    used_seed = check_seed(seed, mode)
    lo, hi = check_clip(clip)
    off = check_first_index(first_index)
    if scan not in SCANS:
        raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
    if kernel is not None and kernel not in ERROR_KERNELS:
        raise ValueError(f"kernel must be None or one of {sorted(ERROR_KERNELS)}, got {kernel!r}")
    if kernel is not None and mode != "diffuse":
        raise ValueError(f"kernel={kernel!r} needs mode='diffuse', got mode={mode!r}")
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")

    arr, origin = to_backend(x, "x")
    xp = xp_of(arr)
    shape = tuple(arr.shape)
    if mode != "diffuse":
        flat = kernel_input(arr, origin.dtype).reshape(-1)
        out = xp.empty(flat.size, kernel_output_dtype(flat, origin.dtype))
        backend(flat).round_elementwise(flat, code, np.uint64(used_seed or 0), off, rbits, lo, hi, out)
        result = out.reshape(shape)
    else:
        result = _diffuse(arr, origin.dtype, shape, axis, order, kernel, scan, lo, hi)
    want = np.dtype(np.uint16) if origin.dtype == "bfloat16" else np.dtype(origin.dtype)
    if result.dtype != want:
        result = to_dtype(result, origin.dtype)  # exact: integers that fit the input's dtype
    y = from_backend(result, origin)
    return (y, used_seed) if return_seed else y


def _diffuse(arr: Array, dtype: str, shape: tuple[int, ...], axis: Any, order: int,
             kernel: str | None, scan: str, lo: float, hi: float) -> Array:
    """Error diffusion: move the diffusion axes last, run the kernel, move them back."""
    if axis is None:
        raise ValueError("mode='diffuse' needs an axis to diffuse along; got axis=None")
    xp = xp_of(arr)
    ndim = max(len(shape), 1)
    if kernel is None:
        (ax,) = _axes(axis, ndim, 1)
        moved = xp.moveaxis(arr.reshape(shape or (1,)), ax, -1)
        mshape = moved.shape
        x2 = kernel_input(moved, dtype).reshape(-1, mshape[-1])
        out = xp.empty(x2.shape, kernel_output_dtype(x2, dtype))
        if not bool(xp.isfinite(x2).all()):
            raise ValueError("x contains NaN or Inf; error diffusion needs finite values")
        backend(x2).diffuse_rows(x2, order, lo, hi, out)
        return xp.ascontiguousarray(xp.moveaxis(out.reshape(mshape), -1, ax)).reshape(shape)
    if len(shape) < 2:
        raise ValueError(f"2-D diffusion (kernel={kernel!r}) needs x.ndim >= 2, got shape {shape}")
    ax_r, ax_c = _axes(axis, ndim, 2)
    moved = xp.moveaxis(arr, (ax_r, ax_c), (-2, -1))
    mshape = moved.shape
    x3 = kernel_input(moved, dtype).reshape(-1, mshape[-2], mshape[-1])
    if not bool(xp.isfinite(x3).all()):
        raise ValueError("x contains NaN or Inf; error diffusion needs finite values")
    out = xp.empty(x3.shape, kernel_output_dtype(x3, dtype))
    dy, dx, w = ERROR_KERNELS[kernel].arrays()
    backend(x3).diffuse_2d(x3, dy, dx, w, scan == "serpentine", lo, hi, out)
    return xp.ascontiguousarray(xp.moveaxis(out.reshape(mshape), (-2, -1), (ax_r, ax_c)))
