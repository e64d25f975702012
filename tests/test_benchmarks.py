"""Every benchmark in benchmarks/ runs: ``lowbit bench --quick <family>`` exits 0 with a table.

Benchmarks carry their own correctness gates (the result checked against the baseline in the
same run); a benchmark nobody runs breaks silently when the stored record changes (bench_kv's
NumPy reference predated the per-tile exponent).  CUDA benchmarks run on the GPU machine
(``gpu`` marker); stand-alone scripts (no ``run()``) must at least parse ``--help`` (or
compile, if they take no options).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from lowbit.benchrun import default_dir


def _params() -> list:
    out = []
    for path in sorted(default_dir().glob("bench_*.py")):
        family = path.stem.removeprefix("bench_")
        marks = [pytest.mark.gpu] if family.endswith("_cuda") else []
        script = re.search(r"^def run\(", path.read_text(), re.M) is None
        out.append(pytest.param(path, family, script, id=family, marks=marks))
    return out


@pytest.mark.parametrize(("path", "family", "script"), _params())
def test_benchmark_runs_quick(path, family, script, tmp_path):
    if script:  # its own options: --help parses them; without options, it must compile
        has_options = "argparse" in path.read_text()
        cmd = [str(path), "--help"] if has_options else ["-m", "py_compile", str(path)]
        got = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr
        assert "usage:" in got.stdout or not has_options
        return
    rows_file = tmp_path / "rows.json"
    got = subprocess.run([sys.executable, "-m", "lowbit", "bench", "--quick", "--debug", family,
                          "--json", str(rows_file)], capture_output=True, text=True, timeout=900)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-4000:]
    if "skipped (it needs" in got.stdout and not family.endswith("_cuda"):
        pytest.skip(f"bench_{family} needs a package that is not installed")
    rows = json.loads(rows_file.read_text())
    assert rows, got.stdout
    assert all(r["seconds"] > 0 and r["ratio"] > 0 and r["pct_copy"] > 0 for r in rows)
