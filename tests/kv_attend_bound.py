"""Error bound of the tensor-core kv_attend (lowbit/cuda/kv_attend_mma.cuh) against float64
attention over the dequantized cache; used by tests/test_kv_attend.py and
tools/gpu_attend_check.py.

The kernel multiplies exact integer codes (A operand) by B operands rounded to TF32
(``cvt.rna.tf32.f32``: 10 fraction bits, relative error <= 2^-11) and accumulates in float32.
With W = q_rot * A_k (keys) and P = p * A_v (values), per query head:

* score error  |ds_t| <= scale S_t (r sum_d |W_d c_dt| + 2^-16 sum_d |q_d Z_d|) + exact slack
  (r = 2^-10: 2^-11 of the TF32 rounding, doubled for the float32 accumulation inside and across
  the mma's, <= 2^-18 of the sum of |terms| for chains of 2 D / 8 instructions of k = 8; with hi +
  lo B operands r = 2^-17; 2^-16 covers the float32 sums of the Z terms and everything the
  CUDA-core kernel already rounds);
* softmax: every score moves by at most Delta = max_t |ds_t|, so every weight p_t by a factor in
  [e^-2Delta, e^2Delta] and sum_t (p'_t - p_t) v_t = sum_t (p'_t - p_t) (v_t - o) is at most
  (e^2Delta - 1) sum_t p_t |v_t - o| per channel;
* value error  <= e^2Delta (r sum_t p_t |A_v c_td| S_d + 2^-16 sum_t p_t |v_t|), in the tiles'
  frame; rotated codecs (an orthonormal Hadamard R, entries +-1/sqrt(D)) map an error e to
  |R e|_inf <= sum |e| / sqrt(D).

The bound is elementwise [B, Hq, 1, D]; decode only (L = 1), key codes [D, G] (kvarn, kivi).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.kv import layout as L
from lowbit.kv.attend import TileStore, _field_arrays, kernel_layout
from lowbit.transforms import hadamard_matrix

#: per-product relative error of a TF32 operand (2^-11), doubled for float32 accumulation
TF32_REL = 2.0**-10
#: the same with B = tf32 hi + tf32 lo (LOWBIT_ATTEND_SPLIT): 2^-22 per product, and float32
#: accumulation over 2 D / 8 chained mma's (<= 32 * 2^-23 of the sum of |terms|, should the
#: tensor cores truncate) dominates
TF32X2_REL = 2.0**-17
#: float32 slack of the parts the kernel computes in float32 (exact tokens, Z sums, exp, combine)
F32_REL = 2.0**-16


def _e4m3(c: np.ndarray) -> np.ndarray:
    """OCP float8 e4m3 codes (uint8) as float64: (1 + m/8) 2^(e-7), subnormals m/8 2^-6, NaN
    for S.1111.111, no infinities."""
    c = c.astype(np.int64)
    e, m = (c >> 3) & 15, (c & 7).astype(np.float64)
    v = np.where(e == 0, m / 8 * 2.0**-6, (1 + m / 8) * 2.0 ** (e - 7))
    v = np.where((c & 0x7F) == 0x7F, np.nan, v)
    return np.where(c & 0x80, -v, v)


def _decode(a: np.ndarray, fmt: int, absent: float, tiles: tuple) -> np.ndarray:
    """Field values float64 [B, H, cap, n] from the kernel's stored form (``tiles`` = (B, H, cap))."""
    if fmt == L.FMT_ABSENT:
        return np.full(tiles + (1,), absent)
    if fmt == L.FMT_FLOAT16:
        return a.view(np.float16).astype(np.float64)
    if fmt == L.FMT_FLOAT8_E4M3:
        return _e4m3(a)
    return a.astype(np.float64)


def _codes(packed: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Codes [..., n] of packed rows [..., bytes]: code i at bits i*bits.. of the little-endian
    stream (bits 2, 4 or 8)."""
    b = np.unpackbits(packed, axis=-1, bitorder="little").reshape(*packed.shape[:-1], n, bits)
    return b.astype(np.float64) @ (2.0 ** np.arange(bits))


def tf32_bound(q: np.ndarray, store: TileStore, keys: np.ndarray, values: np.ndarray,
               scale: float | None = None, start: Any = None, split: bool = True,
               fields: tuple | None = None) -> np.ndarray:
    """Elementwise bound [B, Hq, 1, D] on |tensor-core kv_attend - reference_attend(q, keys, values)|.

    q [B, Hq, 1, D]; store the cache's numpy TileStore; keys, values [B, Hk, T, D] the dequantized
    tokens in the original frame (the store's, then any new exact tokens), as given to
    reference_attend; start [B] the first attended position (default 0); split: the kernel's
    B operands are tf32 hi + lo (lowbit.cuda.kv_attend.MMA_SPLIT); fields: the kernel's
    ((A, Z, S) of keys, (A, Z, S) of values) as numpy arrays, default from ``store`` (a host copy of
    a device store may pass the device's).
    """
    rel = TF32X2_REL if split else TF32_REL
    b, hq, nq, d = q.shape
    assert nq == 1, "decode only"
    hk, t_all = keys.shape[1], keys.shape[2]
    m, g = hq // hk, store.group_size
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    lay = kernel_layout(store.codec, d, g)
    assert lay[L.KEY_ROWS] == L.ROWS_CHANNELS
    tiles = store.k_codes.shape[:3]
    kf, vf = fields or (_field_arrays(store, "key", np), _field_arrays(store, "value", np))
    ka, kz, ks = (_decode(a, lay[i], x, tiles) for a, i, x in zip(
        kf, (L.FMT_KEY_A, L.FMT_KEY_Z, L.FMT_KEY_S), (1.0, 0.0, 1.0), strict=True))
    va, _, vs = (_decode(a, lay[i], x, tiles) for a, i, x in zip(
        vf, (L.FMT_VALUE_A, L.FMT_VALUE_Z, L.FMT_VALUE_S), (1.0, 0.0, 1.0),
        strict=True))
    cap = tiles[2]
    kc = _codes(store.k_codes, d * g, lay[L.KEY_BITS]).reshape(b, hk, cap, d, g)
    vc = _codes(store.v_codes, g * d, lay[L.VALUE_BITS]).reshape(b, hk, cap, g, d)
    vg = lay[L.VALUE_COL_GROUPS]
    qa = q[:, :, 0].astype(np.float64).reshape(b, hk, m, d)
    qr = qa @ (hadamard_matrix(d) / math.sqrt(d)) if store.codec.rotated else qa  # the tiles' frame
    k64, v64 = keys.astype(np.float64), values.astype(np.float64)
    first = np.zeros(b, np.int64) if start is None else np.asarray(start, np.int64)
    visible = np.arange(t_all)[None, :] >= first[:, None]                     # [B, T]
    s = np.einsum("bhmd,bhtd->bhmt", qa, k64) * scale
    s = np.where(visible[:, None, None], s, -np.inf)
    mx = s.max(-1, keepdims=True)
    p = np.where(np.isfinite(mx), np.exp(s - np.where(np.isfinite(mx), mx, 0)), 0.0)
    tot = p.sum(-1, keepdims=True)
    p = np.divide(p, tot, out=np.zeros_like(p), where=tot > 0)
    o = np.einsum("bhmt,bhtd->bhmd", p, v64)
    delta = F32_REL * scale * np.einsum("bhmd,bhtd->bhmt", np.abs(qa), np.abs(k64))
    val = np.zeros((b, hk, m, d))
    for i in range(b):
        n_sink, n_tiles = int(store.lengths[i, L.N_SINK]), int(store.lengths[i, L.N_TILES])
        if n_tiles == 0:
            continue
        sl = slice(None, n_tiles)
        ak = np.abs(ka[i, :, sl])[..., :, None]                               # [hk, nt, D|1, 1]
        sk = np.abs(ks[i, :, sl])[..., None, :]                               # [hk, nt, 1, G|1]
        acs = np.abs(kc[i, :, sl]) * ak * sk                                  # [hk, nt, D, G]
        zs = np.abs(kz[i, :, sl])[..., :, None] * sk
        err = scale * (rel * np.einsum("hmd,hndg->hmng", np.abs(qr[i]), acs)
                       + F32_REL * np.einsum("hmd,hndg->hmng", np.abs(qr[i]), np.broadcast_to(zs, acs.shape)))
        tok = slice(n_sink, n_sink + n_tiles * g)
        delta[i, :, :, tok] += err.reshape(hk, m, n_tiles * g)
        av = np.abs(va[i, :, sl])                                             # [hk, nt, G*vg | 1]
        av = av.reshape(hk, n_tiles, g, vg) if av.shape[-1] > 1 else av[..., None]
        av = np.repeat(av, d // av.shape[-1], axis=-1)                        # [hk, nt, G|1, D]
        acs_v = np.abs(vc[i, :, sl]) * av * np.abs(vs[i, :, sl])[..., None, :]  # [hk, nt, G, D]
        val[i] = np.einsum("hmt,htd->hmd", p[i, :, :, tok], acs_v.reshape(hk, n_tiles * g, d))
    if store.codec.rotated:
        val = np.broadcast_to(val.sum(-1, keepdims=True) / math.sqrt(d), val.shape)
    dmax = np.where(visible[:, None, None], delta, 0.0).max(-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):  # huge scores: e^(2 Delta) = inf, no bound
        grow = np.exp(2 * dmax)
        bound = (grow - 1) * np.einsum("bhmt,bhmtd->bhmd", p, np.abs(v64[:, :, None] - o[:, :, :, None])) \
            + grow * (rel * val + F32_REL * np.einsum("bhmt,bhtd->bhmd", p, np.abs(v64)))
    return np.where(np.isnan(bound), np.inf, bound).reshape(b, hq, 1, d)
