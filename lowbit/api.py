"""The headline API: quantize(), dequantize().

``quantize`` validates the array, picks the scheme from the registry below and
dispatches; schemes live in their own front modules and are imported lazily.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from typing import Any, Protocol

from lowbit.arrays import Array, Origin, is_dask, stream_for, to_backend
from lowbit.quantized import QuantizedArray


class Scheme(Protocol):
    """What a scheme front module provides."""

    def quantize(self, arr: Array, origin: Origin, **kwargs: Any) -> QuantizedArray: ...

    def dequantize(self, q: QuantizedArray) -> Array:
        """Backend array of dtype ``q.origin.dtype`` (bfloat16 as uint16 bits)."""
        ...


#: scheme name -> module implementing :class:`Scheme` (imported on first use).
SCHEMES: dict[str, str] = {
    "rtn": "lowbit.affine",
    # element formats and block formats (docs/formats.md)
    "fixed": "lowbit.minifloat:fixed",
    "fp8_e4m3": "lowbit.minifloat:fp8_e4m3",
    "fp8_e5m2": "lowbit.minifloat:fp8_e5m2",
    "fp6_e2m3": "lowbit.minifloat:fp6_e2m3",
    "fp6_e3m2": "lowbit.minifloat:fp6_e3m2",
    "fp4_e2m1": "lowbit.minifloat:fp4_e2m1",
    "mxfp8": "lowbit.blockfmt:mxfp8",
    "mxfp8_e5m2": "lowbit.blockfmt:mxfp8_e5m2",
    "mxfp6": "lowbit.blockfmt:mxfp6",
    "mxfp6_e3m2": "lowbit.blockfmt:mxfp6_e3m2",
    "mxfp4": "lowbit.blockfmt:mxfp4",
    "mxint8": "lowbit.blockfmt:mxint8",
    "nvfp4": "lowbit.blockfmt:nvfp4",
    # codebooks (Lloyd-Max, NormalFloat; docs/formats.md)
    "codebook": "lowbit.codebook_scheme:codebook",
    # KV-cache schemes (docs/kv.md): x [..., T, D], kind="key" | "value"
    "kvarn": "lowbit.kv.schemes:kvarn",
    "kivi": "lowbit.kv.schemes:kivi",
    "quarot": "lowbit.kv.schemes:quarot",
    "fp8": "lowbit.kv.schemes:fp8",
    **{f"kvarn-k{kb}v{vb}-g{g}": f"lowbit.kv.schemes:kvarn_k{kb}v{vb}_g{g}"
       for kb, vb in ((2, 2), (4, 2), (4, 4)) for g in (128, 64)},
    "kvarn-lm-k2v2-g128": "lowbit.kv.schemes:kvarn_lm_k2v2_g128",
    "turboquant": "lowbit.kv.schemes:turboquant",
    **{f"turboquant-{v}-k{kb}v{vb}": f"lowbit.kv.schemes:turboquant_{v}_k{kb}v{vb}"
       for v in ("mse", "prod") for kb, vb in ((2, 2), (3, 2), (3, 3), (4, 2), (4, 4))},
}


def get_scheme(scheme: Any, *, name: str = "scheme") -> Scheme:
    """The scheme module registered under ``scheme``.

    Raises
    ------
    ValueError
        ``scheme`` is not a registered name.
    """
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"{name} must be one of {sorted(SCHEMES)}, got {scheme!r}")
    impl = _LOADED.get(scheme)
    if impl is None:
        module, _, attr = SCHEMES[scheme].partition(":")  # "module" or "module:object"
        mod = importlib.import_module(module)
        impl = _LOADED[scheme] = getattr(mod, attr) if attr else mod
    return impl  # type: ignore[no-any-return]


_LOADED: dict[str, Any] = {}  # scheme name -> implementation, once imported


# -- the schemes' options, read from the schemes themselves ----------------------------------
def scheme_options(scheme: str) -> inspect.Signature:
    """The options ``lowbit.quantize(x, scheme=scheme, ...)`` takes, as the scheme declares them.

    A scheme object whose options depend on the instance (the KV presets fix ``bits``, the
    element formats take no ``bits``) describes them with an ``options_signature()`` method;
    otherwise they are the parameters of its ``quantize`` after ``(arr, origin)``.  A parameter
    without a default is required: :func:`quantize` refuses a call without it.

    Raises
    ------
    ValueError
        ``scheme`` is not a registered name.
    """
    impl = get_scheme(scheme)
    describe = getattr(impl, "options_signature", None)
    sig = describe() if callable(describe) else inspect.signature(impl.quantize)
    params = [p for name, p in sig.parameters.items() if name not in ("arr", "origin")]
    return sig.replace(parameters=params, return_annotation=inspect.Signature.empty)


def required_options(scheme: str) -> list[str]:
    """Names of the options ``scheme`` cannot do without (no default: no silent guess)."""
    return [p.name for p in scheme_options(scheme).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def describe_options(scheme: str) -> str:
    """``scheme``'s options on one line: ``bits (required), axis=-1, group_size=None, ...``."""
    parts = []
    for p in scheme_options(scheme).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.default is p.empty:
            parts.append(f"{p.name} (required)")
        else:
            parts.append(f"{p.name}={p.default!r}")
    return ", ".join(parts) or "no options"


def schemes_help(width: int = 88, indent: str = "") -> str:
    """Every registered scheme with its options, schemes with the same options on one entry.

    This text is generated from the schemes (:func:`scheme_options`), so it cannot fall behind
    them; ``help(lowbit.quantize)`` and ``lowbit quantize --help`` show it.
    """
    groups: dict[str, list[str]] = {}
    for name in SCHEMES:
        groups.setdefault(describe_options(name), []).append(name)
    lines = []
    for options, names in groups.items():
        lines += textwrap.wrap(f"{', '.join(names)}: {options}", width, initial_indent=indent,
                               subsequent_indent=indent + "    ", break_on_hyphens=False)
    return "\n".join(lines)


def _check_required(scheme: str, bits: int | None, kwargs: dict[str, Any]) -> None:
    given = set(kwargs) | ({"bits"} if bits is not None else set())
    missing = [name for name in required_options(scheme) if name not in given]
    if missing:
        what = " and ".join(f"{name}=" for name in missing)
        raise ValueError(f"scheme {scheme!r} needs {what} (no default: a guess could be wrong); "
                         f"its options: {describe_options(scheme)}")


def quantize(x: Any, bits: int | None = None, scheme: str = "rtn", **kwargs: Any) -> QuantizedArray:
    """Quantize a numpy, CuPy or torch array.

    Parameters
    ----------
    x : array
        Floating input (float16, bfloat16 [torch], float32, float64); any shape.  A
        ``dask.array.Array`` (numpy or CuPy chunks) gives a lazy result (docs/dask.md).
    bits : int, optional
        Bits per code, where the scheme takes it (``rtn``: 1..8).
    scheme : str
        One of ``lowbit.api.SCHEMES`` (``"rtn"``, ``"kvarn"``, minifloat formats, ...).
    **kwargs
        Scheme options: the list below, generated from the schemes (``lowbit quantize --help``
        prints it too).  An option without a default is required: e.g. ``bits`` for
        ``rtn``, ``kind="key"`` or ``"value"`` for the KV schemes (a preset names both K and V
        bits, so the kind is never guessed).  Schemes and their options:

        (the list of schemes)

    Returns
    -------
    QuantizedArray
        Its ``dequantize()`` returns an array of ``x``'s library, device, dtype and shape.

    Raises
    ------
    ValueError
        An unknown scheme, a required option missing, or an option the scheme refuses.

    Examples
    --------
    >>> import numpy as np, lowbit
    >>> x = np.linspace(-1, 1, 8, dtype=np.float32)
    >>> q = lowbit.quantize(x, bits=4, scheme="rtn")
    >>> float(abs(q.dequantize() - x).max()) <= 2 / 15 / 2
    True
    """
    impl = get_scheme(scheme)
    _check_required(scheme, bits, kwargs)
    if is_dask(x):  # lazy, chunk by chunk (docs/dask.md)
        from lowbit import dask

        return dask.quantize(x, bits, scheme, **kwargs)
    arr, origin = to_backend(x, "x")
    if bits is not None:
        kwargs["bits"] = bits
    with stream_for(origin):
        return impl.quantize(arr, origin, **kwargs)


def _document_schemes() -> None:
    """Append the generated list of schemes and options to ``quantize.__doc__`` (run once
    ``lowbit`` is imported: the scheme modules import parts of it)."""
    if quantize.__doc__:
        quantize.__doc__ = quantize.__doc__.replace(
            "        (the list of schemes)", schemes_help(width=88, indent="        "))


def dequantize(q: QuantizedArray) -> Any:
    """Reconstruct ``q`` (same as ``q.dequantize()``)."""
    if not isinstance(q, QuantizedArray):
        raise TypeError(f"q must be a QuantizedArray, got {type(q).__name__}")
    return q.dequantize()
