"""The lowbit command: info, quantize/dequantize round trip, bench, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

import lowbit
from lowbit.benchrun import default_dir
from lowbit.cli import main


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"lowbit     {lowbit.__version__}" in out
    assert "numba" in out and "CUDA" in out


def test_quantize_dequantize_round_trip(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "q.npz"), "--bits", "4",
                 "--group-size", "32", "--symmetric"]) == 0
    assert "QuantizedArray(scheme='rtn'" in capsys.readouterr().out
    assert main(["dequantize", str(tmp_path / "q.npz"), str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    ref = lowbit.quantize(x, bits=4, scheme="rtn", group_size=32, symmetric=True).dequantize()
    np.testing.assert_array_equal(y, ref)


def test_bench_quick_prints_ratio_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lowbit", "bench", "--quick", "affine",
                          "--json", str(tmp_path / "rows.json")],
                         capture_output=True, text=True, timeout=600, check=True)
    assert "numpy vectorized" in out.stdout and "%copy" in out.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {r["name"] for r in rows} >= {"rtn quantize+pack 2-bit g128", "rtn unpack+dequantize 4-bit g128"}
    assert all(r["ratio"] > 0 and r["pct_copy"] > 0 for r in rows)


def test_bench_unknown_family_is_an_error(capsys):
    assert main(["bench", "--quick", "nope"]) == 2
    assert "none of ['nope']" in capsys.readouterr().err


def test_python_dash_m_lowbit_works():
    out = subprocess.run([sys.executable, "-m", "lowbit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and lowbit.__version__ in out.stdout


def test_bench_skips_what_is_not_installed(tmp_path, capsys):
    """A missing baseline package costs its rows (one note), a missing benchmark package its
    table (one note); the other rows and tables are printed complete."""
    shutil.copy(default_dir() / "common.py", tmp_path / "common.py")
    (tmp_path / "bench_a.py").write_text(
        "from common import optional_baseline, row\n"
        "def run(quick=False):\n"
        "    rows = [row('a', '1 B', 1e-3, 'numpy', 2e-3, 8, 1)]\n"
        "    if optional_baseline('lowbit_test_absent_pkg') is not None:\n"
        "        rows.append(row('a', '1 B', 1e-3, 'absent pkg', 1e-3, 8, 1))\n"
        "    return rows\n")
    (tmp_path / "bench_b.py").write_text("import lowbit_test_absent_pkg2\ndef run(quick=False):\n"
                                         "    return []\n")
    assert main(["bench", "--quick", "--dir", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "note: lowbit_test_absent_pkg baseline skipped (lowbit_test_absent_pkg not installed" in out
    assert "note: bench_b skipped (it needs lowbit_test_absent_pkg2, which is not installed" in out
    assert "absent pkg" not in out and out.count("benchmark") == 1  # one table: bench_a's
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [(r["name"], r["baseline"], r["ratio"]) for r in rows] == [("a", "numpy", 2.0)]


def test_bench_rounding_runs_without_pychop(monkeypatch, capsys):
    """benchmarks/bench_rounding.py with pychop hidden (an import of it fails): numpy rows only."""
    monkeypatch.setitem(sys.modules, "pychop", None)
    assert main(["bench", "--quick", "rounding"]) == 0
    out = capsys.readouterr().out
    assert "note: pychop baseline skipped" in out
    assert out.count("numpy plain") == 6 and "pychop numpy" not in out
