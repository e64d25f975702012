#!/usr/bin/env bash
# One device call for the KVarN GPU work (issue 13 items 3-6), most important first: precompile,
# the kernel tests, the benchmark, compute-sanitizer memcheck / racecheck, the front tests.
# Logs under $1 (default $OUT).  Run from the repo root.
set -o pipefail
out=${1:-$OUT}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 - > "$out/numba.log" 2>&1 <<'PY' &
import numpy as np, lowbit
lowbit.quantize(np.ones((1, 16, 64), np.float32), bits=2, scheme="kvarn", kind="value").dequantize()
print("numba warm")
PY
python3 tools/gpu_precompile.py kvarn 2>&1 | tail -1
wait; tail -1 "$out/numba.log"
timeout 100 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_gpu_kvarn.py 2>&1 \
    | tee "$out/tests.log" | grep -v '^\.*$' | tail -30
(cd benchmarks && timeout 70 python3 bench_kvarn_cuda.py) 2>&1 | tee "$out/bench.log" | tail -14
for tool in memcheck racecheck; do
    timeout 45 compute-sanitizer --tool $tool python3 tools/gpu_sanitize_kvarn.py > "$out/$tool.log" 2>&1
    echo "$tool rc=$?"; tail -2 "$out/$tool.log"
done
timeout 60 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_kvarn.py tests/test_kv_cache.py 2>&1 \
    | tee "$out/fronts.log" | grep -v '^\.*$' | tail -20
