"""lowbit on dask arrays: lazy ``quantize``, ``round``, ``hadamard``, ``dequantize`` (docs/dask.md).

The fronts (``lowbit.quantize``, ``lowbit.round``, ``lowbit.hadamard``,
``lowbit.inverse_hadamard``, ``QuantizedArray.dequantize``) come here when their input is a
``dask.array.Array`` with numpy or CuPy chunks.  Each chunk is handed to the in-memory front
(which validates, and calls the kernels of its backend); this module only decides how chunks
map onto the result, so that the computed result is **bit-identical** to the in-memory call on
the whole array, for any chunking, scheduler and worker count:

- *Layout.*  A result is flat (``QuantizedArray.codes`` and every per-group field follow the
  elements in order, after moving the grouping axis last).  Chunks are rechunked, where they
  are not already so, to consecutive runs of that flat order that start on a group / block /
  tile boundary and on a byte boundary of the packed codes (:mod:`lowbit.chunking`): one
  dimension split, those before it in chunks of 1, those after it whole, with the block size
  nearest to the input's largest chunk.  A group never spans two chunks.
- *Random bits.*  Stochastic rounding keys each element's random bits by (seed, global element
  index).  A chunk starting at flat index ``s`` is quantized with
  :func:`lowbit.rounding.streams.seed_at` ``(seed, s)``, whose stream is the seed's from
  element ``s`` on: every kernel then draws the bits the whole array would have drawn.
- *Tensor statistics.*  NVFP4's tensor scale comes from the amax of the whole tensor, taken
  first over all chunks (an exact max); per-tensor grids (``axis=None``) need the tensor in
  one chunk.

Data errors the in-memory call raises at once (NaN/Inf, overflow) are raised by
``compute()``.  ``import lowbit`` does not import this module (nor dask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from lowbit.arrays import Array, Origin, to_backend, xp_of
from lowbit.chunking import Chunks, block_starts, flat_chunks, is_flat, iter_blocks
from lowbit.quantized import QuantizedArray
from lowbit.rounding.streams import seed_at
from lowbit.validate import check_seed

#: dtypes of dask inputs (numpy / CuPy chunks have no bfloat16).
DTYPES = ("float16", "float32", "float64")


# -- the lazy QuantizedArray --------------------------------------------------------------------
class LazyQuantizedArray(QuantizedArray):
    """A :class:`~lowbit.QuantizedArray` whose codes and fields are dask arrays.

    Its ``meta`` is the in-memory result's.  :meth:`compute` gives that in-memory result
    (bit-identical to ``lowbit.quantize`` on the whole array), :meth:`persist` keeps the
    arrays in (cluster) memory, :meth:`dequantize` is lazy.  ``chunks`` is the chunking of
    the quantized array in its flat layout (the grouping axis last), as dask chunks.
    """

    __slots__ = ("chunks",)

    def __init__(self, codes: Any, fields: dict[str, Any], meta: dict[str, Any], origin: Origin,
                 chunks: Chunks | None = None) -> None:
        super().__init__(codes, fields, meta, origin)
        lay = layout_of(meta)
        self.chunks = chunks if chunks is not None else lay.plan(_default_target(meta))

    def compute(self, **kwargs: Any) -> QuantizedArray:
        """The in-memory QuantizedArray (``dask.compute`` keyword arguments pass through)."""
        codes, fields = dask.compute(self.codes, self.fields, **kwargs)
        return QuantizedArray(codes, fields, self.meta, self.origin)

    def persist(self, **kwargs: Any) -> LazyQuantizedArray:
        """The same lazy array with codes and fields computed and held in memory."""
        codes, fields = dask.persist(self.codes, self.fields, **kwargs)
        return LazyQuantizedArray(codes, fields, self.meta, self.origin, self.chunks)

    def dequantize(self) -> Any:
        """Lazy reconstruction: a dask array of the input's chunk type, dtype and shape."""
        return dequantize(self)

    def __repr__(self) -> str:
        return "Lazy" + super().__repr__()


# -- layouts: how a scheme's result maps onto chunks ----------------------------------------------
class Layout:
    """Where the elements, codes and fields of one scheme's result lie (see module docstring).

    Parameters
    ----------
    meta : dict
        The result's metadata (``QuantizedArray.meta``).
    """

    #: dimension moved last before flattening (original coordinates); None: C order as is
    moved: int | None = None

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.shape = tuple(int(s) for s in meta["shape"])
        self.bits = int(meta["bits"])

    # shapes -----------------------------------------------------------------------------------
    def flat_shape(self) -> tuple[int, ...]:
        """Shape of the array as the kernels see it (grouping axis last, padded)."""
        s = list(self.shape)
        if self.moved is not None:
            s.append(s.pop(self.moved))
        return tuple(s)

    def steps(self) -> tuple[int, ...]:
        """Per dimension of :meth:`flat_shape`: chunks along it are multiples of this."""
        return (1,) * len(self.shape)

    def byte_unit(self) -> int:
        return 8 // math.gcd(8, self.bits)

    def plan(self, target: int, chunks: Chunks | None = None, full: Sequence[int] = ()) -> Chunks:
        """Flat chunking: ``chunks`` if it already qualifies, else the one nearest ``target``
        elements per block; ``full`` (flat-shape dims) are never split."""
        steps = list(self.steps())
        shape = self.flat_shape()
        for d in full:
            steps[d] = shape[d]
        if chunks is not None and is_flat(shape, chunks, steps, self.byte_unit()):
            return chunks
        return flat_chunks(shape, target, steps, self.byte_unit())

    def to_input(self, chunks: Chunks) -> Chunks:
        """Chunks of the (moved, unpadded) input for a flat chunking (identity but padding)."""
        return chunks

    def from_input(self, chunks: Chunks) -> Chunks:
        return chunks

    # per block ----------------------------------------------------------------------------------
    def sizes(self, block: tuple[int, ...]) -> tuple[list[int], dict[str, int | None]]:
        """(bytes of each codes part, {field: length, None for whole-tensor fields}) of a block
        of the flat chunking."""
        raise NotImplementedError

    def block_meta(self, block: tuple[int, ...]) -> dict[str, Any]:
        """Metadata under which a block decodes on its own (``block``: its shape in the moved,
        unpadded input, a block of :meth:`to_input` of the flat chunking)."""
        meta = dict(self.meta, shape=list(block))
        if self.moved is not None:
            meta["axis"] = len(block) - 1
        return meta

    def field_dtypes(self, proxy: QuantizedArray) -> dict[str, Any]:
        """dtype of every field of the whole result."""
        return {k: v.dtype for k, v in proxy.fields.items()}

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, repr(sorted(self.meta.items())))

    def split(self, codes: Array, block: tuple[int, ...]) -> list[Array]:
        """A block's codes cut into its parts (see :meth:`sizes`)."""
        return [codes]


class AffineLayout(Layout):
    """``rtn``: groups of ``group_size`` (or the whole axis, or the tensor) along ``axis``."""

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__(meta)
        self.moved = meta["axis"]
        self.names = ["scale"] if meta["symmetric"] else ["offset", "scale"]

    def group_size(self) -> int:
        if self.moved is None:
            return math.prod(self.shape)
        return int(self.meta["group_size"] or self.shape[self.moved])

    def steps(self) -> tuple[int, ...]:
        shape = self.flat_shape()
        if self.moved is None:
            return shape
        return (1,) * (len(shape) - 1) + (self.group_size(),)

    def sizes(self, block: tuple[int, ...]) -> tuple[list[int], dict[str, int | None]]:
        m = math.prod(block)
        return [(m * self.bits + 7) // 8], {k: m // self.group_size() for k in self.names}


class ElementLayout(AffineLayout):
    """Element formats: direct conversion (elementwise, C order), or ``scale="absmax"`` groups
    as ``rtn``."""

    def __init__(self, meta: dict[str, Any]) -> None:
        Layout.__init__(self, meta)
        self.absmax = meta["scale"] == "absmax"
        self.moved = meta["axis"] if self.absmax else None
        self.names = ["scale"] if self.absmax else []

    def steps(self) -> tuple[int, ...]:
        if not self.absmax:
            return (1,) * len(self.shape)
        return super().steps()


class BlockLayout(Layout):
    """MX / NVFP4: blocks of ``block_size`` along ``axis``, each row padded to whole blocks."""

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__(meta)
        self.moved = int(meta["axis"])
        self.block = int(meta["block_size"])
        length = self.shape[self.moved]
        self.pad = -(-length // self.block) * self.block - length
        self.meta = dict(meta, padded_length=length + self.pad)
        self.tensor = meta["scheme"] == "nvfp4"

    def flat_shape(self) -> tuple[int, ...]:
        s = super().flat_shape()
        return (*s[:-1], s[-1] + self.pad)

    def steps(self) -> tuple[int, ...]:
        return (1,) * (len(self.shape) - 1) + (self.block,)

    def to_input(self, chunks: Chunks) -> Chunks:
        *lead, last = chunks
        return (*lead, (*last[:-1], last[-1] - self.pad))

    def from_input(self, chunks: Chunks) -> Chunks:
        *lead, last = chunks
        return (*lead, (*last[:-1], last[-1] + self.pad))

    def sizes(self, block: tuple[int, ...]) -> tuple[list[int], dict[str, int | None]]:
        m = math.prod(block)  # padded: a block of the flat chunking
        fields: dict[str, int | None] = {"scale": m // self.block}
        if self.tensor:
            fields["tensor_scale"] = None
        return [m * self.bits // 8], fields

    def block_meta(self, block: tuple[int, ...]) -> dict[str, Any]:
        meta = super().block_meta(block)
        meta["padded_length"] = -(-meta["shape"][-1] // self.block) * self.block
        return meta


class KVLayout(Layout):
    """KV schemes, x [..., T, D]: blocks of ``group_size`` tokens per leading index, the narrower
    last block of each leading index stored after all full blocks (``tail.`` fields)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__(meta)
        t, d = self.shape[-2:]
        self.group_size = int(meta["group_size"] or t)
        self.tail = t % self.group_size
        self.unit = {tok: _kv_unit(meta, tok, d) for tok in {self.group_size, self.tail} if tok}

    def steps(self) -> tuple[int, ...]:
        return (1,) * (len(self.shape) - 2) + (self.group_size, self.shape[-1])

    def byte_unit(self) -> int:
        return 1  # every block's codes start on a byte boundary

    def _counts(self, block: tuple[int, ...]) -> tuple[int, int]:
        lead = math.prod(block[:-2])
        return lead * (block[-2] // self.group_size), lead if block[-2] % self.group_size else 0

    def sizes(self, block: tuple[int, ...]) -> tuple[list[int], dict[str, int | None]]:
        n_full, n_tail = self._counts(block)
        parts = [0, 0]
        fields: dict[str, int | None] = {}
        for n, tok, prefix, p in ((n_full, self.group_size, "", 0), (n_tail, self.tail, "tail.", 1)):
            if n:
                code_bytes, per_block = self.unit[tok]
                parts[p] = n * code_bytes
                fields.update({prefix + k: n * v.size for k, v in per_block.items()})
        return parts, fields

    def field_dtypes(self, proxy: QuantizedArray) -> dict[str, Any]:
        out = {}
        for tok, (_, per_block) in self.unit.items():
            prefix = "tail." if tok == self.tail and tok != self.group_size else ""
            out.update({prefix + k: v.dtype for k, v in per_block.items()})
        return out

    def split(self, codes: Array, block: tuple[int, ...]) -> list[Array]:
        cut = self.sizes(block)[0][0]
        return [codes[:cut], codes[cut:]]


def _kv_unit(meta: dict[str, Any], tokens: int, dim: int) -> tuple[int, dict[str, Any]]:
    """(code bytes, {field: its array}) of one KV block of ``tokens`` x ``dim`` (from the front)."""
    from lowbit.api import quantize

    options = {k: v for k, v in meta.items() if k not in ("scheme", "shape", "dtype", "bits")}
    q = quantize(np.zeros((1, tokens, dim), np.float32), meta["bits"], meta["scheme"], **options)
    prefix = "tail." if meta["group_size"] is not None and tokens < int(meta["group_size"]) else ""
    return int(q.codes.size), {k.removeprefix(prefix): v for k, v in q.fields.items()}


def layout_of(meta: dict[str, Any]) -> Layout:
    """The :class:`Layout` of a result with metadata ``meta``."""
    from lowbit.api import get_scheme
    from lowbit.blockfmt import BlockScheme
    from lowbit.kv.schemes import KVScheme
    from lowbit.minifloat import ElementScheme

    impl = get_scheme(meta["scheme"], name="scheme")
    if isinstance(impl, ElementScheme):
        return ElementLayout(meta)
    if isinstance(impl, BlockScheme):
        return BlockLayout(meta)
    if isinstance(impl, KVScheme):
        return KVLayout(meta)
    return AffineLayout(meta)


# -- helpers ----------------------------------------------------------------------------------------
def _origin(x: Any) -> Origin:
    """Origin of a dask array's chunks (numpy or CuPy), after checking its dtype and shape."""
    dtype = np.dtype(x.dtype).name
    if dtype not in DTYPES:
        raise TypeError(f"x must have dtype in {DTYPES} (dask arrays), got {dtype}")
    if any(math.isnan(s) for s in x.shape):
        raise ValueError("x has unknown chunk sizes; call x.compute_chunk_sizes() first")
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"x must have at least one dimension and one element, got shape {x.shape}")
    xp = xp_of(x._meta)
    return to_backend(xp.zeros(1, dtype), "x")[1]


def _default_target(meta: dict[str, Any]) -> int:
    """Elements per block when no input chunking guides the choice: dask's array.chunk-size."""
    limit = dask.utils.parse_bytes(dask.config.get("array.chunk-size"))
    return max(1, limit // np.dtype(meta["dtype"] if meta["dtype"] != "bfloat16" else "float32").itemsize)


def _target(x: Any) -> int:
    """Elements of the input's largest chunk (the size the plan stays near)."""
    return max(1, math.prod(max(c) for c in x.chunks))


def _moved(x: Any, ax: int | None) -> Any:
    return x if ax is None or ax == x.ndim - 1 else da.moveaxis(x, ax, -1)


def _proxy_shape(shape: tuple[int, ...], scheme: str, kwargs: dict[str, Any]) -> tuple[int, ...]:
    """A small shape on which the in-memory front validates the arguments and produces the
    metadata of the whole (up to ``shape`` and shape-derived keys, fixed by the layout)."""
    from lowbit.api import get_scheme
    from lowbit.kv.schemes import KVScheme
    from lowbit.validate import check_axis

    if isinstance(get_scheme(scheme), KVScheme):
        return (1,) * (len(shape) - 2) + (min(shape[-2], 8), shape[-1]) if len(shape) >= 2 else shape
    small = [1] * len(shape)
    try:
        ax = check_axis(kwargs.get("axis", -1), len(shape))
    except ValueError:
        return tuple(small)  # the front reports the bad axis
    if ax is not None:
        gs = kwargs.get("group_size")
        length = shape[ax]
        small[ax] = length if length <= 4096 else (gs if isinstance(gs, int) and 0 < gs <= length else 1)
    return tuple(small)


# -- quantize ---------------------------------------------------------------------------------------
def quantize(x: Any, bits: int | None = None, scheme: str = "rtn", **kwargs: Any) -> LazyQuantizedArray:
    """Lazy ``lowbit.quantize`` of a dask array (module docstring; docs/dask.md).

    Returns
    -------
    LazyQuantizedArray
        Its ``compute()`` equals ``lowbit.quantize(x.compute(), bits, scheme, **kwargs)`` bit
        for bit (with the same ``seed``; a stochastic call without one draws it now and
        records it in ``meta``).

    Raises
    ------
    ValueError, TypeError
        As the in-memory call, for bad arguments (checked now); data errors (NaN/Inf,
        overflow) are raised by ``compute()``.
    """
    from lowbit.api import quantize as quantize_now

    origin = _origin(x)
    shape = tuple(int(s) for s in x.shape)
    kwargs = dict(kwargs)
    if kwargs.get("rounding") == "stochastic":
        kwargs["seed"] = check_seed(kwargs.get("seed"), "stochastic")
    xp = xp_of(x._meta)
    proxy = quantize_now(xp.zeros(_proxy_shape(shape, scheme, kwargs), x.dtype), bits, scheme, **kwargs)
    lay = layout_of(dict(proxy.meta, shape=list(shape)))
    full = []
    if kwargs.get("rounding") == "diffuse" and lay.moved is None:  # fixed point: along axis
        full = [int(kwargs.get("axis", -1)) % len(shape)]
    xm = _moved(x, lay.moved)
    chunks = lay.plan(_target(x), lay.from_input(xm.chunks), full)
    xm = xm.rechunk(lay.to_input(chunks))

    blocks = list(iter_blocks(chunks))
    starts = block_starts(chunks)
    inputs = xm.to_delayed().ravel().tolist()
    chunk_kwargs = dict(kwargs)
    if lay.moved is not None:
        chunk_kwargs["axis"] = -1
    extra: dict[str, Any] = {}
    if isinstance(lay, BlockLayout) and lay.tensor and kwargs.get("tensor_amax") is None:
        amax = [dask.delayed(_tensor_amax, pure=True)(b, scheme) for b in inputs]
        extra["tensor_amax"] = dask.delayed(max, pure=True)(amax)
    stochastic = kwargs.get("rounding") == "stochastic"
    dtypes = lay.field_dtypes(proxy)
    parts: list[list[Any]] = [[], []]
    fields: dict[str, list[Any]] = {}
    for i, (b, block) in enumerate(zip(inputs, blocks, strict=True)):
        codes, flds = dask.delayed(_quantize_block, pure=True, nout=2)(
            b, bits, scheme, chunk_kwargs, starts[i] if stochastic else None, extra, lay, block)
        sizes, lengths = lay.sizes(block)
        for p, nbytes in enumerate(sizes):
            if nbytes:
                parts[p].append(da.from_delayed(codes[p], (nbytes,), np.uint8, meta=xp.empty((0,), np.uint8)))
        for k, n in lengths.items():
            if n is None and k in fields:
                continue  # a whole-tensor field, the same in every block: the first one's
            shp = proxy.fields[k].shape if n is None else (n,)
            if n != 0:
                fields.setdefault(k, []).append(
                    da.from_delayed(flds[k], shp, dtypes[k], meta=xp.empty((0,), dtypes[k])))
    codes_all = da.concatenate(parts[0] + parts[1])
    out = {k: da.concatenate(v) if len(v) > 1 else v[0] for k, v in sorted(fields.items())}
    return LazyQuantizedArray(codes_all, out, lay.meta, origin, chunks)



def _tensor_amax(block: Array, scheme: str) -> float:
    from lowbit.api import get_scheme

    arr, origin = to_backend(block, "x")
    return float(get_scheme(scheme).tensor_amax(arr, origin, -1))  # type: ignore[attr-defined]


def _quantize_block(block: Array, bits: int | None, scheme: str, kwargs: dict[str, Any],
                    start: int | None, extra: dict[str, Any], lay: Layout,
                    shape: tuple[int, ...]) -> tuple[list[Array], dict[str, Array]]:
    """One chunk through the in-memory front: (codes parts, fields)."""
    from lowbit.api import quantize as quantize_now

    kw = dict(kwargs, **extra)
    if start is not None:
        kw["seed"] = seed_at(int(kw["seed"]), start)
    q = quantize_now(block, bits, scheme, **kw)
    q.check()
    return lay.split(q.codes, shape), q.fields


# -- dequantize -------------------------------------------------------------------------------------
def dequantize(q: LazyQuantizedArray) -> Any:
    """Lazy reconstruction of ``q``: a dask array (chunk type, dtype and shape of the input)."""
    lay = layout_of(q.meta)
    chunks = q.chunks
    blocks = list(iter_blocks(chunks))
    sizes = [lay.sizes(b) for b in blocks]
    n_parts = len(sizes[0][0])
    code_cuts = [s[0][p] for p in range(n_parts) for s in sizes]
    code_chunks = _pieces(q.codes, code_cuts)
    field_chunks = {}
    for k, f in q.fields.items():
        lengths = [s[1].get(k, 0) for s in sizes]
        if any(n is None for n in lengths):
            field_chunks[k] = [f] * len(blocks)
        else:
            field_chunks[k] = _pieces(f, [int(n or 0) for n in lengths])
    xp = xp_of(q.codes._meta)
    dtype = np.dtype(q.origin.dtype)
    parts = []
    for i, block in enumerate(iter_blocks(lay.to_input(chunks))):
        codes = [code_chunks[p * len(blocks) + i] for p in range(n_parts)]
        flds = {k: v[i] for k, v in field_chunks.items() if v[i] is not None}
        meta = lay.block_meta(block)
        piece = dask.delayed(_dequantize_block, pure=True)(codes, flds, meta, q.origin)
        parts.append(da.from_delayed(piece, block, dtype, meta=xp.empty((0,) * len(block), dtype)))
    out = da.block(_nest(parts, [len(c) for c in chunks]))
    if lay.moved is not None and lay.moved != len(lay.shape) - 1:
        out = da.moveaxis(out, -1, lay.moved)
    return out


def _nest(items: list[Any], grid: list[int]) -> Any:
    """``items`` (C order) as nested lists of the block grid (for ``da.block``)."""
    if len(grid) <= 1:
        return items
    step = len(items) // grid[0]
    return [_nest(items[i * step:(i + 1) * step], grid[1:]) for i in range(grid[0])]


def _pieces(arr: Any, lengths: list[int]) -> list[Any]:
    """Delayed pieces of 1-D dask ``arr`` of the given consecutive lengths (None for 0)."""
    nonzero = tuple(n for n in lengths if n)
    if sum(nonzero) != arr.shape[0]:
        raise ValueError(f"array of length {arr.shape[0]} does not match the layout ({sum(nonzero)})")
    cut = arr.rechunk((nonzero,)).to_delayed().ravel().tolist()
    it = iter(cut)
    return [next(it) if n else None for n in lengths]


def _dequantize_block(codes: list[Array | None], fields: dict[str, Array], meta: dict[str, Any],
                      origin: Origin) -> Array:
    joined = [c for c in codes if c is not None]
    flat = joined[0] if len(joined) == 1 else xp_of(joined[0]).concatenate(joined)
    return QuantizedArray(flat, fields, meta, origin).dequantize()


# -- round and hadamard ------------------------------------------------------------------------------
def round(x: Any, mode: str = "nearest_even", *, return_seed: bool = False,  # noqa: A001
          **kwargs: Any) -> Any:
    """Lazy ``lowbit.round`` of a dask array; bit-identical to rounding the whole in memory.

    Elementwise modes keep the input's chunks; ``stochastic`` rechunks to flat runs (its
    counter is the C-order index); ``diffuse`` rechunks so the diffusion axes are whole.
    """
    from lowbit.rounding.core import _axes
    from lowbit.rounding.core import round as round_now

    _origin(x)
    xp = xp_of(x._meta)
    seed = check_seed(kwargs.pop("seed", None), mode)
    round_now(xp.zeros((1,) * x.ndim, x.dtype), mode, seed=seed, **kwargs)  # validates arguments
    if mode == "diffuse":
        count = 1 if kwargs.get("kernel") is None else 2
        axes = _axes(kwargs.get("axis", -1), x.ndim, count)
        xr = x.rechunk({a: -1 for a in axes})
        out = xr.map_blocks(round_now, mode, seed=seed, **kwargs, dtype=x.dtype, meta=x._meta)
    elif mode == "stochastic":
        lay = Layout({"shape": list(x.shape), "bits": 8})
        xr = x.rechunk(lay.plan(_target(x), x.chunks))
        strides = [math.prod(x.shape[d + 1:]) for d in range(x.ndim)]
        out = xr.map_blocks(_round_block, mode, seed, strides, kwargs, dtype=x.dtype, meta=x._meta)
    else:
        out = x.map_blocks(round_now, mode, seed=seed, **kwargs, dtype=x.dtype, meta=x._meta)
    return (out, seed) if return_seed else out


def _round_block(block: Array, mode: str, seed: int, strides: list[int], kwargs: dict[str, Any],
                 block_info: dict[Any, Any] | None = None) -> Array:
    from lowbit.rounding.core import round as round_now

    assert block_info is not None  # dask passes it to a function that takes it
    start = sum(lo * s for (lo, _), s in zip(block_info[0]["array-location"], strides, strict=True))
    return round_now(block, mode, seed=seed_at(seed, start), **kwargs)


def hadamard(x: Any, axis: int, normalize: bool, seed: int | None, *, inverse: bool) -> Any:
    """Lazy ``lowbit.hadamard`` / ``inverse_hadamard``: the transform axis made whole in each
    chunk, every other axis chunked as given."""
    from lowbit.transforms import hadamard as hadamard_now
    from lowbit.transforms import inverse_hadamard

    fn = inverse_hadamard if inverse else hadamard_now
    _origin(x)
    xp = xp_of(x._meta)
    small = [1] * x.ndim
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and -x.ndim <= axis < x.ndim:
        small[int(axis)] = x.shape[int(axis)]
    fn(xp.zeros(small, x.dtype), axis, normalize, seed)  # validates arguments and the length
    return x.rechunk({int(axis) % x.ndim: -1}).map_blocks(
        fn, axis, normalize, seed, dtype=x.dtype, meta=x._meta)
