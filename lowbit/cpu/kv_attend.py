"""Numba kernel: attention over a quantized KV cache, reading packed codes and per-tile fields.

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

NaN propagates as in dense attention (torch's math ``scaled_dot_product_attention``, the
float64 :func:`lowbit.kv.dense.dense_attend`): a query's whole output row is NaN when a score
it attends to is NaN (the block max keeps a NaN, and exp(x - NaN) is NaN) or +inf (inf - inf),
or when every score it attends to is -inf (0 / 0); an attended value that is NaN makes the
channels it reaches NaN, whatever its weight (weight * NaN is NaN even for a weight that
underflowed to 0: zero weights of attended tokens are not skipped).  Masked positions (before
``start``, after the query's own, past the lengths) never contribute, whatever they hold.
For finite inputs the results are the bits of the version that skipped zero weights (the
accumulators start at +0 and are never -0, so adding a zero product changes no bit).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from lowbit.cpu.kvarn import scale_value
from lowbit.cpu.packing import get_code, load_unit
from lowbit.cpu.scalar import bits_f64
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
#: 2**-24, the float16 subnormal step
_TWO_M24 = 5.960464477539063e-08


@nb.njit(inline="always", cache=True)
def _half_f32(h: np.integer) -> np.float32:
    """The float16 with bits ``h`` as float32 (exact; :func:`lowbit.cpu.kvarn.half_value`'s
    value without the generic codec)."""
    e = (np.int64(h) >> 10) & 0x1F
    m = np.int64(h) & 0x3FF
    v: float
    if e == 0:
        v = float(m) * _TWO_M24
    elif e == 31:
        v = np.inf if m == 0 else np.nan
    else:
        v = bits_f64(((e + 1008) << 52) | (m << 42))  # type: ignore[call-arg]
    return _F32(-v if np.int64(h) & 0x8000 else v)


@nb.njit(inline="always", cache=True)
def _field(a: np.ndarray, i: int, fmt: int, default: float, e4m3: np.ndarray) -> np.float32:
    """Value of stored field element ``a[i]`` (``a[0]`` when ``a`` holds one value per tile);
    ``e4m3`` [256] the values of the e4m3 codes."""
    if fmt == FMT_ABSENT:
        return _F32(default)
    j = 0 if a.shape[0] == 1 else i
    if fmt == FMT_FLOAT32:
        return _F32(a[j])
    if fmt == FMT_FLOAT16:
        return _half_f32(a[j])
    return e4m3[np.int64(a[j]) & 0xFF]  # uint8 codes


@nb.njit(inline="always", cache=True)
def _fields(a: np.ndarray, fmt: int, default: float, e4m3: np.ndarray, out: np.ndarray) -> None:
    """out[i] = :func:`_field` (a, i, ...) for every i < len(out)."""
    for i in range(out.shape[0]):
        out[i] = _field(a, i, fmt, default, e4m3)


@nb.njit(inline="always", cache=True)
def _byte_table(bits: int, lut: np.ndarray) -> np.ndarray:
    """[256, 8 // bits] float32: the lut values of the codes in each byte, least significant
    first (bits in 1, 2, 4, 8; a dummy [1, 1] otherwise)."""
    if bits not in (1, 2, 4, 8):
        return np.zeros((1, 1), np.float32)
    per = 8 // bits
    mask = (1 << bits) - 1
    tbl = np.empty((256, per), np.float32)
    for b in range(256):
        for j in range(per):
            tbl[b, j] = lut[(b >> (j * bits)) & mask]
    return tbl


@nb.njit(inline="always", cache=True)
def _unpack_row(packed: np.ndarray, start: int, count: int, bits: int, lut: np.ndarray,
                tbl: np.ndarray, row: np.ndarray) -> None:
    """row[:count] = lut[codes start .. start+count-1] (start and count multiples of 8):
    1/2/4/8-bit codes a byte at a time through :func:`_byte_table`'s ``tbl``."""
    if bits == 4:
        b0 = start // 2
        for k in range(count // 2):
            byte = packed[b0 + k]
            row[2 * k] = tbl[byte, 0]
            row[2 * k + 1] = tbl[byte, 1]
    elif bits == 2:
        b0 = start // 4
        for k in range(count // 4):
            byte = packed[b0 + k]
            for j in range(4):
                row[4 * k + j] = tbl[byte, j]
    elif bits == 8:
        for k in range(count):
            row[k] = tbl[packed[start + k], 0]
    elif bits == 1:
        b0 = start // 8
        for k in range(count // 8):
            byte = packed[b0 + k]
            for j in range(8):
                row[8 * k + j] = tbl[byte, j]
    else:
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
    and adds the block's weights to the running sum; masked scores (-inf) get weight 0.  A
    NaN score makes the block max, then the running max, sum and accumulators NaN (and they
    stay NaN: exp(x - NaN) is NaN); weights of masked scores are then NaN too, the callers
    read only attended ones.
    """
    for j in range(sc.shape[0]):
        bm = _NEG_INF
        for t in range(n):
            s = sc[j, t]
            if s > bm or s != s:  # NaN sticks (max() would let a later score replace it)
                bm = s
        if bm == _NEG_INF:
            for t in range(n):
                sc[j, t] = _F32(0.0)
            continue
        if bm > mx[j] or bm != bm:
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
    """Exact tokens ``k, v [count.., D]`` at positions pos0 .. pos0+count-1, in chunks; the
    values of the tokens a query attends are all added (a zero weight included: 0 * NaN is
    NaN), those of masked tokens never."""
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
                if start <= pos0 + c0 + t <= qpos[j]:
                    p = sc[j, t]
                    for d in range(dim):
                        acc_e[j, d] += p * v[c0 + t, d]


@nb.njit(cache=True)
def _scores_channel_rows(qr: np.ndarray, codes: np.ndarray, a: np.ndarray, z: np.ndarray,
                         s: np.ndarray, fa: int, fz: int, fs: int, bits: int, lut: np.ndarray,
                         tbl: np.ndarray, e4m3: np.ndarray, group: int, scale: float,
                         w: np.ndarray, qz: np.ndarray, rows4: np.ndarray, fv: np.ndarray,
                         sc: np.ndarray) -> None:
    """sc[j, t] = scale * q_j . k_hat_t for a key tile with codes [D, G] (``rows4`` [4, >= G]
    scratch)."""
    mq, dim = qr.shape
    for j in range(mq):
        qz[j, 0] = _F32(0.0)
        for t in range(group):
            sc[j, t] = _F32(0.0)
    for d in range(dim):
        ad = _field(a, d, fa, 1.0, e4m3)
        zd = _field(z, d, fz, 0.0, e4m3)
        for j in range(mq):
            w[j, d] = qr[j, d] * ad
            qz[j, 0] += qr[j, d] * zd
    d = 0
    while d + 4 <= dim:  # four channels per pass over sc: the same sums, in the same order
        for k in range(4):
            _unpack_row(codes, (d + k) * group, group, bits, lut, tbl, rows4[k])
        r0, r1, r2, r3 = rows4[0], rows4[1], rows4[2], rows4[3]
        for j in range(mq):
            w0, w1, w2, w3 = w[j, d], w[j, d + 1], w[j, d + 2], w[j, d + 3]
            sj = sc[j]
            for t in range(group):
                sj[t] = (((sj[t] + w0 * r0[t]) + w1 * r1[t]) + w2 * r2[t]) + w3 * r3[t]
        d += 4
    row = rows4[0]
    while d < dim:
        _unpack_row(codes, d * group, group, bits, lut, tbl, row)
        for j in range(mq):
            wd = w[j, d]
            sj = sc[j]
            for t in range(group):
                sj[t] += wd * row[t]
        d += 1
    st = fv[:group]
    _fields(s, fs, 1.0, e4m3, st)
    for t in range(group):
        st[t] = st[t] * _F32(scale)
    for j in range(mq):
        sj = sc[j]
        qzj = qz[j, 0]
        for t in range(group):
            sj[t] = st[t] * (sj[t] + qzj)


@nb.njit(cache=True)
def _scores_token_rows(qr: np.ndarray, codes: np.ndarray, a: np.ndarray, z: np.ndarray,
                       s: np.ndarray, fa: int, fz: int, fs: int, ngroups: int, bits: int,
                       lut: np.ndarray, tbl: np.ndarray, e4m3: np.ndarray, group: int,
                       scale: float, w: np.ndarray, qz: np.ndarray, row: np.ndarray,
                       ag: np.ndarray, zg: np.ndarray, sc: np.ndarray) -> None:
    """sc[j, t] = scale * q_j . k_hat_t for a key tile with codes [G, D]."""
    mq, dim = qr.shape
    cg = dim // ngroups
    for d in range(dim):
        sd = _field(s, d, fs, 1.0, e4m3)
        for j in range(mq):
            w[j, d] = qr[j, d] * sd
    for j in range(mq):
        for g in range(ngroups):
            acc = _F32(0.0)
            for d in range(g * cg, (g + 1) * cg):
                acc += w[j, d]
            qz[j, g] = acc
    for t in range(group):
        _unpack_row(codes, t * dim, dim, bits, lut, tbl, row)
        for g in range(ngroups):
            ag[g] = _field(a, t * ngroups + g, fa, 1.0, e4m3)
            zg[g] = _field(z, t * ngroups + g, fz, 0.0, e4m3)
        for j in range(mq):
            tot = _F32(0.0)
            for g in range(ngroups):
                dot = _F32(0.0)
                for d in range(g * cg, (g + 1) * cg):
                    dot += w[j, d] * row[d]
                tot += ag[g] * dot + zg[g] * qz[j, g]
            sc[j, t] = tot * _F32(scale)


@nb.njit(cache=True)
def _values_token_rows(p: np.ndarray, first: int, last: np.ndarray, codes: np.ndarray,
                       a: np.ndarray, z: np.ndarray, s: np.ndarray, fa: int, fz: int, fs: int,
                       ngroups: int, bits: int, lut: np.ndarray, tbl: np.ndarray,
                       e4m3: np.ndarray, group: int, tmp: np.ndarray, pz: np.ndarray,
                       rows4: np.ndarray, ag: np.ndarray, zg: np.ndarray,
                       acc_r: np.ndarray) -> None:
    """acc_r[j] += sum_t p[j, t] v_hat_t over the tokens first <= t <= last[j] query j attends,
    for a value tile with codes [G, D] (``rows4`` [4, >= D] scratch).  Masked tokens are never
    read, an attended token always (a zero weight included: 0 * NaN is NaN); a query that
    attends no token of the tile (first > last[j]) is left unchanged (S[d] * 0 is NaN for a
    NaN S[d])."""
    mq, dim = acc_r.shape
    cg = dim // ngroups
    for j in range(mq):
        for d in range(dim):
            tmp[j, d] = _F32(0.0)
        for g in range(ngroups):
            pz[j, g] = _F32(0.0)
    t = 0
    if ngroups == 1:  # four tokens per pass over tmp: the same sums, in the same order
        while t + 4 <= group:
            for k in range(4):
                _unpack_row(codes, (t + k) * dim, dim, bits, lut, tbl, rows4[k])
            r0, r1, r2, r3 = rows4[0], rows4[1], rows4[2], rows4[3]
            a0, a1 = _field(a, t, fa, 1.0, e4m3), _field(a, t + 1, fa, 1.0, e4m3)
            a2, a3 = _field(a, t + 2, fa, 1.0, e4m3), _field(a, t + 3, fa, 1.0, e4m3)
            z0, z1 = _field(z, t, fz, 0.0, e4m3), _field(z, t + 1, fz, 0.0, e4m3)
            z2, z3 = _field(z, t + 2, fz, 0.0, e4m3), _field(z, t + 3, fz, 0.0, e4m3)
            for j in range(mq):
                p0, p1, p2, p3 = p[j, t], p[j, t + 1], p[j, t + 2], p[j, t + 3]
                tj = tmp[j]
                if first <= t and t + 3 <= last[j]:  # four attended tokens
                    pz[j, 0] = (((pz[j, 0] + p0 * z0) + p1 * z1) + p2 * z2) + p3 * z3
                    c0, c1, c2, c3 = p0 * a0, p1 * a1, p2 * a2, p3 * a3
                    for d in range(dim):
                        tj[d] = (((tj[d] + c0 * r0[d]) + c1 * r1[d]) + c2 * r2[d]) + c3 * r3[d]
                else:  # the attended ones among them, one token at a time
                    for k in range(4):
                        if t + k < first or t + k > last[j]:
                            continue
                        pk = p[j, t + k]
                        ak = _field(a, t + k, fa, 1.0, e4m3)
                        pz[j, 0] += pk * _field(z, t + k, fz, 0.0, e4m3)
                        pa = pk * ak
                        rk = rows4[k]
                        for d in range(dim):
                            tj[d] += pa * rk[d]
            t += 4
    row = rows4[0]
    while t < group:
        _unpack_row(codes, t * dim, dim, bits, lut, tbl, row)
        for g in range(ngroups):
            ag[g] = _field(a, t * ngroups + g, fa, 1.0, e4m3)
            zg[g] = _field(z, t * ngroups + g, fz, 0.0, e4m3)
        for j in range(mq):
            if t < first or t > last[j]:
                continue
            pt = p[j, t]
            tj = tmp[j]
            for g in range(ngroups):
                pa = pt * ag[g]
                pz[j, g] += pt * zg[g]
                for d in range(g * cg, (g + 1) * cg):
                    tj[d] += pa * row[d]
        t += 1
    for d in range(dim):
        sd = _field(s, d, fs, 1.0, e4m3)
        g = d // cg
        for j in range(mq):
            if first <= last[j]:
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
    e4m3 = np.empty(256, np.float32)
    for c in range(256):
        e4m3[c] = _F32(scale_value(c, 1))
    k_tbl = _byte_table(kbits, k_lut)
    v_tbl = _byte_table(vbits, v_lut)
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
        tlast = np.empty(mq, np.int64)  # per query: its last attended token of the tile
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
        rows4 = np.empty((4, max(group, dim)), np.float32)
        row = rows4[0]
        ag = np.empty(ng, np.float32)
        zg = np.empty(ng, np.float32)
        fv = np.empty(max(group, dim), np.float32)
        _exact_block(qa, sink_k[b, kv], sink_v[b, kv], n_sink, 0, start, qpos, scale, mx, ls,
                     acc_e, acc_r, sc)
        for tile in range(n_tiles):
            pos0 = n_sink + tile * group
            if pos0 + group <= start or pos0 > last:
                continue
            if krows == ROWS_CHANNELS:
                _scores_channel_rows(qr, k_codes[b, kv, tile], k_a[b, kv, tile], k_z[b, kv, tile],
                                     k_s[b, kv, tile], fka, fkz, fks, kbits, k_lut, k_tbl, e4m3,
                                     group, scale, w, qz, rows4, fv, sc)
            else:
                _scores_token_rows(qr, k_codes[b, kv, tile], k_a[b, kv, tile], k_z[b, kv, tile],
                                   k_s[b, kv, tile], fka, fkz, fks, kgroups, kbits, k_lut, k_tbl,
                                   e4m3, group, scale, w, qz, row, ag, zg, sc)
            if pos0 < start or pos0 + group - 1 > qpos[0]:
                for j in range(mq):
                    for t in range(group):
                        if pos0 + t < start or pos0 + t > qpos[j]:
                            sc[j, t] = _NEG_INF
            _softmax_block(sc, group, mx, ls, acc_e, acc_r)
            for j in range(mq):
                tlast[j] = min(qpos[j] - pos0, group - 1)
            _values_token_rows(sc, max(start - pos0, 0), tlast, v_codes[b, kv, tile],
                               v_a[b, kv, tile], v_z[b, kv, tile], v_s[b, kv, tile], fva, fvz,
                               fvs, vgroups, vbits, v_lut, v_tbl, e4m3, group, tmp, qz, rows4,
                               ag, zg, acc_r)
        pos0 = n_sink + n_tiles * group
        _exact_block(qa, recent_k[b, kv], recent_v[b, kv], n_recent, pos0, start, qpos, scale,
                     mx, ls, acc_e, acc_r, sc)
        _exact_block(qa, new_k[b, kv], new_v[b, kv], n_new, pos0 + n_recent, start, qpos, scale,
                     mx, ls, acc_e, acc_r, sc)
        for j in range(mq):
            h, i = h0 + j // nq, j % nq
            if ls[j] != 0:  # (a NaN sum: NaN)
                inv = _F32(1.0) / ls[j]
            elif max(start, 0) <= qpos[j]:  # every attended score -inf: 0 / 0, as dense attention
                inv = _F32(np.nan)
            else:  # sees no token
                inv = _F32(0.0)
            for d in range(dim):
                out_exact[b, h, i, d] = acc_e[j, d] * inv
                out_rot[b, h, i, d] = acc_r[j, d] * inv
