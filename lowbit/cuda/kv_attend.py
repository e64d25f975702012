"""CUDA wrapper of kv_attend: same name and signature as :mod:`lowbit.cpu.kv_attend`.

Decode only (one query per head, L = 1); key tiles with codes [D, G] (rows = channels: kvarn,
kivi) or [G, D] (rows = tokens, one column group: quarot, rtn, fp8), 2-, 4- or 8-bit codes whose
values are the integers or, for 8-bit codes, the float8 e4m3 values (``layout[KEY_CODES]``,
``[VALUE_CODES]``; the kernel decodes them itself, ``k_lut``/``v_lut`` are not read), field
formats float16 / e4m3 / float32 / absent (float32: the column scales with the tile exponent
folded in, fp8's per-tile scales), exact tokens float32 or float16, Hq/Hk <= 8, D and G in
{64, 128}.  Other layouts raise NotImplementedError.  Split-K: ``splits`` blocks per (sequence, kv head) chosen
from the capacities (host-known shapes, no device values are read), then a combine kernel
(log-sum-exp).  Workspaces are cached per shape and device, so a captured CUDA graph replays
with the same buffers; every launch is on CuPy's current stream and nothing syncs the host.
NaN / Inf propagate as in the CPU twin (its module docstring; the .cu marks each place "NaN:").

Two split kernels share the entry ``lowbit_kv_attend_split``: the CUDA-core one of kv_attend.cu
(float32 throughout, the default) and, with :data:`MMA`, the tensor-core one of
kv_attend_mma.cuh (TF32 mma's on the packed codes, B operands as tf32 hi + lo by default; its
error bound is tests/kv_attend_bound.py's) for key codes [D, G] of integer values only: token-row
key tiles (quarot, rtn, fp8) always run the CUDA-core kernel (:func:`uses_mma`).  tools/gpu_attend_check.py checks the latter against
float64 attention and times both against float16 SDPA.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from lowbit.cuda._module import cupy_device, kernel
from lowbit.kv import layout as L


@functools.cache
def _sm_count(device: int) -> int:
    import cupy

    return int(cupy.cuda.runtime.deviceGetAttribute(16, device))  # cudaDevAttrMultiProcessorCount


@functools.cache
def _workspace(device: int, bhq: int, splits: int, dim: int) -> tuple[Any, Any]:
    import cupy

    return (cupy.empty((bhq, splits, 2, dim), cupy.float32), cupy.empty((bhq, splits, 2), cupy.float32))


#: split-K target: about this many blocks per multiprocessor (each block walks its chunks one
#: after another, latency-bound; more resident blocks hide more of each chunk's load latency).
#: H200, 2026-12-03, bench_kv_attend_cuda: 4 / 8 / 12 / 16 per SM took 1.313 / 1.085 / 1.022 /
#: 0.947 ms at (B 16, 32k), 1.106 / 1.159 / 1.143 / 1.127 ms at (64, 8k), 0.361 / 0.319 / 0.350 /
#: 0.356 ms at (1, 128k) (k4v2): 16 has the least total time
BLOCKS_PER_SM = 16

#: the tensor-core split kernel (lowbit/cuda/kv_attend_mma.cuh, -DLOWBIT_ATTEND_MMA=1) for the
#: layouts it takes (:func:`uses_mma`: key codes [D, G], integer codes, :func:`mma_layout`'s
#: geometry); False until it is verified on a GPU (tools/gpu_attend_check.py), the CUDA-core
#: kernel of kv_attend.cu otherwise (always for quarot, rtn and fp8 tiles)
MMA = False
#: warps per block of the tensor-core kernel: each takes G / MMA_WARPS tokens of every chunk with
#: its own softmax and workspace entry (the blocks' shared-memory stages hold one tile each)
MMA_WARPS = 2
#: B operands of the tensor-core kernel as tf32 hi + lo (two mma's on the same codes; error per
#: product <= 2^-22, float32-like) rather than one tf32 (2^-11, float16-like)
MMA_SPLIT = True
#: with MMA_SPLIT and at most 4 query heads per kv head: the hi parts in the mma's B columns 0..3,
#: the lo parts in 4..7 (one mma instead of two); not yet measured
MMA_PACK = False
#: split-K target of the tensor-core kernel, blocks per SM (about 6 of its blocks are resident
#: per SM for k4v2 at D = G = 128, limited by the two tile stages in shared memory); not yet tuned
MMA_BLOCKS_PER_SM = 12


def split_count(batch: int, kv_heads: int, chunks: int, sms: int, per_sm: int | None = None) -> int:
    """Splits per (sequence, kv head): about ``per_sm`` (default BLOCKS_PER_SM) blocks per SM,
    at most one per chunk."""
    per_sm = BLOCKS_PER_SM if per_sm is None else per_sm
    return max(1, min(chunks, -(-per_sm * sms // max(1, batch * kv_heads))))


def mma_layout(dim: int, group: int, value_col_groups: int, value_bits: int) -> bool:
    """Whether the tensor-core kernel takes this tile geometry: G / MMA_WARPS a multiple of 32
    tokens; value column groups of a multiple of 16 channels holding at least a byte of codes
    per lane (channels / 8 * bits >= 8)."""
    tw, cg = group // MMA_WARPS, dim // value_col_groups
    return group % MMA_WARPS == 0 and tw % 32 == 0 and cg % 16 == 0 and 8 <= cg // 8 * value_bits <= 128


def uses_mma(layout: tuple, dim: int) -> bool:
    """Whether a launch for ``layout`` and head_dim ``dim`` runs the tensor-core kernel: with
    :data:`MMA`, for key codes [D, G] of integer values (kvarn, kivi) in :func:`mma_layout`'s
    geometry; token-row key tiles and e4m3 codes (quarot, rtn, fp8) run the CUDA-core kernel."""
    return (MMA and layout[L.KEY_ROWS] == L.ROWS_CHANNELS
            and layout[L.KEY_CODES] == layout[L.VALUE_CODES] == L.CODES_INTEGER
            and mma_layout(dim, layout[L.GROUP], layout[L.VALUE_COL_GROUPS], layout[L.VALUE_BITS]))


def kernel_defines(layout: tuple, dim: int, m: int, exact_f16: bool) -> tuple[str, ...]:
    """The -D options of kv_attend.cu for ``layout``, head_dim ``dim``, ``m`` query heads per kv
    head and float16 (else float32) exact tokens (tools/gpu_attend_check.py precompiles them)."""
    fmts = [layout[i] for i in (L.FMT_KEY_A, L.FMT_KEY_Z, L.FMT_KEY_S, L.FMT_VALUE_A,
                                L.FMT_VALUE_Z, L.FMT_VALUE_S)]
    return (f"-DLOWBIT_D={dim}", f"-DLOWBIT_G={layout[L.GROUP]}", f"-DLOWBIT_M={m}",
            f"-DLOWBIT_KBITS={layout[L.KEY_BITS]}", f"-DLOWBIT_VBITS={layout[L.VALUE_BITS]}",
            f"-DLOWBIT_VGROUPS={layout[L.VALUE_COL_GROUPS]}", f"-DLOWBIT_KROWS={layout[L.KEY_ROWS]}",
            f"-DLOWBIT_KCODES={layout[L.KEY_CODES]}", f"-DLOWBIT_VCODES={layout[L.VALUE_CODES]}",
            *(f"-DLOWBIT_F{n}={f}" for n, f in zip(("KA", "KZ", "KS", "VA", "VZ", "VS"), fmts, strict=True)),
            f"-DLOWBIT_EXACT_F16={int(exact_f16)}",
            *(("-DLOWBIT_ATTEND_MMA=1", f"-DLOWBIT_ATTEND_WARPS={MMA_WARPS}",
               f"-DLOWBIT_ATTEND_SPLIT={int(MMA_SPLIT)}", f"-DLOWBIT_ATTEND_PACK={int(MMA_PACK)}")
              if uses_mma(layout, dim) else ()))


def kv_attend(q: Any, q_rot: Any, lengths: Any, sink_k: Any, sink_v: Any, recent_k: Any,
              recent_v: Any, new_k: Any, new_v: Any, k_codes: Any, k_a: Any, k_z: Any, k_s: Any,
              v_codes: Any, v_a: Any, v_z: Any, v_s: Any, k_lut: Any, v_lut: Any, layout: tuple,
              scale: float, out_exact: Any, out_rot: Any) -> None:
    b, hq, nq, dim = q.shape
    hk = sink_k.shape[1]
    group = layout[L.GROUP]
    kbits, vbits = layout[L.KEY_BITS], layout[L.VALUE_BITS]
    if nq != 1:
        raise NotImplementedError(f"the CUDA kv_attend takes one query per head (decode), got L={nq}")
    if layout[L.KEY_ROWS] not in (L.ROWS_CHANNELS, L.ROWS_TOKENS) or layout[L.KEY_COL_GROUPS] != 1:
        raise NotImplementedError("the CUDA kv_attend reads key codes [D, G] or [G, D] in one "
                                  f"column group, got rows {layout[L.KEY_ROWS]}, "
                                  f"{layout[L.KEY_COL_GROUPS]} groups")
    fmts = [layout[i] for i in (L.FMT_KEY_A, L.FMT_KEY_Z, L.FMT_KEY_S, L.FMT_VALUE_A,
                                L.FMT_VALUE_Z, L.FMT_VALUE_S)]
    if kbits not in (2, 4, 8) or vbits not in (2, 4, 8):
        raise NotImplementedError(f"the CUDA kv_attend takes 2/4/8-bit codes, "
                                  f"got bits {kbits}/{vbits}, formats {fmts}")
    for bits, codes in ((kbits, layout[L.KEY_CODES]), (vbits, layout[L.VALUE_CODES])):
        if codes not in (L.CODES_INTEGER, L.CODES_E4M3) or (codes == L.CODES_E4M3 and bits != 8):
            raise NotImplementedError(f"the CUDA kv_attend takes integer codes or 8-bit e4m3 codes, "
                                      f"got code values {codes} of {bits} bits")
    m = hq // hk
    if m > 8 or dim not in (64, 128) or group not in (64, 128):
        raise NotImplementedError(f"the CUDA kv_attend takes Hq/Hk <= 8 and D, G in (64, 128); "
                                  f"got {m}, {dim}, {group}")
    exact = sink_k.dtype.name
    if exact not in ("float16", "float32") or any(a.dtype.name != exact for a in (sink_v, recent_k, recent_v, new_k, new_v)):
        raise TypeError(f"exact tokens must all be float16 or all float32, got {exact}")
    n_new = new_k.shape[2]
    g = group
    cap_chunks = -(-sink_k.shape[2] // g) + k_codes.shape[2] + -(-recent_k.shape[2] // g) + -(-n_new // g)
    dev = cupy_device()
    mma = uses_mma(layout, dim)
    splits = split_count(b, hk, max(cap_chunks, 1), _sm_count(dev), MMA_BLOCKS_PER_SM if mma else None)
    per_split = max(1, -(-cap_chunks // splits))
    entries = splits * MMA_WARPS if mma else splits  # workspace entries: one per warp (mma) or block
    ws_acc, ws_ml = _workspace(dev, b * hq, entries, dim)
    defines = kernel_defines(layout, dim, m, exact == "float16")
    i32 = np.int32
    kernel("kv_attend", "lowbit_kv_attend_split", defines)(
        (splits, hk, b), (32 * MMA_WARPS if mma else 128,),
        (q, q_rot, lengths, sink_k, sink_v, i32(sink_k.shape[2]), recent_k, recent_v,
         i32(recent_k.shape[2]), new_k, new_v, i32(n_new), k_codes, k_a, k_z, k_s, v_codes, v_a, v_z,
         v_s, i32(k_codes.shape[2]), i32(k_a.shape[3]), i32(k_z.shape[3]), i32(k_s.shape[3]),
         i32(v_a.shape[3]), i32(v_z.shape[3]), i32(v_s.shape[3]), np.float32(scale), i32(per_split),
         ws_acc, ws_ml))
    kernel("kv_attend", "lowbit_kv_attend_combine", defines)(
        (b * hq,), (256 if mma else dim,), (ws_acc, ws_ml, i32(entries), lengths, i32(n_new), i32(hq),
                                             out_exact, out_rot))
