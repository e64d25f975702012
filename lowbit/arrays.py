"""Array-type detection and zero-copy conversion between numpy, CuPy and PyTorch.

Every public lowbit function follows one rule: *array type in = array type out*.
A front calls :func:`to_backend` on its inputs, which gives a numpy array (host)
or a CuPy array (device) that shares memory with the caller's array, plus an
:class:`Origin` recording how to hand results back; :func:`from_backend` does
the reverse.  Nothing here ever copies between host and device.

bfloat16 has no numpy/CuPy dtype: a bfloat16 torch tensor is carried as its
raw bits in a ``uint16`` array, and ``Origin.dtype == "bfloat16"`` says so.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

#: Floating dtypes lowbit accepts as input, by name.
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

Array = Any  # numpy.ndarray | cupy.ndarray (kept loose: cupy is optional)


@dataclass(frozen=True)
class Origin:
    """Where an input came from, so that results can go back there.

    Attributes
    ----------
    library : {"numpy", "cupy", "torch"}
    dtype : {"float16", "bfloat16", "float32", "float64"}
        The caller's dtype (for bfloat16 the backend array holds uint16 bits).
    device : str
        ``"cpu"`` or ``"cuda:N"``.
    """

    library: str
    dtype: str
    device: str

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"


def _module_of(x: Any) -> str:
    return type(x).__module__.split(".", 1)[0]


def is_torch(x: Any) -> bool:
    """True for a ``torch.Tensor`` (checked without importing torch)."""
    return "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor)


def is_cupy(x: Any) -> bool:
    """True for a ``cupy.ndarray`` (checked without importing cupy)."""
    return "cupy" in sys.modules and isinstance(x, sys.modules["cupy"].ndarray)


def is_dask(x: Any) -> bool:
    """True for a ``dask.array.Array`` (checked without importing dask): lowbit.dask's input."""
    return "dask.array" in sys.modules and isinstance(x, sys.modules["dask.array"].Array)


def xp_of(arr: Array) -> ModuleType:
    """The array module (numpy or cupy) of a backend array."""
    if is_cupy(arr):
        return sys.modules["cupy"]
    return np


def backend(arr: Array) -> ModuleType:
    """The kernel table for a backend array: :mod:`lowbit.cpu` or :mod:`lowbit.cuda`."""
    if is_cupy(arr):
        from lowbit import cuda

        return cuda
    from lowbit import cpu

    return cpu


@functools.lru_cache(maxsize=64)
def _dtype_name(dtype: Any) -> str:
    # cached: str() of a numpy dtype costs microseconds on every call
    return str(dtype).replace("torch.", "")


def to_backend(
    x: Any, name: str = "x", *, allow_empty: bool = False, dtypes: tuple[str, ...] = FLOAT_DTYPES
) -> tuple[Array, Origin]:
    """Wrap ``x`` as a numpy or CuPy array without copying.

    Parameters
    ----------
    x : numpy.ndarray, cupy.ndarray or torch.Tensor
        A floating array (float16, bfloat16 [torch only], float32 or float64).
    name : str
        The argument's name, used in error messages.
    allow_empty : bool
        Accept arrays with no elements.
    dtypes : tuple of str
        Accepted dtype names (default: the floating dtypes).

    Returns
    -------
    arr : numpy.ndarray or cupy.ndarray
        Shares memory with ``x`` (bfloat16 as uint16 bits). May be non-contiguous.
    origin : Origin

    Raises
    ------
    TypeError
        ``x`` is not an array of a supported library, or its dtype is not floating.
    ValueError
        ``x`` is empty and ``allow_empty`` is False.
    """
    if isinstance(x, np.ndarray):
        if type(x) is not np.ndarray:
            raise TypeError(f"{name} must be a plain numpy.ndarray, got a {type(x).__name__} subclass")
        arr, origin = x, Origin("numpy", _dtype_name(x.dtype), "cpu")
    elif is_cupy(x):
        arr, origin = x, Origin("cupy", _dtype_name(x.dtype), f"cuda:{x.device.id}")
    elif is_torch(x):
        arr, origin = _torch_to_backend(x)
    else:
        raise TypeError(
            f"{name} must be a numpy.ndarray, cupy.ndarray or torch.Tensor, got {type(x).__name__}"
        )
    if origin.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {dtypes}, got {origin.dtype}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); lowbit needs at least one element")
    return arr, origin


def _torch_to_backend(t: Any) -> tuple[Array, Origin]:
    import torch

    t = t.detach()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    dtype = _dtype_name(t.dtype)
    device = "cpu" if t.device.type == "cpu" else f"cuda:{t.device.index or 0}"
    if t.device.type not in ("cpu", "cuda"):
        raise TypeError(f"torch tensors on {t.device} are not supported (cpu and cuda are)")
    bits = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    if t.device.type == "cpu":
        arr = np.from_dlpack(bits)
    else:
        import cupy
        import torch.utils.dlpack

        # A DLPack capsule, not the stream handshake of __dlpack__(stream=...): lowbit's kernels
        # run on torch's current stream (stream_for), so no cross-stream event is needed, and
        # the handshake cost ~25 us per call on an H200 host.
        with cupy.cuda.Device(t.device.index or 0):
            arr = cupy.from_dlpack(torch.utils.dlpack.to_dlpack(bits))
    if t.dtype == torch.bfloat16:
        arr = arr.view(np.uint16)
    return arr, Origin("torch", dtype, device)


def kernel_input(arr: Array, dtype: str) -> Array:
    """The array a kernel reads: C-contiguous; on the CPU, float16/bfloat16 widened to float32.

    Numba cannot read float16 (nor bfloat16 bits), so CPU kernels get float32 (an exact
    widening); CUDA kernels read float16 and bfloat16 (uint16 bits) natively.
    """
    arr = contiguous(arr)
    if not is_cupy(arr) and dtype in ("float16", "bfloat16"):
        return to_float(arr, dtype)
    return arr


def kernel_output_dtype(arr: Array, dtype: str) -> Any:
    """The dtype a kernel writes for a result of logical ``dtype`` (see :func:`kernel_input`):
    CUDA kernels ``dtype`` itself (bfloat16 as uint16 bits), CPU kernels float32 (or float64)
    -- the precision they compute 16-bit results in.  Decoders use
    :func:`decode_output_dtype`."""
    if is_cupy(arr):
        return np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
    return np.float64 if dtype == "float64" else np.float32


def decode_output_dtype(arr: Array, dtype: str) -> Any:
    """The dtype a *decoder* kernel writes for a result of logical ``dtype``.

    Decoded values (code * scale + offset, table value * scale) are exact in float64 for the
    scales lowbit stores, and a 16-bit result must be rounded once, from that exact value.
    CUDA decoders write ``dtype`` itself, rounding once.  Numba cannot write float16 (nor
    bfloat16), so CPU decoders write float64 for 16-bit results and :func:`to_dtype` rounds
    them once; through float32 they would round twice (issue 12, item 4).
    """
    if is_cupy(arr):
        return np.uint16 if dtype == "bfloat16" else np.dtype(dtype)
    return np.float32 if dtype == "float32" else np.float64


def kernel_output(out: Array, dtype: str) -> Array:
    """Turn a kernel's output (dtype from :func:`kernel_output_dtype`) into ``dtype`` storage."""
    if is_cupy(out) or (dtype != "bfloat16" and out.dtype == np.dtype(dtype)):
        return out
    return to_dtype(out, dtype)


def from_backend(arr: Array, origin: Origin) -> Any:
    """Hand a backend array back in the caller's library (no copy).

    ``arr`` must already have the backend dtype that matches ``origin.dtype``
    (uint16 bits for bfloat16); see :func:`to_dtype`.
    """
    if origin.library != "torch":
        return arr
    import torch

    t = torch.from_dlpack(arr)
    if origin.dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t


def check_same_device(named: dict[str, Array]) -> None:
    """Raise ``ValueError`` if the backend arrays live on different devices."""
    where = {k: (f"cuda:{a.device.id}" if is_cupy(a) else "cpu") for k, a in named.items() if a is not None}
    if len(set(where.values())) > 1:
        listing = ", ".join(f"{k} on {v}" for k, v in where.items())
        raise ValueError(f"arrays live on different devices ({listing}); lowbit never copies silently")


def contiguous(arr: Array) -> Array:
    """C-contiguous version of ``arr`` on the same device (a copy only if needed)."""
    return xp_of(arr).ascontiguousarray(arr)


def to_float(arr: Array, dtype: str, compute: str = "float32") -> Array:
    """Convert a backend array holding ``dtype`` values to ``compute`` precision.

    float32/float64 inputs are returned as they are when ``compute`` matches;
    float16 and bfloat16 (uint16 bits) are widened exactly (:func:`lowbit.codec.widen_exact`).
    """
    if dtype == "bfloat16":
        from lowbit.codec import widen_exact
        from lowbit.formats import BFLOAT16

        return widen_exact(arr, BFLOAT16).astype(compute, copy=False)
    return arr.astype(compute, copy=False)


def to_dtype(arr: Array, dtype: str) -> Array:
    """Round a float32/float64 backend array to ``dtype`` (nearest-even), **once**.

    The output conversion of every front: each result is the ``dtype`` value nearest to the
    input value (ties to even; beyond the range +-Inf), never a rounding of a rounding, so a
    float64 input holding an exact result (the CPU decoders' 16-bit outputs,
    :func:`kernel_output_dtype`) is rounded correctly.  float16 comes from the IEEE conversion
    (numpy converts float64 to float16 directly); bfloat16 results are returned as uint16
    bits, rounded by the shared codec (:func:`lowbit.codec.to_codes`, from float64 too;
    overflow to +-Inf, NaN stays NaN with its sign).
    """
    if dtype != "bfloat16":
        with np.errstate(over="ignore"):  # beyond the range: +-Inf, as documented
            return arr.astype(dtype, copy=False)
    from lowbit.codec import to_codes
    from lowbit.formats import BFLOAT16

    return to_codes(arr, BFLOAT16, "nearest_even", "nonfinite")


@contextlib.contextmanager
def stream_for(origin: Origin) -> Iterator[None]:
    """Run CuPy kernels on the caller's stream and device.

    For torch CUDA tensors this is torch's current stream, so that lowbit's
    kernels are ordered with the caller's own work; otherwise CuPy's current
    stream on the input's device.
    """
    if not origin.on_gpu:
        yield
        return
    import cupy

    dev = int(origin.device.split(":")[1])
    with cupy.cuda.Device(dev):
        if origin.library == "torch":
            import torch

            with _external_stream(torch.cuda.current_stream(dev)):
                yield
        else:
            yield


_EXTERNAL_STREAMS: dict[tuple[int, int], Any] = {}


def _external_stream(ts: Any) -> Any:
    """CuPy's view of torch stream ``ts``, cached by device and handle: wrapping it anew costs
    host time on every call, and the view does not own the stream, so a handle that torch
    reuses still names the right stream."""
    key = (ts.device.index or 0, ts.cuda_stream)
    stream = _EXTERNAL_STREAMS.get(key)
    if stream is None:
        import cupy

        stream = _EXTERNAL_STREAMS[key] = cupy.cuda.Stream.from_external(ts)
    return stream


@contextlib.contextmanager
def cupy_uses_torch_memory() -> Iterator[None]:
    """CuPy allocates device memory from torch's caching allocator inside the block.

    For capturing lowbit's CuPy work in a ``torch.cuda.CUDAGraph`` (e.g. a decode step of
    :class:`lowbit.kv.QuantizedKVCache` built with ``check_finite=False``): during capture
    torch serves the allocations from the graph's private pool and keeps that memory for the
    graph's replays, whereas CuPy's own pool would call ``cudaMalloc``, which a capture
    forbids, and could hand memory a graph still uses to later work.  Each allocation holds
    a uint8 torch tensor on the current device and torch's current stream (freed when CuPy
    frees the memory; torch then reuses it in that stream's order, so run the CuPy work on
    torch's current stream, as :func:`stream_for` does).  Restores the previous allocator on
    exit.
    """
    import cupy
    import torch

    def allocate(size: int) -> Any:
        device = cupy.cuda.Device().id
        t = torch.empty(max(int(size), 1), dtype=torch.uint8, device=f"cuda:{device}")
        return cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(t.data_ptr(), size, t, device), 0)

    previous = cupy.cuda.get_allocator()
    cupy.cuda.set_allocator(allocate)
    try:
        yield
    finally:
        cupy.cuda.set_allocator(previous)


def done_event(arr: Array) -> Any:
    """An event recorded now on the current stream (None for a host array): waiting on it
    later waits for the work queued so far, whichever stream is current by then."""
    if not is_cupy(arr):
        return None
    import cupy

    event = cupy.cuda.Event(disable_timing=True)
    event.record()
    return event


def device_constant(make: Any, *args: Any, like: Array) -> Array:
    """``make(*args)`` (a numpy array of constants of an algorithm, e.g. a code table) in
    ``like``'s array module: as made for a host array; for a CuPy array a copy on its device,
    uploaded once per ``(make, args, device)`` and cached (read-only by use), so that no later
    call copies from the host (a host-to-device copy per call would synchronize with the host
    and keep the caller out of a CUDA graph).  ``args`` must be hashable."""
    if not is_cupy(like):
        return make(*args)
    return _device_constant(make, args, int(like.device.id))


@functools.lru_cache(maxsize=256)
def _device_constant(make: Any, args: tuple[Any, ...], device: int) -> Array:
    import cupy

    with cupy.cuda.Device(device):
        out = cupy.asarray(make(*args))
        cupy.cuda.get_current_stream().synchronize()  # complete before any other stream reads it
    return out


def zero(arr: Array) -> None:
    """Set ``arr`` (C-contiguous) to zero; on a GPU by one asynchronous memset, not a kernel."""
    if is_cupy(arr):
        arr.data.memset_async(0, arr.nbytes)
    else:
        arr[...] = 0


def axis_last(arr: Array, axis: int | None) -> Array:
    """``arr`` with ``axis`` moved last (a view; ``axis=None``: ``arr`` itself), the order in
    which the grouped schemes lay their elements out flat."""
    return arr if axis is None else xp_of(arr).moveaxis(arr, axis, -1)


def axis_back(flat: Array, shape: tuple[int, ...], axis: int | None) -> Array:
    """Inverse of :func:`axis_last` for the flat result: a C-contiguous array of ``shape``."""
    if axis is None:
        return flat.reshape(shape)
    moved = list(shape)
    moved.append(moved.pop(axis))
    xp = xp_of(flat)
    return xp.ascontiguousarray(xp.moveaxis(flat.reshape(moved), -1, axis))


def host_copy(arr: Array) -> np.ndarray:
    """An explicit device-to-host copy (used only where the user asked for one, e.g. ``save``)."""
    return arr.get() if is_cupy(arr) else np.asarray(arr)
