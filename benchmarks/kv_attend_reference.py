"""Verbatim copy of lowbit/cpu/kv_attend.py at 407a780 (before issue 19's CPU speedups), kept so that
benchmarks time the previous kernels beside the new ones in the same run and assert equal outputs.
Delete once the comparison is recorded in docs/performance.md.

Original docstring:

Numba kernel: attention over a quantized KV cache, reading packed codes and per-tile fields.

One kernel serves every KV codec through one separable tile form (DESIGN.md section 4).  A
tile of G tokens x D channels stores codes in one of two orientations, ``layout[KEY_ROWS]``
(values are always token rows):

* channel rows, codes [D, G]:  x_hat[t, d] = (lut[code[d, t]] A[d] + Z[d]) S[t]
* token rows,   codes [G, D]:  x_hat[t, d] = (lut[code[t, d]] A[t, g] + Z[t, g]) S[d],
  g = d // (D / col_groups); an A (Z) field of one element is one value for the whole tile.

so that (q the query, p the softmax weights)

    q . k_hat_t     = S[t] (sum_d (q_d A[d]) lut[code[d, t]] + sum_d q_d Z[d])          (channel rows)
    q . k_hat_t     = sum_g A[t, g] sum_{d in g} (q_d S[d]) lut[code[t, d]] + Z[t, g] sum_{d in g} q_d S[d]
    sum_t p_t v_hat = S[d] (sum_t (p_t A[t, g]) lut[code[t, d]] + sum_t p_t Z[t, g])

and each code costs one multiply-add per query; no dequantized tile is formed.  A field is
stored as float16 bits, float8 e4m3 codes, float32, or absent (A, S = 1; Z = 0): ``layout``
names the format of each.  ``lut`` maps a code to its value (0 .. 2^b - 1 for integer codes,
the e4m3 values for fp8).  Rows of codes are unpacked 8 at a time, so D and G are multiples of 8.

Token positions of sequence b: sink 0 .. n_sink - 1, then the tiles, then the recent exact
tokens, then ``new`` exact tokens (the current chunk, not yet in the cache).  Query i of the
L queries sits at position total - L + i (the chunk's last L positions) and sees the tokens
at positions start .. its own (causal; ``start`` > 0 masks left padding).  The softmax is
online (running max and sum per query, rescaled per block), so a query needs O(D + G) memory,
not O(T).  Two accumulators share the softmax: exact tokens in the original frame
(``out_exact``) and tiles in the tiles' frame (``out_rot``; rotated codecs: the caller
un-rotates it once).  A query that sees no token gets 0.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.kvarn import half_value, scale_value
from lowbit.cpu.packing import get_code, load_unit
from lowbit.kv.layout import (
    FMT_ABSENT,
    FMT_FLOAT16,
    FMT_FLOAT32,
    FMT_KEY_A,
    FMT_KEY_S,
    FMT_KEY_Z,
    FMT_VALUE_A,
    FMT_VALUE_S,
    FMT_VALUE_Z,
    GROUP,
    KEY_BITS,
    KEY_COL_GROUPS,
    KEY_ROWS,
    N_RECENT,
    N_SINK,
    N_TILES,
    ROWS_CHANNELS,
    START,
    VALUE_BITS,
    VALUE_COL_GROUPS,
)

_F32 = np.float32
_NEG_INF = _F32(-np.inf)

#: exact tokens per online-softmax block
_CHUNK = 32


@nb.njit(inline="always", cache=True)
def _field(a: np.ndarray, i: int, fmt: int, default: float) -> np.float32:
    """Value of stored field element ``a[i]`` (``a[0]`` when ``a`` holds one value per tile)."""
    if fmt == FMT_ABSENT:
        return _F32(default)
    j = 0 if a.shape[0] == 1 else i
    if fmt == FMT_FLOAT32:
        return _F32(a[j])
    if fmt == FMT_FLOAT16:
        return _F32(half_value(a[j]))
    return _F32(scale_value(a[j], 1))


@nb.njit(inline="always", cache=True)
def _unpack_row(packed: np.ndarray, start: int, count: int, bits: int, lut: np.ndarray,
                row: np.ndarray) -> None:
    """row[:count] = lut[codes start .. start+count-1] (start and count multiples of 8)."""
    u0 = start // 8
    for u in range(count // 8):
        acc = load_unit(packed, u0 + u, bits, bits)
        for j in range(8):
            row[u * 8 + j] = lut[get_code(acc, j, bits)]


@nb.njit(cache=True)
def _softmax_block(sc: np.ndarray, n: int, mx: np.ndarray, ls: np.ndarray, acc_e: np.ndarray,
                   acc_r: np.ndarray) -> None:
    """Online softmax over one block of ``n`` scores per query: scores become weights.

    Raises the running max when needed (rescaling the running sum and both accumulators)
    and adds the block's weights to the running sum; masked scores (-inf) get weight 0.
    """
    for j in range(sc.shape[0]):
        bm = _NEG_INF
        for t in range(n):
            bm = max(bm, sc[j, t])
        if bm == _NEG_INF:
            for t in range(n):
                sc[j, t] = _F32(0.0)
            continue
        if bm > mx[j]:
            alpha = _F32(np.exp(mx[j] - bm))
            ls[j] *= alpha
            for d in range(acc_e.shape[1]):
                acc_e[j, d] *= alpha
                acc_r[j, d] *= alpha
            mx[j] = bm
        s = _F32(0.0)
        for t in range(n):
            p = _F32(np.exp(sc[j, t] - mx[j]))
            sc[j, t] = p
            s += p
        ls[j] += s


@nb.njit(cache=True)
def _exact_block(qa: np.ndarray, k: np.ndarray, v: np.ndarray, count: int, pos0: int, start: int,
                 qpos: np.ndarray, scale: float, mx: np.ndarray, ls: np.ndarray, acc_e: np.ndarray,
                 acc_r: np.ndarray, sc: np.ndarray) -> None:
    """Exact tokens ``k, v [count.., D]`` at positions pos0 .. pos0+count-1, in chunks."""
    mq, dim = qa.shape
    for c0 in range(0, count, _CHUNK):
        n = min(_CHUNK, count - c0)
        for j in range(mq):
            for t in range(n):
                p = pos0 + c0 + t
                if p < start or p > qpos[j]:
                    sc[j, t] = _NEG_INF
                else:
                    s = _F32(0.0)
                    for d in range(dim):
                        s += qa[j, d] * k[c0 + t, d]
                    sc[j, t] = s * _F32(scale)
        _softmax_block(sc, n, mx, ls, acc_e, acc_r)
        for j in range(mq):
            for t in range(n):
                p = sc[j, t]
                if p != 0:
                    for d in range(dim):
                        acc_e[j, d] += p * v[c0 + t, d]


@nb.njit(cache=True)
def _scores_channel_rows(qr: np.ndarray, codes: np.ndarray, a: np.ndarray, z: np.ndarray,
                         s: np.ndarray, fa: int, fz: int, fs: int, bits: int, lut: np.ndarray,
                         group: int, scale: float, w: np.ndarray, qz: np.ndarray, row: np.ndarray,
                         sc: np.ndarray) -> None:
    """sc[j, t] = scale * q_j . k_hat_t for a key tile with codes [D, G]."""
    mq, dim = qr.shape
    for j in range(mq):
        qz[j, 0] = _F32(0.0)
        for t in range(group):
            sc[j, t] = _F32(0.0)
    for d in range(dim):
        ad = _field(a, d, fa, 1.0)
        zd = _field(z, d, fz, 0.0)
        for j in range(mq):
            w[j, d] = qr[j, d] * ad
            qz[j, 0] += qr[j, d] * zd
    for d in range(dim):
        _unpack_row(codes, d * group, group, bits, lut, row)
        for j in range(mq):
            wd = w[j, d]
            for t in range(group):
                sc[j, t] += wd * row[t]
    for t in range(group):
        st = _field(s, t, fs, 1.0) * _F32(scale)
        for j in range(mq):
            sc[j, t] = st * (sc[j, t] + qz[j, 0])


@nb.njit(cache=True)
def _scores_token_rows(qr: np.ndarray, codes: np.ndarray, a: np.ndarray, z: np.ndarray,
                       s: np.ndarray, fa: int, fz: int, fs: int, ngroups: int, bits: int,
                       lut: np.ndarray, group: int, scale: float, w: np.ndarray, qz: np.ndarray,
                       row: np.ndarray, ag: np.ndarray, zg: np.ndarray, sc: np.ndarray) -> None:
    """sc[j, t] = scale * q_j . k_hat_t for a key tile with codes [G, D]."""
    mq, dim = qr.shape
    cg = dim // ngroups
    for d in range(dim):
        sd = _field(s, d, fs, 1.0)
        for j in range(mq):
            w[j, d] = qr[j, d] * sd
    for j in range(mq):
        for g in range(ngroups):
            acc = _F32(0.0)
            for d in range(g * cg, (g + 1) * cg):
                acc += w[j, d]
            qz[j, g] = acc
    for t in range(group):
        _unpack_row(codes, t * dim, dim, bits, lut, row)
        for g in range(ngroups):
            ag[g] = _field(a, t * ngroups + g, fa, 1.0)
            zg[g] = _field(z, t * ngroups + g, fz, 0.0)
        for j in range(mq):
            tot = _F32(0.0)
            for g in range(ngroups):
                dot = _F32(0.0)
                for d in range(g * cg, (g + 1) * cg):
                    dot += w[j, d] * row[d]
                tot += ag[g] * dot + zg[g] * qz[j, g]
            sc[j, t] = tot * _F32(scale)


@nb.njit(cache=True)
def _values_token_rows(p: np.ndarray, codes: np.ndarray, a: np.ndarray, z: np.ndarray,
                       s: np.ndarray, fa: int, fz: int, fs: int, ngroups: int, bits: int,
                       lut: np.ndarray, group: int, tmp: np.ndarray, pz: np.ndarray,
                       row: np.ndarray, ag: np.ndarray, zg: np.ndarray, acc_r: np.ndarray) -> None:
    """acc_r[j] += sum_t p[j, t] v_hat_t for a value tile with codes [G, D]."""
    mq, dim = acc_r.shape
    cg = dim // ngroups
    for j in range(mq):
        for d in range(dim):
            tmp[j, d] = _F32(0.0)
        for g in range(ngroups):
            pz[j, g] = _F32(0.0)
    for t in range(group):
        _unpack_row(codes, t * dim, dim, bits, lut, row)
        for g in range(ngroups):
            ag[g] = _field(a, t * ngroups + g, fa, 1.0)
            zg[g] = _field(z, t * ngroups + g, fz, 0.0)
        for j in range(mq):
            pt = p[j, t]
            if pt == 0:
                continue
            for g in range(ngroups):
                pa = pt * ag[g]
                pz[j, g] += pt * zg[g]
                for d in range(g * cg, (g + 1) * cg):
                    tmp[j, d] += pa * row[d]
    for d in range(dim):
        sd = _field(s, d, fs, 1.0)
        g = d // cg
        for j in range(mq):
            acc_r[j, d] += sd * (tmp[j, d] + pz[j, g])


@nb.njit(parallel=True, cache=True)
def kv_attend(q: np.ndarray, q_rot: np.ndarray, lengths: np.ndarray, sink_k: np.ndarray,
              sink_v: np.ndarray, recent_k: np.ndarray, recent_v: np.ndarray, new_k: np.ndarray,
              new_v: np.ndarray, k_codes: np.ndarray, k_a: np.ndarray, k_z: np.ndarray,
              k_s: np.ndarray, v_codes: np.ndarray, v_a: np.ndarray, v_z: np.ndarray,
              v_s: np.ndarray, k_lut: np.ndarray, v_lut: np.ndarray, layout: tuple,
              scale: float, out_exact: np.ndarray, out_rot: np.ndarray) -> None:
    """Softmax attention of L queries per head over a quantized cache plus exact tokens.

    q, q_rot [B, Hq, L, D] float32: the queries in the original frame and in the tiles'
    frame; lengths [B, 4] int32: (start, n_sink, n_tiles, n_recent) per sequence (ragged
    batches); sink_k/v [B, Hk, >= n_sink, D], recent_k/v [B, Hk, >= n_recent, D], new_k/v
    [B, Hk, N, D] float32, original frame (N = 0, or the current chunk's N tokens after the
    recent ones); k_codes [B, Hk, cap, bytes] uint8 and fields k_a, k_z, k_s
    [B, Hk, cap, n] (likewise for v), formats and geometry in ``layout`` (see the module
    docstring); k_lut, v_lut [2^bits] float32.  Query head h reads kv head h // (Hq / Hk).
    Writes out_exact and out_rot [B, Hq, L, D] float32; the attention output is
    out_exact + R(out_rot), R the tiles' un-rotation (identity for unrotated codecs).
    """
    nb_, hq, nq, dim = q.shape
    hk = sink_k.shape[1]
    m = hq // hk
    mq = m * nq
    n_new = new_k.shape[2]
    group = layout[GROUP]
    kbits, vbits = layout[KEY_BITS], layout[VALUE_BITS]
    krows, kgroups, vgroups = layout[KEY_ROWS], layout[KEY_COL_GROUPS], layout[VALUE_COL_GROUPS]
    fka, fkz, fks = layout[FMT_KEY_A], layout[FMT_KEY_Z], layout[FMT_KEY_S]
    fva, fvz, fvs = layout[FMT_VALUE_A], layout[FMT_VALUE_Z], layout[FMT_VALUE_S]
    ng = max(kgroups, vgroups, 1)
    for bh in nb.prange(nb_ * hk):
        b = bh // hk
        kv = bh % hk
        h0 = kv * m
        start = lengths[b, START]
        n_sink = lengths[b, N_SINK]
        n_tiles = lengths[b, N_TILES]
        n_recent = lengths[b, N_RECENT]
        total = n_sink + n_tiles * group + n_recent + n_new
        qpos = np.empty(mq, np.int64)
        qa = np.empty((mq, dim), np.float32)
        qr = np.empty((mq, dim), np.float32)
        for j in range(mq):
            h, i = h0 + j // nq, j % nq
            qpos[j] = total - nq + i
            for d in range(dim):
                qa[j, d] = q[b, h, i, d]
                qr[j, d] = q_rot[b, h, i, d]
        last = qpos[mq - 1]
        mx = np.full(mq, _NEG_INF, np.float32)
        ls = np.zeros(mq, np.float32)
        acc_e = np.zeros((mq, dim), np.float32)
        acc_r = np.zeros((mq, dim), np.float32)
        sc = np.empty((mq, max(group, _CHUNK)), np.float32)
        w = np.empty((mq, dim), np.float32)
        qz = np.empty((mq, ng), np.float32)
        tmp = np.empty((mq, dim), np.float32)
        row = np.empty(max(group, dim), np.float32)
        ag = np.empty(ng, np.float32)
        zg = np.empty(ng, np.float32)
        _exact_block(qa, sink_k[b, kv], sink_v[b, kv], n_sink, 0, start, qpos, scale, mx, ls,
                     acc_e, acc_r, sc)
        for tile in range(n_tiles):
            pos0 = n_sink + tile * group
            if pos0 + group <= start or pos0 > last:
                continue
            if krows == ROWS_CHANNELS:
                _scores_channel_rows(qr, k_codes[b, kv, tile], k_a[b, kv, tile], k_z[b, kv, tile],
                                     k_s[b, kv, tile], fka, fkz, fks, kbits, k_lut, group, scale,
                                     w, qz, row, sc)
            else:
                _scores_token_rows(qr, k_codes[b, kv, tile], k_a[b, kv, tile], k_z[b, kv, tile],
                                   k_s[b, kv, tile], fka, fkz, fks, kgroups, kbits, k_lut, group,
                                   scale, w, qz, row, ag, zg, sc)
            if pos0 < start or pos0 + group - 1 > qpos[0]:
                for j in range(mq):
                    for t in range(group):
                        if pos0 + t < start or pos0 + t > qpos[j]:
                            sc[j, t] = _NEG_INF
            _softmax_block(sc, group, mx, ls, acc_e, acc_r)
            _values_token_rows(sc, v_codes[b, kv, tile], v_a[b, kv, tile], v_z[b, kv, tile],
                               v_s[b, kv, tile], fva, fvz, fvs, vgroups, vbits, v_lut, group,
                               tmp, qz, row, ag, zg, acc_r)
        pos0 = n_sink + n_tiles * group
        _exact_block(qa, recent_k[b, kv], recent_v[b, kv], n_recent, pos0, start, qpos, scale,
                     mx, ls, acc_e, acc_r, sc)
        _exact_block(qa, new_k[b, kv], new_v[b, kv], n_new, pos0 + n_recent, start, qpos, scale,
                     mx, ls, acc_e, acc_r, sc)
        for j in range(mq):
            h, i = h0 + j // nq, j % nq
            inv = _F32(1.0) / ls[j] if ls[j] > 0 else _F32(0.0)
            for d in range(dim):
                out_exact[b, h, i, d] = acc_e[j, d] * inv
                out_rot[b, h, i, d] = acc_r[j, d] * inv
