"""Lazy compilation of lowbit's CUDA sources with CuPy (one RawModule per source and device)."""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

#: Options for every lowbit kernel.  --fmad=false: no multiply-add contraction, so float
#: arithmetic rounds exactly as the Numba twin's (LLVM does not contract without fastmath).
OPTIONS = ("-std=c++17", "--fmad=false")

#: Launch geometry shared by the grid-stride kernels.
THREADS = 256


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([A-Za-z0-9_]+\.cuh)"[ \t]*$', re.MULTILINE)


def source(name: str) -> str:
    """The text of ``lowbit/cuda/<name>.cu`` with ``common.cuh`` prepended and every
    ``#include "x.cuh"`` of a lowbit header replaced by the header's text (once per source),
    so that CuPy's compile cache, which hashes the source text, sees header changes too."""
    pkg = resources.files("lowbit.cuda")
    seen = {"common.cuh"}

    def inline(match: re.Match[str]) -> str:
        header = match.group(1)
        if header in seen:
            return f"// {header}: already included"
        seen.add(header)
        return _INCLUDE.sub(inline, pkg.joinpath(header).read_text())

    body = _INCLUDE.sub(inline, pkg.joinpath(f"{name}.cu").read_text())
    return pkg.joinpath("common.cuh").read_text() + "\n" + body


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


def persistent_grid(work_items: int, per_block: int = THREADS, blocks_per_sm: int = 16) -> tuple[int]:
    """Blocks for a grid-stride loop over ``work_items`` items of one thread each, at most
    ``blocks_per_sm`` per multiprocessor, so that a large input does not launch millions of
    short-lived blocks (each thread loops over its share instead)."""
    return (max(1, min((work_items + per_block - 1) // per_block, blocks_per_sm * sm_count(cupy_device()))),)


def resident_grid(k: Any, threads: int, items: int) -> tuple[int]:
    """Blocks for a grid-stride kernel ``k``: as many as are resident on the device at once
    (registers and shared memory bound them, per the driver's occupancy calculator), at most
    one thread per item."""
    return (max(1, min(-(-items // threads), _resident_blocks(k.kernel.ptr, threads))),)


@functools.cache
def _resident_blocks(function: int, threads: int) -> int:
    """Blocks of ``threads`` resident on the current device at once (per kernel function:
    each device has its own function handles)."""
    from cupy_backends.cuda.api import driver

    per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(function, threads, 0)
    return sm_count(cupy_device()) * max(1, per_sm)


@functools.cache
def sm_count(device: int) -> int:
    """Multiprocessors of CUDA device ``device``."""
    import cupy

    return int(cupy.cuda.runtime.getDeviceProperties(device)["multiProcessorCount"])


def check_operands(**arrays: Any) -> None:
    """Raise unless every array is a C-contiguous CuPy array on the current device.

    Kernel wrappers call this before a launch: a host array, another device's array or a
    strided view would otherwise be read (or written) out of bounds.  ``TypeError`` for a
    non-CuPy array, ``ValueError`` for the wrong device or a non-contiguous one.
    """
    import cupy

    device = cupy_device()
    for name, a in arrays.items():
        if not isinstance(a, cupy.ndarray):
            raise TypeError(f"{name} must be a cupy.ndarray on cuda:{device}, got {type(a).__module__}."
                            f"{type(a).__name__}")
        if a.device.id != device:
            raise ValueError(f"{name} lives on cuda:{a.device.id}, but the kernel runs on cuda:{device}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (strides {a.strides} for shape {a.shape})")
