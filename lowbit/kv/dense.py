"""Attention over explicit keys and values with the array module's own operations (numpy or CuPy).

The device fallback of :meth:`lowbit.kv.QuantizedKVCache.attend`: where the CUDA ``kv_attend``
raises ``NotImplementedError`` for a layout (quarot / rtn / fp8 tiles, L > 1 queries, bits
other than 2 / 4 / 8, ...), the cache dequantizes its tiles on the device and calls
:func:`dense_attend` on the device arrays, so nothing goes to the host.  Same semantics as
:func:`lowbit.kv.attend.reference_attend` (float64, causal, ``start`` masks left padding, a
query that sees nothing gets 0); the queries are processed in chunks so that the score
array stays below ``budget`` bytes.
"""

from __future__ import annotations

from typing import Any

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
        Bytes of float64 scores computed at once (the queries are chunked to fit).

    Returns
    -------
    array, shape (B, Hq, L, D), float64
    """
    xp = xp_of(q)
    b, hq, nq, d = q.shape
    hk, t = k.shape[1], k.shape[2]
    out = xp.zeros((b, hk, hq // hk, nq, d), xp.float64)
    if t == 0 or nq == 0:
        return out.reshape(b, hq, nq, d)
    qg = q.reshape(b, hk, hq // hk, nq, d).astype(xp.float64)
    k64, v64 = k.astype(xp.float64), v.astype(xp.float64)
    first = start.astype(xp.int64)
    pos = xp.arange(t)
    step = max(1, budget // (8 * b * hq * t))
    for lo in range(0, nq, step):
        hi = min(nq, lo + step)
        s = xp.einsum("bgmid,bgtd->bgmit", qg[:, :, :, lo:hi], k64) * scale
        qpos = t - nq + xp.arange(lo, hi)
        visible = (pos[None, None, :] <= qpos[None, :, None]) & (pos[None, None, :] >= first[:, None, None])
        s = xp.where(visible[:, None, None], s, -xp.inf)
        mx = s.max(axis=-1, keepdims=True)
        finite = xp.isfinite(mx)
        p = xp.where(finite, xp.exp(s - xp.where(finite, mx, 0.0)), 0.0)
        total = p.sum(axis=-1, keepdims=True)
        p = p / xp.where(total > 0, total, 1.0)
        out[:, :, :, lo:hi] = xp.einsum("bgmit,bgtd->bgmid", p, v64)
    return out.reshape(b, hq, nq, d)
