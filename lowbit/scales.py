"""Storing per-group scales and offsets in float32, float16 or bfloat16.

Scales are rounded *up* and offsets *down* to the storage dtype, so that the
stored grid still covers every value of its group (the error bound
|x - x_hat| <= scale / 2 then holds with the stored scale).

The storage dtypes are the MiniFloat records FLOAT32, FLOAT16 and BFLOAT16, and the rounding
is the shared codec's (:func:`lowbit.codec.to_codes`): one rounding from float64, subnormals
included, assembled from integer bits on every backend (CuPy flushes float32 subnormals in
float arithmetic), so numpy, CuPy and the fused kernels (``lowbit/cpu/rtn.py``,
``lowbit/cuda/rtn.cu``) agree bit for bit.  bfloat16 values are carried as uint16 bits (numpy
has no bfloat16).
"""

from __future__ import annotations

from typing import Literal

from lowbit import codec
from lowbit.arrays import Array, xp_of
from lowbit.formats import BFLOAT16, FLOAT16, FLOAT32, MiniFloat
from lowbit.validate import check_invalid

#: Storage formats accepted for scales (``scale_dtype=``); the position is the kernels' code.
SCALE_FORMATS: dict[str, MiniFloat] = {"float32": FLOAT32, "float16": FLOAT16, "bfloat16": BFLOAT16}
SCALE_DTYPES = tuple(SCALE_FORMATS)

Direction = Literal["nearest", "up", "down"]
_MODES = {"nearest": "nearest_even", "up": "up", "down": "down"}


def check_scale_dtype(scale_dtype: object) -> str:
    if scale_dtype not in SCALE_FORMATS:
        raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}, got {scale_dtype!r}")
    return str(scale_dtype)


def kernel_code(scale_dtype: str) -> int:
    """The kernels' number for a storage dtype."""
    return SCALE_DTYPES.index(scale_dtype)


def _storage(codes: Array, scale_dtype: str) -> Array:
    """The storage array of codes: float32 / float16 views, bfloat16 as the uint16 codes."""
    xp = xp_of(codes)
    return codes if scale_dtype == "bfloat16" else codes.view(getattr(xp, scale_dtype))


def from_f32(values: Array, scale_dtype: str) -> Array:
    """Storage array for float32 values exactly representable in ``scale_dtype`` (no rounding)."""
    return _storage(codec.narrow_exact(values, SCALE_FORMATS[scale_dtype]), scale_dtype)


def overflow_error(scale_dtype: str, magnitude: float | None = None) -> ValueError:
    size = f" of magnitude {magnitude:.6g}" if magnitude is not None else ""
    return ValueError(
        f"a scale or offset{size} overflows scale_dtype={scale_dtype!r}; use scale_dtype='float32'"
    )


def store(values: Array, scale_dtype: str, direction: Direction = "nearest", *,
          invalid: str = "raise") -> Array:
    """Round float64 ``values`` to ``scale_dtype`` storage (bfloat16 as uint16 bits).

    A value that overflows the storage dtype (its rounding lies beyond the dtype's max, +-Inf
    included) or is NaN raises with ``invalid="raise"`` (on a GPU: one host synchronization);
    with ``invalid="nan"`` it is stored as NaN, on the device (:data:`lowbit.validate.INVALID_POLICIES`).

    Raises
    ------
    ValueError
        With ``invalid="raise"``: a value overflows the storage dtype, or is NaN.
    """
    xp = xp_of(values)
    fmt = SCALE_FORMATS[scale_dtype]
    codes, over = codec.to_codes(values, fmt, _MODES[direction], "saturate", return_overflow=True)
    if check_invalid(invalid) == "nan":
        codes = xp.where(over | xp.isnan(values), fmt.code_of_nan, codes).astype(codes.dtype, copy=False)
    elif values.size and bool(over.any() | xp.isnan(values).any()):
        raise overflow_error(scale_dtype, float(xp.max(xp.abs(values))))
    return _storage(codes, scale_dtype)


def load(stored: Array, scale_dtype: str) -> Array:
    """Stored scales as float32 (exact for every storage dtype); float32 storage is returned
    as is, not copied (callers only read it)."""
    if scale_dtype == "float32":
        return stored
    codes = stored if scale_dtype == "bfloat16" else stored.view(xp_of(stored).uint16)
    return codec.widen_exact(codes, SCALE_FORMATS[scale_dtype])
