#!/usr/bin/env bash
# One device call for the codebook CUDA twins (issue 20's last build item), most important first:
# precompile, the kernel tests, compute-sanitizer memcheck / racecheck, the front tests.
# Logs under $1 (default $OUT).  Run from the repo root.
set -o pipefail
out=${1:-$OUT}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 - > "$out/numba.log" 2>&1 <<'PY' &
import numpy as np, lowbit
x = np.ones((1, 16, 64), np.float32)
lowbit.quantize(x, bits=2, scheme="kvarn", kind="value", value_grid="lloyd-max").dequantize()
lowbit.quantize(x, bits=2, scheme="turboquant", kind="key", variant="prod").dequantize()
lowbit.quantize(x, scheme="codebook", codebook="nf4", rounding="stochastic", seed=1).dequantize()
print("numba warm")
PY
python3 tools/gpu_precompile.py codebook kvarn_grid codec packing kvarn 2>&1 | tail -1
wait; tail -1 "$out/numba.log"
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_codebook.py tests/test_gpu_kvarn_grid.py \
    2>&1 | tee "$out/tests.log" | grep -v '^\.*$' | tail -30
for tool in memcheck racecheck; do
    timeout 120 compute-sanitizer --tool $tool python3 tools/gpu_sanitize_codebook.py > "$out/$tool.log" 2>&1
    echo "$tool rc=$?"; tail -2 "$out/$tool.log"
done
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_codebook.py tests/test_kvarn_grid.py \
    tests/test_turboquant.py tests/test_kv_cache.py -k "codebook or grid or turboquant" 2>&1 \
    | tee "$out/fronts.log" | grep -v '^\.*$' | tail -20
