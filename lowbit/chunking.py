"""Chunkings whose blocks are consecutive runs of the flat array (used by :mod:`lowbit.dask`).

A lowbit result is laid out flat: codes of element ``i`` follow those of element ``i - 1``, and
per-group fields follow the groups in order.  A chunk of a larger array can therefore be
quantized on its own, and its codes and fields concatenated with its neighbours', only if it
covers a consecutive run of the flat (C order) array that starts on a group and byte boundary.
In the dask form of chunks (one tuple of sizes per dimension), such a chunking splits one
dimension ``j``: every dimension before ``j`` has chunks of size 1, every dimension after
``j`` is whole.  :func:`is_flat` tests a chunking for that; :func:`flat_chunks` picks the one
closest in size to a target.  Pure Python: nothing here imports dask.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

Chunks = tuple[tuple[int, ...], ...]


def _split_ok(shape: Sequence[int], j: int, sizes: Sequence[int], steps: Sequence[int],
              byte_unit: int) -> bool:
    """Whether splitting dimension ``j`` into ``sizes`` (dims before j in 1s, after j whole)
    keeps every block but the last a multiple of its step and of ``byte_unit`` elements."""
    if any(shape[d] > 1 and steps[d] > 1 for d in range(j)):
        return False  # a dimension split into 1s must allow groups of one index
    inner = math.prod(shape[j + 1:])
    rows = math.prod(shape[:j])
    for k, c in enumerate(sizes):
        last_of_row = k == len(sizes) - 1
        if not last_of_row and c % steps[j]:
            return False
        if (not last_of_row or rows > 1) and (c * inner) % byte_unit:
            return False
    return True


def is_flat(shape: Sequence[int], chunks: Chunks, steps: Sequence[int], byte_unit: int = 1) -> bool:
    """Whether ``chunks`` splits ``shape`` into consecutive flat runs on group and byte boundaries.

    Parameters
    ----------
    shape : sequence of int
    chunks : tuple of tuple of int
        dask form (sizes along each dimension).
    steps : sequence of int
        Along a split dimension every chunk but the last of each run is a multiple of
        ``steps[d]`` indices (a group never spans two chunks).  ``steps[d] == shape[d]``
        means dimension ``d`` is never split.
    byte_unit : int
        Every block but the last holds a multiple of this many elements (so that packed codes
        start on a byte boundary: 8 / gcd(8, bits)).
    """
    ndim = len(shape)
    if ndim == 0:
        return True
    split = [d for d in range(ndim) if len(chunks[d]) > 1]
    j = split[-1] if split else 0  # the innermost split dimension; outer ones must be in 1s
    if any(shape[d] > 1 and len(chunks[d]) != shape[d] for d in range(j)):
        return False
    return _split_ok(shape, j, chunks[j], steps, byte_unit)


def _sizes(length: int, c: int) -> tuple[int, ...]:
    full, rem = divmod(length, c)
    return (c,) * full + ((rem,) if rem else ())


def _candidates(length: int, unit: int, want: float, divisors: bool) -> Iterator[int]:
    """Chunk lengths to try along one dimension: multiples of ``unit`` near ``want``,
    ``length`` itself and, with ``divisors``, the divisors of ``length`` that are multiples of
    ``unit`` (for a split repeated in every row, where the row's last chunk must align too)."""
    yield length
    k = max(1, int(want // unit))
    for m in (k - 1, k, k + 1, k + 2):
        if 1 <= m * unit < length:
            yield m * unit
    if not divisors:
        return
    d = 1
    while d * d <= length:
        if length % d == 0:
            for c in (d, length // d):
                if c % unit == 0:
                    yield c
        d += 1


def flat_chunks(shape: Sequence[int], target: int, steps: Sequence[int], byte_unit: int = 1) -> Chunks:
    """The flat chunking (see :func:`is_flat`) whose blocks are closest to ``target`` elements.

    Closeness is measured on a log scale on the first (largest) block; ties go to the split
    of the outermost dimension (fewest blocks).  A chunking always exists: one block.

    Parameters
    ----------
    shape : sequence of int
    target : int
        Wanted elements per block (e.g. the largest block of the input's chunking).
    steps, byte_unit
        As in :func:`is_flat`.

    Returns
    -------
    tuple of tuple of int
        Chunks in dask form.
    """
    shape = [int(s) for s in shape]
    ndim = len(shape)
    if ndim == 0:
        return ()
    best: tuple[float, int, Chunks] | None = None
    target = max(1, int(target))
    for j in range(ndim):
        inner = math.prod(shape[j + 1:])
        unit = steps[j] * (byte_unit // math.gcd(byte_unit, inner * steps[j]))
        rows = math.prod(shape[:j])
        for c in set(_candidates(shape[j], unit, target / max(inner, 1), rows > 1)):
            sizes = _sizes(shape[j], c)
            if not _split_ok(shape, j, sizes, steps, byte_unit):
                continue
            score = abs(math.log(max(c * inner, 1) / target))
            if best is None or (score, j) < best[:2]:
                chunks = tuple((1,) * shape[d] if d < j else ((shape[d],) if d > j else sizes)
                               for d in range(ndim))
                best = (score, j, chunks)
    assert best is not None  # j = 0 with one block of the whole array always qualifies
    return best[2]


def block_starts(chunks: Chunks) -> list[int]:
    """Flat index of the first element of every block of a flat chunking, in C order of the
    block grid (then the total), where a block's size is the product of its chunk sizes."""
    starts = [0]
    for block in iter_blocks(chunks):
        starts.append(starts[-1] + math.prod(block))
    return starts


def iter_blocks(chunks: Chunks) -> Iterator[tuple[int, ...]]:
    """Block shapes of ``chunks`` in C order of the block grid."""
    if not chunks:
        yield ()
        return
    head, *rest = chunks
    for c in head:
        for tail in iter_blocks(tuple(rest)):
            yield (c, *tail)
