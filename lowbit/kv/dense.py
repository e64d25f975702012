"""Attention over explicit keys and values with the array module's own operations (numpy or CuPy).

The device fallback of :meth:`lowbit.kv.QuantizedKVCache.attend`: where the CUDA ``kv_attend``
raises ``NotImplementedError`` for a layout (quarot / rtn / fp8 tiles, L > 1 queries, bits
other than 2 / 4 / 8, ...), the cache dequantizes its tiles on the device and calls
:func:`dense_attend` on the device arrays, so nothing goes to the host.  On numpy it is
:func:`lowbit.kv.attend.reference_attend`, the float64 reference of the fused kernels (causal,
``start`` masks left padding, a query that sees nothing gets 0, NaN as in the kernels); the
queries are processed in chunks so that the score array stays below ``budget`` bytes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.arrays import xp_of


def dense_attend(q: Any, k: Any, v: Any, scale: float, start: Any, *,
                 budget: int = 1 << 28) -> Any:
    """softmax(q k^T * scale) v in float64 on q's array module.

    Parameters
    ----------
    q : array, shape (B, Hq, L, D)
        Query i sits at position T - L + i (causal) and sees positions ``start[b]`` .. its own.
    k, v : array, shape (B, Hk, T, D)
        Hq a multiple of Hk (GQA: query head h reads kv head h // (Hq / Hk)).
    scale : float
    start : array, shape (B,), integer
        First attended position per sequence.
    budget : int
        Bytes of float64 scores (and of the products over the causal window) computed at once
        (the queries are chunked to fit).

    Returns
    -------
    array, shape (B, Hq, L, D), float64
        A query that sees no position gets 0.  NaN as in torch's math
        ``scaled_dot_product_attention``: the whole row of a query is NaN when a score it
        attends to is NaN or +inf (inf - inf), or when all of them are -inf (0 / 0); a NaN in
        an attended value (or an Inf with weight 0) makes the channels it reaches NaN (weight
        * NaN is NaN even for a weight that underflowed to 0).  Unlike SDPA with a mask,
        masked positions (before ``start[b]``, after the query's own) never contribute,
        whatever they hold: their products are dropped, not multiplied by 0.
    """
    xp = xp_of(q)
    b, hq, nq, d = q.shape
    hk, t = k.shape[1], k.shape[2]
    out = xp.zeros((b, hk, hq // hk, nq, d), xp.float64)
    if t == 0 or nq == 0:
        return out.reshape(b, hq, nq, d)
    qg = q.reshape(b, hk, hq // hk, nq, d).astype(xp.float64)
    k64 = k.astype(xp.float64)
    first = start.astype(xp.int64)
    pos = xp.arange(t)
    # left padding is masked for every query: its values are dropped once here
    v64 = xp.where(pos[None, None, :, None] >= first[:, None, None, None], v.astype(xp.float64), 0.0)
    step = max(1, min(budget // (8 * b * hq * t), math.isqrt(budget // (8 * b * hq * d))))
    with np.errstate(invalid="ignore"):  # -inf - -inf, 0 * inf: NaN on purpose
        for lo in range(0, nq, step):
            hi = min(nq, lo + step)
            # positions < end are seen by some query of the chunk, positions < mid by all of
            # them (as far as causality goes); mid .. end - 1 is the causal window
            end = min(t, max(0, t - nq + hi))
            mid = min(end, max(0, t - nq + lo + 1))
            if end == 0:
                continue
            s = xp.einsum("bgmid,bgtd->bgmit", qg[:, :, :, lo:hi], k64[:, :, :end]) * scale
            qpos = t - nq + xp.arange(lo, hi)
            visible = ((pos[None, None, :end] <= qpos[None, :, None])
                       & (pos[None, None, :end] >= first[:, None, None]))[:, None, None]
            s = xp.where(visible, s, -xp.inf)
            mx = s.max(axis=-1, keepdims=True)
            # NaN if a visible score is NaN (numpy's max keeps it; said explicitly, since a CuPy
            # reduction accelerator may not)
            mx = xp.where(xp.isnan(s).any(axis=-1, keepdims=True), xp.nan, mx)
            p = xp.where(visible, xp.exp(s - mx), 0.0)
            total = p.sum(axis=-1, keepdims=True)  # 0: sees nothing (NaN where it sees only -inf)
            p = p / xp.where(total == 0, 1.0, total)
            o = xp.einsum("bgmit,bgtd->bgmid", p[..., :mid], v64[:, :, :mid])
            if end > mid:  # where() drops the products of masked positions (0 * NaN is NaN)
                pv = p[..., mid:end, None] * v64[:, :, None, None, mid:end]
                o = o + xp.where(visible[..., mid:end, None], pv, 0.0).sum(axis=-2)
            out[:, :, :, lo:hi] = o
    return out.reshape(b, hq, nq, d)
