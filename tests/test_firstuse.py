"""The first-use notice of the Numba kernels (lowbit/cpu/_firstuse.py): said once, when cold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import lowbit.cpu
from lowbit.cpu import _firstuse

SOURCE = """
import numba as nb

@nb.njit(cache=True)
def plus_one(x):
    return x + 1
"""


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cold_kernel_is_announced_once_then_the_table_holds_the_dispatcher(tmp_path, capsys):
    (tmp_path / "kernels_a.py").write_text(SOURCE)
    mod = load(tmp_path / "kernels_a.py", "kernels_a")
    table = {"plus_one": mod.plus_one}
    _firstuse.watch(table, ("plus_one",))
    assert table["plus_one"] is not mod.plus_one and _firstuse.is_cold(mod.plus_one)
    assert table["plus_one"](1) == 2
    assert capsys.readouterr().err == _firstuse.notice("plus_one") + "\n"
    assert table["plus_one"] is mod.plus_one  # no wrapper left: no per-call cost
    assert not _firstuse.is_cold(mod.plus_one)  # compiled in this process


def test_checking_wrapper_is_announced_by_its_dispatchers(tmp_path, capsys):
    """A Python kernel that validates and calls a listed dispatcher: announced once when that
    dispatcher is cold, then the table holds the wrapper itself."""
    (tmp_path / "kernels_c.py").write_text(SOURCE)
    mod = load(tmp_path / "kernels_c.py", "kernels_c")

    def checked(x):
        if x < 0:
            raise ValueError(f"x must be >= 0, got {x}")
        return mod.plus_one(x)

    checked.dispatchers = (mod.plus_one,)
    table = {"checked": checked}
    _firstuse.watch(table, ("checked",))
    assert table["checked"] is not checked and table["checked"].dispatchers == (mod.plus_one,)
    assert table["checked"](1) == 2
    assert capsys.readouterr().err == _firstuse.notice("checked") + "\n"
    assert table["checked"] is checked
    assert table["checked"](2) == 3 and capsys.readouterr().err == ""


def test_warm_cache_says_nothing(tmp_path, capsys):
    """A fresh dispatcher of the same source finds the index written by the first compile."""
    (tmp_path / "kernels_b.py").write_text(SOURCE)
    load(tmp_path / "kernels_b.py", "kernels_b").plus_one(1)
    again = load(tmp_path / "kernels_b.py", "kernels_b_again").plus_one
    assert not again.overloads and not _firstuse.is_cold(again)
    table = {"plus_one": again}
    _firstuse.watch(table, ("plus_one",))
    assert table["plus_one"](2) == 3
    assert capsys.readouterr().err == ""


def test_notice_names_the_kernel_and_the_expected_time():
    assert _firstuse.notice("kvarn_encode") == (
        "lowbit: compiling the Numba kernel kvarn_encode for first use (about 60 s on 2 cores; "
        "cached for later runs)")
    assert "typically 5-30 s" in _firstuse.notice("fwht")


@pytest.mark.parametrize("name", lowbit.cpu.KERNELS)
def test_every_table_kernel_is_watched_or_plain(name):
    fn = getattr(lowbit.cpu, name)
    # a dispatcher, or its first-call wrapper (same signature), or a checking Python wrapper
    # naming the dispatchers it calls (their first compile is announced for it)
    assert hasattr(fn, "py_func") or all(hasattr(d, "py_func") for d in fn.dispatchers)
