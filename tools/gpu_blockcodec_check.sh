#!/usr/bin/env bash
# One device call for the fused block-format kernels (issue 15: block_quantize, block_dequantize,
# finite_block_amax), most important first: precompile, the kernel and front tests, the block
# tests of the older files (now through the fused kernels), compute-sanitizer memcheck /
# racecheck, the benchmark (fused rows beside the old multi-pass rows, % of copy).
# Logs under $1 (default $OUT).  Run from the repo root.
set -o pipefail
out=${1:-$OUT}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 - > "$out/numba.log" 2>&1 <<'PY' &
import numpy as np, lowbit
for s in ("mxfp4", "mxfp8", "nvfp4", "mxint8"):
    lowbit.quantize(np.ones((2, 40), np.float32), scheme=s, rounding="stochastic", seed=1).dequantize()
print("numba warm")
PY
python3 tools/gpu_precompile.py blockcodec codec packing 2>&1 | tail -1
wait; tail -1 "$out/numba.log"
timeout 420 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_blockcodec.py \
    2>&1 | tee "$out/tests.log" | grep -v '^\.*$' | tail -30
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_formats_backends.py tests/test_backends.py \
    -k "block or mx or nvfp4 or saved" 2>&1 | tee "$out/fronts.log" | grep -v '^\.*$' | tail -20
for tool in memcheck racecheck; do
    timeout 180 compute-sanitizer --tool $tool python3 tools/gpu_sanitize_formats.py > "$out/$tool.log" 2>&1
    echo "$tool rc=$?"; tail -2 "$out/$tool.log"
done
(cd benchmarks && timeout 240 python3 bench_formats_cuda.py) > "$out/bench.log" 2>&1; echo "bench rc=$?"
grep -E "block_quantize|multi-pass|lowbit.quantize (mx|nv)|mxfp4 stochastic|dequantize|finite_block" "$out/bench.log"
