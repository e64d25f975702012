"""The lowbit command: info, quantize/dequantize round trip, bench, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lowbit
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


def test_quantize_reports_bad_options(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((4, 6), np.float32))
    rc = main(["quantize", str(tmp_path / "x.npy"), str(tmp_path / "q.npz"), "--bits", "4",
               "--group-size", "4"])
    assert rc == 2
    assert "group_size=4 does not divide the axis length 6" in capsys.readouterr().err


def test_dequantize_rejects_a_non_lowbit_file(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"nope")
    assert main(["dequantize", str(tmp_path / "bad.npz"), str(tmp_path / "y.npy")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


def test_bench_quick_prints_ratio_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lowbit", "bench", "--quick", "affine",
                          "--json", str(tmp_path / "rows.json")],
                         capture_output=True, text=True, timeout=600, check=True)
    assert "numpy vectorized" in out.stdout and "%copy" in out.stdout
    import json

    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {r["name"] for r in rows} >= {"rtn quantize+pack 2-bit g128", "rtn unpack+dequantize 4-bit g128"}
    assert all(r["ratio"] > 0 and r["pct_copy"] > 0 for r in rows)


def test_bench_unknown_family_is_an_error(capsys):
    assert main(["bench", "--quick", "nope"]) == 2
    assert "none of ['nope']" in capsys.readouterr().err


def test_python_dash_m_lowbit_works():
    out = subprocess.run([sys.executable, "-m", "lowbit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and lowbit.__version__ in out.stdout


@pytest.mark.parametrize("argv", [["quantize"], ["bogus"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
