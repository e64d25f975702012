#!/usr/bin/env bash
# One device call for a whole session's CUDA work (about 10 minutes): precompile every module, the
# whole GPU suite (12 workers) with compute-sanitizer runs of the kvarn, codebook and block-format
# kernels beside it, then the benchmarks of the KVarN store / decoders, decode attention and the
# formats.  Logs under $1 (default $OUT); run from the repo root with PYTHONPATH set.  torchao
# goes on the path of the formats benchmark only (TORCHAO_SITE: where its wheel was installed):
# on the test run's path transformers imports it, and a SyntaxWarning of torchao 0.18 fails
# the collection of tests/test_kv_hf.py (2026-12-04).
set -o pipefail
out=${1:-$OUT}
export PYTHONUNBUFFERED=1
timeout 60 python3 tools/gpu_precompile.py > "$out/precompile.log" 2>&1; tail -1 "$out/precompile.log"
(
    # the codebook runs need more than 60 s (timed out on 2026-12-03)
    # SANITIZE: the runs to make (default all; e.g. SANITIZE="memcheck:formats:90")
    for job in ${SANITIZE:-memcheck:kvarn:60 racecheck:kvarn:60 memcheck:codebook:120 racecheck:codebook:120 memcheck:formats:60}; do
        job=${job//:/ }
        set -- $job
        timeout "$3" compute-sanitizer --tool "$1" python3 "tools/gpu_sanitize_$2.py" > /tmp/san.log 2>&1
        echo "$1 $2 rc=$?: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|matched|Error' /tmp/san.log | tail -2 | tr '\n' ' ')"
    done
) > "$out/sanitize.log" 2>&1 &
timeout ${PYTEST_S:-420} python3 -m pytest -m gpu ${PYTEST_V:--q} -p no:cacheprovider -p no:benchmark -n ${WORKERS:-14} -rfE \
    --junitxml="$out/gpu-tests.xml" ${PYTEST_FILES:-tests} > "$out/pytest.log" 2>&1
echo "pytest rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" "$out/pytest.log" | tail -40
# PYTEST_V=-v: one line per test, so a run killed at PYTEST_S still shows what passed and failed
case "${PYTEST_V:-}" in *-v*) echo "per-test lines: $(grep -c " PASSED " "$out/pytest.log") passed, $(grep -c " SKIPPED " "$out/pytest.log") skipped"; grep -E " (FAILED|ERROR) " "$out/pytest.log" | sort -u | head -40;; esac
wait
cat "$out/sanitize.log"
cd benchmarks || exit 1
{
    # BENCH: which to run (default "kvarn attend formats")
    case " ${BENCH:-kvarn attend formats} " in *" kvarn "*)
    timeout 45 python3 -c "import bench_kvarn_cuda as b; from lowbit.benchrun import format_table; print(format_table(b.run()))";; esac
    case " ${BENCH:-kvarn attend formats} " in *" attend "*) timeout 60 python3 bench_kv_attend_cuda.py;; esac
    case " ${BENCH:-kvarn attend formats} " in *" formats "*) ;; *) false;; esac && PYTHONPATH=${TORCHAO_SITE:+$TORCHAO_SITE:}$PYTHONPATH timeout ${FORMATS_S:-100} python3 -c "import bench_formats_cuda as b; from lowbit.benchrun import format_table; print(format_table(b.run()))"
} > "$out/bench.log" 2>&1
grep -vE "^ *$" "$out/bench.log" | cut -c1-170 | tail -60
