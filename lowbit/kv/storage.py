"""Storage helpers of :class:`lowbit.kv.QuantizedKVCache`: the growing tile arrays and the
checks that keep a cache's arrays in one array module (numpy or CuPy) and on one device."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np

from lowbit.arrays import contiguous, is_cupy, is_torch, xp_of


def location(a: Any) -> tuple[str, int | None]:
    """(array module name, CUDA device id or None) of a numpy / CuPy array."""
    return ("cupy", int(a.device.id)) if is_cupy(a) else ("numpy", None)


def describe(place: tuple[str, int | None]) -> str:
    return "numpy (host)" if place[1] is None else f"CuPy (cuda:{place[1]})"


def check_array(a: Any, name: str) -> None:
    if is_torch(a):
        raise TypeError(f"{name} is a torch.Tensor: QuantizedKVCache takes numpy or CuPy arrays "
                        "(torch models: lowbit.kv.hf; or convert with DLPack, e.g. cupy.from_dlpack)")
    if not isinstance(a, np.ndarray) and not is_cupy(a):
        raise TypeError(f"{name} must be a numpy.ndarray or cupy.ndarray, got {type(a).__name__}")


def check_finite(xp: Any, named: dict[str, Any], context: str = "") -> None:
    """ValueError naming the first array (None skipped) that holds NaN or Inf.  On a GPU the
    arrays' flags are read back together: one host synchronization (input validation)."""
    named = {n: a for n, a in named.items() if a is not None}
    flags = [xp.isfinite(a).all() for a in named.values()]
    if xp is np:
        ok = [bool(f) for f in flags]
    else:
        stacked = xp.stack(flags)
        if bool(stacked.all()):
            return
        ok = stacked.get().tolist()
    for name, fine in zip(named, ok, strict=True):
        if not fine:
            raise ValueError(f"{name} contains NaN or Inf{context}")


def device_ints(xp: Any, values: np.ndarray) -> Any:
    """A few host integers (1-D) as an array of xp (CuPy) of their dtype, written by scalar
    fills on the device instead of a host-to-device copy (which synchronizes with the host and
    cannot be captured in a CUDA graph): one fill, plus one per value that differs from the
    first."""
    first = int(values[0]) if values.size else 0
    out = xp.full(values.shape, first, values.dtype)
    for i in np.flatnonzero(values != first):
        out[int(i)] = int(values[i])
    return out


_F = TypeVar("_F", bound=Callable[..., Any])


def on_device(method: _F) -> _F:
    """Run ``method`` with the storage's CUDA device current (a CuPy cache; before the first
    append: the device of the first argument), so that allocations land next to the data."""
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        first = args[0] if args else next(iter(kwargs.values()), None)
        ref: Any = self._sink_k if self.batch is not None else first
        if is_cupy(ref):
            with ref.device:
                return method(self, *args, **kwargs)
        return method(self, *args, **kwargs)

    return cast(_F, wrapper)


def check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class Tiles:
    """Growing storage of one kind's tiles: codes [B, H, cap, bytes] and fields [B, H, cap, ...]."""

    def __init__(self) -> None:
        self.codes: Any = None  # numpy or CuPy, the module of the appended tiles
        self.fields: dict[str, Any] = {}
        self.count = 0

    def append(self, codes: Any, fields: dict[str, Any]) -> None:
        """Add one tile per (batch, head): ``codes [B, H, bytes]``, fields ``[B, H, ...]``."""
        xp = xp_of(codes)
        if self.codes is None:
            self.codes = xp.empty(codes.shape[:2] + (4,) + codes.shape[2:], codes.dtype)
            self.fields = {k: xp.empty(f.shape[:2] + (4,) + f.shape[2:], f.dtype) for k, f in fields.items()}
        if self.count == self.codes.shape[2]:
            def grow(a: Any) -> Any:
                out = xp.empty(a.shape[:2] + (2 * a.shape[2],) + a.shape[3:], a.dtype)
                out[:, :, : a.shape[2]] = a
                return out

            self.codes = grow(self.codes)
            self.fields = {k: grow(f) for k, f in self.fields.items()}
        self.codes[:, :, self.count] = codes
        for k, f in fields.items():
            self.fields[k][:, :, self.count] = f
        self.count += 1

    def used(self) -> tuple[Any, dict[str, Any]]:
        """Views of the filled tiles: codes [B, H, n, bytes], fields [B, H, n, ...]."""
        assert self.codes is not None
        n = self.count
        return self.codes[:, :, :n], {k: f[:, :, :n] for k, f in self.fields.items()}

    def nbytes(self) -> tuple[int, int]:
        """(code bytes, field bytes) of the filled tiles."""
        if self.codes is None:
            return 0, 0
        codes, fields = self.used()
        return codes.nbytes, sum(f.nbytes for f in fields.values())

    def select(self, index: Any) -> None:
        if self.codes is not None:
            self.codes = contiguous(self.codes[index])
            self.fields = {k: contiguous(f[index]) for k, f in self.fields.items()}
