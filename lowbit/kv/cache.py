"""Streaming quantized KV cache with exact sink / recent regions and fused decode attention.

Token regions (DESIGN.md section 4; docs/kv.md)::

    [ sink: first S tokens | tiles: G tokens each, quantized once | recent: exact ]

* **sink** — the first ``sink`` tokens (default 128), stored exactly (input dtype) forever.
* **tiles** — every later run of ``group_size`` tokens is quantized exactly once, at the moment it
  leaves the recent region, and never touched again.
* **recent** — the not yet quantized tokens: the partial last tile (0 .. G-1 tokens) plus,
  with ``recent=R``, at least the R newest tokens (a tile is quantized once it is complete
  and R newer tokens exist; the paper's R = 128).  Stored exactly.

Arrays are ``[batch, kv_heads, tokens, head_dim]``, numpy or CuPy: the storage (codes,
fields, exact regions) lives in the array module and on the device of the first append, and
every later input must come from the same module and device (a numpy array for a CuPy cache
or the reverse is a ``TypeError``: lowbit never copies between host and device silently;
torch models go through :mod:`lowbit.kv.hf`).  :meth:`QuantizedKVCache.attend` computes
attention for one or L queries per head (GQA: query head h reads kv head h // (Hq / Hk)),
optionally with the current chunk's exact keys/values (causal), by running the fused kernel
``kv_attend`` (:mod:`lowbit.kv.attend`, through the backend table) on the packed codes: no
tile is dequantized, memory per query is O(head_dim + group_size).  Where the CUDA kernel
does not cover a layout (it raises ``NotImplementedError``: L > 1 queries, other code widths
or shapes, ...), a CuPy cache dequantizes its tiles on the device and attends with CuPy operations
(:func:`lowbit.kv.dense.dense_attend`), never on the host.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.arrays import contiguous, is_cupy, is_torch, xp_of
from lowbit.kv import codecs
from lowbit.kv.attend import TileStore, reference_attend
from lowbit.kv.attend import attend as attend_store
from lowbit.kv.codecs import (
    Codec,
    FP8Codec,
    KiviCodec,
    KVarNCodec,
    TokenRTNCodec,
    check_kv_group_size,
)
from lowbit.kv.dense import dense_attend
from lowbit.kv.kvarn_grid import KVarNGridCodec
from lowbit.kv.schemes import FAMILY_GROUP, PRESETS, make_codec
from lowbit.kv.storage import (
    Tiles,
    check_array,
    check_count,
    check_finite,
    describe,
    device_ints,
    location,
    on_device,
)
from lowbit.kv.turboquant import TurboQuantCodec
from lowbit.validate import check_bits

_CACHE_DTYPES = (np.float16, np.float32, np.float64)
#: codecs whose kernels all have CUDA twins (exact types; a codec not listed takes numpy only)
_CUDA_CODECS = (KVarNCodec, KiviCodec, TokenRTNCodec, FP8Codec, KVarNGridCodec, TurboQuantCodec)


def reference_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray,
                        scale: float | None = None) -> np.ndarray:
    """softmax(q . k^T * scale) @ v for q [B, Hq, D], k and v [B, Hk, T, D] (float64, GQA).

    The straightforward NumPy attention used as the reference (tests, benchmark baseline).
    """
    b, hq, d = q.shape
    hk = k.shape[1]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    qg = q.reshape(b, hk, hq // hk, d).astype(np.float64)
    s = np.einsum("bgmd,bgtd->bgmt", qg, k.astype(np.float64)) * scale
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("bgmt,bgtd->bgmd", p, v.astype(np.float64)).reshape(b, hq, d)


class QuantizedKVCache:
    """A streaming KV cache for one attention layer, quantized tile by tile.

    Parameters
    ----------
    scheme : str
        A preset (``"kvarn-k4v2-g128"``, ... see :data:`lowbit.kv.PRESETS`) or a family:
        ``"kvarn"``, ``"kivi"``, ``"quarot"``, ``"rtn"`` (per token), ``"fp8"`` (e4m3,
        one scale per head and tile), ``"turboquant"`` (lowbit/kv/turboquant.py).
    head_dim : int
        D, a multiple of 8; rotated schemes (kvarn, quarot) also need a length the
        Hadamard transform supports (2^k, 12*2^k, 20*2^k).
    sink : int
        Exact tokens at the start (default 128).
    recent : int
        Minimum number of newest tokens kept exact besides the partial tile (default 0).
    key_bits, value_bits : int, optional
        Bits of K and V codes for a family (default 2; presets fix them; fp8 is 8).
    group_size : int, optional
        Tokens per tile G, a multiple of 8 (default 128; presets fix it).
    check_finite : bool
        True (default): :meth:`append` and :meth:`attend` raise ``ValueError`` for NaN or
        Inf in their inputs, naming the argument (on a GPU each call reads a flag back: one
        host synchronization), and a tile the scheme cannot store (a KVarN tile whose
        magnitudes its per-tile exponent cannot represent, a kivi / quarot / rtn scale or
        offset beyond float16, a TurboQuant norm beyond ``norm_dtype``) raises when it
        completes (another read-back, once per completed tile).  False: none of these checks
        runs and nothing is read back, for every scheme, so that a decode step (append one
        token, store a completed tile, attend) can be captured in a CUDA graph (docs/kv.md).
        NaN / Inf in the inputs are then not detected: like torch's
        ``scaled_dot_product_attention``, the cache passes them on instead of raising, and
        they stay within the (sequence, kv head) they were given for, and :meth:`attend`
        propagates them as dense attention does (NaN in the outputs of the queries that
        attend them; the rules in lowbit/cpu/kv_attend.py and docs/kv.md, the same on every
        backend).  A tile that cannot be stored is stored with NaN fields (the
        encoders' ``invalid="nan"``): the values sharing a scale with a bad one (the KVarN
        or fp8 tile, the kivi channel / channel group, the rtn / quarot / TurboQuant token)
        reproduce as NaN, never as stale memory or finite garbage.
    **options
        Codec options: kvarn ``iterations`` (8) and ``scale_dtype`` ("float16" or
        "float8_e4m3"); kivi ``value_group_size`` (32); turboquant ``variant`` ("mse" or
        "prod"), ``seed`` (0) and ``norm_dtype`` ("float16" or "float32").

    The storage lives where the first appended ``k`` lives: numpy arrays (the CPU kernels) or
    CuPy arrays on k's device (the CUDA kernels); every method then takes and returns arrays
    of that module (see the module docstring).

    Raises
    ------
    ValueError
        Unknown scheme, bad bits / group_size / sink / recent / options, unsupported head_dim.
    TypeError
        ``check_finite`` is not a bool.
    """

    def __init__(self, scheme: str = "kvarn-k4v2-g128", head_dim: int = 128, *, sink: int = 128,
                 recent: int = 0, key_bits: int | None = None, value_bits: int | None = None,
                 group_size: int | None = None, check_finite: bool = True, **options: Any) -> None:
        if not isinstance(check_finite, (bool, np.bool_)):
            raise TypeError(f"check_finite must be a bool, got {check_finite!r}")
        #: validate inputs for NaN / Inf (and KVarN tiles for representable magnitudes)
        self.check_finite = bool(check_finite)
        if not isinstance(scheme, str):
            raise ValueError(f"scheme must be a preset or scheme name, got {scheme!r}")
        if scheme in PRESETS:
            p = PRESETS[scheme]
            for name, given, fixed in (("key_bits", key_bits, p.key_bits),
                                       ("value_bits", value_bits, p.value_bits), ("group_size", group_size, p.group_size)):
                if given is not None and given != fixed:
                    raise ValueError(f"preset {scheme!r} fixes {name}={fixed}, got {given!r}")
            family, key_bits, value_bits, group_size = p.family, p.key_bits, p.value_bits, p.group_size
            for name, fixed in p.options:
                if name in options and options[name] != fixed:
                    raise ValueError(f"preset {scheme!r} fixes {name}={fixed!r}, got {options[name]!r}")
            options = {**options, **dict(p.options)}
        elif scheme in FAMILY_GROUP:
            family = scheme
            default = 8 if family == "fp8" else 2
            key_bits = default if key_bits is None else key_bits
            value_bits = default if value_bits is None else value_bits
            if family == "fp8" and (key_bits, value_bits) != (8, 8):
                raise ValueError(f"scheme 'fp8' stores 8-bit codes, got key_bits={key_bits!r}, value_bits={value_bits!r}")
        else:
            raise ValueError(f"scheme must be one of {sorted(PRESETS) + sorted(FAMILY_GROUP)}, got {scheme!r}")
        check_bits(key_bits, name="key_bits")
        check_bits(value_bits, name="value_bits")
        self.scheme = scheme
        self.group_size = check_kv_group_size(128 if group_size is None else group_size)
        self.sink = check_count(sink, "sink")
        self.recent = check_count(recent, "recent")
        if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) \
                or head_dim < 8 or head_dim % 8:
            raise ValueError(f"head_dim must be a positive multiple of 8, got {head_dim!r}")
        self.head_dim = int(head_dim)
        self.codec: Codec = make_codec(family, int(key_bits), int(value_bits), **options)
        if self.codec.rotated:
            try:
                codecs.rotate(np.zeros((1, self.head_dim), np.float32))
            except ValueError as exc:
                raise ValueError(f"head_dim={head_dim} is not supported by the Hadamard transform "
                                 f"that scheme {scheme!r} needs: {exc}") from None
        if family == "kivi":
            self.codec._value_group(self.head_dim)  # type: ignore[attr-defined]
        self._reset_state()

    def _reset_state(self) -> None:
        self.batch: int | None = None
        self.kv_heads: int | None = None
        self.dtype: np.dtype | None = None
        d = self.head_dim
        self._sink_k = np.empty((0, 0, 0, d), np.float32)
        self._sink_v = self._sink_k
        self._recent_k = self._sink_k
        self._recent_v = self._sink_k
        self._k = Tiles()
        self._v = Tiles()

    def reset(self) -> None:
        """Drop every token (configuration kept)."""
        self._reset_state()

    # -- sizes ----------------------------------------------------------------------------
    @property
    def n_tiles(self) -> int:
        """Quantized tiles per (batch, head)."""
        return self._k.count

    def __len__(self) -> int:
        """Tokens held per (batch, head)."""
        return self._sink_k.shape[2] + self.n_tiles * self.group_size + self._recent_k.shape[2]

    def regions(self) -> dict[str, tuple[int, int]]:
        """Token ranges [start, stop) of the sink, the quantized tiles and the recent region."""
        s = self._sink_k.shape[2]
        t = s + self.n_tiles * self.group_size
        return {"sink": (0, s), "tiles": (s, t), "recent": (t, len(self))}

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: exact ``sink`` and ``recent`` tokens, tile ``codes`` and ``scales``
        (all per-tile fields), and their ``total`` (K and V together; spare capacity excluded)."""
        kc, kf = self._k.nbytes()
        vc, vf = self._v.nbytes()
        out = {
            "sink": self._sink_k.nbytes + self._sink_v.nbytes,
            "recent": self._recent_k.nbytes + self._recent_v.nbytes,
            "codes": kc + vc,
            "scales": kf + vf,
        }
        out["total"] = sum(out.values())
        return out

    # -- append ---------------------------------------------------------------------------
    def _check_module(self, **named: Any) -> Any:
        """The array module of the named arrays (None skipped), which must match each other and,
        after the first append, the storage's module and device."""
        places = {n: location(a) for n, a in named.items() if a is not None}
        want = location(self._sink_k) if self.batch is not None else next(iter(places.values()))
        held = "the cache holds" if self.batch is not None else "the first array is"
        for name, got in places.items():
            if got[0] != want[0]:
                raise TypeError(f"{name} is a {describe(got)} array but {held} {describe(want)} "
                                "arrays: lowbit never copies between host and device silently; "
                                "convert explicitly (cupy.asarray / cupy.asnumpy)")
            if got != want:
                raise ValueError(f"{name} lives on {describe(got)} but {held} {describe(want)} arrays; "
                                 "lowbit never copies between devices silently")
        return np if want[0] == "numpy" else xp_of(next(a for a in named.values() if a is not None))

    def _check_kv(self, k: Any, v: Any, *, finite: bool = True) -> tuple[Any, Any]:
        for name, a in (("k", k), ("v", v)):
            check_array(a, name)
            if a.dtype not in _CACHE_DTYPES:
                raise TypeError(f"{name} must be float16, float32 or float64, got {a.dtype}")
            if a.ndim != 4:
                raise ValueError(f"{name} must have shape [batch, kv_heads, tokens, head_dim], got {a.shape}")
            if a.shape[3] != self.head_dim:
                raise ValueError(f"{name} has head_dim {a.shape[3]}, the cache was built for {self.head_dim}")
        xp = self._check_module(k=k, v=v)
        if xp is not np and type(self.codec) not in _CUDA_CODECS:
            raise NotImplementedError(f"scheme {self.scheme!r} ({type(self.codec).__name__}) has no CUDA "
                                      "kernels yet (a known gap, see docs/backends.md): use numpy arrays")
        if k.shape != v.shape:
            raise ValueError(f"k and v must have the same shape, got {k.shape} and {v.shape}")
        if self.batch is not None and k.shape[:2] != (self.batch, self.kv_heads):
            raise ValueError(f"k and v have batch, kv_heads = {k.shape[:2]}, the cache holds "
                             f"{(self.batch, self.kv_heads)}")
        if k.shape[0] == 0 or k.shape[1] == 0:
            raise ValueError(f"k and v need batch >= 1 and kv_heads >= 1, got shape {k.shape}")
        if finite and self.check_finite:
            check_finite(xp, {"k": k, "v": v}, "; nothing was appended")
        dtype = k.dtype if self.dtype is None else self.dtype
        return k.astype(dtype, copy=False), v.astype(dtype, copy=False)

    def _encode(self, block: Any, kind: str) -> tuple[Any, dict[str, Any]]:
        """Quantize one tile per (batch, head): block [B, H, G, D] -> codes [B, H, bytes], fields."""
        b, h, g, d = block.shape
        x = contiguous(block).reshape(b * h, g, d)
        # unchecked: a tile that cannot be stored gets NaN fields on the device (no read-back)
        codes, fields = self.codec.encode_tokens(x, kind, invalid="raise" if self.check_finite else "nan")
        return (codes.reshape(b, h, -1), {k: f.reshape((b, h) + f.shape[1:]) for k, f in fields.items()})

    def append(self, k: Any, v: Any) -> None:
        """Append tokens ``k, v [batch, kv_heads, tokens, head_dim]`` (prefill chunk or one token).

        Tiles that complete are quantized now, once.  The first append fixes batch,
        kv_heads, the stored dtype (later inputs are cast to it) and the array module and
        device of the storage (numpy, or CuPy on k's device).

        Raises
        ------
        TypeError, ValueError
            Not numpy / CuPy float arrays, arrays of another module (TypeError) or device
            (ValueError) than the storage, wrong shape or head_dim, k/v shapes differ, batch
            or kv_heads differ from earlier appends, NaN or Inf (unless ``check_finite=False``).
            The cache is then unchanged.
        """
        self._append(k, v)

    @on_device
    def _append(self, k: Any, v: Any, *, finite: bool = True) -> None:
        """:meth:`append`; ``finite=False`` when the caller has already checked k and v for
        NaN / Inf (lowbit.kv.hf appends the chunk that :meth:`attend` just checked)."""
        k, v = self._check_kv(k, v, finite=finite)
        xp = xp_of(k)
        if self.batch is None:  # the first append (even of 0 tokens) fixes batch, heads, dtype, device
            b, h = k.shape[:2]
            empty = xp.empty((b, h, 0, self.head_dim), k.dtype)
            self._sink_k = self._sink_v = self._recent_k = self._recent_v = empty
        if k.shape[2] == 0:
            if self.batch is None:
                self.batch, self.kv_heads, self.dtype = k.shape[0], k.shape[1], k.dtype
            return
        s_have = self._sink_k.shape[2]
        take = min(self.sink - s_have, k.shape[2])
        if take:
            sink_k = xp.concatenate([self._sink_k, k[:, :, :take]], axis=2)
            sink_v = xp.concatenate([self._sink_v, v[:, :, :take]], axis=2)
        else:  # the sink is full: no copy of it per decoded token
            sink_k, sink_v = self._sink_k, self._sink_v
        rec_k = xp.concatenate([self._recent_k, k[:, :, take:]], axis=2)
        rec_v = xp.concatenate([self._recent_v, v[:, :, take:]], axis=2)
        g = self.group_size
        new_tiles = []
        start = 0
        while rec_k.shape[2] - start >= g + self.recent:
            new_tiles.append((self._encode(rec_k[:, :, start:start + g], "key"),
                              self._encode(rec_v[:, :, start:start + g], "value")))
            start += g
        # commit (everything that could fail is done)
        if self.batch is None:
            self.batch, self.kv_heads, self.dtype = k.shape[0], k.shape[1], k.dtype
        self._sink_k, self._sink_v = sink_k, sink_v
        self._recent_k = contiguous(rec_k[:, :, start:])
        self._recent_v = contiguous(rec_v[:, :, start:])
        for (kc, kf), (vc, vf) in new_tiles:
            self._k.append(kc, kf)
            self._v.append(vc, vf)

    # -- inspection -----------------------------------------------------------------------
    @on_device
    def _decode_tiles(self, kind: str, first: int) -> Any:
        """Tiles ``first ..`` of one kind as reproduced, ``[B, Hk, tiles * G, D]`` float32."""
        if self.batch is None or self.kv_heads is None:
            raise ValueError("the cache is empty")
        tiles = self._k if kind == "key" else self._v
        b, h, n = self.batch, self.kv_heads, tiles.count - first
        if n <= 0:
            return xp_of(self._sink_k).empty((b, h, 0, self.head_dim), np.float32)
        codes, fields = tiles.used()
        flat = {k: contiguous(f[:, :, first:]).reshape((b * h * n,) + f.shape[3:])
                for k, f in fields.items()}
        x = self.codec.decode_tokens(contiguous(codes[:, :, first:]).reshape(b * h * n, -1), flat,
                                     kind, self.group_size, self.head_dim)
        return x.reshape(b, h, n * self.group_size, self.head_dim)

    def dequantized_tiles(self, first: int = 0) -> tuple[Any, Any]:
        """Keys and values of tiles ``first ..`` as reproduced, each ``[B, Hk, tiles * G, D]``
        float32 (the storage's array module and device)."""
        return self._decode_tiles("key", first), self._decode_tiles("value", first)

    def exact_tokens(self) -> tuple[Any, Any, Any, Any]:
        """The exact regions as stored: (sink keys, sink values, recent keys, recent values)."""
        return self._sink_k, self._sink_v, self._recent_k, self._recent_v

    @on_device
    def _reproduced(self, kind: str) -> Any:
        sink, recent = (self._sink_k, self._recent_k) if kind == "key" else (self._sink_v, self._recent_v)
        tiles = self._decode_tiles(kind, 0)
        return xp_of(sink).concatenate([sink.astype(np.float32), tiles, recent.astype(np.float32)], axis=2)

    def dequantized_keys(self) -> Any:
        """All keys as the cache reproduces them, ``[B, Hk, tokens, D]`` float32 (original frame;
        the storage's array module and device)."""
        return self._reproduced("key")

    def dequantized_values(self) -> Any:
        """All values as the cache reproduces them, ``[B, Hk, tokens, D]`` float32 (original frame;
        the storage's array module and device)."""
        return self._reproduced("value")

    @on_device
    def select_batch(self, index: Any) -> None:
        """Keep / reorder / repeat batch rows: every stored array is indexed by ``index``.

        ``index``: integers (a sequence or numpy array; for a CuPy cache copied to its device,
        a few bytes) or an integer array of the storage's own module (a CuPy index is checked
        on the device, one host sync).
        """
        if self.batch is None:
            return
        xp = xp_of(self._sink_k)
        if is_cupy(index) or is_torch(index):
            check_array(index, "index")
            self._check_module(index=index)
            idx = index.astype(np.int64).reshape(-1)
            bad = idx.size == 0 or bool(((idx < -self.batch) | (idx >= self.batch)).any())
        else:
            host = np.asarray(index, dtype=np.int64).reshape(-1)
            bad = host.size == 0 or host.min() < -self.batch or host.max() >= self.batch
            idx = host if xp is np else device_ints(xp, host)
        if bad:
            shown = idx.get().tolist() if is_cupy(idx) else idx.tolist()
            raise ValueError(f"batch index out of range for batch {self.batch}: {shown}")
        self._sink_k, self._sink_v = self._sink_k[idx], self._sink_v[idx]
        self._recent_k, self._recent_v = self._recent_k[idx], self._recent_v[idx]
        self._k.select(idx)
        self._v.select(idx)
        self.batch = int(idx.size)

    def drop_recent(self, tokens: int) -> None:
        """Remove the ``tokens`` newest tokens; only exact (not yet quantized) tokens can go."""
        tokens = check_count(tokens, "tokens")
        have = self._recent_k.shape[2]
        if tokens > have:
            raise ValueError(f"can drop at most the {have} exact recent tokens, got {tokens}: "
                             "quantized tiles are never re-opened")
        if tokens:
            self._recent_k = self._recent_k[:, :, : have - tokens]
            self._recent_v = self._recent_v[:, :, : have - tokens]

    # -- attention ------------------------------------------------------------------------
    @on_device
    def tile_store(self) -> TileStore:
        """A :class:`lowbit.kv.attend.TileStore` view of the storage (no copies of the history;
        arrays of the storage's module and device, ``lengths`` included)."""
        if self.batch is None or self.kv_heads is None:
            raise ValueError("the cache is empty; append keys and values before attend")
        b, h, g, d = self.batch, self.kv_heads, self.group_size, self.head_dim
        xp = xp_of(self._sink_k)
        parts = []
        for kind, tiles in (("key", self._k), ("value", self._v)):
            if tiles.codes is None:
                codes = xp.zeros((b, h, 0, self.codec.code_bytes(g, d, kind)), np.uint8)
                fields = {name: xp.zeros((b, h, 0, n), dt)
                          for name, (dt, n) in self.codec.field_specs(g, d, kind).items()}
            else:
                codes, fields = tiles.codes, tiles.fields
            parts.append((codes, fields))
        lengths = xp.zeros((b, 4), np.int32)  # (start, n_sink, n_tiles, n_recent); filled by
        lengths[:, 1] = self._sink_k.shape[2]  # scalar fills: no host-to-device copy
        lengths[:, 2] = self.n_tiles
        lengths[:, 3] = self._recent_k.shape[2]
        return TileStore(self.codec, g, self._sink_k, self._sink_v, self._recent_k, self._recent_v,
                         parts[0][0], parts[1][0], parts[0][1], parts[1][1], lengths)

    def _check_q(self, q: Any, *, finite: bool = True) -> Any:
        if self.batch is None:
            raise ValueError("the cache is empty; append keys and values before attend")
        check_array(q, "q")
        if q.dtype not in _CACHE_DTYPES:
            raise TypeError(f"q must be float16, float32 or float64, got {q.dtype}")
        xp = self._check_module(q=q)
        if q.ndim not in (3, 4) or q.shape[0] != self.batch or q.shape[-1] != self.head_dim \
                or (q.ndim == 4 and q.shape[2] == 0):
            raise ValueError(f"q must have shape [batch={self.batch}, query_heads, head_dim={self.head_dim}] "
                             f"or [batch, query_heads, queries >= 1, head_dim], got {q.shape}")
        assert self.kv_heads is not None
        if q.shape[1] == 0 or q.shape[1] % self.kv_heads:
            raise ValueError(f"query heads ({q.shape[1]}) must be a positive multiple of kv_heads ({self.kv_heads})")
        if finite and self.check_finite:
            check_finite(xp, {"q": q})
        return q

    def _check_start(self, start: Any) -> Any:
        assert self.batch is not None
        xp = xp_of(self._sink_k)
        if start is None:
            return xp.zeros(self.batch, np.int32)
        if isinstance(start, np.ndarray) or is_cupy(start) or is_torch(start):
            check_array(start, "start")
            self._check_module(start=start)
            first = start.astype(np.int32)
        else:  # Python integers (written on the device for a CuPy cache: no host copy)
            host = np.asarray(start, np.int32)
            first = host if xp is np else device_ints(xp, host)
        if first.shape != (self.batch,):
            raise ValueError(f"start must have shape ({self.batch},), got {first.shape}")
        return first

    @on_device
    def attend(self, q: Any, scale: float | None = None, *, new_k: Any = None, new_v: Any = None,
               start: Any = None, fused: bool = True) -> Any:
        """Attention ``softmax(q . K^T * scale) V`` over the cached tokens (and a new chunk).

        Every array argument comes from the storage's module and device (numpy, or CuPy).

        Parameters
        ----------
        q : array, shape (batch, query_heads, head_dim) or (batch, query_heads, L, head_dim)
            One query per head (decode) or L queries per head at the last L positions
            (causal); query_heads a multiple of kv_heads (GQA).
        scale : float, optional
            Default 1 / sqrt(head_dim).
        new_k, new_v : array, shape (batch, kv_heads, N, head_dim), optional
            Exact keys/values of the current chunk, not appended yet: they follow the cached
            tokens and the L queries are its last L tokens (N >= L).
        start : array or sequence of int, shape (batch,), optional
            First attended position per sequence (masks left padding); default 0.
        fused : bool
            True (default): the fused kernel on the packed codes (:func:`lowbit.kv.attend.attend`;
            on a CuPy cache, where the CUDA kernel raises ``NotImplementedError`` for the
            layout, the dequantized path below, on the device); False: dequantize the cache,
            then float64 attention (the reference; on the storage's device).

        Returns
        -------
        array of the storage's module, float32, the shape of q

        Raises
        ------
        TypeError, ValueError
            Arrays of another module or device than the storage, bad shapes, an empty cache;
            NaN or Inf in ``q``, ``new_k`` or ``new_v`` (unless the cache was built with
            ``check_finite=False``: they are then passed on, see the class docstring).
        """
        q = self._check_q(q, finite=False)
        q4 = q[:, :, None] if q.ndim == 3 else q
        if (new_k is None) != (new_v is None):
            raise ValueError("pass both new_k and new_v, or neither")
        if new_k is not None:
            assert new_v is not None
            new_k, new_v = self._check_kv(new_k, new_v, finite=False)
            if new_k.shape[2] < q4.shape[2]:
                raise ValueError(f"new_k has {new_k.shape[2]} tokens, fewer than the {q4.shape[2]} queries")
        xp = xp_of(q)
        if self.check_finite:
            check_finite(xp, {"q": q, "new_k": new_k, "new_v": new_v})  # one host sync on a GPU
        if scale is None:
            scale = 1.0 / math.sqrt(self.head_dim)
        first = self._check_start(start)
        out = None
        if fused and getattr(self.codec, "fused_attention", True):  # TurboQuant: dequantized
            store = self.tile_store()
            store.lengths[:, 0] = first
            try:
                out = attend_store(store, q4, new_k, new_v, scale)
            except NotImplementedError:
                if xp is np:
                    raise
                # the CUDA kernel does not cover this layout (L > 1 queries, other code
                # widths or shapes, ...): dequantize on the device instead (never on the host)
        if out is None:
            keys, values = self.dequantized_keys(), self.dequantized_values()
            if new_k is not None:
                keys = xp.concatenate([keys, new_k.astype(np.float32)], axis=2)
                values = xp.concatenate([values, new_v.astype(np.float32)], axis=2)  # type: ignore[union-attr]
            if xp is np:
                out = reference_attend(q4, keys, values, scale, first).astype(np.float32)
            else:
                out = dense_attend(q4, keys, values, scale, first).astype(np.float32)
        return out.reshape(q.shape)

    def __repr__(self) -> str:
        return (f"QuantizedKVCache({self.scheme!r}, head_dim={self.head_dim}, sink={self.sink}, "
                f"recent={self.recent}, group_size={self.group_size}, tokens={len(self)}, tiles={self.n_tiles})")
