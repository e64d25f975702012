"""Every error of the lowbit command is one line on stderr naming the argument or file, exit 2.

One test per bad input a new user met (issue 18); ``--debug`` shows the traceback instead, and
an unexpected exception (a bug) is one line with exit status 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lowbit
from lowbit.cli import main


def error_lines(err: str) -> list[str]:
    """stderr without the informational first-compilation notice of the Numba kernels."""
    return [line for line in err.splitlines() if not line.startswith("lowbit: compiling")]


def run_error(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    """Run ``lowbit argv``; assert the exit status and one line on stderr; return that line."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert rc == status, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Good and bad input files in tmp_path, by role."""
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.save(tmp_path / "ints.npy", np.arange(6))
    lowbit.quantize(x, bits=4, scheme="rtn").save(tmp_path / "q.npz")
    good = (tmp_path / "q.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x55  # inside a member's data: the zip CRC no longer matches
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    (tmp_path / "junk.npz").write_bytes(b"hello, this is not an archive")
    npy = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "short.npy").write_bytes(npy[: len(npy) - 10])
    return {name: str(tmp_path / f) for name, f in [
        ("x", "x.npy"), ("obj", "obj.npy"), ("ints", "ints.npy"), ("q", "q.npz"),
        ("truncated", "truncated.npz"), ("flipped", "flipped.npz"), ("junk", "junk.npz"),
        ("short", "short.npy"), ("missing", "missing.npy"), ("out", "out.npz"),
        ("nodir", "no/such/folder/out.npz"), ("dir", "."),
    ]}


# -- quantize -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "role, expect",
    [
        ("missing", "no such file"),
        ("obj", "holds Python objects"),
        ("ints", "dtype int64"),
        ("short", "truncated or corrupt"),
        ("q", "an .npz archive"),
        ("junk", "not a .npy file"),
    ],
)
def test_quantize_bad_input_file(files, capsys, role, expect):
    line = run_error(["quantize", files[role], files["out"], "--bits", "4"], capsys)
    assert line.startswith("lowbit quantize: input ")
    assert repr(files[role]) in line and expect in line


def test_quantize_output_folder_missing(files, capsys):
    line = run_error(["quantize", files["x"], files["nodir"], "--bits", "4"], capsys)
    assert repr(files["nodir"]) in line and "does not exist" in line
    line = run_error(["quantize", files["x"], str(Path(files["x"]).parent), "--bits", "4"], capsys)
    assert "is a folder" in line


def test_quantize_bad_axis_is_one_line(files, capsys):
    line = run_error(["quantize", files["x"], files["out"], "--bits", "4", "--axis", "foo"], capsys)
    assert line.startswith("lowbit quantize: argument --axis: expected an integer or 'none', got 'foo'")


def test_quantize_option_the_scheme_refuses(files, capsys):
    line = run_error(["quantize", files["x"], files["out"], "--bits", "4", "--group-size", "48"],
                     capsys)
    assert "group_size=48 does not divide the axis length 64" in line
    line = run_error(["quantize", files["x"], files["out"], "--bits", "4", "--option", "nokey"],
                     capsys)
    assert "--option expects KEY=VALUE, got 'nokey'" in line


@pytest.mark.parametrize("argv", [["quantize"], ["bogus"], ["quantize", "a", "b", "--bits", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    line = run_error(argv, capsys)
    assert line.startswith("lowbit") and "--help" in line


# -- dequantize -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "role, expect",
    [
        ("missing", "no such file"),
        ("truncated", "truncated"),
        ("flipped", "CRC"),
        ("x", "it is a .npy file"),
        ("junk", "not a zip archive"),
    ],
)
def test_dequantize_bad_input_file(files, capsys, role, expect):
    line = run_error(["dequantize", files[role], str(Path(files["out"]).with_suffix(".npy"))], capsys)
    assert line.startswith("lowbit dequantize: ")
    assert repr(files[role]) in line and expect in line
    assert "pickle" not in line  # a junk file is not "pickled data" (numpy's guess)


def test_dequantize_output_folder_missing(files, capsys):
    line = run_error(["dequantize", files["q"], files["nodir"].replace(".npz", ".npy")], capsys)
    assert "does not exist" in line


def test_dequantize_writes_the_named_file(files, tmp_path):
    """numpy.save would append ".npy" to a name without it; the command writes what it says."""
    assert main(["dequantize", files["q"], str(tmp_path / "x_hat")]) == 0
    assert np.load(tmp_path / "x_hat").shape == (8, 64)


# -- debug and bugs ------------------------------------------------------------------------------
def test_debug_shows_the_traceback(files):
    out = subprocess.run([sys.executable, "-m", "lowbit", "dequantize", files["junk"], "y.npy",
                          "--debug"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" in out.stderr and "ValueError" in out.stderr


def test_an_unexpected_exception_is_one_line_with_status_1(files, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(lowbit, "quantize", broken)
    line = run_error(["quantize", files["x"], files["out"], "--bits", "4"], capsys, status=1)
    assert line == "lowbit quantize: boom (RuntimeError: a bug in lowbit? --debug shows the traceback)"


# -- no silent defaults (issue 18 item 3) --------------------------------------------------------
@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--scheme", "rtn"], "--scheme rtn needs --bits (its options: bits (required), axis=-1"),
        (["--scheme", "codebook"], "--scheme codebook needs --option codebook=VALUE"),
        (["--scheme", "nope", "--bits", "4"], "--scheme: scheme must be one of"),
    ],
)
def test_quantize_needs_what_the_scheme_cannot_guess(files, capsys, argv, expect):
    line = run_error(["quantize", files["x"], files["out"], *argv], capsys)
    assert line.startswith("lowbit quantize: ") and expect in line
    assert not Path(files["out"]).exists()  # refused before any work


def test_kv_scheme_needs_kind(tmp_path, capsys):
    np.save(tmp_path / "k.npy", np.ones((1, 16, 64), np.float32))
    line = run_error(["quantize", str(tmp_path / "k.npy"), str(tmp_path / "k.npz"),
                      "--scheme", "kvarn-k4v2-g128"], capsys)
    assert line.startswith("lowbit quantize: --scheme kvarn-k4v2-g128 needs --kind (its options: kind (required)")
    line = run_error(["quantize", str(tmp_path / "k.npy"), str(tmp_path / "k.npz"),
                      "--scheme", "kivi", "--kind", "key"], capsys)
    assert "--scheme kivi needs --bits" in line
    assert main(["quantize", str(tmp_path / "k.npy"), str(tmp_path / "k.npz"),
                 "--scheme", "kvarn-k4v2-g128", "--kind", "value"]) == 0
    assert lowbit.load(tmp_path / "k.npz").meta["bits"] == 2
