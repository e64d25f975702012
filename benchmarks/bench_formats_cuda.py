"""GPU: element and block formats, stochastic rounding, decoding and error diffusion on 1 GiB of
float16, against the device's measured copy bandwidth (read + write counted).

Skipped (no rows) without a CUDA device.  Each row's traffic is the fewest bytes the operation
must move: the float16 input read once, codes (packed) and scales written once; decoding reads
codes and writes float16.  Baselines, same run: the copy itself, and torch's
``x.to(torch.float8_e4m3fn)`` for the direct fp8 conversion.  torch's cast and lowbit differ
out of range: torch maps |x| > 448 (after rounding) to NaN (e4m3fn has no Inf; it does not
saturate), lowbit's default ``overflow="saturate"`` writes +-448 (OCP's saturating mode);
within range both round to nearest even, so their codes agree there (checked below).

Second baseline for MXFP4 / MXFP8 / NVFP4, when torchao imports (the wheel carried in ``.whl``,
0.18.0, the release for torch 2.11): torchao's own quantizers ``to_mx`` and ``nvfp4_quantize``
(torchao.prototype.mx_formats) on the same 1 GiB, eager and under ``torch.compile``, each row
followed by the fused ``block_quantize`` time against it.  They take bfloat16 / float32 only, so
they get ``x.float()`` (the same values; under ``torch.compile`` the cast is fused into their
kernels).  Their rounding is not lowbit's in every case (the row labels say what torchao does;
the fraction of equal codes is printed, not asserted).  Without torchao (or if it fails) one line
says why and those rows are left out.  The torchao part stops after ``LOWBIT_BENCH_TORCHAO_S``
seconds (default 45; 0 skips it), since ``torch.compile`` may take tens of seconds.
Run: ``python benchmarks/bench_formats_cuda.py [--quick]``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading

from cuda_common import device_copy_bandwidth, event_time, gpu_available, gpu_row

import lowbit
import lowbit.blockfmt
import lowbit.codec

#: wall-clock seconds allowed for the torchao rows (import, torch.compile, timing)
TORCHAO_BUDGET_S = 45.0


class _OutOfTime(BaseException):
    """The torchao budget ran out (a BaseException, so no ``except Exception`` inside torch
    swallows it)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise :class:`_OutOfTime` in the main thread after ``seconds`` (SIGALRM; no limit
    elsewhere, e.g. off the main thread)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise _OutOfTime

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


#: what torchao 0.18.0's functions do, read from its source (torchao/prototype/mx_formats/
#: mx_tensor.py to_mx, nvfp4_tensor.py nvfp4_quantize, custom_fp_utils.py), printed once per format
TORCHAO_RULES = {
    "mxfp4": "to_mx(x.float(), float4_e2m1fn_x2, 32, FLOOR): E8M0 scale floor(log2 amax) - 2 (OCP's rule), "
             "x / scale in float32, nearest-even saturating to e2m1, 2 codes per byte, low nibble first",
    "mxfp8": "to_mx(x.float(), float8_e4m3fn, 32, FLOOR): E8M0 scale floor(log2 amax) - 8 (OCP's rule), "
             "x / scale in float32, clamped to +-448, nearest-even cast to e4m3fn",
    "nvfp4": "nvfp4_quantize(x.float(), 16, t) with lowbit's tensor scale t: block scale "
             "e4m3(fp32(amax / 6) / t) (two float32 roundings), clamped to [2^-6, 448], x * (1/t/scale), "
             "nearest-even saturating to e2m1, 2 codes per byte, low nibble first",
}
TORCHAO_NAMES = {"mxfp4": "to_mx mxfp4 FLOOR", "mxfp8": "to_mx mxfp8 FLOOR", "nvfp4": "nvfp4_quantize"}


def _budget() -> float:
    """Seconds for the torchao rows: ``LOWBIT_BENCH_TORCHAO_S`` if it is a number, else the default."""
    try:
        return float(os.environ.get("LOWBIT_BENCH_TORCHAO_S", TORCHAO_BUDGET_S))
    except ValueError:
        return TORCHAO_BUDGET_S


def _why(exc: BaseException) -> str:
    """One line for a failure: the exception's type and its message's first line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def _equal_fraction(mine, theirs, nibbles: bool) -> float:
    """Fraction of equal codes between lowbit's (CuPy uint8) and torchao's (a torch tensor of the
    same bytes, any 8-bit dtype); 4-bit codes compared nibble by nibble."""
    import torch

    a = torch.from_dlpack(mine).reshape(-1)
    b = theirs.contiguous().view(torch.uint8).reshape(-1)
    if a.numel() != b.numel():
        return float("nan")
    if not nibbles:
        return (a == b).sum().item() / a.numel()
    same = ((a & 15) == (b & 15)).sum() + ((a >> 4) == (b >> 4)).sum()
    return same.item() / (2 * a.numel())


def torchao_rows(xt, fused: dict, nvfp4_tensor: float, put, budget_s: float) -> None:
    """The torchao baseline rows (module docstring), appended through ``put(name, seconds,
    nbytes, baseline, baseline_seconds)``; ``fused[scheme] = (seconds, fn, packed, scales)`` of
    lowbit's fused kernel on the same data.  Never raises: a failure prints one line."""
    if budget_s <= 0:
        print("torchao baseline: skipped (LOWBIT_BENCH_TORCHAO_S=0)", flush=True)
        return
    try:
        with _time_limit(budget_s):
            _torchao_rows(xt, fused, nvfp4_tensor, put)
    except _OutOfTime:
        print(f"torchao baseline: stopped after its budget of {budget_s:.0f} s (LOWBIT_BENCH_TORCHAO_S); "
              "the rows above are complete", flush=True)
    except Exception as exc:  # noqa: BLE001 - a baseline never fails the benchmark
        print(f"torchao baseline: skipped ({_why(exc)})", flush=True)


def _torchao_rows(xt, fused: dict, nvfp4_tensor: float, put) -> None:
    import torch

    # the C++/CUDA extensions (Blackwell mxfp8 cast, cutlass sm_90a GEMMs) are not used here
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    try:
        import torchao
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.prototype.mx_formats.mx_tensor import to_mx
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize
    except Exception as exc:  # noqa: BLE001 - ImportError, or a torchao built for another torch
        why = "not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == "torchao" else "fails to import"
        print(f"torchao baseline: skipped (torchao {why}: {_why(exc)})", flush=True)
        return
    version = getattr(torchao, "__version__", "?")
    for scheme in fused:
        print(f"torchao {version} {scheme}: {TORCHAO_RULES[scheme]}", flush=True)
    x2 = xt.reshape(-1, 4096)
    n = x2.numel()
    floor = ScaleCalculationMode.FLOOR
    t32 = torch.tensor(nvfp4_tensor, dtype=torch.float32, device=x2.device)  # lowbit's tensor scale
    quantizers = {  # each returns (scales, codes)
        "mxfp4": lambda v: to_mx(v.float(), torch.float4_e2m1fn_x2, 32, floor),
        "mxfp8": lambda v: to_mx(v.float(), torch.float8_e4m3fn, 32, floor),
        "nvfp4": lambda v: nvfp4_quantize(v.float(), 16, t32),
    }
    shapes = {"mxfp4": (4, 32), "mxfp8": (8, 32), "nvfp4": (4, 16)}
    for variant in ("eager", "torch.compile"):
        for scheme, fn in quantizers.items():
            if scheme not in fused:
                continue
            bits, block = shapes[scheme]
            traffic = 2 * n + n * bits // 8 + n // block
            f = torch.compile(fn, dynamic=False) if variant == "torch.compile" else fn
            try:
                scales, codes = f(x2)  # (the compilation, for torch.compile)
                t = event_time(lambda f=f: f(x2), repeat=10, warmup=2)
            except Exception as exc:  # noqa: BLE001
                print(f"torchao {variant} {scheme}: skipped ({_why(exc)})", flush=True)
                continue
            fused_t, fused_fn, packed, fused_scales = fused[scheme]
            fused_fn()
            torch.cuda.synchronize()
            same_codes = _equal_fraction(packed, codes, bits == 4)
            same_scales = _equal_fraction(fused_scales, scales, False)
            del scales, codes
            put(f"torchao {version} {TORCHAO_NAMES[scheme]}, {variant}", t, traffic, "device copy of the same bytes", None)
            put(f"{scheme} block_quantize (fused kernel) vs torchao {variant}", fused_t, traffic,
                f"torchao {scheme}, {variant}", t)
            print(f"torchao {variant} {scheme}: codes equal to lowbit's: {same_codes:.6f}, "
                  f"scales: {same_scales:.6f}", flush=True)


def run(quick: bool = False) -> list[dict]:
    if not gpu_available():
        print("bench_formats_cuda: skipped (no CUDA device)", file=sys.stderr)
        return []
    import cupy as cp
    import numpy as np
    import torch

    import lowbit.cuda as cuda
    from lowbit.formats import FP8_E4M3

    n = (1 << 26) if quick else (1 << 29)  # 1 GiB of float16
    xt = (torch.randn(n, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)) * 100).half()
    x = cp.from_dlpack(xt)
    copy_t = 2 * n * 2 / device_copy_bandwidth()
    rows: list[dict] = []

    def add(name: str, fn, nbytes: int, baseline: str = "device copy of the same bytes",
            baseline_t: float | None = None) -> float:
        t = event_time(fn, repeat=10, warmup=2)
        rows.append(gpu_row(name, f"{n * 2 >> 20} MiB float16", t, baseline,
                            baseline_t if baseline_t is not None else copy_t, nbytes, n))
        print(f"{name}: {t * 1e3:.3f} ms, {rows[-1]['pct_copy']:.1f}% of copy", flush=True)
        return t

    def put(name: str, t: float, nbytes: int, baseline: str, baseline_t: float | None) -> None:
        rows.append(gpu_row(name, f"{n * 2 >> 20} MiB float16", t, baseline,
                            baseline_t if baseline_t is not None else copy_t, nbytes, n))
        print(f"{name}: {t * 1e3:.3f} ms, {rows[-1]['pct_copy']:.1f}% of copy, "
              f"{rows[-1]['ratio']:.2f}x vs {baseline}", flush=True)

    ones = cp.ones(1, cp.float64)
    codes = cp.empty(n, cp.uint8)
    none = cp.empty(0, cp.uint8)
    spec = FP8_E4M3.spec

    # fp8 e4m3, nearest even, direct: kernel, front, torch's cast
    enc = functools.partial(cuda.minifloat_encode, x, n, ones, spec, 0, 0, np.uint64(0), 0, 16, codes, none)
    enc()
    tt = event_time(lambda: xt.to(torch.float8_e4m3fn), repeat=10, warmup=2)
    mine = cp.asnumpy(codes[: 1 << 20])
    theirs = xt[: 1 << 20].to(torch.float8_e4m3fn).view(torch.uint8).cpu().numpy()
    inside = np.abs(cp.asnumpy(x[: 1 << 20]).astype(np.float32)) <= 448
    assert np.array_equal(mine[inside], theirs[inside]), "fp8 codes differ from torch's within range"
    add("fp8_e4m3 nearest_even kernel (minifloat_encode)", enc, 3 * n)
    rows.append(gpu_row("torch x.to(float8_e4m3fn) (NaN beyond 448, no saturation)", f"{n * 2 >> 20} MiB float16",
                        tt, "device copy of the same bytes", copy_t, 3 * n, n))
    print(f"torch x.to(float8_e4m3fn): {tt * 1e3:.3f} ms, {rows[-1]['pct_copy']:.1f}% of copy", flush=True)
    add("lowbit.quantize fp8_e4m3 (front, saturating)", lambda: lowbit.quantize(x, scheme="fp8_e4m3"), 3 * n,
        "torch x.to(float8_e4m3fn)", tt)
    # stochastic
    sto = functools.partial(cuda.minifloat_encode, x, n, ones, spec, 0, 6, np.uint64(1), 0, 16, codes, none)
    add("fp8_e4m3 stochastic kernel (minifloat_encode)", sto, 3 * n)
    add("lowbit.quantize fp8_e4m3 stochastic (front)",
        lambda: lowbit.quantize(x, scheme="fp8_e4m3", rounding="stochastic", seed=1), 3 * n)
    # block formats: front, quantize + pack (scales of 32 / 16 elements written too)
    x2 = x.reshape(-1, 4096)
    for scheme, bits, block, extra in (("mxfp4", 4, 32, 0), ("mxfp8", 8, 32, 0), ("nvfp4", 4, 16, 0)):
        traffic = 2 * n + n * bits // 8 + n // block
        add(f"lowbit.quantize {scheme} (front: {'finite_block_amax + ' if scheme == 'nvfp4' else ''}block_quantize)",
            lambda s=scheme: lowbit.quantize(x2, scheme=s), traffic + extra)
    add("lowbit.quantize mxfp4 stochastic", lambda: lowbit.quantize(x2, scheme="mxfp4", rounding="stochastic", seed=3),
        2 * n + n // 2 + n // 32)
    # the fused kernels alone (one pass: load, block amax, scale, encode, pack), beside the front rows;
    # the old multi-pass composition they replace, same process: block_absmax + minifloat_encode + pack_codes
    from lowbit.formats import BLOCK_FORMATS
    from lowbit.validate import NOT_FIXED

    nvfp4_tensor = float(lowbit.quantize(x2[:64], scheme="nvfp4").fields["tensor_scale"][0])
    fused_runs: dict = {}  # scheme -> (seconds, fn, packed, scales), for the torchao rows
    for scheme, mode in (("mxfp4", 0), ("mxfp8", 0), ("nvfp4", 0), ("mxfp4", 6)):
        fmt = BLOCK_FORMATS[scheme]
        bits, block = fmt.element.bits, fmt.block_size
        packed, scales = cp.empty(n * bits // 8, cp.uint8), cp.empty(n // block, cp.uint8)
        tensor = nvfp4_tensor if fmt.tensor_scale else 0.0
        fused = functools.partial(cuda.block_quantize, x, 4096, block, fmt.element.spec, NOT_FIXED, fmt.element.emax,
                                  spec, tensor, mode, np.uint64(3), 0, 16, packed, scales)
        label = "stochastic " if mode else ""
        t = add(f"{scheme} {label}block_quantize (fused kernel, one pass)", fused, 2 * n + n * bits // 8 + n // block)
        if not mode:
            fused_runs[scheme] = (t, fused, packed, scales)

        def multi_pass(fmt=fmt, mode=mode, bits=bits, block=block, packed=packed):
            amax = cp.empty(n // block, cp.float64)
            cuda.block_absmax(x, block, amax)
            scale64 = lowbit.blockfmt.e8m0_scales(amax, fmt.element.emax)[1] if not fmt.tensor_scale else amax
            q = cp.empty(n, cp.uint8)
            cuda.minifloat_encode(x, block, scale64, fmt.element.spec, 0, mode, np.uint64(3), 0, 16, q, none)
            if bits < 8:
                cuda.pack_codes(q, bits, packed)

        if not fmt.tensor_scale:  # (NVFP4's old composition also encoded its e4m3 scales: not rebuilt here)
            add(f"{scheme} {label}block_absmax + scales + minifloat_encode + pack_codes (old multi-pass kernels)",
                multi_pass, 2 * n + n * bits // 8 + n // block)
    add("nvfp4 finite_block_amax (the tensor amax pass, kernel)",
        functools.partial(cuda.finite_block_amax, x, 4096, 16, cp.empty(1, cp.float64)), 2 * n)
    add("block_absmax, blocks of 32 (kernel)",
        functools.partial(cuda.block_absmax, x, 32, cp.empty(n // 32, cp.float64)), 2 * n + n // 4)
    # decoding
    q8 = lowbit.quantize(x, scheme="fp8_e4m3")
    out = cp.empty(n, cp.float16)
    table = cp.asarray(FP8_E4M3.decode_table())
    add("fp8_e4m3 decode_table -> float16 (kernel)",
        functools.partial(cuda.decode_table, q8.codes, 8, table, n, ones, out), 3 * n)
    add("fp8_e4m3 dequantize (front)", q8.dequantize, 3 * n)
    q4 = lowbit.quantize(x2, scheme="mxfp4")
    add("mxfp4 dequantize (front)", q4.dequantize, n // 2 + n // 32 + 2 * n)
    table4 = cp.asarray(lowbit.codec.decode_values(BLOCK_FORMATS["mxfp4"].element))
    add("mxfp4 block_dequantize -> float16 (fused kernel)",
        functools.partial(cuda.block_dequantize, q4.codes, q4.fields["scale"], 4096, 32, 4, table4, spec, 0.0, out),
        n // 2 + n // 32 + 2 * n)
    # first-order diffusion along rows of (65536, 4096) float16
    rows_x = x.reshape(-1, 4096)
    dout = cp.empty_like(rows_x)
    add("diffuse_rows order 1, (65536, 4096) float16 (kernel)",
        functools.partial(cuda.diffuse_rows, rows_x, 1, -np.inf, np.inf, dout), 4 * n)
    # the second baseline, last (its budget bounds the time it adds): torchao's quantizers
    del q8, q4, out, dout
    cp.get_default_memory_pool().free_all_blocks()  # (torch's allocator cannot use CuPy's pool)
    torchao_rows(xt, fused_runs, nvfp4_tensor, put, _budget())
    return rows


if __name__ == "__main__":
    from lowbit.benchrun import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
