"""Zarr storage of a QuantizedArray: :func:`to_zarr` and, lazily, :func:`load_zarr` (docs/dask.md).

A store is one Zarr group: 1-D arrays ``codes`` and ``field.<name>`` (the ``.npz`` members'
names and contents) and the group attribute ``lowbit``, the same header as the ``.npz``
member (:meth:`QuantizedArray.header`).  The header is written last, so an interrupted write
leaves a store that :func:`load_zarr` refuses.  Reading trusts nothing: the header goes
through the ``.npz`` checks (:func:`lowbit.quantized.check_header`), unknown members are
refused, and every array's dtype and shape must be what the store's metadata implies
(:mod:`lowbit.schema`) before any data is read; a chunk that fails to decode later raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from lowbit.quantized import MAX_HEADER_BYTES, QuantizedArray, check_header, from_checked

#: Elements per dask chunk when reading (at least; a multiple of the stored chunks): bounds the
#: task count whatever chunking a store declares.
READ_CHUNK = 1 << 24
#: Largest number of members (arrays) of a lowbit group.
MAX_MEMBERS = 64


def _where(store: Any) -> str:
    return os.fspath(store) if isinstance(store, (str, os.PathLike)) else repr(store)


def _regular(arr: Any) -> Any:
    """``arr`` (1-D dask) with equal chunks but the last, as Zarr stores them."""
    sizes = arr.chunks[0]
    if len(sizes) <= 1 or all(c == sizes[0] for c in sizes[:-1]) and sizes[-1] <= sizes[0]:
        return arr
    return arr.rechunk((max(sizes),))


def _lazy(arr: Any) -> Any:
    """A 1-D dask array on the host for a stored array (device chunks are copied: the user
    asked for the store)."""
    if not isinstance(arr, da.Array):
        if hasattr(arr, "get"):  # CuPy, in memory
            arr = arr.get()
        return da.from_array(np.asarray(arr), chunks=(max(1, min(arr.size, READ_CHUNK)),))
    if not isinstance(arr._meta, np.ndarray):
        arr = da.map_blocks(_to_host, arr, dtype=arr.dtype, meta=np.empty((0,), arr.dtype))
    return arr


def _to_host(block: Any) -> np.ndarray:
    return block.get()  # type: ignore[no-any-return]


def to_zarr(q: QuantizedArray, store: Any, *, overwrite: bool = False, compute: bool = True,
            compressors: Any = "auto") -> Any:
    """Write ``q`` (in memory or lazy) to ``store``; lazy arrays are computed chunk by chunk in
    parallel on the current dask scheduler (e.g. a ``distributed.Client``).  ``compressors``
    goes to ``zarr.create_array`` (default: zarr's, zstd; ``None``: stored raw, faster to write
    for codes, which compress little).

    Returns
    -------
    None, or with ``compute=False`` a ``dask.delayed`` object that writes the store when
    computed (the header last), e.g. to follow with a progress bar.

    Raises
    ------
    ValueError
        ``store`` exists and ``overwrite`` is False; a pending check of ``q`` fails.
    """
    q.check()
    try:
        group = zarr.open_group(store, mode="w" if overwrite else "w-")
    except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
        raise ValueError(f"{_where(store)!r} exists; pass overwrite=True to replace it ({exc})") from None
    sources: list[Any] = []
    targets: list[Any] = []
    for name, arr in {"codes": q.codes, **{f"field.{k}": v for k, v in q.fields.items()}}.items():
        lazy = _regular(_lazy(arr))
        target = group.create_array(name, shape=lazy.shape, dtype=lazy.dtype,
                                    chunks=(max(1, lazy.chunks[0][0]),), compressors=compressors)
        sources.append(lazy)
        targets.append(target)
    stored = da.store(sources, targets, lock=False, compute=False)
    # the header goes last: a store without it is not a lowbit store
    done = dask.delayed(_write_header, pure=False)(stored, store, q.header())
    return done if not compute else done.compute()


def _write_header(stored: Any, store: Any, header: dict[str, Any]) -> None:
    zarr.open_group(store, mode="r+").attrs["lowbit"] = header


class _ChunkReader:
    """Array-like view of a stored Zarr array for ``da.from_array``: a chunk that fails to
    decode raises ``ValueError`` naming the store and array."""

    def __init__(self, arr: Any, where: str, name: str) -> None:
        self.arr = arr
        self.where = where
        self.name = name
        self.shape = tuple(arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            out = np.asarray(self.arr[key])
        except Exception as exc:  # any decoder error of a corrupt chunk
            raise ValueError(f"{self.where!r}: array {self.name!r} holds a corrupt chunk "
                             f"({type(exc).__name__}: {exc})") from None
        return out


def load_zarr(store: Any) -> QuantizedArray:
    """Open a store written by :func:`to_zarr`: a LazyQuantizedArray whose arrays read the
    store chunk by chunk when computed (dequantizing to numpy arrays).

    Raises
    ------
    ValueError
        Not a readable Zarr group, not a lowbit store, a bad header, unknown or missing
        members, or arrays inconsistent with the metadata (dtype, shape).
    """
    from lowbit.dask import LazyQuantizedArray

    where = _where(store)

    def error(problem: str) -> ValueError:
        return ValueError(f"{where!r}: {problem}")

    try:
        group = zarr.open_group(store, mode="r")
        header = group.attrs.get("lowbit")
        members = dict(group.members(max_depth=0))
    except (OSError, ValueError, TypeError, KeyError, zarr.errors.BaseZarrError) as exc:
        raise ValueError(f"{where!r} is not a readable Zarr store: {exc}") from None
    if header is None:
        raise error("not a lowbit store (its group has no 'lowbit' attribute)")
    if len(json.dumps(header)) > MAX_HEADER_BYTES:
        raise error(f"the 'lowbit' attribute is longer than {MAX_HEADER_BYTES} bytes")
    meta, names = check_header(header, error)
    expected = {"codes"} | {f"field.{f}" for f in names}
    if len(members) > MAX_MEMBERS or set(members) - expected:
        unknown = sorted(set(members) - expected)
        raise error(f"unknown member {unknown[0]!r} (the header names fields {sorted(names)})"
                    if unknown else f"{len(members)} members (at most {MAX_MEMBERS})")
    specs = {}
    for name in sorted(expected):
        member = members.get(name)
        if member is None:
            raise error(f"member {name!r} is missing")
        if not isinstance(member, zarr.Array) or len(member.shape) != 1:
            raise error(f"member {name!r} must be a 1-D array, got {type(member).__name__} "
                        f"of shape {getattr(member, 'shape', None)}")
        dtype = np.dtype(member.dtype)
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "uif":
            raise error(f"member {name!r} has dtype {dtype}; lowbit stores numbers only")
        specs[name] = member
    # dtypes and shapes checked against the metadata (lowbit.schema) on one-chunk views: no
    # data is read and the graphs are O(1), whatever shape a store declares
    whole = {k: _read(m, where, k, int(m.shape[0]) or 1) for k, m in specs.items()}
    from_checked(whole["codes"], {f: whole[f"field.{f}"] for f in names}, meta, error)
    arrays = {}
    for k, m in specs.items():
        chunk = max(1, int(m.chunks[0]) if m.chunks else 1)
        step = chunk * max(1, READ_CHUNK // chunk)
        arrays[k] = _read(m, where, k, max(1, min(int(m.shape[0]), step)))
    q = from_checked(arrays["codes"], {f: arrays[f"field.{f}"] for f in names}, meta, error)
    return LazyQuantizedArray(q.codes, q.fields, q.meta, q.origin)


def _read(member: Any, where: str, name: str, chunk: int) -> Any:
    """Lazy dask view of stored array ``member`` in chunks of ``chunk`` elements."""
    dtype = np.dtype(member.dtype)
    return da.from_array(_ChunkReader(member, where, name), chunks=(chunk,),
                         name=f"lowbit-zarr-{dask.base.tokenize(where, name, chunk)}",
                         meta=np.empty((0,), dtype))
