"""Numba kernel: decode attention over a KVarN cache with the separable trick (DESIGN.md section 4).

For a K tile [D, G] (rows = channels) x_hat[d, t] = (code[d, t] A[d] + Z[d]) s[t], so

    q . k_hat_t = s[t] * (sum_d (q_d A[d]) code[d, t] + sum_d q_d Z[d])

and for a V tile [G, D] (rows = tokens) x_hat[t, d] = (code[t, d] A[t] + Z[t]) s[d], so

    sum_t p_t v_hat_t[d] = s[d] * (sum_t (p_t A[t]) code[t, d] + sum_t p_t Z[t]).

Each code costs one multiply-add per query head; no dequantized tile is formed.  Scores of
all tokens (exact ones included) are kept per (batch, kv head) and soft-maxed in one go.
Rows of codes are unpacked 8 at a time (one k-byte unit), so D and G are multiples of 8.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.kvarn import half_value, scale_value
from lowbit.cpu.packing import get_code, load_unit

_U64 = nb.uint64
_F32 = np.float32


@nb.njit(inline="always", cache=True)
def _unpack_row(packed: np.ndarray, start: int, count: int, bits: int, row: np.ndarray) -> None:
    """row[:count] = codes start .. start+count-1 (start and count multiples of 8)."""
    u0 = start // 8
    for u in range(count // 8):
        acc = load_unit(packed, u0 + u, bits, bits)
        for j in range(8):
            row[u * 8 + j] = _F32(get_code(acc, j, bits))


@nb.njit(parallel=True, cache=True)
def kv_attend(q: np.ndarray, q_rot: np.ndarray, k_exact: np.ndarray, v_exact: np.ndarray,
              k_codes: np.ndarray, k_row_scale: np.ndarray, k_row_offset: np.ndarray,
              k_col_scale: np.ndarray, v_codes: np.ndarray, v_row_scale: np.ndarray,
              v_row_offset: np.ndarray, v_col_scale: np.ndarray, n_tiles: int, key_bits: int,
              value_bits: int, scale_format: int, scale: float, out_exact: np.ndarray,
              out_rot: np.ndarray) -> None:
    """Softmax attention of one query per head over exact tokens and ``n_tiles`` KVarN tiles.

    q, q_rot [B, Hq, D] float32 (original / rotated frame); k_exact, v_exact [B, Hk, E, D]
    float32 (original frame); k_codes [B, Hk, cap, D*G*key_bits/8]; k_row_scale,
    k_row_offset [B, Hk, cap, D]; k_col_scale [B, Hk, cap, G]; v_codes [B, Hk, cap,
    G*D*value_bits/8]; v_row_scale, v_row_offset [B, Hk, cap, G]; v_col_scale [B, Hk, cap, D]
    (scale codes as in :func:`lowbit.cpu.kvarn.kvarn_encode`).  Query head h uses kv head
    h // (Hq / Hk).  Writes out_exact [B, Hq, D] (the exact tokens' share, original frame)
    and out_rot [B, Hq, D] (the tiles' share, rotated frame); the attention output is
    out_exact + H @ out_rot.
    """
    nb_, hq, dim = q.shape
    hk = k_exact.shape[1]
    n_exact = k_exact.shape[2]
    group = k_col_scale.shape[3]
    m = hq // hk
    n_tok = n_exact + n_tiles * group
    for bh in nb.prange(nb_ * hk):
        b = bh // hk
        h0 = (bh % hk) * m
        kv = bh % hk
        scores = np.empty((m, n_tok), np.float32)
        # exact tokens: plain dot products in the original frame
        for j in range(m):
            for e in range(n_exact):
                s = _F32(0.0)
                for d in range(dim):
                    s += q[b, h0 + j, d] * k_exact[b, kv, e, d]
                scores[j, e] = s * scale
        # quantized keys: score_t = s[t] * (sum_d (q_d A_d) code[d, t] + sum_d q_d Z_d)
        w = np.empty((m, dim), np.float32)
        qz = np.empty(m, np.float32)
        acc = np.empty((m, group), np.float32)
        row = np.empty(max(group, dim), np.float32)
        colv = np.empty(max(group, dim), np.float32)
        for tile in range(n_tiles):
            for j in range(m):
                qz[j] = _F32(0.0)
            for d in range(dim):
                a = _F32(scale_value(k_row_scale[b, kv, tile, d], scale_format))
                z = _F32(half_value(k_row_offset[b, kv, tile, d]))
                for j in range(m):
                    qd = q_rot[b, h0 + j, d]
                    w[j, d] = qd * a
                    qz[j] += qd * z
            for t in range(group):
                colv[t] = _F32(scale_value(k_col_scale[b, kv, tile, t], scale_format)) * scale
            acc[:, :] = _F32(0.0)
            packed = k_codes[b, kv, tile]
            for d in range(dim):
                _unpack_row(packed, d * group, group, key_bits, row)
                for j in range(m):
                    wd = w[j, d]
                    for t in range(group):
                        acc[j, t] += wd * row[t]
            base = n_exact + tile * group
            for j in range(m):
                for t in range(group):
                    scores[j, base + t] = colv[t] * (acc[j, t] + qz[j])
        # softmax (unnormalized weights, then one division)
        total = np.empty(m, np.float32)
        for j in range(m):
            mx = scores[j, 0]
            for i in range(1, n_tok):
                mx = max(mx, scores[j, i])
            s = _F32(0.0)
            for i in range(n_tok):
                p = np.exp(scores[j, i] - mx)
                scores[j, i] = p
                s += p
            total[j] = s
        # exact values, original frame
        for j in range(m):
            for d in range(dim):
                out_exact[b, h0 + j, d] = _F32(0.0)
            for e in range(n_exact):
                p = scores[j, e]
                for d in range(dim):
                    out_exact[b, h0 + j, d] += p * v_exact[b, kv, e, d]
            for d in range(dim):
                out_exact[b, h0 + j, d] /= total[j]
        # quantized values: out[d] = s[d] * (sum_t (p_t A_t) code[t, d] + sum_t p_t Z_t)
        accv = np.zeros((m, dim), np.float32)
        tmp = np.empty((m, dim), np.float32)
        pz = np.empty(m, np.float32)
        for tile in range(n_tiles):
            tmp[:, :] = _F32(0.0)
            pz[:] = _F32(0.0)
            packed = v_codes[b, kv, tile]
            base = n_exact + tile * group
            for t in range(group):
                a = _F32(scale_value(v_row_scale[b, kv, tile, t], scale_format))
                z = _F32(half_value(v_row_offset[b, kv, tile, t]))
                _unpack_row(packed, t * dim, dim, value_bits, row)
                for j in range(m):
                    p = scores[j, base + t]
                    pz[j] += p * z
                    pa = p * a
                    for d in range(dim):
                        tmp[j, d] += pa * row[d]
            for d in range(dim):
                colv[d] = _F32(scale_value(v_col_scale[b, kv, tile, d], scale_format))
            for j in range(m):
                for d in range(dim):
                    accv[j, d] += colv[d] * (tmp[j, d] + pz[j])
        for j in range(m):
            for d in range(dim):
                out_rot[b, h0 + j, d] = accv[j, d] / total[j]
