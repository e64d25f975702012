"""Run every GPU test and GPU benchmark, writing logs under OUT_DIR (one call on a GPU box).

Usage: python tools/gpu_check.py OUT_DIR [pytest args...]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    extra = sys.argv[2:]
    # every gpu-marked test: tests/test_gpu_*.py and the backend-fixture tests written once
    # for every backend (tests/conftest.py) in the other files
    rc = subprocess.call([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                          f"--junitxml={out / 'gpu-tests.xml'}", "tests", *extra])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from lowbit.benchrun import format_table

    rows = []
    for path in sorted(Path("benchmarks").glob("bench_*_cuda.py")):
        ns: dict = {}
        exec(compile(path.read_text(), str(path), "exec"), ns)  # noqa: S102 - our own file
        if "run" not in ns:  # a script with its own report (bench_kv_generate_cuda.py)
            subprocess.call([sys.executable, path.name], cwd="benchmarks")
            continue
        got = ns["run"](quick=False)
        print(format_table(got), flush=True)
        rows.extend(got)
    (out / "gpu-bench.json").write_text(json.dumps(rows, indent=1))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
