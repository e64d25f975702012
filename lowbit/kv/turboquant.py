"""TurboQuant (Zandieh et al., ICLR 2026, arXiv 2504.19874) as a KV codec, implemented by lowbit.

Every token vector v (one row of a block ``[t, D]``) is quantized on its own:

* **mse** variant (keys and values): rotate, y = v @ Pi, with Pi a random orthogonal D x D
  matrix; store the norm s = ||y|| = ||v|| (``norm_dtype``, default float16, rounded to
  nearest) and, per coordinate, the code of the nearest level of the ``bits``-bit Lloyd-Max
  codebook designed for one coordinate of a uniformly random unit vector in R^D
  (:func:`lowbit.codebooks.lloyd_max` with ``"sphere"``: after a random rotation every
  coordinate of y / ||y|| has that distribution).  Decode: x_hat = (s * levels[code]) @ Pi^T.
* **prod** variant (keys only; values stay mse): the mse variant at ``bits - 1`` bits, then a
  1-bit QJL sketch of its residual r = y - y_mse (rotated frame): the signs of S r for a
  Gaussian D x D matrix S, and gamma = ||r|| (``norm_dtype``).  Decode adds
  sqrt(pi / 2) / D * gamma * S^T sign(S r), which makes every inner product <q, x_hat> an
  unbiased estimate of <q, x> over the draw of S (the paper's inner-product quantizer; at
  ``bits = 1`` the mse part is empty and the sketch is of v itself).

Pi and S come from lowbit's counter-based generator (:mod:`lowbit.rounding.streams`): Pi is
the Q factor of the QR decomposition of a D x D standard normal matrix (elements 0 .. 2 D^2 of
``seed``'s stream, Box–Muller), its columns' signs fixed by the diagonal of R (so Pi is Haar
distributed); S is the next D^2 normals (elements 2 D^2 .. 4 D^2).  One (Pi, S) per (seed, D),
shared by every head and layer, cached per process.

Storage per block of t tokens: ``codes`` = the t * D mse codes packed at ``bits`` (prod keys:
``bits - 1``) bits, then for prod keys the t * D sign bits (1 = non-negative); fields ``norm``
[t] and, for prod keys, ``residual_norm`` [t] in ``norm_dtype``.  So bits/element =
bits + (16 or 32) / D for mse and bits + 2 (16 or 32) / D for prod keys: at D = 64 and
float16 norms, 2.25 for mse at 2 bits and 2.5 for prod keys at 2 bits.

Norms: a zero vector stores s = 0 and decodes to exactly zero (so does a zero residual);
norms beyond float16's range, or non-zero ones below its normal range (where its relative
precision is lost), raise ``ValueError`` asking for ``norm_dtype="float32"``, which holds
every norm of finite float32 input.  Codes encode y divided by the *stored* norm.

Device arrays (CuPy, torch CUDA) stay on the device: the norms, codes and packing run the CUDA
twins of the kernels (bit-identical to the CPU's for the same rotated rows), Pi and S are copied
to the device once per (seed, D, device), and the rotations are float64 GEMMs there (cuBLAS):
their rounding differs from the host BLAS in the last bits, so a coordinate within that
distance of a threshold can take the neighbouring code on the other backend.

What is not here (documented, not claimed): the paper's outlier-channel split (a second
TurboQuant at more bits on a subset of channels, its 2.5- and 3.5-bit settings) and any fused
attention kernel (the cache dequantizes TurboQuant tiles for attention).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lowbit.arrays import Array, contiguous, xp_of
from lowbit.kv.codecs import Codec
from lowbit.validate import check_bits

#: ``variant=`` choices: MSE quantizer only, or (keys) MSE at bits - 1 plus a 1-bit QJL residual.
VARIANTS = ("mse", "prod")
#: Storage dtypes of the per-vector norms.
NORM_DTYPES = ("float16", "float32")


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 2 <= dim <= 4096:
        raise ValueError(f"head_dim must be an integer in 2..4096 for TurboQuant, got {dim!r}")
    return int(dim)


@functools.lru_cache(maxsize=64)
def rotation(seed: int, dim: int) -> np.ndarray:
    """The random rotation Pi [dim, dim] (float64, orthogonal, read-only) of ``seed``."""
    from lowbit.rounding.streams import standard_normal

    seed, dim = check_seed(seed), _check_dim(dim)
    g = standard_normal(seed, 0, dim * dim).reshape(dim, dim)
    q, r = np.linalg.qr(g)
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    pi = np.ascontiguousarray(q * d)
    pi.flags.writeable = False
    return pi


@functools.lru_cache(maxsize=64)
def qjl_matrix(seed: int, dim: int) -> np.ndarray:
    """The QJL projection S [dim, dim] (float64, i.i.d. N(0, 1), read-only) of ``seed``."""
    from lowbit.rounding.streams import standard_normal

    seed, dim = check_seed(seed), _check_dim(dim)
    s = standard_normal(seed, 2 * dim * dim, dim * dim).reshape(dim, dim)
    s.flags.writeable = False
    return s


def _matrix(which: str, seed: int, dim: int, like: Array) -> Any:
    """:func:`rotation` or :func:`qjl_matrix` in ``like``'s array library and device (a CuPy
    copy uploaded once per (seed, dim, device): :func:`lowbit.arrays.device_constant`)."""
    from lowbit.arrays import device_constant

    return device_constant(rotation if which == "rotation" else qjl_matrix, seed, dim, like=like)


def _pack(codes: Array, bits: int) -> Array:
    """Pack ``codes [n, m]`` (uint8) row by row, each row starting on a byte boundary."""
    from lowbit.arrays import backend

    n, m = codes.shape
    row = (m * bits + 7) // 8
    out = xp_of(codes).empty((n, row), np.uint8)
    k = backend(codes)
    if (m * bits) % 8 == 0:
        k.pack_codes(contiguous(codes).reshape(-1), bits, out.reshape(-1))
    else:
        for i in range(n):
            k.pack_codes(contiguous(codes[i]), bits, out[i])
    return out


def _unpack(packed: Array, bits: int, m: int) -> Array:
    """Inverse of :func:`_pack`: ``packed [n, bytes]`` -> codes [n, m] (uint8)."""
    from lowbit.arrays import backend

    n = packed.shape[0]
    out = xp_of(packed).empty((n, m), np.uint8)
    k = backend(packed)
    if (m * bits) % 8 == 0:
        k.unpack_codes(contiguous(packed).reshape(-1), bits, out.reshape(-1))
    else:
        for i in range(n):
            k.unpack_codes(contiguous(packed[i]), bits, out[i])
    return out


@dataclass(frozen=True)
class TurboQuantCodec(Codec):
    """TurboQuant per token vector (module docstring); works in its own random frame, so
    ``rotated`` (the callers' Hadamard) is False."""

    key_bits: int = 2
    value_bits: int = 2
    variant: str = "mse"
    seed: int = 0
    norm_dtype: str = "float16"
    name: str = field(default="turboquant", init=False)
    rotated: bool = field(default=False, init=False)
    #: no kv_attend layout (its own rotation, the QJL term): caches dequantize for attention
    fused_attention: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_bits(self.key_bits, name="key_bits")
        check_bits(self.value_bits, name="value_bits")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        check_seed(self.seed)
        if self.norm_dtype not in NORM_DTYPES:
            raise ValueError(f"norm_dtype must be one of {NORM_DTYPES}, got {self.norm_dtype!r}")

    def bits(self, kind: str) -> int:
        return self.key_bits if kind == "key" else self.value_bits

    def qjl(self, kind: str) -> bool:
        """Whether blocks of ``kind`` carry the 1-bit QJL residual (prod variant, keys)."""
        return self.variant == "prod" and kind == "key"

    def mse_bits(self, kind: str) -> int:
        """Bits of the MSE codes (0: none, prod keys at 1 bit)."""
        return self.bits(kind) - int(self.qjl(kind))

    def code_bytes(self, tokens: int, dim: int, kind: str) -> int:
        m = tokens * dim
        return (m * self.mse_bits(kind) + 7) // 8 + ((m + 7) // 8 if self.qjl(kind) else 0)

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        dt = np.dtype(self.norm_dtype)
        out: dict[str, tuple[Any, int]] = {"norm": (dt, tokens)}
        if self.qjl(kind):
            out["residual_norm"] = (dt, tokens)
        return out

    def codebook(self, kind: str, dim: int) -> Any:
        """The Lloyd-Max codebook of the MSE codes (None when there are none)."""
        from lowbit.codebooks import lloyd_max

        b = self.mse_bits(kind)
        return lloyd_max(b, "sphere", dim=_check_dim(dim)) if b else None

    def _norms(self, y: Array, dim: int, invalid: str = "raise") -> tuple[Array, Array]:
        """(stored norms, their float64 values) of the rows of flat ``y`` (blocks of ``dim``).

        A norm that ``norm_dtype`` cannot hold (NaN, overflow, nonzero below its normal
        range): ``invalid="raise"`` raises, ``"nan"`` stores NaN (on the device)."""
        from lowbit import scales
        from lowbit.arrays import backend

        xp = xp_of(y)
        s = xp.empty(y.size // dim, np.float64)
        backend(y).block_norm(y, dim, s)
        try:
            stored = scales.store(s, self.norm_dtype, "nearest", invalid=invalid)
        except ValueError:
            raise ValueError(f"a vector norm of {float(s.max()):.6g} overflows norm_dtype="
                             f"{self.norm_dtype!r}; use norm_dtype='float32'") from None
        back = scales.load(stored, self.norm_dtype).astype(np.float64)
        tiny = scales.SCALE_FORMATS[self.norm_dtype].smallest_normal
        low = (s > 0) & (back < tiny)
        if invalid == "nan":
            stored = xp.where(low, xp.nan, stored).astype(stored.dtype, copy=False)
            back = xp.where(low, xp.nan, back)
        elif bool(low.any()):
            raise ValueError(f"a vector norm of {float(s[low].min()):.3g} lies below norm_dtype="
                             f"{self.norm_dtype!r}'s normal range ({tiny:.3g}); use norm_dtype='float32'")
        return stored, back

    def _mse(self, y: Array, kind: str, dim: int, invalid: str) -> tuple[Array | None, Array, Array]:
        """(packed codes or None, stored norms, y_hat) of the rotated rows ``y [m, dim]``."""
        from lowbit.codec import decode, encode_levels

        flat = contiguous(y).reshape(-1)
        stored, s = self._norms(flat, dim, invalid)
        cb = self.codebook(kind, dim)
        if cb is None:
            return None, stored, xp_of(y).zeros_like(y)
        codes = encode_levels(flat, cb, dim, s, mode=0, seed=0, first_index=0, rbits=16)
        y_hat = decode(codes, cb, flat.size, dim, s, "float64").reshape(y.shape)
        return codes, stored, y_hat

    def encode(self, x: Array, kind: str, *, invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        """Encode ``x [n, t, D]`` (float32/float64, finite; numpy or CuPy) into codes
        ``[n, code_bytes]`` and fields ``{"norm": [n, t], "residual_norm": [n, t] (prod keys)}``.

        ``invalid="nan"``: a token vector holding NaN / Inf, or whose norm ``norm_dtype``
        cannot hold, gets NaN norms (it decodes to NaN), decided on the device."""
        from lowbit.arrays import backend
        from lowbit.validate import check_invalid

        check_invalid(invalid)
        xp = xp_of(x)
        n, t, d = x.shape
        pi = _matrix("rotation", self.seed, _check_dim(d), x)
        y = x.astype(np.float64).reshape(n * t, d) @ pi
        b = self.mse_bits(kind)
        parts: list[Array] = []
        codes, stored, y_hat = self._mse(y, kind, d, invalid)
        fields = {"norm": stored.reshape(n, t)}
        if codes is not None:
            # re-pack per block so that every block starts on a byte boundary
            unpacked = xp.empty(n * t * d, np.uint8)
            backend(codes).unpack_codes(codes, b, unpacked)
            parts.append(_pack(unpacked.reshape(n, t * d), b))
        if self.qjl(kind):
            r = y - y_hat
            sign = (r @ _matrix("qjl", self.seed, d, x).T) >= 0
            parts.append(_pack(sign.astype(np.uint8).reshape(n, t * d), 1))
            res_stored, _ = self._norms(contiguous(r).reshape(-1), d, invalid)
            if invalid == "nan":  # NaN norm, NaN residual norm: also without MSE codes (1-bit keys)
                res_stored = xp.where(xp.isnan(stored), xp.nan, res_stored).astype(res_stored.dtype, copy=False)
            fields["residual_norm"] = res_stored.reshape(n, t)
        packed = xp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        return contiguous(packed), fields

    def decode(self, codes: Array, fields: dict[str, Array], kind: str,
               tokens: int, dim: int) -> Array:
        from lowbit import scales

        xp = xp_of(codes)
        n = codes.shape[0]
        m = tokens * dim
        b = self.mse_bits(kind)
        s = scales.load(contiguous(fields["norm"]).reshape(-1), self.norm_dtype).astype(np.float64)
        y = xp.zeros((n * tokens, dim), np.float64)
        mse_bytes = (m * b + 7) // 8
        if b:
            from lowbit.arrays import device_constant
            from lowbit.codec import codebook_table

            levels = device_constant(codebook_table, self.codebook(kind, dim), "levels", like=codes)
            c = _unpack(codes[:, :mse_bytes], b, m).reshape(n * tokens, dim)
            y = levels[c] * s[:, None]
        if self.qjl(kind):
            sign = _unpack(codes[:, mse_bytes:], 1, m).reshape(n * tokens, dim).astype(np.float64) * 2 - 1
            gamma = scales.load(contiguous(fields["residual_norm"]).reshape(-1),
                                self.norm_dtype).astype(np.float64)
            y = y + (math.sqrt(math.pi / 2) / dim) * gamma[:, None] * (sign @ _matrix("qjl", self.seed, dim, codes))
        return (y @ _matrix("rotation", self.seed, dim, codes).T).astype(np.float32).reshape(n, tokens, dim)

    def options(self) -> dict[str, Any]:
        return {"key_bits": self.key_bits, "value_bits": self.value_bits, "variant": self.variant,
                "seed": self.seed, "norm_dtype": self.norm_dtype}
