"""Tile codecs: how each KV scheme stores one block of tokens (DESIGN.md section 4).

A codec encodes a batch of ``n`` blocks ``x [n, t, D]`` (float32, tokens x head_dim) of
one kind (``"key"`` or ``"value"``) into packed codes ``[n, code_bytes]`` (uint8) plus a
dict of per-block fields ``{name: [n, ...]}``, and decodes them back to ``[n, t, D]``
float32.  Codecs with ``rotated = True`` work in the rotated frame: their callers apply
the normalized Hadamard transform along D before :meth:`encode` and after :meth:`decode`.

The same codecs serve ``lowbit.quantize(x, scheme=...)`` (:mod:`lowbit.kv.schemes`) and
the streaming cache (:mod:`lowbit.kv.cache`), so every comparison is like for like.

==========  =======  ========================================================================
codec       rotated  one block of t tokens
==========  =======  ========================================================================
kvarn       yes      K tile [D, t] / V tile [t, D]: balance, per-row RTN, folded scales
kivi        no       K: per channel over the t tokens; V: per token in groups of 32 channels
quarot      yes      per token RTN (asymmetric) over the D rotated channels
rtn         no       per token RTN (asymmetric) over the D channels
fp8         no       float8 e4m3 codes with one float32 absmax scale per (head, block)
==========  =======  ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.arrays import Array, Origin, backend, contiguous, xp_of
from lowbit.validate import INVALID_POLICIES, check_bits, check_invalid, check_iterations

KINDS = ("key", "value")
#: scale storage of the KVarN codec: A and s_col as float16 bits or float8 e4m3 codes
KVARN_SCALE_DTYPES = ("float16", "float8_e4m3")
#: what every codec's encode / encode_tokens does with a block it cannot store (``invalid=``):
#: "raise" a ValueError, or "nan": store it with NaN fields (it decodes to NaN), nothing read back
INVALID_TILES = INVALID_POLICIES


def _f32_origin(x: Array) -> Origin:
    """Origin of a float32 backend array on x's device (for the affine decoder's front)."""
    if xp_of(x) is np:
        return Origin("numpy", "float32", "cpu")
    return Origin("cupy", "float32", f"cuda:{x.device.id}")


def check_kvarn_options(key_bits: Any, value_bits: Any, iterations: Any, scale_dtype: Any) -> None:
    """The checks shared by the KVarN codecs (uniform and codebook grids)."""
    check_bits(key_bits, name="key_bits")
    check_bits(value_bits, name="value_bits")
    check_iterations(iterations)
    if scale_dtype not in KVARN_SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {KVARN_SCALE_DTYPES}, got {scale_dtype!r}")


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'key' or 'value', got {kind!r}")
    return str(kind)


def check_kv_group_size(group_size: Any, name: str = "group_size") -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 8 or group_size % 8:
        raise ValueError(f"{name} must be a positive multiple of 8, got {group_size!r}")
    return int(group_size)




def rotate(x: Array) -> Array:
    """Normalized Sylvester Hadamard transform along the last axis (self-inverse), float32,
    on x's device (numpy or CuPy).

    Raises
    ------
    ValueError
        The last axis has a length the Hadamard transform does not support.
    """
    from lowbit.transforms import hadamard

    return contiguous(hadamard(as_float32(x), axis=-1))


def as_float32(x: Array) -> Array:
    """x (float16 / float32 / float64, or bfloat16 bits as uint16; numpy or CuPy) as a
    C-contiguous float32 array (16-bit values widened exactly)."""
    if x.dtype == np.uint16:
        from lowbit.arrays import to_float

        return contiguous(to_float(x, "bfloat16"))
    return contiguous(x.astype(np.float32, copy=False))


def kernel_tokens(x: Array) -> Array:
    """Tokens as the KVarN kernels read them: float32 on the CPU; on a GPU float16,
    bfloat16 bits (uint16) and float32 as they are (float64 narrowed to float32), contiguous."""
    if xp_of(x) is np or x.dtype == np.float64:
        return as_float32(x)
    return contiguous(x)


class Codec:
    """Base of the tile codecs (see the module table)."""

    name: str = ""
    rotated: bool = False

    def bits(self, kind: str) -> int:
        raise NotImplementedError

    def code_bytes(self, tokens: int, dim: int, kind: str) -> int:
        """Bytes of packed codes for one block of ``tokens`` x ``dim``."""
        return (tokens * dim * self.bits(kind) + 7) // 8

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        """{name: (dtype, values per block)} of the fields :meth:`encode` writes for blocks of
        ``tokens`` x ``dim`` (the layout lowbit.schema checks saved files against)."""
        raise NotImplementedError

    def encode(self, x: Array, kind: str, *, invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        """Blocks ``x [n, t, D]`` (float32; the rotated frame if :attr:`rotated`) -> codes, fields.

        ``invalid`` (:data:`INVALID_TILES`) says what happens to a block the codec cannot
        store (NaN / Inf in it, or magnitudes its fields cannot represent):

        =========  ================================================================
        invalid    such a block
        =========  ================================================================
        "raise"    ValueError (default; on a GPU the check reads flags back: host
                   synchronizations)
        "nan"      stored with NaN fields (its values decode to NaN; KVarN, KIVI,
                   rtn / quarot, fp8: the whole block or group; TurboQuant: the token
                   vector), decided on the device: nothing is read back
        =========  ================================================================
        """
        raise NotImplementedError

    def decode(self, codes: Array, fields: dict[str, Array], kind: str,
               tokens: int, dim: int) -> Array:
        """Codes and fields -> blocks ``[n, t, D]`` float32 (the rotated frame if :attr:`rotated`)."""
        raise NotImplementedError

    def encode_tokens(self, x: Array, kind: str, *, invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        """:meth:`encode` of blocks in the original frame (numpy or CuPy, any float dtype; the
        caller's array is not modified): rotated first when the codec is :attr:`rotated`."""
        check_invalid(invalid)
        return self.encode(rotate(x) if self.rotated else as_float32(x), kind, invalid=invalid)

    def decode_tokens(self, codes: Array, fields: dict[str, Array], kind: str,
                      tokens: int, dim: int) -> Array:
        """:meth:`decode` back to the original frame (float32)."""
        out = self.decode(codes, fields, kind, tokens, dim)
        return rotate(out) if self.rotated else out

    def options(self) -> dict[str, Any]:
        """JSON-able constructor arguments (recorded in QuantizedArray metadata)."""
        raise NotImplementedError


@dataclass(frozen=True)
class KVarNCodec(Codec):
    """KVarN tiles: balance -> per-row RTN -> fold -> pack (kernels in lowbit/cpu/kvarn.py).

    Fields per block (R, C = (D, t) for keys, (t, D) for values):
    ``row_scale`` A [R] and ``col_scale`` s_col [C] (float16, or uint8 e4m3 codes with
    ``scale_dtype="float8_e4m3"``), ``row_offset`` Z [R] (float16), and with
    ``tile_exponent`` (the default) ``tile_exponent`` e [1] (int8);
    x_hat[r, c] = (code[r, c] * A[r] + Z[r]) * s_col[c] * 2**e in the rotated frame.
    The exponent normalizes each tile's magnitude before the balance (lowbit/cpu/kvarn.py),
    so that the error does not depend on the input's scale; files written before it existed
    have ``tile_exponent=False`` (e = 0, no normalization).
    """

    key_bits: int = 2
    value_bits: int = 2
    iterations: int = 8
    scale_dtype: str = "float16"
    tile_exponent: bool = True
    name: str = field(default="kvarn", init=False)
    rotated: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        check_kvarn_options(self.key_bits, self.value_bits, self.iterations, self.scale_dtype)
        if not isinstance(self.tile_exponent, (bool, np.bool_)):
            raise TypeError(f"tile_exponent must be a bool, got {self.tile_exponent!r}")

    @property
    def scale_format(self) -> int:
        return KVARN_SCALE_DTYPES.index(self.scale_dtype)

    def bits(self, kind: str) -> int:
        return self.key_bits if kind == "key" else self.value_bits

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        rows, cols = (dim, tokens) if kind == "key" else (tokens, dim)
        scale = np.float16 if self.scale_format == 0 else np.uint8
        out: dict[str, tuple[Any, int]] = {"row_scale": (scale, rows), "row_offset": (np.float16, rows),
                                           "col_scale": (scale, cols)}
        if self.tile_exponent:
            out["tile_exponent"] = (np.int8, 1)
        return out

    def encode(self, x: Array, kind: str, *, invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        return self._encode(kernel_tokens(x), kind, rotate=False, invalid=check_invalid(invalid))

    def encode_tokens(self, x: Array, kind: str, *,
                      invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        """:meth:`Codec.encode_tokens`; a tile that cannot be stored is one the per-tile
        exponent cannot represent (NaN / Inf, or magnitudes out of range; with
        ``tile_exponent``; without it, one holding NaN / Inf, checked with ``invalid="nan"``
        only): ``"raise"`` reads the exponents back (one host synchronization per call),
        ``"nan"`` stores it with NaN scales on the device."""
        check_invalid(invalid)
        # the kernels rotate power-of-two head_dims themselves (one pass over the tokens)
        if _fused_rotation(x.shape[-1]):
            return self._encode(kernel_tokens(x), kind, rotate=True, invalid=invalid)
        return self._encode(rotate(x), kind, rotate=False, invalid=invalid)

    def _encode(self, x: Array, kind: str, rotate: bool,
                invalid: str = "raise") -> tuple[Array, dict[str, Array]]:
        from lowbit.cpu.kvarn import EXPONENT_INVALID

        xp = xp_of(x)
        n, tokens, dim = x.shape
        rows, cols = (dim, tokens) if kind == "key" else (tokens, dim)
        bits = self.bits(kind)
        packed = xp.empty((n, self.code_bytes(tokens, dim, kind)), np.uint8)
        a = xp.empty((n, rows), np.uint16)
        z = xp.empty((n, rows), np.uint16)
        s = xp.empty((n, cols), np.uint16)
        e = xp.empty(n, np.int8)
        backend(x).kvarn_encode(x, rotate, kind == "key", bits, self.iterations, self.scale_format,
                                self.tile_exponent, packed, a, z, s, e)
        bad = e == EXPONENT_INVALID if self.tile_exponent and n else None
        if invalid == "nan" and n:
            # on the device, no read-back: NaN scales, exponent 0
            if bad is None:  # no exponent to flag them: the tiles holding NaN / Inf
                bad = nonfinite_blocks(x)
            a, z, s = nan_scales(bad, a, z, s, self.scale_format)
            if self.tile_exponent:
                e = xp.where(bad, 0, e).astype(np.int8, copy=False)
        elif bad is not None and bool(bad.any()):
            raise ValueError(
                f"{int(bad.sum())} of {n} blocks (the first: block {int(bad.argmax())}) have "
                f"magnitudes KVarN's per-tile exponent cannot represent: the median nonzero |x| "
                f"must lie in [2**-128, 2**127), the largest |x| (after the Hadamard rotation, "
                f"which can grow a value by sqrt(head_dim)) below 2**127 and within 2**48 of the median")
        fields = {"row_scale": self._stored(a), "row_offset": z.view(np.float16), "col_scale": self._stored(s)}
        if self.tile_exponent:
            fields["tile_exponent"] = e.reshape(n, 1)
        return packed, fields

    def _stored(self, codes16: Array) -> Array:
        return codes16.view(np.float16) if self.scale_format == 0 else codes16.astype(np.uint8)

    def kernel_fields(self, fields: dict[str, Array]) -> tuple[Array, ...]:
        """(row_scale, row_offset, col_scale) as the uint16 code arrays the kernels read, and
        tile_exponent [n] int8 (zeros for files written before the exponent existed)."""
        def k(f: Array) -> Array:
            return contiguous(f.view(np.uint16) if f.dtype == np.float16 else f.astype(np.uint16))

        a = fields["row_scale"]
        xp = xp_of(a)
        e = fields.get("tile_exponent")
        e = xp.zeros(a.shape[0], np.int8) if e is None else contiguous(e.reshape(-1))
        return k(a), k(fields["row_offset"]), k(fields["col_scale"]), e

    def decode(self, codes: Array, fields: dict[str, Array], kind: str,
               tokens: int, dim: int) -> Array:
        return self._decode(codes, fields, kind, tokens, dim, rotate=False)

    def decode_tokens(self, codes: Array, fields: dict[str, Array], kind: str,
                      tokens: int, dim: int) -> Array:
        if _fused_rotation(dim):
            return self._decode(codes, fields, kind, tokens, dim, rotate=True)
        return rotate(self._decode(codes, fields, kind, tokens, dim, rotate=False))

    def _decode(self, codes: Array, fields: dict[str, Array], kind: str, tokens: int, dim: int,
                rotate: bool) -> Array:
        xp = xp_of(codes)
        out = xp.empty((codes.shape[0], tokens, dim), np.float32)
        a, z, s, e = self.kernel_fields(fields)
        backend(codes).kvarn_decode(contiguous(codes), rotate, kind == "key", self.bits(kind),
                                    self.scale_format, a, z, s, e, out)
        return out

    def options(self) -> dict[str, Any]:
        return {"key_bits": self.key_bits, "value_bits": self.value_bits,
                "iterations": self.iterations, "scale_dtype": self.scale_dtype,
                "tile_exponent": bool(self.tile_exponent)}


def nonfinite_blocks(x: Array) -> Array:
    """bool [n]: which blocks of ``x [n, ...]`` hold NaN or Inf (float16 / float32, or
    bfloat16 bits as uint16), on x's device."""
    xp = xp_of(x)
    flat = x.reshape(x.shape[0], -1)
    if flat.dtype == np.uint16:  # bfloat16 bits: exponent field all ones
        return ((flat & 0x7F80) == 0x7F80).any(axis=1)
    return ~xp.isfinite(flat).all(axis=1)


def nan_scales(bad: Array, a: Array, z: Array, s: Array, scale_format: int) -> tuple[Array, Array, Array]:
    """The KVarN fields as the kernels write them (uint16 codes [n, rows] / [n, cols]) with
    the blocks ``bad [n]`` set to NaN (A and s_col: float16 0x7e00 or e4m3 0x7f codes, Z
    float16 0x7e00); on the device, nothing read back (KVarN and its codebook grids)."""
    from lowbit.formats import FLOAT16, FP8_E4M3

    xp = xp_of(a)
    nan_scale = FLOAT16.code_of_nan if scale_format == 0 else FP8_E4M3.code_of_nan

    def put(codes: Array, nan: int | None) -> Array:
        return xp.where(bad[:, None], nan, codes).astype(np.uint16, copy=False)

    return put(a, nan_scale), put(z, FLOAT16.code_of_nan), put(s, nan_scale)


def _fused_rotation(dim: int) -> bool:
    """True if the KVarN kernels rotate blocks of this head_dim themselves (a power of two)."""
    return dim >= 1 and dim & (dim - 1) == 0


def _rtn_rows(x: np.ndarray, bits: int, group_size: int | None,
              invalid: str = "raise") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Asymmetric RTN (scheme ``rtn``) along the last axis of ``x [n, r, c]``, float16 scales.

    The encoder of :mod:`lowbit.affine` (nearest_even, groups of ``group_size`` or ``c``).
    Each block's codes start on a byte boundary: in one call when ``r * c * bits`` is a
    multiple of 8 (the cache's geometries), else block by block.  ``invalid="nan"``: a group
    holding NaN / Inf, or whose scale or offset overflows float16, gets NaN scale and offset
    and codes 0, decided on the device (nothing read back).
    """
    from lowbit import affine

    n, _, c = x.shape
    g = c if group_size is None else group_size
    xp = xp_of(x)
    check = check_invalid(invalid) == "raise"
    chunks = [x] if (x[0].size * bits) % 8 == 0 else [x[i:i + 1] for i in range(n)]
    parts = []
    for ch in chunks:
        packed, fields, _ = affine.encode_groups(contiguous(ch).reshape(-1), g, bits, False, "float16",
                                                 "nearest_even", np.uint64(0), 16, check_finite=check)
        if not check:
            packed, fields = _nan_groups(packed, fields, g * bits)
        parts.append((packed.reshape(ch.shape[0], -1),
                      {k: fields[k].reshape(ch.shape[0], -1) for k in ("scale", "offset")}))
    codes = xp.concatenate([p[0] for p in parts])
    return codes, {k: xp.concatenate([p[1][k] for p in parts]) for k in ("scale", "offset")}


def _nan_groups(packed: Array, fields: dict[str, Array], group_bits: int) -> tuple[Array, dict[str, Array]]:
    """RTN groups whose scale or offset is not finite (:func:`lowbit.affine.encode_groups`'
    markers: NaN input, overflow) with NaN scale and offset and, when every group's codes
    fill whole bytes (``group_bits`` a multiple of 8), codes 0; on the device."""
    xp = xp_of(packed)
    scale, offset = fields["scale"], fields["offset"]
    bad = ~(xp.isfinite(scale) & xp.isfinite(offset))
    fields = {k: xp.where(bad, xp.nan, f).astype(f.dtype, copy=False) for k, f in fields.items()}
    if group_bits % 8 == 0:
        per_group = packed.reshape(bad.size, -1)
        packed = xp.where(bad[:, None], 0, per_group).astype(np.uint8, copy=False).reshape(-1)
    return packed, fields


def _rtn_rows_decode(codes: np.ndarray, fields: dict[str, np.ndarray], bits: int,
                     shape: tuple[int, int, int], group_size: int | None) -> np.ndarray:
    from lowbit import affine
    from lowbit.quantized import QuantizedArray
    from lowbit.schema import RtnMeta

    n, r, c = shape
    out = xp_of(codes).empty(shape, np.float32)
    whole = (r * c * bits) % 8 == 0
    chunks = [(0, n)] if whole else [(i, i + 1) for i in range(n)]
    for lo, hi in chunks:
        meta = RtnMeta(shape=(hi - lo, r, c), dtype="float32", bits=bits, axis=2,
                       group_size=group_size, symmetric=False, scale_dtype="float16")
        q = QuantizedArray(contiguous(codes[lo:hi]).reshape(-1),
                           {k: contiguous(v[lo:hi]).reshape(-1) for k, v in fields.items()},
                           meta.to_meta(), _f32_origin(codes))
        out[lo:hi] = affine.dequantize(q)
    return out


def _rtn_row_fields(rows: int, per_row: int) -> dict[str, tuple[Any, int]]:
    """Fields of _rtn_rows for one block: float16 scale and offset, ``per_row`` per row."""
    return {"scale": (np.float16, rows * per_row), "offset": (np.float16, rows * per_row)}


@dataclass(frozen=True)
class KiviCodec(Codec):
    """KIVI: keys per channel over the block's tokens, values per token in channel groups.

    Fields: ``scale``, ``offset`` (float16) per (channel) for keys [D], per (token,
    channel group) for values [t * D / value_group_size].
    """

    key_bits: int = 2
    value_bits: int = 2
    value_group_size: int = 32
    name: str = field(default="kivi", init=False)
    rotated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_bits(self.key_bits, name="key_bits")
        check_bits(self.value_bits, name="value_bits")
        if isinstance(self.value_group_size, bool) or not isinstance(self.value_group_size, int) \
                or self.value_group_size < 1:
            raise ValueError(f"value_group_size must be a positive integer, got {self.value_group_size!r}")

    def bits(self, kind: str) -> int:
        return self.key_bits if kind == "key" else self.value_bits

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        if kind == "key":
            return _rtn_row_fields(dim, 1)
        return _rtn_row_fields(tokens, dim // self._value_group(dim))

    def _value_group(self, dim: int) -> int:
        if dim % self.value_group_size:
            raise ValueError(f"value_group_size={self.value_group_size} does not divide head_dim {dim}")
        return self.value_group_size

    def encode(self, x: np.ndarray, kind: str, *, invalid: str = "raise") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if kind == "key":
            return _rtn_rows(contiguous(x.transpose(0, 2, 1)), self.key_bits, None, invalid)
        return _rtn_rows(x, self.value_bits, self._value_group(x.shape[2]), invalid)

    def decode(self, codes: np.ndarray, fields: dict[str, np.ndarray], kind: str,
               tokens: int, dim: int) -> np.ndarray:
        n = codes.shape[0]
        if kind == "key":
            kt = _rtn_rows_decode(codes, fields, self.key_bits, (n, dim, tokens), None)
            return contiguous(kt.transpose(0, 2, 1))
        return _rtn_rows_decode(codes, fields, self.value_bits, (n, tokens, dim), self._value_group(dim))

    def options(self) -> dict[str, Any]:
        return {"key_bits": self.key_bits, "value_bits": self.value_bits,
                "value_group_size": self.value_group_size}


@dataclass(frozen=True)
class TokenRTNCodec(Codec):
    """Per-token asymmetric RTN over head_dim, float16 scale and offset per token.

    ``rotated=True`` is QuaRot's KV quantizer (Hadamard, then per-token RTN); ``False`` is
    plain per-token RTN.
    """

    key_bits: int = 2
    value_bits: int = 2
    rotated: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        check_bits(self.key_bits, name="key_bits")
        check_bits(self.value_bits, name="value_bits")
        object.__setattr__(self, "name", "quarot" if self.rotated else "rtn")

    def bits(self, kind: str) -> int:
        return self.key_bits if kind == "key" else self.value_bits

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        return _rtn_row_fields(tokens, 1)

    def encode(self, x: np.ndarray, kind: str, *, invalid: str = "raise") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return _rtn_rows(x, self.bits(kind), None, invalid)

    def decode(self, codes: np.ndarray, fields: dict[str, np.ndarray], kind: str,
               tokens: int, dim: int) -> np.ndarray:
        return _rtn_rows_decode(codes, fields, self.bits(kind), (codes.shape[0], tokens, dim), None)

    def options(self) -> dict[str, Any]:
        return {"key_bits": self.key_bits, "value_bits": self.value_bits}


@dataclass(frozen=True)
class FP8Codec(Codec):
    """float8 e4m3 codes (scheme ``fp8_e4m3``) with one float32 absmax scale per block.

    In the cache a block is one (batch, head, tile): a per-head scale, refreshed per tile.
    """

    name: str = field(default="fp8", init=False)
    rotated: bool = field(default=False, init=False)

    def bits(self, kind: str) -> int:
        return 8

    def field_specs(self, tokens: int, dim: int, kind: str) -> dict[str, tuple[Any, int]]:
        return {"scale": (np.float32, 1)}

    def encode(self, x: np.ndarray, kind: str, *, invalid: str = "raise") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from lowbit.codec import check_overflow, encode_absmax
        from lowbit.formats import FP8_E4M3

        n = x.shape[0]
        flat = as_float32(x).reshape(-1)
        codes, scale = encode_absmax(flat, FP8_E4M3, max(flat.size // max(n, 1), 1), mode=0, seed=0,
                                     first_index=0, rbits=16, overflow=check_overflow("saturate", FP8_E4M3),
                                     invalid=invalid)
        return codes.reshape(n, -1), {"scale": scale.reshape(n, 1)}

    def decode(self, codes: np.ndarray, fields: dict[str, np.ndarray], kind: str,
               tokens: int, dim: int) -> np.ndarray:
        from lowbit.codec import decode
        from lowbit.formats import FP8_E4M3

        n = codes.shape[0]
        scale = contiguous(fields["scale"]).reshape(-1).astype(np.float64)
        out = decode(contiguous(codes).reshape(-1), FP8_E4M3, n * tokens * dim,
                     max(tokens * dim, 1), scale, "float32")
        return out.reshape(n, tokens, dim)

    def options(self) -> dict[str, Any]:
        return {}
