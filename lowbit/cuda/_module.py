"""Lazy compilation of lowbit's CUDA sources with CuPy (one RawModule per source and device)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

#: Options for every lowbit kernel.  --fmad=false: no multiply-add contraction, so float
#: arithmetic rounds exactly as the Numba twin's (LLVM does not contract without fastmath).
OPTIONS = ("-std=c++17", "--fmad=false")

#: Launch geometry shared by the grid-stride kernels.
THREADS = 256


def source(name: str) -> str:
    """The text of ``lowbit/cuda/<name>.cu`` with ``common.cuh`` prepended (hashed by CuPy)."""
    pkg = resources.files("lowbit.cuda")
    return pkg.joinpath("common.cuh").read_text() + "\n" + pkg.joinpath(f"{name}.cu").read_text()


@functools.cache
def _module(name: str, device: int, defines: tuple[str, ...]) -> Any:
    import cupy

    return cupy.RawModule(code=source(name), options=OPTIONS + defines)


def kernel(source_name: str, symbol: str, defines: tuple[str, ...] = ()) -> Any:
    """The compiled kernel ``symbol`` from ``source_name``.cu on the current device."""
    return _function(source_name, cupy_device(), defines, symbol)


def cupy_device() -> int:
    """CuPy's current device id."""
    import cupy

    return int(cupy.cuda.runtime.getDevice())


@functools.cache
def _function(name: str, device: int, defines: tuple[str, ...], symbol: str) -> Any:
    # one kernel object per device and symbol: a fresh get_function per launch costs host time
    return _module(name, device, defines).get_function(symbol)


def suffix(dtype: Any) -> str:
    """Kernel-name suffix for an input/output dtype (uint16 = bfloat16 bits)."""
    try:
        return _SUFFIXES[dtype]
    except (KeyError, TypeError):
        import numpy as np

        try:
            return _SUFFIXES[np.dtype(dtype)]
        except (KeyError, TypeError):
            raise TypeError(f"no CUDA kernel for dtype {dtype}") from None


def _suffixes() -> dict[Any, str]:
    import numpy as np

    return {np.dtype(np.float16): "f16", np.dtype(np.uint16): "bf16",
            np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


#: dtype -> suffix, built once: a dict of four np.dtype() calls per lookup cost microseconds
_SUFFIXES = _suffixes()


def grid(work_items: int, per_block: int = THREADS, max_blocks: int = 65535 * 16) -> tuple[int]:
    """Blocks for a grid-stride loop over ``work_items`` items of one thread each."""
    return (max(1, min((work_items + per_block - 1) // per_block, max_blocks)),)
