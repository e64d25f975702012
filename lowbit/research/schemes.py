"""KV-cache schemes under test, looked up by name at run time.

A scheme is a round trip ``x -> dequantize(quantize(x))`` on torch tensors of shape
``[..., T, D]`` (tokens × head_dim), told whether ``x`` holds keys or values. Every named scheme
is built from the public API (``lowbit.quantize(x, ...).dequantize()``), so the harness measures
exactly what a user gets. Names:

=====================  =====================================================================
name                   call (``b`` = key bits for keys, value bits for values)
=====================  =====================================================================
``none``               identity (lossless; bits/element = the input's storage width)
``rtn-k4v2[-g64]``     ``quantize(x, bits=b, scheme="rtn", axis=-1, group_size=64,
                       scale_dtype="float16")``: per token, channel groups of 64 (default: all)
``kivi-k2v2[-g128]``   ``quantize(x, bits=b, scheme="kivi", kind=kind, group_size=128)``;
                       option ``vg<N>`` adds ``value_group_size=N`` (values per token in groups
                       of N channels; default 32)
``quarot-k2v2``        ``quantize(x, bits=b, scheme="quarot", kind=kind)``
``kvarn-k2v2-g128``    ``quantize(x, bits=b, scheme="kvarn", kind=kind, group_size=128)``;
                       suffix ``-fp8`` adds ``scale_dtype="float8_e4m3"`` (the paper's ~2.3 bits)
``fp8``                ``quantize(x, scheme="fp8", kind=kind)``
``kvarn-...-vlm``      KVarN with a codebook grid (lowbit/kv/kvarn_grid.py): option ``klm`` /
                       ``vlm`` puts keys / values on the Lloyd-Max grid, ``kuf`` / ``vuf`` on
                       the fitted uniform grid (the others stay on KVarN's uniform grid)
``turboquant-k2v2``    ``quantize(x, bits=b, scheme="turboquant", kind=kind)``: option
                       ``prod`` for the inner-product variant (keys), ``s<N>`` the rotation seed
=====================  =====================================================================

A scheme whose family is not registered in this lowbit build (``lowbit.api.SCHEMES``) raises
:class:`SchemeUnavailableError` naming what is missing, when it is resolved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The K/V schemes the full ``lowbit eval kv`` run compares (about 2.3–3.4 bits/element).
DEFAULT_KV_SCHEMES = (
    "kvarn-k2v2-g128-fp8",
    "kvarn-k2v2-g128",
    "kivi-k2v2-g128",
    "quarot-k2v2",
    "rtn-k2v2-g64",
    "kvarn-k4v2-g128",
)
#: The subset ``--quick`` runs.
QUICK_KV_SCHEMES = ("kvarn-k2v2-g128-fp8", "kivi-k2v2-g128", "quarot-k2v2")

_NAME = re.compile(
    r"^(?P<family>[a-z0-9_]+)"
    r"(?:-k(?P<kbits>[1-8])v(?P<vbits>[1-8]))?"
    r"(?:-g(?P<group_size>[0-9]+))?"
    r"(?P<options>(?:-[a-z0-9_]+)*)$"
)
#: family -> (lowbit scheme name, whether it needs bits, options it accepts)
_FAMILIES: dict[str, tuple[str | None, bool, tuple[str, ...]]] = {
    "none": (None, False, ()),
    "rtn": ("rtn", True, ()),
    "kivi": ("kivi", True, ("vg<N>",)),
    "quarot": ("quarot", True, ()),
    "kvarn": ("kvarn", True, ("fp8", "klm", "vlm", "kuf", "vuf")),
    "fp8": ("fp8", False, ()),
    "turboquant": ("turboquant", True, ("mse", "prod", "s<N>")),
}
#: kvarn grid options -> (kind, grid)
_GRID_OPTIONS = {"klm": ("key", "lloyd-max"), "vlm": ("value", "lloyd-max"),
                 "kuf": ("key", "uniform-fit"), "vuf": ("value", "uniform-fit")}
_SEED = re.compile(r"^s(?P<seed>[0-9]+)$")
_VALUE_GROUP = re.compile(r"^vg(?P<size>[0-9]+)$")
#: numbered options -> their pattern
_NUMBERED = {"s<N>": _SEED, "vg<N>": _VALUE_GROUP}


class SchemeUnavailableError(ValueError):
    """A scheme name is malformed, or its family is not available in this lowbit build."""


#: What a scheme's round trip returns: x_hat, or (x_hat, bits/element), or a QuantizedArray.
Roundtrip = Callable[[Any, str], Any]


@dataclass
class KVRoundtrip:
    """A named K/V round trip, with the bits/element it reported, accumulated over calls.

    ``fn(x, kind)`` gets a torch tensor ``[..., T, D]`` and ``kind`` in ``{"key", "value"}``
    and returns the reconstruction (same shape, dtype and device), or a ``(x_hat,
    bits_per_element)`` pair, or an object with ``dequantize()`` and ``bits_per_element``
    (a :class:`lowbit.QuantizedArray`). Bits are recorded per kind, weighted by element count.
    """

    name: str
    fn: Roundtrip
    description: str = ""
    #: kind -> [sum of bits, number of elements] over all calls
    _bits: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def roundtrip(self, x: Any, kind: str) -> Any:
        """``dequantize(quantize(x))`` for ``kind`` in ``{"key", "value"}``."""
        if kind not in ("key", "value"):
            raise ValueError(f"kind must be 'key' or 'value', got {kind!r}")
        out = self.fn(x, kind)
        bpe = math.nan
        if hasattr(out, "dequantize"):
            bpe = float(out.bits_per_element)
            out = out.dequantize()
        elif isinstance(out, tuple):
            out, bpe = out[0], float(out[1])
        if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
            raise ValueError(
                f"scheme {self.name!r} returned shape {tuple(out.shape)} dtype {out.dtype} for "
                f"input shape {tuple(x.shape)} dtype {x.dtype}"
            )
        acc = self._bits.setdefault(kind, [0.0, 0.0])
        acc[0] += bpe * x.numel()
        acc[1] += x.numel()
        return out

    def bits_per_element(self, kind: str | None = None) -> float:
        """Element-weighted mean bits/element over all calls (both kinds when ``kind`` is None);
        NaN before any call or when the round trip did not report its cost."""
        kinds = ("key", "value") if kind is None else (kind,)
        total = sum(self._bits.get(k, [0.0, 0.0])[0] for k in kinds)
        count = sum(self._bits.get(k, [0.0, 0.0])[1] for k in kinds)
        return total / count if count else math.nan


def _identity(x: Any, kind: str) -> Any:
    return x.clone(), 8.0 * x.element_size()


def parse_name(name: str) -> dict[str, Any]:
    """Split a scheme name into family, key/value bits, group_size and options.

    Raises
    ------
    SchemeUnavailableError
        The name does not follow the grammar, or names an unknown family or option.
    """
    m = _NAME.match(name)
    if m is None or m["family"] not in _FAMILIES:
        raise SchemeUnavailableError(
            f"unknown K/V scheme {name!r}; expected one of the families {sorted(_FAMILIES)} "
            "written like 'kvarn-k2v2-g128', 'kivi-k2v2-g128', 'quarot-k2v2', 'rtn-k4v4-g64', "
            "'fp8' or 'none'"
        )
    family = m["family"]
    _, needs_bits, allowed = _FAMILIES[family]
    if needs_bits and m["kbits"] is None:
        raise SchemeUnavailableError(
            f"K/V scheme {name!r} needs its bits, written like '{family}-k2v2'"
        )
    if not needs_bits and m["kbits"] is not None:
        raise SchemeUnavailableError(f"K/V scheme {name!r}: {family!r} takes no bits")
    options = tuple(o for o in m["options"].split("-") if o)
    bad = [o for o in options if o not in allowed
           and not any(k in allowed and p.match(o) for k, p in _NUMBERED.items())]
    if bad:
        raise SchemeUnavailableError(
            f"K/V scheme {name!r}: unknown option(s) {bad}; {family!r} accepts {list(allowed)}"
        )
    return {
        "family": family,
        "key_bits": None if m["kbits"] is None else int(m["kbits"]),
        "value_bits": None if m["vbits"] is None else int(m["vbits"]),
        "group_size": None if m["group_size"] is None else int(m["group_size"]),
        "options": options,
    }


def _call_kwargs(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    """The ``lowbit.quantize`` keyword arguments for one kind (see the module table)."""
    family = spec["family"]
    bits = spec["key_bits"] if kind == "key" else spec["value_bits"]
    kwargs: dict[str, Any] = {}
    if bits is not None:
        kwargs["bits"] = bits
    if family == "rtn":
        kwargs.update(axis=-1, group_size=spec["group_size"], scale_dtype="float16")
        return kwargs
    kwargs["kind"] = kind
    if spec["group_size"] is not None:
        kwargs["group_size"] = spec["group_size"]
    if "fp8" in spec["options"]:
        kwargs["scale_dtype"] = "float8_e4m3"
    for option in spec["options"]:
        if option in _GRID_OPTIONS:
            which, grid = _GRID_OPTIONS[option]
            kwargs[f"{which}_grid"] = grid
        seed = _SEED.match(option)
        if seed and spec["family"] == "turboquant":
            kwargs["seed"] = int(seed["seed"])
        value_group = _VALUE_GROUP.match(option)
        if value_group and spec["family"] == "kivi":
            kwargs["value_group_size"] = int(value_group["size"])
    if "prod" in spec["options"]:
        kwargs["variant"] = "prod"
    return kwargs


def kv_scheme(name: str | KVRoundtrip) -> KVRoundtrip:
    """The :class:`KVRoundtrip` for ``name`` (a fresh one, with empty bit counters).

    Raises
    ------
    SchemeUnavailableError
        Malformed name, or the scheme's family is not registered in ``lowbit.api.SCHEMES``
        (for example while ``lowbit.kv`` is not installed in this build).
    """
    if isinstance(name, KVRoundtrip):
        return KVRoundtrip(name.name, name.fn, name.description)
    spec = parse_name(name)
    lowbit_name = _FAMILIES[spec["family"]][0]
    if lowbit_name is None:
        return KVRoundtrip(name, _identity, "lossless identity")
    import lowbit
    from lowbit.api import SCHEMES

    if lowbit_name not in SCHEMES:
        raise SchemeUnavailableError(
            f"K/V scheme {name!r} needs lowbit.quantize(scheme={lowbit_name!r}), which this "
            f"lowbit build does not provide (registered schemes: {sorted(SCHEMES)})"
        )
    per_kind = {kind: _call_kwargs(spec, kind) for kind in ("key", "value")}

    def fn(x: Any, kind: str) -> Any:
        return lowbit.quantize(x, scheme=lowbit_name, **per_kind[kind])

    described = ", ".join(f"{k}=" + repr(v) for k, v in per_kind["key"].items() if k != "kind")
    return KVRoundtrip(name, fn, f"lowbit.quantize(scheme={lowbit_name!r}, {described}, ...)")


def resolve_kv_schemes(names: list[str] | tuple[str, ...], *, skip_missing: bool) -> tuple[
    list[KVRoundtrip], dict[str, str]
]:
    """Resolve several names; with ``skip_missing``, collect unavailable ones instead of raising.

    Returns
    -------
    schemes : list of KVRoundtrip
    skipped : dict
        name -> the reason it is unavailable.
    """
    schemes: list[KVRoundtrip] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            schemes.append(kv_scheme(name))
        except SchemeUnavailableError as exc:
            if not skip_missing:
                raise
            skipped[name] = str(exc)
    return schemes, skipped
