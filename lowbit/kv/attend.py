"""Attention over a quantized KV cache without dequantizing it (the front of ``kv_attend``).

:class:`TileStore` is a view of what a cache holds for one layer: the exact sink and recent
tokens, and the quantized tiles' packed codes and per-tile fields.  :func:`attend` runs
``backend(q).kv_attend`` on it: L queries per head (L = 1: decode; L > 1: a chunk of
prefill or speculative tokens) against the sink, the tiles, the recent tokens and,
optionally, the chunk's own exact keys and values (causal).  Every codec of
:mod:`lowbit.kv.codecs` maps to the kernel's separable tile form (:func:`kernel_layout`);
rotated codecs get the query rotated once and the tiles' share of the output un-rotated
once.  Ragged batches: ``lengths`` gives each sequence its own sink / tile / recent counts
(:func:`stack` builds one from several single-sequence stores).

Memory per query is O(head_dim + group_size) (online softmax); no dequantized tile and no
copy of the history is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.arrays import backend, device_constant, xp_of
from lowbit.kv import layout as K
from lowbit.kv.codecs import Codec, FP8Codec, KiviCodec, KVarNCodec, TokenRTNCodec
from lowbit.kv.dense import dense_attend


@dataclass
class TileStore:
    """The storage of one layer's quantized cache, as the kernel reads it (no copies).

    Attributes
    ----------
    codec : Codec
        How the tiles were encoded.
    group_size : int
        Tokens per tile G.
    sink_k, sink_v, recent_k, recent_v : array, shape (B, Hk, n, D)
        Exact tokens (original frame); float16/32/64 (cast to float32 for the kernel).
    k_codes, v_codes : array, shape (B, Hk, cap, bytes), uint8
        Packed codes of tiles 0 .. cap-1 (only the first ``n_tiles`` of each sequence are read).
    k_fields, v_fields : dict of str to array, shape (B, Hk, cap, n)
        The codec's per-tile fields.
    lengths : array, shape (B, 4), int32
        Per sequence: (start, n_sink, n_tiles, n_recent); ``start`` masks the first
        positions (left padding).
    """

    codec: Codec
    group_size: int
    sink_k: Any
    sink_v: Any
    recent_k: Any
    recent_v: Any
    k_codes: Any
    v_codes: Any
    k_fields: dict[str, Any]
    v_fields: dict[str, Any]
    lengths: Any

    @property
    def head_dim(self) -> int:
        return int(self.sink_k.shape[3])


def _fmt(a: Any) -> int:
    name = str(a.dtype)
    if name == "float16":
        return K.FMT_FLOAT16
    if name == "uint8":
        return K.FMT_FLOAT8_E4M3
    if name == "float32":
        return K.FMT_FLOAT32
    raise TypeError(f"unsupported field dtype {name}")


def _kernel_field(a: Any) -> Any:
    """float16 fields travel as their bits (uint16 views, no copy); others as they are."""
    return a.view(np.uint16) if str(a.dtype) == "float16" else a


def _names(codec: Codec, kind: str) -> tuple[str | None, str | None, str | None]:
    """(A, Z, S) field names of the kernel form for ``codec``'s ``kind`` tiles."""
    if isinstance(codec, KVarNCodec):
        return "row_scale", "row_offset", "col_scale"
    if isinstance(codec, (KiviCodec, TokenRTNCodec)):
        return "scale", "offset", None
    if isinstance(codec, FP8Codec):
        return "scale", None, None
    raise TypeError(f"no kv_attend layout for codec {type(codec).__name__}")


def kernel_layout(codec: Codec, head_dim: int, group_size: int) -> tuple[int, ...]:
    """The ``layout`` tuple of ``kv_attend`` for ``codec`` (see lowbit/cpu/kv_attend.py).

    ===========  ================  ===========================  ======================
    codec        key codes         key fields (A, Z, S)         value fields (A, Z, S)
    ===========  ================  ===========================  ======================
    kvarn        [D, G] channels   row_scale, row_offset, col   same, [G, D] tokens
    kivi         [D, G] channels   scale, offset per channel    per (token, 32 ch.)
    quarot, rtn  [G, D] tokens     scale, offset per token      per token
    fp8          [G, D] tokens     one float32 scale per tile   one scale per tile
    ===========  ================  ===========================  ======================

    Code values (``layout[KEY_CODES]``, ``[VALUE_CODES]``): integers, fp8's e4m3 values
    (:func:`code_values`).
    """
    kvarn = isinstance(codec, KVarNCodec)
    if kvarn or isinstance(codec, KiviCodec):
        key_rows = K.ROWS_CHANNELS
    else:
        key_rows = K.ROWS_TOKENS
    vgroups = head_dim // codec.value_group_size if isinstance(codec, KiviCodec) else 1
    layout = [0] * K.LAYOUT_LENGTH
    layout[K.GROUP] = group_size
    layout[K.KEY_BITS] = codec.bits("key")
    layout[K.VALUE_BITS] = codec.bits("value")
    layout[K.KEY_ROWS] = key_rows
    layout[K.KEY_COL_GROUPS] = 1
    layout[K.VALUE_COL_GROUPS] = vgroups
    codes = K.CODES_E4M3 if isinstance(codec, FP8Codec) else K.CODES_INTEGER  # code_values' table
    layout[K.KEY_CODES] = layout[K.VALUE_CODES] = codes
    for kind, first in (("key", K.FMT_KEY_A), ("value", K.FMT_VALUE_A)):
        for i, name in enumerate(_names(codec, kind)):
            if name is None:
                fmt = K.FMT_ABSENT
            elif name == "row_offset" or not kvarn:
                fmt = K.FMT_FLOAT32 if isinstance(codec, FP8Codec) else K.FMT_FLOAT16
            elif name == "col_scale" and codec.tile_exponent:  # type: ignore[attr-defined]
                fmt = K.FMT_FLOAT32  # s_col * 2**e, see _field_arrays
            else:
                fmt = K.FMT_FLOAT16 if codec.scale_format == 0 else K.FMT_FLOAT8_E4M3  # type: ignore[attr-defined]
            layout[first + i] = fmt
    return tuple(layout)


def code_values(codec: Codec, kind: str) -> np.ndarray:
    """``lut [2^bits]`` float32: the value of each code before scaling (integers; fp8: e4m3)."""
    bits = codec.bits(kind)
    if isinstance(codec, FP8Codec):
        from lowbit.codec import decode_values
        from lowbit.formats import FP8_E4M3

        return np.asarray(decode_values(FP8_E4M3), np.float32)
    return np.arange(2**bits, dtype=np.float32)


def _luts(codec: Codec, q: Any) -> tuple[Any, Any]:
    """``(k_lut, v_lut)`` in q's array module and on q's device (uploaded once per codec and
    device: no host-to-device copy per call)."""
    return (device_constant(code_values, codec, "key", like=q),
            device_constant(code_values, codec, "value", like=q))


def _field_arrays(store: TileStore, kind: str, xp: Any) -> tuple[Any, Any, Any]:
    fields = store.k_fields if kind == "key" else store.v_fields
    names = _names(store.codec, kind)
    present = [fields[n] for n in names if n is not None]
    dummy = xp.zeros((1, 1, 1, 1), _kernel_field(present[0]).dtype)
    out = [dummy if n is None else _kernel_field(fields[n]) for n in names]
    if isinstance(store.codec, KVarNCodec) and store.codec.tile_exponent:
        out[2] = _scaled_col_scale(fields["col_scale"], fields["tile_exponent"], xp)
    return tuple(out)  # type: ignore[return-value]


def _scaled_col_scale(col_scale: Any, exponent: Any, xp: Any) -> Any:
    """s_col * 2**e as float32 [B, H, n, C] (exact: a power-of-two scaling of the stored
    value), so that the kernel's S carries the per-tile exponent of KVarN tiles.  One pass
    over the column scales (C values per tile, against D * C * bits / 8 code bytes)."""
    if str(col_scale.dtype) == "float16":
        s = col_scale.astype(xp.float32)
    else:
        from lowbit.codec import widen_exact
        from lowbit.formats import FP8_E4M3

        s = widen_exact(col_scale, FP8_E4M3)
    with np.errstate(all="ignore"):  # slots past the filled tiles hold anything; never read
        return xp.ascontiguousarray(xp.ldexp(s, exponent.astype(xp.int32)).astype(xp.float32))


def _f32(a: Any, xp: Any) -> Any:
    return xp.ascontiguousarray(a, dtype=xp.float32)


def rotate(x: Any) -> Any:
    """Normalized Hadamard transform along the last axis (self-inverse), any backend."""
    from lowbit.transforms import hadamard

    return hadamard(x, axis=-1)


def attend(store: TileStore, q: Any, new_k: Any = None, new_v: Any = None,
           scale: float | None = None) -> Any:
    """softmax(q K^T * scale) V over the store (and the chunk's ``new_k, new_v``), causal.

    Parameters
    ----------
    store : TileStore
        The cache's storage (numpy arrays: CPU kernel; CuPy arrays: CUDA kernel).
    q : array, shape (B, Hq, L, D), float32
        L queries per head, at the last L positions (after ``new_k`` if given, else after
        the store's recent tokens); Hq a multiple of Hk.
    new_k, new_v : array, shape (B, Hk, N, D), optional
        Exact keys/values that follow the store's tokens (the current chunk).
    scale : float, optional
        Default 1 / sqrt(D).

    Returns
    -------
    array, shape (B, Hq, L, D), float32
        Query i sees positions start .. (total - L + i); a query that sees nothing gets 0.
    """
    xp = xp_of(q)
    b, hq, nq, d = q.shape
    hk = store.sink_k.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    q32 = _f32(q, xp)
    q_rot = rotate(q32) if store.codec.rotated else q32
    if new_k is None:
        new_k = new_v = xp.zeros((b, hk, 0, d), xp.float32)
    ka, kz, ks = _field_arrays(store, "key", xp)
    va, vz, vs = _field_arrays(store, "value", xp)
    k_lut, v_lut = _luts(store.codec, q)
    out_exact = xp.empty((b, hq, nq, d), xp.float32)
    out_rot = xp.empty((b, hq, nq, d), xp.float32)
    backend(q32).kv_attend(
        q32, xp.ascontiguousarray(q_rot), store.lengths, _f32(store.sink_k, xp),
        _f32(store.sink_v, xp), _f32(store.recent_k, xp), _f32(store.recent_v, xp),
        _f32(new_k, xp), _f32(new_v, xp), store.k_codes, ka, kz, ks, store.v_codes, va, vz, vs,
        k_lut, v_lut, kernel_layout(store.codec, d, store.group_size), float(scale), out_exact, out_rot)
    if store.codec.rotated:
        out_rot = rotate(out_rot)
    return out_exact + out_rot


def reference_attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None = None,
                     start: np.ndarray | None = None) -> np.ndarray:
    """The float64 reference of :func:`attend` over explicit keys/values ``[B, Hk, T, D]``.

    Query i of ``q [B, Hq, L, D]`` sits at position T - L + i and sees positions
    ``start[b]`` .. its own; a query that sees nothing gets 0.  NaN / Inf as the kernels:
    :func:`lowbit.kv.dense.dense_attend` (on numpy) has the rules.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[3])
    first = np.zeros(q.shape[0], np.int64) if start is None else np.asarray(start, np.int64)
    return dense_attend(q, k, v, scale, first)


def stack(stores: list[TileStore]) -> TileStore:
    """One ragged batch from single-sequence-compatible stores (copies; tests and serving demos).

    Exact regions and tiles are padded to the longest; ``lengths`` keeps each sequence's own
    counts (and ``start``).
    """
    xp = xp_of(stores[0].k_codes)
    first = stores[0]

    def cat(arrays: list[Any]) -> Any:
        n = max(int(a.shape[2]) for a in arrays)
        out = []
        for a in arrays:
            pad = xp.zeros(a.shape[:2] + (n - a.shape[2],) + a.shape[3:], a.dtype)
            out.append(xp.concatenate([a, pad], axis=2))
        return xp.concatenate(out, axis=0)

    fields = {kind: {name: cat([(s.k_fields if kind == "k" else s.v_fields)[name] for s in stores])
                     for name in (first.k_fields if kind == "k" else first.v_fields)} for kind in "kv"}
    return TileStore(first.codec, first.group_size, cat([s.sink_k for s in stores]),
                     cat([s.sink_v for s in stores]), cat([s.recent_k for s in stores]),
                     cat([s.recent_v for s in stores]), cat([s.k_codes for s in stores]),
                     cat([s.v_codes for s in stores]), fields["k"], fields["v"],
                     xp.concatenate([s.lengths for s in stores], axis=0))
