"""QuantizedArray: packed codes + per-group fields + metadata, and its .npz format."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from lowbit.arrays import (
    Array,
    Origin,
    check_same_device,
    from_backend,
    host_copy,
    stream_for,
)

#: Version of the .npz layout written by :meth:`QuantizedArray.save`.
FILE_FORMAT = 1

_META_TYPES = (str, int, float, bool, type(None), list)
#: Largest JSON header :meth:`QuantizedArray.load` reads.
MAX_HEADER_BYTES = 1 << 16


class QuantizedArray:
    """A quantized array: packed codes, the fields needed to decode them, and metadata.

    Parameters
    ----------
    codes : numpy.ndarray or cupy.ndarray, uint8, 1-D
        Packed k-bit codes (layout in ``docs/packing.md``).
    fields : dict of str to array
        Per-group data of the scheme (e.g. ``scale`` and ``offset`` for ``rtn``), on the
        same device as ``codes``.
    meta : dict
        JSON-serializable metadata; always holds ``scheme``, ``shape``, ``dtype`` and ``bits``.
    origin : Origin
        The library, device and dtype results go back to.

    Notes
    -----
    ``nbytes`` counts codes and fields (everything needed to reconstruct);
    ``bits_per_element`` is ``8 * nbytes / size``, scale overhead included.

    A front that was asked not to wait for its input check (``rtn`` with
    ``check_finite=False``) leaves the check pending; :meth:`check` performs it.
    """

    __slots__ = ("codes", "fields", "meta", "origin", "_pending")

    def __init__(self, codes: Array, fields: dict[str, Array], meta: dict[str, Any], origin: Origin):
        for key in ("scheme", "shape", "dtype", "bits"):
            if key not in meta:
                raise ValueError(f"meta must contain {key!r}")
        check_same_device({"codes": codes, **{f"fields[{k!r}]": v for k, v in fields.items()}})
        self.codes = codes
        self.fields = dict(fields)
        self.meta = dict(meta)
        self.origin = origin
        self._pending: Callable[[], None] | None = None

    # -- properties ---------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return str(self.meta["scheme"])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.meta["shape"])

    @property
    def dtype(self) -> str:
        """The dtype that :meth:`dequantize` returns."""
        return str(self.meta["dtype"])

    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of codes plus all fields."""
        return int(self.codes.nbytes + sum(f.nbytes for f in self.fields.values()))

    @property
    def bits_per_element(self) -> float:
        """Storage cost per element in bits, including scales and offsets."""
        return 8.0 * self.nbytes / self.size

    def __repr__(self) -> str:
        extras = {k: v for k, v in self.meta.items() if k not in ("scheme", "shape", "dtype", "bits")}
        where = self.origin.library + ("" if self.origin.device == "cpu" else f"@{self.origin.device}")
        extra = "".join(f", {k}={v!r}" for k, v in sorted(extras.items()))
        return (
            f"QuantizedArray(scheme={self.scheme!r}, shape={self.shape}, dtype={self.dtype}, "
            f"bits={self.bits}{extra}, bits_per_element={self.bits_per_element:.3f}, {where})"
        )

    # -- checking -----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise for problems the quantizer found but was told not to wait for.

        ``lowbit.quantize(..., scheme="rtn", check_finite=False)`` returns before its kernel's
        flags are read (no host/device synchronization); this reads them (waiting for the
        kernel on a GPU) and raises as ``check_finite=True`` would have, on every call until
        it passes.  Once it has passed, and for every other QuantizedArray, it does nothing.

        Raises
        ------
        ValueError
            The input held NaN or Inf, or a scale or offset overflowed ``scale_dtype``.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending()
            except ValueError:
                self._pending = pending  # still unchecked: a later check raises again
                raise

    # -- decoding -----------------------------------------------------------------------------
    def dequantize(self) -> Any:
        """Reconstruct the array in the caller's library, device, dtype and shape."""
        from lowbit.api import get_scheme

        with stream_for(self.origin):
            arr = get_scheme(self.scheme).dequantize(self)
        return from_backend(arr, self.origin)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to a single ``.npz`` file (no pickle). Device arrays are copied to the host.

        Raises
        ------
        ValueError
            A pending check fails (see :meth:`check`): flawed results are never written.
        """
        self.check()
        payload = {"codes": host_copy(self.codes)}
        for k, v in self.fields.items():
            payload[f"field.{k}"] = host_copy(v)
        payload["header"] = np.frombuffer(json.dumps(self.header()).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **payload)  # type: ignore[arg-type]

    def header(self) -> dict[str, Any]:
        """The JSON object stored with the arrays (``.npz`` member ``header``, Zarr attribute
        ``lowbit``): file format, metadata and field names."""
        return {"format": FILE_FORMAT, "meta": self.meta, "fields": sorted(self.fields)}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QuantizedArray:
        """Read a file written by :meth:`save`; results dequantize to numpy arrays.

        The metadata is checked against its scheme's record (:mod:`lowbit.schema`) first; then
        only the members it implies are read, each after its ``.npy`` header matched the dtype
        and shape the metadata gives (:mod:`lowbit.archive`).

        Raises
        ------
        ValueError
            The file is not a readable lowbit file (not a zip, truncated, a bad CRC, a pickle,
            a compressed or unknown member), or its metadata or arrays are inconsistent; the
            message names the file and the problem.
        """
        from lowbit.archive import Archive

        with Archive(path) as ar:
            if "header" not in ar.members or "codes" not in ar.members:
                raise ar.error("not a lowbit file (no header/codes members)")
            raw = ar.read("header", dtype=np.uint8, max_bytes=MAX_HEADER_BYTES)
            try:
                header = json.loads(raw.tobytes().decode())
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise ar.error(f"corrupt header ({exc})") from None
            meta, names = check_header(header, ar.error)
            want = expected_arrays(meta)
            unknown = sorted(ar.members - {"header", *want})
            if unknown:
                raise ar.error(f"unknown member {unknown[0] + '.npy'!r} ({meta['scheme']} files "
                               f"hold {sorted(want)})")
            # each member's .npy header is checked against the metadata before its data is read
            arrays = {name: ar.read(name, dtype, shape) for name, (dtype, shape) in want.items()}
        return from_checked(arrays.pop("codes"), {f: arrays[f"field.{f}"] for f in names}, meta,
                            ar.error)

    def to_zarr(self, store: Any, *, overwrite: bool = False, compute: bool = True,
                compressors: Any = "auto") -> Any:
        """Write to a Zarr store (a directory path or a zarr store), chunk by chunk in parallel.

        Same header as :meth:`save` (the ``lowbit`` attribute of the store's group); device
        arrays are copied to the host.  ``lowbit.load(store)`` reads it back lazily.  With
        ``compute=False``, returns a ``dask.delayed`` that writes the store.  ``compressors``:
        as ``zarr.create_array`` (default zstd; ``None`` stores raw).  Needs the
        ``lowbit[dask]`` extra (docs/dask.md).
        """
        from lowbit.zarrstore import to_zarr

        return to_zarr(self, store, overwrite=overwrite, compute=compute, compressors=compressors)


def check_header(header: Any, error: Callable[[str], ValueError]) -> tuple[dict[str, Any], list[str]]:
    """(meta, field names) of a lowbit header, the JSON object that ``.npz`` files and Zarr
    stores hold, after the metadata passed its scheme's record (:func:`lowbit.schema.parse`)
    and the field names matched what the metadata implies; ``error(problem)`` builds the
    exception for a bad one.  ``meta`` comes back normalized (:meth:`Meta.to_meta`)."""
    from lowbit import schema

    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise error(f"unsupported lowbit file format {header!r:.80}")
    if set(header) != {"format", "meta", "fields"}:
        raise error(f"the header must hold format, meta and fields, got {sorted(header, key=str)}")
    meta = header["meta"]
    if not isinstance(meta, dict):
        raise error(f"metadata must be a flat JSON object, got {type(meta).__name__}")
    for k, v in meta.items():
        if not isinstance(v, _META_TYPES):
            raise error(f"metadata {k!r} must be a string, number, boolean, null or list (metadata "
                        f"must be a flat JSON object), got {type(v).__name__}")
    try:
        record = schema.parse(meta)
        want = sorted(k.removeprefix("field.") for k in record.arrays() if k != "codes")
    except ValueError as exc:
        raise error(str(exc)) from None
    names = header["fields"]
    if not isinstance(names, list) or not all(isinstance(f, str) for f in names) \
            or sorted(names) != want:
        raise error(f"the header lists fields {names!r:.200}; {record.scheme} metadata implies {want}")
    return record.to_meta(), names


def expected_arrays(meta: dict[str, Any]) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
    """{member: (dtype, shape)} that the (checked) metadata implies: ``codes`` and
    ``field.<name>`` (:meth:`lowbit.schema.Meta.arrays`)."""
    from lowbit import schema

    return schema.parse(meta).arrays()


def from_checked(codes: Any, fields: dict[str, Any], meta: dict[str, Any],
                 error: Callable[[str], ValueError] = ValueError) -> QuantizedArray:
    """A loaded QuantizedArray (results dequantize to numpy) from arrays whose metadata passed
    :func:`check_header`: each array's dtype and shape must be what the metadata implies (no
    array data is read for that), and the few field values the schema constrains are checked
    (NVFP4's tensor scale)."""
    from lowbit import schema

    record = schema.parse(meta)
    for name, (dtype, shape) in record.arrays().items():
        arr = codes if name == "codes" else fields[name.removeprefix("field.")]
        if np.dtype(arr.dtype) != dtype or tuple(arr.shape) != shape:
            raise error(f"member {name!r} has dtype {np.dtype(arr.dtype)} and shape "
                        f"{tuple(arr.shape)}; the metadata implies {dtype} and {shape}")
    try:
        record.check_arrays(fields)
    except ValueError as exc:
        raise error(str(exc)) from None
    out_dtype = record.dtype if record.dtype != "bfloat16" else "float32"
    return QuantizedArray(codes, fields, meta, Origin("numpy", out_dtype, "cpu"))


def load(path: Any) -> QuantizedArray:
    """Load a :class:`QuantizedArray` saved with :meth:`QuantizedArray.save` (a ``.npz`` file),
    or, lazily, one written with :meth:`QuantizedArray.to_zarr` (a Zarr store: a directory or
    a zarr store object; its arrays are dask arrays, docs/dask.md).

    Raises
    ------
    ValueError
        The file or store is not a lowbit one, or its metadata or arrays are inconsistent.
    """
    if not isinstance(path, (str, os.PathLike)) or os.path.isdir(path):
        from lowbit.zarrstore import load_zarr

        return load_zarr(path)
    return QuantizedArray.load(path)
