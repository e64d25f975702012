"""KVarN with a codebook grid per kind: ``scheme="kvarn", key_grid=..., value_grid=...``.

``grid`` of a kind (docs/kv.md):

===============  ============================================================================
grid             the tile rows (after the balance) are coded on
===============  ============================================================================
"uniform"        KVarN's grid: 2**bits evenly spaced levels from the row's min to its max
                 (lowbit/cpu/kvarn.py; the paper's).  Both kinds uniform is plain KVarN.
"lloyd-max"      the Lloyd-Max levels of N(0, 1) (:func:`lowbit.codebooks.lloyd_max`), with
                 a per-row scale and offset fitted by least squares (lowbit/cpu/kvarn_grid.py)
"uniform-fit"    evenly spaced levels across the Lloyd-Max range, fitted the same way (the
                 control: it separates the levels' shape from the fitted range)
===============  ============================================================================

A kind with a codebook grid stores the same fields as KVarN (``row_scale`` A, ``row_offset``
Z, ``col_scale`` s_col, float16 or e4m3 as ``scale_dtype``) and reconstructs
x_hat[r, c] = (levels[code[r, c]] * A[r] + Z[r]) * s_col[c] in the rotated frame: the scale
folding stays exact and separable, so the same bits per element as KVarN.  A kind on the
uniform grid is encoded by the KVarN codec itself, bit for bit.  The caches attend on
dequantized tiles for codebook grids (no fused kv_attend path yet).  Blocks on the GPU (CuPy,
torch CUDA) run the CUDA twins of the kernels (lowbit/cuda/kvarn_grid.cu; the level table is
copied to the device, the tokens never leave it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.arrays import Array, backend, contiguous, device_constant, xp_of
from lowbit.kv.codecs import (
    KVARN_SCALE_DTYPES,
    Codec,
    KVarNCodec,
    as_float32,
    check_kvarn_options,
    nan_scales,
    nonfinite_blocks,
)
from lowbit.validate import check_invalid

#: ``key_grid`` / ``value_grid`` choices.
GRIDS = ("uniform", "lloyd-max", "uniform-fit")
#: Least-squares rounds of the row fit (each: nearest codes, then A and Z for them).
FITS = 4


def check_grid(grid: Any, name: str) -> str:
    if grid not in GRIDS:
        raise ValueError(f"{name} must be one of {GRIDS}, got {grid!r}")
    return str(grid)


@functools.cache
def grid_levels(grid: str, bits: int) -> np.ndarray:
    """The level table (float64, increasing; cached, read-only by use) of a codebook ``grid``
    at ``bits`` bits."""
    from lowbit.codebooks import lloyd_max

    lm = np.array(lloyd_max(bits, "gaussian").levels, np.float64)
    if grid == "lloyd-max":
        return lm
    if grid == "uniform-fit":
        return np.linspace(lm[0], lm[-1], lm.size)
    raise ValueError(f"grid {grid!r} has no level table (the uniform grid is KVarN's own)")


@functools.cache
def grid_thresholds(grid: str, bits: int) -> np.ndarray:
    """The midpoints between consecutive levels of :func:`grid_levels` (the encoder's
    nearest-level thresholds)."""
    levels = grid_levels(grid, bits)
    return (levels[1:] + levels[:-1]) / 2


@dataclass(frozen=True)
class KVarNGridCodec(Codec):
    """KVarN tiles with a codebook grid for keys and/or values (module docstring)."""

    key_bits: int = 2
    value_bits: int = 2
    iterations: int = 8
    scale_dtype: str = "float16"
    tile_exponent: bool = True
    key_grid: str = "uniform"
    value_grid: str = "uniform"
    name: str = field(default="kvarn", init=False)
    rotated: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        check_kvarn_options(self.key_bits, self.value_bits, self.iterations, self.scale_dtype)
        check_grid(self.key_grid, "key_grid")
        check_grid(self.value_grid, "value_grid")

    @property
    def fused_attention(self) -> bool:
        """False: the caches attend on dequantized tiles (kv_attend's KVarN layout now reads a
        per-tile exponent that codebook-grid kinds do not store; wiring the grid's level table
        into it is left to do)."""
        return False

    @property
    def uniform(self) -> KVarNCodec:
        """The plain KVarN codec of the same bits and scales (for the uniform kinds)."""
        return KVarNCodec(self.key_bits, self.value_bits, self.iterations, self.scale_dtype,
                          self.tile_exponent)

    @property
    def scale_format(self) -> int:
        return KVARN_SCALE_DTYPES.index(self.scale_dtype)

    def grid(self, kind: str) -> str:
        return self.key_grid if kind == "key" else self.value_grid

    def bits(self, kind: str) -> int:
        return self.key_bits if kind == "key" else self.value_bits

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        if self.grid(kind) == "uniform":
            return self.uniform.field_specs(tokens, dim, kind)
        rows, cols = (dim, tokens) if kind == "key" else (tokens, dim)
        scale = np.float16 if self.scale_format == 0 else np.uint8
        return {"row_scale": (scale, rows), "row_offset": (np.float16, rows), "col_scale": (scale, cols)}

    def _stored(self, codes16: Array) -> Array:
        return codes16.view(np.float16) if self.scale_format == 0 else codes16.astype(np.uint8)

    def encode(self, x: Array, kind: str, *, invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        """:meth:`Codec.encode`.  The codebook-grid kernels flag nothing: with
        ``invalid="raise"`` the input is not checked (the caches check it for NaN / Inf
        first); with ``"nan"`` a tile holding NaN / Inf is stored with NaN scales."""
        if self.grid(kind) == "uniform":
            return self.uniform.encode(x, kind, invalid=invalid)
        check_invalid(invalid)
        xp = xp_of(x)
        n, tokens, dim = x.shape
        rows, cols = (dim, tokens) if kind == "key" else (tokens, dim)
        bits = self.bits(kind)
        x32 = as_float32(x)
        packed = xp.empty((n, self.code_bytes(tokens, dim, kind)), np.uint8)
        a = xp.empty((n, rows), np.uint16)
        z = xp.empty((n, rows), np.uint16)
        s = xp.empty((n, cols), np.uint16)
        backend(x).kvarn_grid_encode(x32, kind == "key", bits,
                                     device_constant(grid_levels, self.grid(kind), bits, like=x),
                                     device_constant(grid_thresholds, self.grid(kind), bits, like=x),
                                     self.iterations, FITS, self.scale_format, packed, a, z, s)
        if invalid == "nan" and n:
            a, z, s = nan_scales(nonfinite_blocks(x32), a, z, s, self.scale_format)
        return packed, {"row_scale": self._stored(a), "row_offset": z.view(np.float16),
                        "col_scale": self._stored(s)}

    def decode(self, codes: Array, fields: dict[str, Array], kind: str,
               tokens: int, dim: int) -> Array:
        if self.grid(kind) == "uniform":
            return self.uniform.decode(codes, fields, kind, tokens, dim)

        def k(f: Array) -> Array:
            return contiguous(f.view(np.uint16) if f.dtype == np.float16 else f.astype(np.uint16))

        xp = xp_of(codes)
        out = xp.empty((codes.shape[0], tokens, dim), np.float32)
        backend(codes).kvarn_grid_decode(contiguous(codes), kind == "key", self.bits(kind),
                                         device_constant(grid_levels, self.grid(kind), self.bits(kind),
                                                         like=codes),
                                         self.scale_format, k(fields["row_scale"]), k(fields["row_offset"]),
                                         k(fields["col_scale"]), out)
        return out

    def options(self) -> dict[str, Any]:
        return {**self.uniform.options(), "key_grid": self.key_grid, "value_grid": self.value_grid}
