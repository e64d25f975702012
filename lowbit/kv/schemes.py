"""KV schemes under ``lowbit.quantize(x, scheme=...)``: kvarn (and its presets), kivi, quarot, fp8.

``x`` has shape ``[..., T, D]`` (tokens x head_dim).  Every leading index (e.g. batch and
head) is quantized on its own, in blocks of ``group_size`` tokens; when ``T`` is not a multiple
of ``group_size`` the last ``T % group_size`` tokens form one narrower block (a narrower tile for
KVarN, fewer tokens per KIVI key group).  Schemes without token groups (``quarot``,
``fp8``) treat all ``T`` tokens as one block: for ``fp8`` that is one scale per leading
index ("per head").

Storage (``QuantizedArray``): ``codes`` = the full blocks' packed codes (leading index
major, block minor, each block starting on a byte boundary) followed by the narrower
blocks' codes (leading index major); each field ``name`` holds the full blocks' values
(flattened in the same order) and ``tail.name`` the narrower blocks'.  Codecs and their
fields are described in :mod:`lowbit.kv.codecs`; rotated codecs (kvarn, quarot) store the
rotated frame and :meth:`dequantize` un-rotates.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.arrays import Array, Origin, kernel_input, to_dtype, xp_of
from lowbit.kv import codecs
from lowbit.kv.codecs import Codec, check_kind, check_kv_group_size
from lowbit.quantized import QuantizedArray
from lowbit.schema import KVMeta
from lowbit.validate import check_bits


@dataclass(frozen=True)
class Preset:
    """A named KV configuration: scheme family, bits per K and V, tokens per tile."""

    name: str
    family: str
    key_bits: int
    value_bits: int
    group_size: int | None
    #: codec options the preset fixes, e.g. (("variant", "prod"),) for turboquant-prod-*
    options: tuple[tuple[str, Any], ...] = ()

    def bits(self, kind: str) -> int:
        return self.key_bits if kind == "key" else self.value_bits


def _kvarn_presets() -> dict[str, Preset]:
    out = {}
    for kb, vb in ((2, 2), (4, 2), (4, 4)):
        for g in (128, 64):
            name = f"kvarn-k{kb}v{vb}-g{g}"
            out[name] = Preset(name, "kvarn", kb, vb, g)
    return out


def _turboquant_presets() -> dict[str, Preset]:
    out = {}
    for variant in ("mse", "prod"):
        for kb, vb in ((2, 2), (3, 2), (3, 3), (4, 2), (4, 4)):
            name = f"turboquant-{variant}-k{kb}v{vb}"
            out[name] = Preset(name, "turboquant", kb, vb, None, (("variant", variant),))
    return out


def _kvarn_grid_presets() -> dict[str, Preset]:
    grids = (("key_grid", "lloyd-max"), ("value_grid", "lloyd-max"))
    return {"kvarn-lm-k2v2-g128": Preset("kvarn-lm-k2v2-g128", "kvarn", 2, 2, 128, grids)}


#: KVarN presets (DESIGN.md section 4): k2v2 is the paper's, k4v2 the official release's default;
#: TurboQuant presets (lowbit/kv/turboquant.py): mse, or prod (keys: bits - 1 MSE + 1-bit QJL).
#: kvarn-lm-*: both kinds on the Lloyd-Max grid (lowbit/kv/kvarn_grid.py; the issue-20 study's best
#: 2-bit scheme, with scale_dtype="float8_e4m3" at 2.38 bits/element on head_dim 64).
PRESETS: dict[str, Preset] = {**_kvarn_presets(), **_kvarn_grid_presets(), **_turboquant_presets()}

#: Scheme families and their default tokens per block (None: all tokens in one block).
FAMILY_GROUP: dict[str, int | None] = {"kvarn": 128, "kivi": 128, "quarot": None, "rtn": None, "fp8": None,
                                       "turboquant": None}
#: Codec options each family records in its metadata (besides bits).
FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {
    "kvarn": ("iterations", "scale_dtype", "tile_exponent"), "kivi": ("value_group_size",),
    "turboquant": ("variant", "seed", "norm_dtype"),
}


def make_codec(family: str, key_bits: int, value_bits: int, **options: Any) -> Codec:
    """The codec of ``family`` with these bits and options (see :mod:`lowbit.kv.codecs`)."""
    if family == "kvarn":
        grids = {k: options.pop(k) for k in ("key_grid", "value_grid") if k in options}
        if any(g != "uniform" for g in grids.values()):  # a codebook grid: lowbit/kv/kvarn_grid.py
            from lowbit.kv.kvarn_grid import KVarNGridCodec

            return KVarNGridCodec(key_bits, value_bits, **options, **grids)
        return codecs.KVarNCodec(key_bits, value_bits, **options)
    if family == "kivi":
        return codecs.KiviCodec(key_bits, value_bits, **options)
    if family in ("quarot", "rtn"):
        if options:
            raise TypeError(f"scheme {family!r} got unexpected options {sorted(options)}")
        return codecs.TokenRTNCodec(key_bits, value_bits, rotated=family == "quarot")
    if family == "fp8":
        if options:
            raise TypeError(f"scheme 'fp8' got unexpected options {sorted(options)}")
        return codecs.FP8Codec()
    if family == "turboquant":
        from lowbit.kv.turboquant import TurboQuantCodec

        return TurboQuantCodec(key_bits, value_bits, **options)
    raise ValueError(f"unknown KV scheme family {family!r}; known: {sorted(FAMILY_GROUP)}")


def _check_x(arr: Array) -> tuple[int, int, int]:
    if arr.ndim < 2:
        raise ValueError(f"x must have shape [..., T, D] (tokens x head_dim), got shape {tuple(arr.shape)}")
    t, d = int(arr.shape[-2]), int(arr.shape[-1])
    return math.prod(arr.shape[:-2]), t, d


def _blocks(t: int, group_size: int | None) -> tuple[int, int, int]:
    """(full blocks, tokens per full block, tokens in the narrower last block)."""
    g = t if group_size is None else group_size
    return t // g, g, t % g


class KVScheme:
    """Front of one KV scheme family or preset (registered in :data:`lowbit.api.SCHEMES`)."""

    def __init__(self, family: str, preset: Preset | None = None) -> None:
        self.family = family
        self.preset = preset
        self.name = preset.name if preset is not None else family

    # -- quantize ---------------------------------------------------------------------------
    def options_signature(self) -> inspect.Signature:
        """The options :meth:`quantize` takes for this family or preset, for
        ``lowbit.api.scheme_options`` (help texts, the required-option check): ``kind`` is
        required; ``bits`` too unless a preset (or fp8) fixes it; codec options with defaults."""
        P = inspect.Parameter
        params = [] if self.preset is not None or self.family == "fp8" else [P("bits", P.KEYWORD_ONLY)]
        params.append(P("kind", P.KEYWORD_ONLY))
        if self.preset is None and FAMILY_GROUP[self.family] is not None:
            params.append(P("group_size", P.KEYWORD_ONLY, default=FAMILY_GROUP[self.family]))
        from lowbit.kv.kvarn_grid import KVarNGridCodec
        from lowbit.kv.turboquant import TurboQuantCodec

        codec = {"kvarn": KVarNGridCodec, "kivi": codecs.KiviCodec, "turboquant": TurboQuantCodec}.get(self.family)
        fixed = dict(self.preset.options) if self.preset is not None else {}
        if codec is not None:  # the codec's own options, read from its constructor
            params += [q.replace(kind=P.KEYWORD_ONLY) for name, q in inspect.signature(codec).parameters.items()
                       if name not in ("key_bits", "value_bits") and name not in fixed]
        return inspect.Signature(params)

    def quantize(self, arr: Array, origin: Origin, bits: int | None = None, *, kind: str | None = None,
                 group_size: int | None = -1, **options: Any) -> QuantizedArray:
        """Quantize K or V ``x [..., T, D]`` (see the module docstring and docs/kv.md).

        Parameters
        ----------
        bits : int
            Code width 1..8, required (never guessed); presets (and fp8: 8) fix it per kind.
        kind : {"key", "value"}
            Required: whether ``x`` holds keys or values (tile orientation of KVarN, grouping
            of KIVI; a preset's K and V widths differ).
        group_size : int, optional
            Tokens per block, a multiple of 8 (kvarn, kivi: default 128; presets fix it).
        **options
            kvarn: ``iterations`` (8), ``scale_dtype`` ("float16" or "float8_e4m3"),
            ``key_grid`` / ``value_grid`` ("uniform", "lloyd-max", "uniform-fit");
            kivi: ``value_group_size`` (32); turboquant: ``variant`` ("mse" or "prod"),
            ``seed`` (0, the rotation's), ``norm_dtype`` ("float16" or "float32").

        Raises
        ------
        ValueError
            Bad shape, bits, kind, group_size or options, a head_dim the Hadamard transform does
            not support (kvarn, quarot), or NaN/Inf in ``x``.
        """
        if kind is None:
            raise ValueError(f"scheme {self.name!r} needs kind='key' or kind='value' (no default: "
                             "keys and values are quantized differently)")
        kind = check_kind(kind)
        lead, t, d = _check_x(arr)
        if self.preset is not None:
            want = self.preset.bits(kind)
            if bits is not None and bits != want:
                raise ValueError(f"preset {self.name!r} stores {kind}s with {want} bits, got bits={bits!r}")
            if group_size not in (-1, self.preset.group_size):
                raise ValueError(f"preset {self.name!r} uses group_size={self.preset.group_size}, got group_size={group_size!r}")
            bits, group_size = want, self.preset.group_size
        elif self.family == "fp8":
            if bits not in (None, 8):
                raise ValueError(f"scheme 'fp8' stores 8-bit e4m3 codes, got bits={bits!r}")
            bits = 8
        if bits is None:
            raise ValueError(f"scheme {self.name!r} needs bits= (1..8; no default)")
        bits = check_bits(bits)
        if group_size == -1:
            group_size = FAMILY_GROUP[self.family]
        if FAMILY_GROUP[self.family] is None and group_size is not None:
            raise ValueError(f"scheme {self.name!r} has no token groups; got group_size={group_size!r}")
        if group_size is not None:
            group_size = check_kv_group_size(group_size)
        if self.preset is not None:
            for k, v in self.preset.options:
                if k in options and options[k] != v:
                    raise ValueError(f"preset {self.name!r} fixes {k}={v!r}, got {k}={options[k]!r}")
            options = {**options, **dict(self.preset.options)}
        codec = make_codec(self.family, bits, bits, **options)

        xp = xp_of(arr)
        x = kernel_input(arr, origin.dtype)  # CPU: float32 for 16-bit input; GPU: as stored
        if x.dtype == np.float64:
            with np.errstate(over="ignore"):  # beyond the float32 range: Inf, refused below
                x = codecs.as_float32(x)
        x = x.reshape(lead, t, d)
        if not _all_finite(x):
            raise ValueError(f"x contains NaN or Inf (or float64 values beyond the float32 range); "
                             f"scheme {self.name!r} needs finite values")
        n_full, g, tail = _blocks(t, group_size)
        parts = []
        if n_full:
            parts.append(codec.encode_tokens(x[:, : n_full * g].reshape(lead * n_full, g, d), kind))
        if tail:
            parts.append(codec.encode_tokens(x[:, n_full * g:], kind))
        codes = xp.concatenate([p[0].reshape(-1) for p in parts])
        fields: dict[str, Array] = {}
        for i, (_, f) in enumerate(parts):
            prefix = "tail." if (i == 1 or not n_full) else ""
            fields.update({prefix + k: v.reshape(-1) for k, v in f.items()})
        meta = KVMeta(scheme=self.name, shape=tuple(int(s) for s in arr.shape), dtype=origin.dtype,
                      bits=bits, kind=kind, group_size=group_size,
                      **{k: v for k, v in codec.options().items() if k not in ("key_bits", "value_bits")}
                      ).to_meta()
        return QuantizedArray(codes, fields, meta, origin)

    # -- dequantize ---------------------------------------------------------------------------
    def _codec_of(self, m: dict[str, Any]) -> Codec:
        opts: dict[str, Any] = {k: m[k] for k in FAMILY_OPTIONS.get(self.family, ()) + ("key_grid", "value_grid")
                                if k in m}
        if self.family == "kvarn":  # files from before the per-tile exponent: none
            opts["tile_exponent"] = bool(m.get("tile_exponent", False))
        bits = int(m["bits"])
        return make_codec(self.family, bits, bits, **opts)

    def _split(self, q: QuantizedArray) -> list[tuple[int, int, np.ndarray, dict[str, np.ndarray]]]:
        """[(blocks, tokens per block, codes [n, bytes], fields {name: [n, ...]})] full, then tail."""
        m = q.meta
        codec = self._codec_of(m)
        shape = tuple(m["shape"])
        lead, t, d = math.prod(shape[:-2]), shape[-2], shape[-1]
        n_full, g, tail = _blocks(t, m["group_size"])
        out = []
        offset = 0
        for n, tok, prefix in ((lead * n_full, g, ""), (lead, tail, "tail.")):
            if n == 0 or tok == 0:
                continue
            nbytes = codec.code_bytes(tok, d, m["kind"])
            codes = q.codes[offset: offset + n * nbytes].reshape(n, nbytes)
            offset += n * nbytes
            names = [k for k in q.fields if k.startswith(prefix) and (prefix or not k.startswith("tail."))]
            fields = {k[len(prefix):]: q.fields[k].reshape(n, -1) for k in names}
            out.append((n, tok, codes, fields))
        if offset != q.codes.size:
            raise ValueError(f"{self.name}: codes have {q.codes.size} bytes, the layout needs {offset}")
        return out

    def dequantize(self, q: QuantizedArray) -> Array:
        m = q.meta
        codec = self._codec_of(m)
        shape = tuple(m["shape"])
        lead, t, d = math.prod(shape[:-2]), shape[-2], shape[-1]
        n_full = t // (m["group_size"] or t)
        xp = xp_of(q.codes)
        x = xp.empty((lead, t, d), np.float32)
        for n, tok, codes, fields in self._split(q):
            blocks = codec.decode_tokens(codes, fields, m["kind"], tok, d)
            if tok == (m["group_size"] or t) and n == lead * n_full:
                x[:, : n_full * tok] = blocks.reshape(lead, n_full * tok, d)
            else:
                x[:, n_full * (m["group_size"] or t):] = blocks
        out = x.astype(np.float64) if q.origin.dtype == "float64" else x
        return to_dtype(out, q.origin.dtype).reshape(shape)


def _all_finite(x: Array) -> bool:
    """No NaN or Inf in ``x`` (float16 / float32, or bfloat16 bits as uint16); on a GPU one
    read-back (``lowbit.quantize``'s input check)."""
    return not bool(codecs.nonfinite_blocks(x.reshape(1, -1))[0])


kvarn = KVScheme("kvarn")
kivi = KVScheme("kivi")
quarot = KVScheme("quarot")
fp8 = KVScheme("fp8")
turboquant = KVScheme("turboquant")
#: preset schemes by name, e.g. ``lowbit.quantize(x, scheme="kvarn-k4v2-g128", kind="value")``
preset_schemes = {name: KVScheme(p.family, p) for name, p in PRESETS.items()}


def __getattr__(name: str) -> KVScheme:
    key = name.replace("_", "-")
    if key in preset_schemes:
        return preset_schemes[key]
    raise AttributeError(name)
