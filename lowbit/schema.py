"""The metadata schema: one typed record per scheme family, checked by one validator.

``QuantizedArray.meta`` is a flat JSON object; each scheme family has a frozen dataclass
here that says which keys it holds, their types and ranges, how they constrain each other,
and which arrays (dtype, shape) they imply:

===============  ============================================  ==================================
record           schemes                                       arrays
===============  ============================================  ==================================
:class:`RtnMeta`      ``rtn``                                  ``scale`` [+ ``offset``] per group
:class:`ElementMeta`  ``fixed``, ``fp8_e4m3``, ... ``fp4_e2m1``  ``scale`` per group (absmax)
:class:`BlockMeta`    ``mxfp8`` ... ``mxint8``, ``nvfp4``      ``scale`` per block [+ tensor]
:class:`CodebookMeta` ``codebook``                            ``scale`` per group (unless none)
:class:`KVMeta`       ``kvarn`` (+ presets), ``kivi``,         the codec's per-block fields,
                      ``quarot``, ``fp8``                      full blocks then ``tail.*``
===============  ============================================  ==================================

The fronts build their metadata through these records (:meth:`Meta.to_meta`), and
:func:`parse` checks a metadata dict -- every key present, no other key, every value of the
right type and range, the keys consistent with each other -- before ``lowbit.load`` reads a
single array: :meth:`Meta.arrays` is what each ``.npy`` member's header must declare.
Every problem is a ``ValueError`` naming the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lowbit.arrays import FLOAT_DTYPES
from lowbit.formats import BLOCK_FORMATS, MINIFLOATS, OVERFLOW_POLICIES, FixedPoint
from lowbit.rounding.modes import RoundMode

#: (dtype, shape) a member of a saved file must have.
ArraySpec = tuple[np.dtype[Any], tuple[int, ...]]

#: Largest number of dimensions, and of elements, a metadata ``shape`` may declare.
MAX_NDIM = 32
MAX_SIZE = 1 << 62

_ROUNDING = tuple(RoundMode.__members__)
_U8 = np.dtype(np.uint8)


def _key(kind: Any, *, lo: int | None = None, hi: int | None = None,
         choices: tuple[Any, ...] | None = None, nullable: bool = False,
         default: Any = dataclasses.MISSING) -> Any:
    """A metadata key: its type (int, bool, str or "shape"), range or choices, None allowed."""
    md = {"kind": kind, "lo": lo, "hi": hi, "choices": choices, "nullable": nullable}
    return field(default=default, metadata=md)


def _describe(md: dict[str, Any]) -> str:
    kind = md["kind"]
    if kind == "shape":
        text = f"a list of at most {MAX_NDIM} positive integers"
    elif kind == "floats":
        text = f"a list of {md['lo']}..{md['hi']} finite numbers"
    elif md["choices"] is not None:
        text = f"one of {list(md['choices'])}"
    elif kind is int:
        lo, hi = md["lo"], md["hi"]
        text = "an integer" + (f" in {lo}..{hi}" if lo is not None and hi is not None else
                               f" >= {lo}" if lo is not None else "")
    else:
        text = {bool: "true or false", str: "a string"}[kind]
    return text + (" or null" if md["nullable"] else "")


def _value_ok(value: Any, md: dict[str, Any]) -> bool:
    if value is None:
        return bool(md["nullable"])
    kind = md["kind"]
    if kind == "shape":
        return (isinstance(value, (list, tuple)) and len(value) <= MAX_NDIM
                and all(_is_int(s) and 1 <= s <= MAX_SIZE for s in value)
                and math.prod(value) <= MAX_SIZE)
    if kind == "floats":
        return (isinstance(value, (list, tuple)) and md["lo"] <= len(value) <= md["hi"]
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        for v in value))
    if kind is int:
        if not _is_int(value):
            return False
    elif kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            return False
    elif not isinstance(value, kind):
        return False
    if md["choices"] is not None and value not in md["choices"]:
        return False
    return (md["lo"] is None or value >= md["lo"]) and (md["hi"] is None or value <= md["hi"])


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def bad(key: str, problem: str) -> ValueError:
    """The error for metadata key ``key``."""
    return ValueError(f"metadata {key!r} {problem}")


@dataclass(frozen=True, kw_only=True)
class Meta:
    """Keys every lowbit file holds; base of the per-family records."""

    #: Schemes this record describes (the ``scheme`` key's choices).
    SCHEMES: ClassVar[tuple[str, ...]] = ()
    #: Keys of files written before a rename -> today's key (:func:`parse` maps them).
    LEGACY_KEYS: ClassVar[dict[str, str]] = {}

    scheme: str = _key(str)
    shape: tuple[int, ...] = _key("shape")
    dtype: str = _key(str, choices=FLOAT_DTYPES)
    bits: int = _key(int, lo=1, hi=8)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "scheme" and value not in self.SCHEMES:
                raise bad("scheme", f"must be one of {list(self.SCHEMES)}, got {value!r}")
            if not _value_ok(value, dict(f.metadata)):
                raise bad(f.name, f"must be {_describe(dict(f.metadata))}, got {value!r:.80}")
            if isinstance(value, (np.integer, np.bool_)):
                object.__setattr__(self, f.name, value.item())
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        self.check()

    # -- per family ---------------------------------------------------------------------------
    def check(self) -> None:
        """Raise ValueError where keys contradict each other (each record adds its rules)."""

    def field_specs(self) -> dict[str, ArraySpec]:
        """(dtype, shape) of every field the metadata implies."""
        return {}

    def codes_spec(self) -> ArraySpec:
        """(dtype, shape) of the packed codes: ceil(size * bits / 8) bytes."""
        return _U8, ((self.size * self.bits + 7) // 8,)

    def check_arrays(self, fields: dict[str, np.ndarray]) -> None:
        """Raise ValueError for field *values* the metadata does not allow (after reading)."""

    # -- shared -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def arrays(self) -> dict[str, ArraySpec]:
        """Every member a saved file holds besides its header: ``codes`` and ``field.<name>``."""
        return {"codes": self.codes_spec(), **{f"field.{k}": v for k, v in self.field_specs().items()}}

    def to_meta(self) -> dict[str, Any]:
        """The JSON-able metadata dict (``QuantizedArray.meta``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["shape"] = list(self.shape)
        return out

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def _axis_in_shape(self, axis: int | None) -> None:
        if axis is not None and not axis < len(self.shape):
            raise bad("axis", f"must be null or in 0..{len(self.shape) - 1} for shape "
                              f"{list(self.shape)}, got {axis}")


def _groups(shape: tuple[int, ...], axis: int | None, group_size: int | None) -> int:
    """Number of groups of the flat axis-last layout (one per tensor, fibre or group)."""
    n = math.prod(shape)
    if axis is None:
        return 1
    return n // (group_size if group_size is not None else shape[axis])


def _check_grouping(m: RtnMeta | ElementMeta | CodebookMeta) -> None:
    m._axis_in_shape(m.axis)
    if m.group_size is not None:
        if m.axis is None:
            raise bad("group_size", f"needs an axis to group along, got {m.group_size} with axis null")
        if m.shape[m.axis] % m.group_size:
            raise bad("group_size", f"{m.group_size} does not divide the axis length {m.shape[m.axis]}")


@dataclass(frozen=True, kw_only=True)
class RtnMeta(Meta):
    """Scheme ``rtn`` (lowbit/affine.py): affine integers per tensor / fibre / group."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("rtn",)

    scheme: str = _key(str, default="rtn")
    axis: int | None = _key(int, lo=0, nullable=True)
    group_size: int | None = _key(int, lo=1, nullable=True)
    symmetric: bool = _key(bool)
    scale_dtype: str = _key(str, choices=("float32", "float16", "bfloat16"))
    rounding: str = _key(str, choices=_ROUNDING, default="nearest_even")
    seed: int | None = _key(int, lo=0, hi=(1 << 64) - 1, nullable=True, default=None)
    rbits: int = _key(int, lo=1, hi=32, default=16)

    def check(self) -> None:
        _check_grouping(self)
        if self.rounding == "diffuse" and self.symmetric and self.bits == 1:
            raise bad("rounding", "'diffuse' needs a uniform grid; 1-bit symmetric has none")

    def field_specs(self) -> dict[str, ArraySpec]:
        n_groups = _groups(self.shape, self.axis, self.group_size)
        dt = np.dtype(np.uint16 if self.scale_dtype == "bfloat16" else self.scale_dtype)
        names = ("scale",) if self.symmetric else ("scale", "offset")
        return {k: (dt, (n_groups,)) for k in names}


#: Element schemes: ``fixed`` and the MiniFloat presets.
ELEMENT_SCHEMES = ("fixed", *MINIFLOATS)


@dataclass(frozen=True, kw_only=True)
class ElementMeta(Meta):
    """Element-format schemes (lowbit/minifloat.py): direct conversion, or absmax scales."""

    SCHEMES: ClassVar[tuple[str, ...]] = tuple(MINIFLOATS)
    #: ``offset`` (the generator counter of the first element) was renamed ``first_index``.
    LEGACY_KEYS: ClassVar[dict[str, str]] = {"offset": "first_index"}

    rounding: str = _key(str, choices=_ROUNDING, default="nearest_even")
    seed: int | None = _key(int, lo=0, hi=(1 << 64) - 1, nullable=True, default=None)
    rbits: int = _key(int, lo=1, hi=32, default=16)
    overflow: str = _key(str, choices=OVERFLOW_POLICIES, default="saturate")
    scale: str | None = _key(str, choices=("absmax",), nullable=True, default=None)
    axis: int | None = _key(int, lo=0, nullable=True, default=None)
    group_size: int | None = _key(int, lo=1, nullable=True, default=None)
    first_index: int = _key(int, lo=0, hi=(1 << 62) - 1, default=0)

    def check(self) -> None:
        fixed = self.scheme == "fixed"
        if not fixed and self.bits != MINIFLOATS[self.scheme].bits:
            raise bad("bits", f"of {self.scheme} must be {MINIFLOATS[self.scheme].bits}, got {self.bits}")
        if self.scale is None and (self.axis is not None or self.group_size is not None):
            raise bad("axis", "and 'group_size' must be null without a scale (direct conversion)")
        _check_grouping(self)
        if self.overflow == "wrap" and not fixed:
            raise bad("overflow", f"'wrap' applies to fixed point only, not {self.scheme}")
        if self.overflow == "nonfinite" and (fixed or not MINIFLOATS[self.scheme].has_nan):
            raise bad("overflow", f"'nonfinite' needs a format with Inf or NaN, not {self.scheme}")
        if self.rounding == "diffuse" and (not fixed or self.scale is not None
                                           or self.overflow not in ("saturate", "error")):
            raise bad("rounding", "'diffuse' is for scheme 'fixed' without a scale, saturating")

    def field_specs(self) -> dict[str, ArraySpec]:
        if self.scale is None:
            return {}
        return {"scale": (np.dtype(np.float32), (_groups(self.shape, self.axis, self.group_size),))}


@dataclass(frozen=True, kw_only=True)
class FixedMeta(ElementMeta):
    """Scheme ``fixed``: an element scheme whose format is in the metadata."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("fixed",)

    scheme: str = _key(str, default="fixed")
    frac_bits: int = _key(int, lo=-64, hi=64)
    signed: bool = _key(bool)

    @property
    def format(self) -> FixedPoint:
        return FixedPoint(bits=self.bits, frac_bits=self.frac_bits, signed=self.signed)


@dataclass(frozen=True, kw_only=True)
class BlockMeta(Meta):
    """Block-format schemes (lowbit/blockfmt.py): MX and NVFP4."""

    SCHEMES: ClassVar[tuple[str, ...]] = tuple(BLOCK_FORMATS)

    axis: int = _key(int, lo=0)
    block_size: int = _key(int, lo=1, hi=1 << 20)
    padded_length: int = _key(int, lo=1)
    rounding: str = _key(str, choices=tuple(m for m in _ROUNDING if m != "diffuse"),
                         default="nearest_even")
    seed: int | None = _key(int, lo=0, hi=(1 << 64) - 1, nullable=True, default=None)
    rbits: int = _key(int, lo=1, hi=32, default=16)

    def check(self) -> None:
        fmt = BLOCK_FORMATS[self.scheme]
        if not self.shape:
            raise bad("shape", f"of {self.scheme} needs at least one dimension, got []")
        self._axis_in_shape(self.axis)
        if self.bits != fmt.element.bits:
            raise bad("bits", f"of {self.scheme} must be {fmt.element.bits}, got {self.bits}")
        if self.block_size != fmt.block_size:
            raise bad("block_size", f"of {self.scheme} must be {fmt.block_size}, got {self.block_size}")
        want = -(-self.shape[self.axis] // fmt.block_size) * fmt.block_size
        if self.padded_length != want:
            raise bad("padded_length", f"must be {want} (the axis length {self.shape[self.axis]} "
                                       f"rounded up to a block), got {self.padded_length}")

    @property
    def padded_size(self) -> int:
        return self.size // self.shape[self.axis] * self.padded_length

    def codes_spec(self) -> ArraySpec:
        return _U8, ((self.padded_size * self.bits + 7) // 8,)

    def field_specs(self) -> dict[str, ArraySpec]:
        out: dict[str, ArraySpec] = {"scale": (_U8, (self.padded_size // self.block_size,))}
        if BLOCK_FORMATS[self.scheme].tensor_scale:
            out["tensor_scale"] = (np.dtype(np.float32), (1,))
        return out

    def check_arrays(self, fields: dict[str, np.ndarray]) -> None:
        if "tensor_scale" in fields:
            t = float(fields["tensor_scale"][0])
            if not (math.isfinite(t) and t > 0):
                raise ValueError(f"field 'tensor_scale' must be positive and finite, got {t!r}")


@dataclass(frozen=True, kw_only=True)
class CodebookMeta(Meta):
    """Scheme ``codebook`` (lowbit/codebook_scheme.py): codes into a Codebook's levels, a scale
    per group (absmax, norm or rms) or none.  The levels must form a valid
    :class:`~lowbit.formats.Codebook` of ``bits`` bits (sorted, float32 values)."""

    SCHEMES: ClassVar[tuple[str, ...]] = ("codebook",)
    LEGACY_KEYS: ClassVar[dict[str, str]] = {"offset": "first_index"}

    scheme: str = _key(str, default="codebook")
    codebook: str = _key(str)
    levels: tuple[float, ...] = _key("floats", lo=2, hi=256)
    distribution: str = _key(str)
    scale: str | None = _key(str, choices=("absmax", "norm", "rms"), nullable=True)
    axis: int | None = _key(int, lo=0, nullable=True)
    group_size: int | None = _key(int, lo=1, nullable=True)
    scale_dtype: str = _key(str, choices=("float32", "float16", "bfloat16"))
    rounding: str = _key(str, choices=("nearest_even", "stochastic"), default="nearest_even")
    seed: int | None = _key(int, lo=0, hi=(1 << 64) - 1, nullable=True, default=None)
    rbits: int = _key(int, lo=1, hi=32, default=16)
    first_index: int = _key(int, lo=0, hi=(1 << 62) - 1, default=0)

    def check(self) -> None:
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
        try:
            cb = self.format
        except (TypeError, ValueError) as exc:
            raise bad("levels", f"do not form a codebook: {exc}") from None
        if cb.levels != self.levels:
            raise bad("levels", "must be float32 values (as a Codebook stores them)")
        if self.scale is None and (self.axis is not None or self.group_size is not None):
            raise bad("axis", "and 'group_size' must be null without a scale (direct encoding)")
        _check_grouping(self)

    @property
    def format(self) -> Any:
        """The :class:`~lowbit.formats.Codebook` the metadata describes."""
        from lowbit.formats import Codebook

        return Codebook(self.codebook, self.bits, self.levels, self.distribution)

    def to_meta(self) -> dict[str, Any]:
        out = super().to_meta()
        out["levels"] = list(self.levels)
        return out

    def field_specs(self) -> dict[str, ArraySpec]:
        if self.scale is None:
            return {}
        dt = np.dtype(np.uint16 if self.scale_dtype == "bfloat16" else self.scale_dtype)
        return {"scale": (dt, (_groups(self.shape, self.axis, self.group_size),))}


#: KVMeta keys present only for the families that take them.
_KV_OPTIONAL = ("iterations", "scale_dtype", "value_group_size", "tile_exponent")


def _kv_schemes() -> tuple[str, ...]:
    from lowbit.kv.schemes import FAMILY_GROUP, PRESETS

    return tuple(f for f in FAMILY_GROUP if f != "rtn") + tuple(PRESETS)


#: Codec option keys of KV metadata; each family records its own (FAMILY_OPTIONS), no others.
_KV_OPTION_KEYS = _KV_OPTIONAL + ("variant", "seed", "norm_dtype", "key_grid", "value_grid")


@dataclass(frozen=True, kw_only=True)
class KVMeta(Meta):
    """KV-cache schemes (lowbit/kv/schemes.py): blocks of ``group_size`` tokens of x [..., T, D].

    ``iterations`` and ``scale_dtype`` (kvarn) and ``value_group_size`` (kivi) are present
    exactly for the families that take them.  ``tile_exponent`` (kvarn): the blocks carry a
    per-tile power-of-two exponent (field ``tile_exponent``, int8); files written before it
    existed lack the key, which reads as false.  ``variant``, ``seed``, ``norm_dtype``
    (turboquant) are present exactly for that family; ``key_grid`` and ``value_grid`` (kvarn) together or not at all (absent: uniform grids).
    """

    SCHEMES: ClassVar[tuple[str, ...]] = ()  # filled in on first use (_kv_schemes)
    #: ``group`` (tokens per block) was renamed ``group_size``, the name of every other front.
    LEGACY_KEYS: ClassVar[dict[str, str]] = {"group": "group_size"}

    kind: str = _key(str, choices=("key", "value"))
    group_size: int | None = _key(int, lo=8, nullable=True)
    iterations: int | None = _key(int, lo=0, nullable=True, default=None)
    scale_dtype: str | None = _key(str, choices=("float16", "float8_e4m3"), nullable=True, default=None)
    value_group_size: int | None = _key(int, lo=1, nullable=True, default=None)
    tile_exponent: bool | None = _key(bool, nullable=True, default=None)
    variant: str | None = _key(str, choices=("mse", "prod"), nullable=True, default=None)
    seed: int | None = _key(int, lo=0, hi=(1 << 64) - 1, nullable=True, default=None)
    norm_dtype: str | None = _key(str, choices=("float16", "float32"), nullable=True, default=None)
    key_grid: str | None = _key(str, choices=("uniform", "lloyd-max", "uniform-fit"), nullable=True,
                                default=None)
    value_grid: str | None = _key(str, choices=("uniform", "lloyd-max", "uniform-fit"), nullable=True,
                                  default=None)

    def __post_init__(self) -> None:
        if not KVMeta.SCHEMES:
            KVMeta.SCHEMES = _kv_schemes()
        if self.tile_exponent is None and isinstance(self.scheme, str) and self.family == "kvarn":
            object.__setattr__(self, "tile_exponent", False)  # a file from before the exponent
        super().__post_init__()

    @property
    def family(self) -> str:
        from lowbit.kv.schemes import PRESETS

        return PRESETS[self.scheme].family if self.scheme in PRESETS else self.scheme

    @property
    def options(self) -> dict[str, Any]:
        """The codec options the family takes (constructor arguments of lowbit.kv.codecs)."""
        from lowbit.kv.schemes import FAMILY_OPTIONS

        names = FAMILY_OPTIONS.get(self.family, ())
        if self.family == "kvarn" and (self.key_grid, self.value_grid) != (None, None):
            names += ("key_grid", "value_grid")  # codebook grids (lowbit/kv/kvarn_grid.py)
        return {k: getattr(self, k) for k in names}

    def to_meta(self) -> dict[str, Any]:
        out = super().to_meta()
        for k in _KV_OPTION_KEYS:
            if k not in self.options:
                del out[k]
        return out

    def check(self) -> None:
        from lowbit.kv.codecs import check_iterations
        from lowbit.kv.schemes import FAMILY_GROUP, PRESETS

        if len(self.shape) < 2:
            raise bad("shape", f"of {self.scheme} must be [..., T, D], got {list(self.shape)}")
        preset = PRESETS.get(self.scheme)
        if preset is not None:
            if self.bits != preset.bits(self.kind):
                raise bad("bits", f"of preset {self.scheme} for {self.kind}s must be "
                                  f"{preset.bits(self.kind)}, got {self.bits}")
            if self.group_size != preset.group_size:
                raise bad("group_size", f"of preset {self.scheme} must be {preset.group_size}, got {self.group_size}")
        if self.family == "fp8" and self.bits != 8:
            raise bad("bits", f"of scheme 'fp8' must be 8, got {self.bits}")
        if FAMILY_GROUP[self.family] is None and self.group_size is not None:
            raise bad("group_size", f"must be null for {self.scheme} (no token groups), got {self.group_size}")
        if self.group_size is not None and self.group_size % 8:
            raise bad("group_size", f"must be a multiple of 8, got {self.group_size}")
        for k in _KV_OPTION_KEYS:
            present = getattr(self, k) is not None
            if present != (k in self.options):
                raise bad(k, f"{'is required' if not present else 'does not apply'} for {self.scheme}")
        if self.family == "kvarn" and (self.key_grid is None) != (self.value_grid is None):
            raise bad("key_grid" if self.key_grid is None else "value_grid",
                      f"is required with {'value_grid' if self.key_grid is None else 'key_grid'}")
        if preset is not None:
            for k, v in preset.options:
                if getattr(self, k) != v:
                    raise bad(k, f"of preset {self.scheme} must be {v!r}, got {getattr(self, k)!r}")
        if self.iterations is not None:
            try:
                check_iterations(self.iterations)
            except ValueError as exc:
                raise bad("iterations", str(exc)) from None
        dim = self.shape[-1]
        if self.value_group_size is not None and self.kind == "value" and dim % self.value_group_size:
            raise bad("value_group_size", f"{self.value_group_size} does not divide head_dim {dim}")
        if self.codec().rotated:
            from lowbit.transforms import _check_length

            try:
                _check_length(dim, "head_dim")
            except ValueError as exc:
                raise bad("shape", str(exc)) from None

    def codec(self) -> Any:
        from lowbit.kv.schemes import make_codec

        return make_codec(self.family, self.bits, self.bits, **self.options)

    def blocks(self) -> list[tuple[str, int, int]]:
        """[(field prefix, blocks, tokens per block)]: full blocks, then the narrower tail."""
        lead, t = math.prod(self.shape[:-2]), self.shape[-2]
        g = t if self.group_size is None else self.group_size
        n_full, tail = t // g, t % g
        out: list[tuple[str, int, int]] = []
        if n_full:
            out.append(("", lead * n_full, g))
        if tail:
            out.append(("tail.", lead, tail))
        return out

    def codes_spec(self) -> ArraySpec:
        codec, dim = self.codec(), self.shape[-1]
        return _U8, (sum(n * codec.code_bytes(tok, dim, self.kind) for _, n, tok in self.blocks()),)

    def field_specs(self) -> dict[str, ArraySpec]:
        codec, dim = self.codec(), self.shape[-1]
        out: dict[str, ArraySpec] = {}
        for prefix, n, tok in self.blocks():
            for name, (dt, per_block) in codec.field_specs(tok, dim, self.kind).items():
                out[prefix + name] = (np.dtype(dt), (n * per_block,))
        return out


#: Record of each family, looked up by scheme name.
RECORDS: tuple[type[Meta], ...] = (RtnMeta, FixedMeta, ElementMeta, BlockMeta, CodebookMeta, KVMeta)


def record_class(scheme: Any) -> type[Meta]:
    """The record class of ``scheme``.

    Raises
    ------
    ValueError
        ``scheme`` is not a registered scheme name.
    """
    from lowbit.api import get_scheme

    get_scheme(scheme, name="metadata 'scheme'")  # a registered name, or a clear error
    if scheme == "rtn":
        return RtnMeta
    if scheme == "fixed":
        return FixedMeta
    if scheme in MINIFLOATS:
        return ElementMeta
    if scheme in BLOCK_FORMATS:
        return BlockMeta
    if scheme == "codebook":
        return CodebookMeta
    return KVMeta


def _rename_legacy(meta: dict[str, Any], cls: type[Meta]) -> dict[str, Any]:
    """``meta`` with the keys of older files (:attr:`Meta.LEGACY_KEYS`) under today's names."""
    out = dict(meta)
    for old, new in cls.LEGACY_KEYS.items():
        if old in out:
            if new in out:
                raise bad(old, f"is the old name of {new!r}; a file holds one of them, not both")
            out[new] = out.pop(old)
    return out


def parse(meta: Any) -> Meta:
    """Check a metadata dict against its scheme's record and return the record.

    Raises
    ------
    ValueError
        ``meta`` is not a dict, names an unknown scheme, lacks a key or holds an unknown one,
        or a value has the wrong type, lies out of range or contradicts another key.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(meta).__name__}")
    cls = record_class(meta.get("scheme"))
    meta = _rename_legacy(meta, cls)
    names = set(cls.keys())
    optional = set(_KV_OPTION_KEYS) if cls is KVMeta else set()
    unknown = sorted(set(meta) - names, key=str)
    if unknown:
        raise bad(str(unknown[0]), f"is not a key of {meta['scheme']} metadata (keys: {sorted(names)})")
    missing = sorted(names - set(meta) - optional)
    if missing:
        raise bad(missing[0], f"is missing ({meta['scheme']} metadata needs {sorted(names - optional)})")
    return cls(**meta)
