"""CUDA kernel table (CuPy raw kernels).  Kernels hold no policy.

Each wrapper has the same name and signature as its CPU twin in :mod:`lowbit.cpu`,
takes CuPy arrays, and launches on the current CuPy stream.  CuPy is imported
lazily, inside the wrappers, so this table can be inspected without a GPU.
"""

from lowbit.cuda.balance import balance_tiles
from lowbit.cuda.blockcodec import block_dequantize, block_quantize, finite_block_amax
from lowbit.cuda.codebook import block_norm, codebook_encode
from lowbit.cuda.codec import (
    block_absmax,
    decode_table,
    fixed_encode,
    minifloat_decode,
    minifloat_encode,
)
from lowbit.cuda.diffusion import diffuse_2d, diffuse_rows
from lowbit.cuda.hadamard import fwht, hadamard_signs
from lowbit.cuda.kv_attend import kv_attend
from lowbit.cuda.kvarn import kvarn_decode, kvarn_encode
from lowbit.cuda.kvarn_grid import kvarn_grid_decode, kvarn_grid_encode
from lowbit.cuda.packing import pack_codes, unpack_codes
from lowbit.cuda.rounding import round_elementwise
from lowbit.cuda.rtn import (
    group_abs_mean,
    group_range,
    rtn_decode,
    rtn_encode,
    rtn_quantize_groups,
)

KERNELS: tuple[str, ...] = (
    "balance_tiles",
    "block_absmax",
    "block_norm",
    "codebook_encode",
    "block_dequantize",
    "block_quantize",
    "decode_table",
    "diffuse_2d",
    "diffuse_rows",
    "finite_block_amax",
    "fixed_encode",
    "minifloat_decode",
    "minifloat_encode",
    "round_elementwise",
    "fwht",
    "group_abs_mean",
    "group_range",
    "hadamard_signs",
    "kv_attend",
    "kvarn_decode",
    "kvarn_encode",
    "kvarn_grid_decode",
    "kvarn_grid_encode",
    "pack_codes",
    "rtn_decode",
    "rtn_encode",
    "rtn_quantize_groups",
    "unpack_codes",
)

#: How each CUDA kernel's results relate to its CPU twin's, and the test that checks it
#: (docs/backends.md is generated from this).
AGREEMENT: dict[str, str] = {
    "block_absmax": "bit-identical (max is exact in any order) - tests/test_formats_backends.py",
    "block_norm": "bit-identical (the CPU's float64 operations, the sum in element order, one thread per "
                  "block) - tests/test_gpu_codebook.py",
    "codebook_encode": "bit-identical (the CPU's float64 comparisons; one counter-based generator) - "
                       "tests/test_gpu_codebook.py",
    "block_dequantize": "bit-identical for float16 / bfloat16 / float32 / float64 input (one float64 "
                        "product, rounded once to the output dtype; <= 4-bit codes by a per-CTA table of "
                        "those products: passed on an H100 2026-12-07) - "
                        "tests/test_blockcodec.py",
    "block_quantize": "bit-identical for float16 / bfloat16 / float32 / float64 input (one pass per block; "
                      "one codec, lowbit/cuda/codec.cuh; one counter-based generator; MX formats in "
                      "integer-only kernels, one per mode, the OCP element formats compiled as constants; "
                      "fp4 e2m1 (MXFP4, NVFP4 nearest even) by exact thresholds, one thread per block; NVFP4 "
                      "scale table and MXFP4 float16 stochastic fast path of 2026-12-07: test_blockcodec "
                      "passed on an H100 2026-12-07, 104 cases, none failed, run cut at its time limit) - "
                      "tests/test_blockcodec.py",
    "finite_block_amax": "bit-identical for float16 / bfloat16 / float32 / float64 input (max is exact "
                         "in any order) - tests/test_blockcodec.py",
    "decode_table": "bit-identical (one float64 product, rounded once to the output dtype; the vector "
                    "loop of 2026-12-07 passed on an H100 2026-12-07) - "
                    "tests/test_formats_backends.py",
    "diffuse_2d": "bit-identical (one thread per image, the CPU's visiting and summation order) - "
                  "tests/test_formats_backends.py",
    "diffuse_rows": "bit-identical (same float64 recursion per row) - tests/test_formats_backends.py",
    "fixed_encode": "bit-identical (one codec, lowbit/cuda/codec.cuh) - tests/test_formats_backends.py",
    "minifloat_decode": "bit-identical (one codec, lowbit/cuda/codec.cuh) - tests/test_formats_backends.py",
    "minifloat_encode": "bit-identical (one codec, lowbit/cuda/codec.cuh; one counter-based generator; "
                        "direct conversions of float16 / bfloat16 / float32 in integer-only kernels, one "
                        "per mode, the OCP formats compiled as constants; float16 stochastic fast path: the "
                        "fp8_e4m3 every-rbits case passed on an H100 2026-12-07, the other formats' not yet "
                        "run) - "
                        "tests/test_formats_backends.py",
    "round_elementwise": "bit-identical (one counter-based generator) - tests/test_formats_backends.py",
    "balance_tiles": "bit-identical (same float32 operations in the same order, the two-pass std by "
                     "8-lane groups in the order lowbit/cpu/balance.py documents; lowbit's own exp/log; "
                     "test_balance's CuPy / torch cases passed on an H100 2026-12-06 and, with the "
                     "fixed-size sweeps and bitwise imbalance reductions of 2026-12-07, on an H100 "
                     "2026-12-08 (119 of 122 reached); test_gpu_balance not yet run after the order "
                     "change) - tests/test_gpu_balance.py",
    "fwht": "bit-identical (same butterflies in the same order; the warp kernel of 2026-12-07: "
            "test_gpu_hadamard's every-length and every-element cases passed on an H100 2026-12-08 "
            "with the resident grid, the now-default one-group-per-warp grid checked bit for bit "
            "against it by the benchmark (2^23 float16 rows of 128); test_variants_match_cpu not "
            "yet reached) - tests/test_gpu_hadamard.py",
    "group_abs_mean": "bit-identical - tests/test_gpu_rtn.py",
    "group_range": "bit-identical - tests/test_gpu_rtn.py",
    "hadamard_signs": "bit-identical (one counter-based generator) - tests/test_gpu_hadamard.py",
    "kv_attend": "float32 tolerance, deterministic, NaN / Inf propagated as dense attention (decode "
                 "L = 1; key codes [D, G] (kvarn, kivi) and [G, D] (quarot, rtn, fp8: e4m3 codes "
                 "decoded exactly), 2/4/8-bit; other layouts raise NotImplementedError; the tensor-"
                 "core variant, lowbit.cuda.kv_attend.MMA, is off (every variant passed the float64 / "
                 "error-bound and determinism checks of tools/gpu_attend_check.py on an H100 2026-12-08, "
                 "138 cases; the test suite with it on not yet run), and takes kvarn / kivi tiles only, quarot / rtn / fp8 always run the CUDA-core kernel; the "
                 "[G, D] path: its rtn (Hq/Hk 1) and fp8 (Hq/Hk 8) float64-reference cases passed on an H100 "
                 "2026-12-07, the others not yet run) - tests/test_kv_attend.py",
    "kvarn_decode": "bit-identical (float32 operations in the CPU's order; the output rounded once to "
                    "its dtype; kvarn_decode128.cu and the s_col 2^e order of 2026-12-07: test_gpu_kvarn "
                    "passed on an H100 2026-12-07 and 2026-12-08, the wild float16 records included) - "
                    "tests/test_gpu_kvarn.py",
    "kvarn_encode": "bit-identical (same float32 operations in the same order; lowbit's own exp/log; "
                    "float16 / bfloat16 tokens widened exactly; RTN rows by 8-lane groups; test_gpu_kvarn "
                    "passed on an H100 2026-12-06 and, with the D = 128 in-register rotation, fixed-size "
                    "128 x 128 balance and one-step codes + packing, on an H100 2026-12-07, and with the "
                    "leaner histogram, sweeps, imbalance and packing of 2026-12-07 evening on an H100 "
                    "2026-12-08) - "
                    "tests/test_gpu_kvarn.py",
    "kvarn_grid_decode": "bit-identical (the CPU's float64 reconstruction rounded once to float32) - "
                         "tests/test_gpu_kvarn_grid.py",
    "kvarn_grid_encode": "bit-identical (kvarn.cu's balance; the CPU's float64 fit in its order, one thread "
                         "per row; the bitwise imbalance reductions of 2026-12-07 not yet run on a GPU "
                         "here) - tests/test_gpu_kvarn_grid.py",
    "pack_codes": "bit-identical - tests/test_gpu_rtn.py",
    "rtn_decode": "bit-identical - tests/test_gpu_rtn.py",
    "rtn_encode": "bit-identical - tests/test_gpu_rtn.py",
    "rtn_quantize_groups": "bit-identical - tests/test_gpu_rtn.py, tests/test_gpu_rtn_lanes.py",
    "unpack_codes": "bit-identical - tests/test_gpu_rtn.py",
}

#: The .cu sources of each CUDA kernel where they are not ``<wrapper module>.cu`` (one file per
#: kernel family; shared pieces in .cuh headers), for docs/backends.md.
SOURCES: dict[str, tuple[str, ...]] = {
    "block_quantize": ("blockcodec.cu", "blockcodec_fp4.cu"),
    "kvarn_decode": ("kvarn_decode.cu", "kvarn_decode128.cu"),
    "rtn_decode": ("rtn.cu", "rtn_decode_lanes.cu"),
    "rtn_quantize_groups": ("rtn_groups.cu", "rtn_lanes.cu", "rtn_seg.cu"),
}

#: CPU kernels that have no CUDA twin yet (a known gap, documented in docs/backends.md).
#: A CuPy array reaching one of these raises NotImplementedError naming the kernel.
KNOWN_GAPS: tuple[str, ...] = ()

__all__ = list(KERNELS)


def __getattr__(name: str) -> object:
    if name in KNOWN_GAPS:
        raise NotImplementedError(
            f"kernel {name!r} has no CUDA twin yet (a known gap, see docs/backends.md); "
            "copy the data to the host explicitly (e.g. cupy.asnumpy) to use the CPU kernel"
        )
    raise AttributeError(f"module 'lowbit.cuda' has no attribute {name!r}")
