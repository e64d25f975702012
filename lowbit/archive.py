"""Reading lowbit's ``.npz`` files defensively: every failure is a ``ValueError`` with the reason.

A lowbit file is a zip archive of ``.npy`` members, written by :meth:`QuantizedArray.save`
(``numpy.savez``: members stored uncompressed).  :class:`Archive` reads it without trusting it:

- the zip directory is bounded (:data:`MAX_MEMBERS` entries) before it is parsed;
- a member is read only when asked for by name, and only if it is stored uncompressed and
  within the file, so that no member can expand beyond the bytes it occupies: what a load
  allocates is bounded by the file's size;
- a member's ``.npy`` header (dtype, shape) is read and checked -- against what the caller
  expects, and against the bytes the member holds -- before any of its data is read;
- object arrays (pickles), structured dtypes and Fortran-ordered arrays are refused;
- the zip's CRC-32 of every member read is checked (zipfile does so as the last byte is read).

Errors name the file and say what is wrong: not a zip archive, a ``.npy`` file given where a
``.npz`` was expected, a truncated archive, a bad CRC, a compressed member, an unexpected dtype
or shape, ...
"""

from __future__ import annotations

import lzma
import math
import os
import struct
import zipfile
import zlib
from types import TracebackType
from typing import IO, Any

import numpy as np

#: Largest number of entries in the zip directory (a lowbit file has a header, codes and a few
#: fields per scheme).
MAX_MEMBERS = 64
#: Largest ``.npy`` header of a member (numpy writes about 128 bytes).
MAX_NPY_HEADER = 4096

#: What the zip and npy readers raise on corrupt input (translated to ValueError).
_READ_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error,
    NotImplementedError, RuntimeError, zlib.error, lzma.LZMAError, UnicodeError, SyntaxError,
    TypeError, KeyError, IndexError, OverflowError, RecursionError,
)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP = b"PK\x05\x06"
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record


class Archive:
    """A lowbit ``.npz`` file opened for reading (use as a context manager).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Raises
    ------
    ValueError
        The file cannot be read, is not a zip archive (e.g. a ``.npy`` file), is truncated,
        or its directory holds more than :data:`MAX_MEMBERS` entries or duplicate names.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise self.unreadable(_reason(exc)) from None
        try:
            problem = _container_problem(self._fh)
        except _READ_ERRORS as exc:
            problem = _reason(exc)
        if problem is not None:
            self.close()
            raise self.unreadable(problem)
        self._size = os.fstat(self._fh.fileno()).st_size
        try:
            self._zip = zipfile.ZipFile(self._fh)
            infos = self._zip.infolist()
        except _READ_ERRORS as exc:
            self.close()
            raise self.unreadable(_reason(exc)) from None
        names = [i.filename for i in infos]
        if len(names) > MAX_MEMBERS:
            self.close()
            raise self.unreadable(f"the zip directory lists {len(names)} members (at most {MAX_MEMBERS})")
        if len(set(names)) != len(names):
            self.close()
            raise self.unreadable("the zip directory lists a member name twice")
        bad = [n for n in names if not n.endswith(".npy")]
        if bad:
            self.close()
            raise self.unreadable(f"member {bad[0]!r} is not an .npy array")
        self._infos = {i.filename[: -len(".npy")]: i for i in infos}

    # -- errors -----------------------------------------------------------------------------
    def unreadable(self, reason: str) -> ValueError:
        """The error for a file that is not a readable archive."""
        return ValueError(f"{self.path!r} is not a readable .npz file: {reason}")

    def error(self, problem: str) -> ValueError:
        """The error for a readable archive whose content is wrong."""
        return ValueError(f"{self.path!r}: {problem}")

    # -- members ----------------------------------------------------------------------------
    @property
    def members(self) -> set[str]:
        """Names of the members (without ``.npy``)."""
        return set(self._infos)

    def spec(self, name: str) -> tuple[np.dtype[Any], tuple[int, ...]]:
        """(dtype, shape) of member ``name``, from its ``.npy`` header only."""
        with self._open(name) as fp:
            dtype, shape, _ = self._header(name, fp)
        return dtype, shape

    def read(self, name: str, dtype: Any = None, shape: tuple[int, ...] | None = None,
             max_bytes: int | None = None) -> np.ndarray:
        """Member ``name`` as an array, after checking its header.

        Parameters
        ----------
        dtype, shape : optional
            What the member must hold; checked against its ``.npy`` header before its data
            is read.
        max_bytes : int, optional
            Refuse a member whose data would be larger.

        Raises
        ------
        ValueError
            The member is missing, compressed, has an unexpected or unsafe dtype or shape,
            holds fewer or more bytes than its header declares, or fails its CRC.
        """
        info = self._infos.get(name)
        if info is None:
            raise self.error(f"member {name + '.npy'!r} is missing")
        with self._open(name) as fp:
            got_dtype, got_shape, start = self._header(name, fp)
            if dtype is not None and got_dtype != np.dtype(dtype):
                raise self.error(f"member {name!r} has dtype {got_dtype}, expected {np.dtype(dtype)}")
            if shape is not None and got_shape != tuple(shape):
                raise self.error(f"member {name!r} has shape {got_shape}, expected {tuple(shape)}")
            nbytes = math.prod(got_shape) * got_dtype.itemsize
            if max_bytes is not None and nbytes > max_bytes:
                raise self.error(f"member {name!r} declares {nbytes} bytes (at most {max_bytes})")
            if info.file_size - start != nbytes:
                raise self.error(
                    f"member {name!r} declares shape {got_shape} of {got_dtype} ({nbytes} bytes) "
                    f"but holds {info.file_size - start} bytes")
            out = np.empty(got_shape, got_dtype)
            try:
                _read_into(fp, out.reshape(-1).view(np.uint8).data)
                if fp.read(1):
                    raise EOFError("data after the array")
            except _READ_ERRORS as exc:
                raise self.unreadable(f"member {name!r}: {_reason(exc)}") from None
        return out

    def _open(self, name: str) -> IO[bytes]:
        info = self._infos.get(name)
        if info is None:
            raise self.error(f"member {name + '.npy'!r} is missing")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise self.error(f"member {name!r} is compressed; lowbit files store members "
                             "uncompressed (QuantizedArray.save)")
        if info.header_offset + info.compress_size > self._size:
            raise self.unreadable(f"member {name!r} claims {info.compress_size} bytes, more than "
                                  "the file holds (truncated)")
        assert self._zip is not None
        try:
            return self._zip.open(info)
        except _READ_ERRORS as exc:
            raise self.unreadable(f"member {name!r}: {_reason(exc)}") from None

    def _header(self, name: str, fp: IO[bytes]) -> tuple[np.dtype[Any], tuple[int, ...], int]:
        """(dtype, shape, data offset) from the ``.npy`` header at the start of ``fp``."""
        fmt = np.lib.format
        try:
            version = fmt.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            start = fp.tell()
        except _READ_ERRORS as exc:
            raise self.error(f"member {name!r} has a corrupt .npy header: {_reason(exc)}") from None
        if dtype.hasobject:
            raise self.error(f"member {name!r} holds Python objects (a pickle); lowbit files never do")
        if dtype.fields is not None or dtype.subdtype is not None:
            raise self.error(f"member {name!r} has a structured dtype {dtype}")
        if fortran and len(shape) > 1:
            raise self.error(f"member {name!r} is Fortran-ordered; lowbit writes C order")
        return dtype, tuple(int(s) for s in shape), start

    # -- context manager ----------------------------------------------------------------------
    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _container_problem(fh: IO[bytes]) -> str | None:
    """Why ``fh`` is not a zip archive lowbit would parse (None: it may be one).

    Refuses a ``.npy`` file, a non-zip file, and a zip directory too large to parse.
    """
    head = fh.read(8)
    if head.startswith(_NPY_MAGIC):
        return ("it is a .npy file (one array), not an .npz archive; "
                "lowbit files are written by QuantizedArray.save")
    if not head.startswith((_ZIP_MAGIC, _EMPTY_ZIP)):
        return "not a zip archive" if head else "the file is empty"
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - (_EOCD.size + 0xFFFF)))  # the record sits before a comment <= 64 KiB
    tail = fh.read()
    at = tail.rfind(_EMPTY_ZIP)
    if at < 0 or at + _EOCD.size > len(tail):
        return "truncated (the end of the zip directory is missing)"
    entries, dir_size = _EOCD.unpack_from(tail, at)[4:6]
    if entries != 0xFFFF and entries > MAX_MEMBERS:  # 0xFFFF: zip64, counted after parsing
        return f"the zip directory lists {entries} members (at most {MAX_MEMBERS})"
    if dir_size != 0xFFFFFFFF and dir_size > MAX_MEMBERS * (46 + 3 * 0xFFFF):  # entry size bound
        return f"the zip directory is {dir_size} bytes long"
    fh.seek(0)
    return None


def _read_into(fp: IO[bytes], buf: memoryview) -> None:
    pos = 0
    while pos < len(buf):
        chunk = fp.read(min(len(buf) - pos, 1 << 22))
        if not chunk:
            raise EOFError(f"truncated: {pos} of {len(buf)} bytes")
        buf[pos: pos + len(chunk)] = chunk
        pos += len(chunk)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, zipfile.BadZipFile) and "CRC" in text:
        return f"bad CRC-32, the data is corrupt ({text})"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return text
