"""Data-free weight rounding of a real language model, measured by perplexity.

Every ``torch.nn.Linear`` of the model except the output head (attention q/k/v/o and MLP
gate/up/down of every decoder layer; SmolLM2 ties its head to the token embedding, and both
stay in float32) gets its weight matrix ``W [out, in]`` replaced by
``lowbit.quantize(W, scheme=..., axis=-1, ...).dequantize()``: groups, blocks and error
diffusion all run along the **input** dimension, so each output neuron's dot product sees the
rounding errors of its own weights. No calibration data is used; the rounding sees only ``W``.
The rounded copy is compared with the unrounded model on a fixed slice of held-out text:

* perplexity ``exp(mean NLL)`` of the next token, and the mean per-token
  ``KL(p_ref || p_rounded)`` (nats) of the next-token distribution;
* bits per weight: ``8 * sum(q.nbytes) / sum(W.size)`` over the rounded layers, codes plus
  every stored scale, offset and tensor scale (:attr:`lowbit.QuantizedArray.bits_per_element`);
* weight-space error: relative Frobenius error ``||W_hat - W|| / ||W||`` (over all rounded
  weights together, and per layer), and the relative output error
  ``||X (W_hat - W)^T|| / ||X W^T||`` on a fixed batch ``X`` of each layer's real inputs,
  captured by forward hooks while the unrounded model reads the text.

Formats (:class:`RoundingConfig`): ``rtn`` (affine integers, groups 32/64/128 along the input
dimension, asymmetric or symmetric, float16 scales and offsets), ``mxfp4``, ``nvfp4``, ``mxfp6``,
``fp6_e2m3`` (per-32 absmax float32 scale) and ``codebook`` (NormalFloat, per-64 absmax float16
scale). Rounding modes: ``nearest_even``; ``stochastic`` (one seed per layer derived from the
run's seed index, several seed indices per format); ``diffuse`` of order 1 or 2 (rtn only: the
block and codebook schemes have no diffusion in lowbit).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Start of the held-out text: the first line after this fraction of the corpus's characters
#: (``lowbit eval kv`` reads the corpus from its start and its decode prompts lie at 1/4..3/4).
HELDOUT_FRACTION = 0.9
#: Rows of each layer's input kept for the output error (spread evenly over the first window).
CAPTURE_ROWS = 64
#: Scale storage of rtn and codebook configurations.
SCALE_DTYPE = "float16"


@dataclass(frozen=True)
class RoundingConfig:
    """One way of rounding every linear weight: a format and a rounding mode."""

    #: a ``lowbit.quantize`` scheme: rtn, mxfp4, nvfp4, mxfp6, fp6_e2m3 or codebook
    scheme: str
    #: rtn code width; ``None`` for the fixed-width formats
    bits: int | None = None
    #: rtn / fp6_e2m3 / codebook group along the input dimension
    group_size: int | None = None
    symmetric: bool = False
    #: codebook name (``lowbit.codebooks.NAMES``), scheme codebook only
    codebook: str | None = None
    rounding: str = "nearest_even"
    #: diffusion order (1 or 2), rounding "diffuse" only
    order: int = 1
    #: stochastic rounding: index of the run (layer seeds derive from it)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.rounding not in ("nearest_even", "stochastic", "diffuse"):
            raise ValueError(f"rounding must be nearest_even, stochastic or diffuse, got {self.rounding!r}")
        if (self.rounding == "stochastic") != (self.seed is not None):
            raise ValueError(f"seed is needed by rounding='stochastic' only, got seed={self.seed!r} "
                             f"with rounding={self.rounding!r}")
        if self.rounding == "diffuse" and self.scheme != "rtn":
            raise ValueError(f"rounding='diffuse' is available for scheme 'rtn' only, not {self.scheme!r}")

    @property
    def format(self) -> str:
        """The format without the rounding mode, e.g. ``rtn-asym-g128-b3``, ``nf4-g64``."""
        if self.scheme == "rtn":
            kind = "sym" if self.symmetric else "asym"
            return f"rtn-{kind}-g{self.group_size}-b{self.bits}"
        if self.scheme == "codebook":
            return f"{self.codebook}-g{self.group_size}"
        if self.group_size is not None:
            return f"{self.scheme}-g{self.group_size}"
        return self.scheme

    @property
    def family(self) -> str:
        """The format without its width (the line it belongs to in the plots)."""
        if self.scheme == "rtn":
            return f"rtn-{'sym' if self.symmetric else 'asym'}-g{self.group_size}"
        if self.scheme == "codebook":
            return f"nf-g{self.group_size}" if str(self.codebook).startswith("nf") else self.format
        if self.scheme.startswith("mxfp"):
            return "mxfp"
        return self.scheme

    @property
    def mode(self) -> str:
        """``nearest_even``, ``stochastic``, ``diffuse1`` or ``diffuse2``."""
        return f"diffuse{self.order}" if self.rounding == "diffuse" else self.rounding

    @property
    def name(self) -> str:
        seed = "" if self.seed is None else f"/s{self.seed}"
        return f"{self.format}/{self.mode}{seed}"

    def quantize_kwargs(self, layer_index: int) -> dict[str, Any]:
        """Keyword arguments of ``lowbit.quantize`` for the weight of layer ``layer_index``."""
        kw: dict[str, Any] = {"scheme": self.scheme, "axis": -1, "rounding": self.rounding}
        if self.scheme == "rtn":
            kw.update(bits=self.bits, group_size=self.group_size, symmetric=self.symmetric,
                      scale_dtype=SCALE_DTYPE)
            if self.rounding == "diffuse":
                kw["order"] = self.order
        elif self.scheme == "codebook":
            kw.update(codebook=self.codebook, scale="absmax", group_size=self.group_size,
                      scale_dtype=SCALE_DTYPE)
        elif self.group_size is not None:  # an element format with a per-group absmax scale
            kw.update(scale="absmax", group_size=self.group_size)
        if self.seed is not None:
            # distinct, reproducible streams per layer and per run (the generator is keyed by
            # (seed, element index), so one seed for all layers would correlate their errors)
            kw["seed"] = 1_000_003 * (self.seed + 1) + layer_index
        return kw


def _with_modes(base: RoundingConfig, modes: Sequence[str], seeds: int) -> list[RoundingConfig]:
    out = []
    for mode in modes:
        if mode == "stochastic":
            out += [RoundingConfig(**{**asdict(base), "rounding": "stochastic", "seed": s})
                    for s in range(seeds)]
        elif mode.startswith("diffuse"):
            out.append(RoundingConfig(**{**asdict(base), "rounding": "diffuse", "order": int(mode[-1])}))
        else:
            out.append(RoundingConfig(**{**asdict(base), "rounding": mode}))
    return out


#: rtn group sizes: 128 does not divide SmolLM2's hidden size 576 (= 4.5 * 128); 192 is the
#: largest group dividing both 576 and the MLP width 1536.
GROUPS = (32, 64, 192)


def default_configs(*, quick: bool = False, seeds: int = 3, reduced: bool = False) -> list[RoundingConfig]:
    """The study's configurations.

    Full run: rtn asymmetric, groups :data:`GROUPS`, 2/3/4 bits, with nearest_even and first-
    and second-order diffusion; rtn symmetric at the same points with nearest_even; stochastic
    rounding over ``seeds`` seeds for rtn asymmetric g64 at 2/3/4 bits, mxfp4, nvfp4, mxfp6 and
    NF4/NF3; rtn 8 bits; fp6_e2m3 with a per-32 scale; NF2. ``reduced``: the subset that fits
    a busy 2-core machine in about 40 minutes, most informative first (all four modes for g64
    at 2/3/4 bits; nearest and both diffusions for g32 at 2/3 bits; nearest and first-order
    diffusion for g192 at 2/3 bits; rtn g32 4 bits and symmetric g64 3 bits; mxfp4, nvfp4,
    NF4, NF3, mxfp6 with nearest_even). ``quick``: rtn g64 at 2 and 3 bits, stochastic at 3.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    rtn = RoundingConfig
    all_modes = ["nearest_even", "diffuse1", "diffuse2", "stochastic"]
    if quick:
        configs: list[RoundingConfig] = []
        for b in (2, 3):
            configs += _with_modes(rtn("rtn", bits=b, group_size=64), all_modes[:3 + (b == 3)], seeds)
        configs += [RoundingConfig("mxfp4"), RoundingConfig("codebook", codebook="nf4", group_size=64)]
        return configs
    if reduced:
        configs = []
        for b in (2, 3):
            configs += _with_modes(rtn("rtn", bits=b, group_size=64), all_modes, seeds)
        for b in (2, 3):
            configs += _with_modes(rtn("rtn", bits=b, group_size=32), all_modes[:3], seeds)
        configs += [RoundingConfig("mxfp4"), RoundingConfig("nvfp4"),
                    RoundingConfig("codebook", codebook="nf4", group_size=64)]
        configs += _with_modes(rtn("rtn", bits=4, group_size=64), all_modes, seeds)
        for b in (2, 3):
            configs += _with_modes(rtn("rtn", bits=b, group_size=192), all_modes[:2], seeds)
        configs += [rtn("rtn", bits=4, group_size=32), rtn("rtn", bits=3, group_size=64, symmetric=True),
                    RoundingConfig("codebook", codebook="nf3", group_size=64), RoundingConfig("mxfp6")]
        return configs
    configs = []
    for g in GROUPS:
        for b in (2, 3, 4):
            configs += _with_modes(rtn("rtn", bits=b, group_size=g), all_modes[:3 + (g == 64)], seeds)
            configs.append(rtn("rtn", bits=b, group_size=g, symmetric=True))
    configs.append(rtn("rtn", bits=8, group_size=64))
    for name in ("mxfp4", "nvfp4", "mxfp6"):
        configs += _with_modes(RoundingConfig(name), ["nearest_even", "stochastic"], seeds)
    configs.append(RoundingConfig("fp6_e2m3", group_size=32))
    for nf in ("nf4", "nf3", "nf2"):
        modes = ["nearest_even"] + (["stochastic"] if nf != "nf2" else [])
        configs += _with_modes(RoundingConfig("codebook", codebook=nf, group_size=64), modes, seeds)
    return configs


def linear_layers(model: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of every ``torch.nn.Linear`` except the output head, in model order."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head]


@dataclass
class RoundingStats:
    """What :func:`round_model` did to each layer."""

    names: list[str]
    #: codes + scales of all rounded layers, in bits
    stored_bits: int
    weights: int
    #: per layer: ||W_hat - W||_F^2 and ||W||_F^2 (float64)
    err_sq: list[float]
    norm_sq: list[float]

    @property
    def bits_per_weight(self) -> float:
        return self.stored_bits / self.weights

    @property
    def weight_rel_error(self) -> float:
        """Relative Frobenius error over all rounded weights together."""
        return math.sqrt(sum(self.err_sq) / sum(self.norm_sq))


def round_model(model: Any, config: RoundingConfig, *, source: Any = None) -> RoundingStats:
    """Round every linear weight of ``model`` in place (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Its linear weights are overwritten with the rounded values (same shape, dtype and
        device); no other parameter or buffer changes.
    config : RoundingConfig
    source : torch.nn.Module, optional
        A model of the same architecture whose weights are rounded (default: ``model``'s
        own), so that one working copy serves many configurations.
    """
    import torch

    import lowbit

    targets = linear_layers(model)
    sources = targets if source is None else linear_layers(source)
    if [n for n, _ in sources] != [n for n, _ in targets]:
        raise ValueError("source must have the same linear layers as model")
    stats = RoundingStats([], 0, 0, [], [])
    with torch.no_grad():
        for i, ((name, dst), (_, src)) in enumerate(zip(targets, sources, strict=True)):
            w = src.weight.detach()
            q = lowbit.quantize(w, **config.quantize_kwargs(i))
            w_hat = q.dequantize()
            stats.names.append(name)
            stats.stored_bits += 8 * q.nbytes
            stats.weights += w.numel()
            stats.err_sq.append(float(torch.sum((w_hat.double() - w.double()) ** 2)))
            stats.norm_sq.append(float(torch.sum(w.double() ** 2)))
            dst.weight.copy_(w_hat)
    return stats


def heldout_ids(tokenizer: Any, corpus: str, tokens: int, window: int) -> Any:
    """``[tokens // window, window]`` token ids of the held-out slice of ``corpus``: from the
    first line after :data:`HELDOUT_FRACTION` of its characters.

    Raises
    ------
    ValueError
        ``tokens`` is not a positive multiple of ``window``, or the slice is too short.
    """
    from lowbit.research.model import tokenize

    if not (isinstance(window, int) and window >= 2 and isinstance(tokens, int)
            and tokens >= window and tokens % window == 0):
        raise ValueError(f"tokens must be a positive multiple of window >= 2, got tokens={tokens!r}, "
                         f"window={window!r}")
    start = corpus.find("\n", int(HELDOUT_FRACTION * len(corpus))) + 1
    return tokenize(tokenizer, corpus[start:], tokens).reshape(tokens // window, window)


class Reference:
    """The unrounded model's next-token log-probabilities and each layer's captured inputs."""

    def __init__(self, model: Any, ids: Any, capture_rows: int = CAPTURE_ROWS):
        import torch

        layers = linear_layers(model)
        window = ids.shape[1]
        rows = torch.linspace(0, window - 1, min(capture_rows, window)).round().long().unique()
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        hooks = []
        for name, module in layers:
            def hook(mod: Any, args: Any, out: Any, name: str = name) -> None:
                if name not in self.inputs:  # the first window only
                    self.inputs[name] = args[0][0, rows].detach().double()
            hooks.append(module.register_forward_hook(hook))
        try:
            self.logprobs = next_token_logprobs(model, ids)
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            for name, module in layers:
                self.outputs[name] = self.inputs[name] @ module.weight.detach().double().T
        self.ids = ids
        self.nll = _nll(self.logprobs, ids)

    def output_errors(self, model: Any) -> list[float]:
        """Per layer: ``||X W_hat^T - X W^T|| / ||X W^T||`` on the captured inputs ``X``."""
        import torch

        errs = []
        with torch.no_grad():
            for name, module in linear_layers(model):
                x, ref = self.inputs[name], self.outputs[name]
                diff = x @ module.weight.detach().double().T - ref
                errs.append(float(torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(ref)))
        return errs


def next_token_logprobs(model: Any, ids: Any) -> Any:
    """float32 log-softmax of the logits at positions 0..T-2, ``[B, T-1, V]`` (one window at
    a time, to bound memory)."""
    import torch

    outs = []
    with torch.no_grad():
        for row in ids:
            logits = model(row[None]).logits[0, :-1].float()
            outs.append(torch.log_softmax(logits, dim=-1))
    return torch.stack(outs)


def mean_kl(ref: Any, other: Any) -> float:
    """Mean over tokens of ``KL(p_ref || p_other)`` in nats, summed in float64 (small KLs are
    differences of large terms)."""
    total, count = 0.0, 0
    for r, o in zip(ref, other, strict=True):  # one window at a time: bounded float64 memory
        r64 = r.double()
        total += float((r64.exp() * (r64 - o.double())).sum())
        count += r.shape[0]
    return total / count


def _nll(logprobs: Any, ids: Any) -> Any:
    """Per-token negative log-likelihood of the text, ``[B, T-1]``."""
    return -logprobs.gather(-1, ids[:, 1:, None])[..., 0]


@dataclass
class ConfigResult:
    """Metrics of one configuration."""

    name: str
    format: str
    family: str
    mode: str
    scheme: str
    bits: int | None
    seed: int | None
    bits_per_weight: float
    perplexity: float
    #: mean per-token KL(p_ref || p_rounded), nats
    kl: float
    weight_rel_error: float
    #: mean over layers of the relative output error on captured inputs
    output_rel_error: float
    #: wall time of rounding and measuring
    seconds: float = 0.0
    layer_weight_rel_error: list[float] = field(default_factory=list)
    layer_output_rel_error: list[float] = field(default_factory=list)


@dataclass
class LLMWeightResult:
    """All configurations of one run, and the unrounded model's perplexity."""

    reference_perplexity: float
    tokens: int
    window: int
    layers: list[str]
    rounded_weights: int
    results: list[ConfigResult]
    #: config name -> why it could not run
    failed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(model: Any, config: RoundingConfig, reference: Reference, *, source: Any) -> ConfigResult:
    """Round ``model`` (a working copy) from ``source`` under ``config`` and measure it."""
    stats = round_model(model, config, source=source)
    logprobs = next_token_logprobs(model, reference.ids)
    nll = _nll(logprobs, reference.ids)
    kl = mean_kl(reference.logprobs, logprobs)
    out_err = reference.output_errors(model)
    return ConfigResult(
        name=config.name, format=config.format, family=config.family, mode=config.mode,
        scheme=config.scheme, bits=config.bits, seed=config.seed,
        bits_per_weight=stats.bits_per_weight, perplexity=float(nll.double().mean().exp()),
        kl=max(kl, 0.0), weight_rel_error=stats.weight_rel_error,
        output_rel_error=float(np.mean(out_err)),
        layer_weight_rel_error=[math.sqrt(e / n) if n > 0 else 0.0
                                for e, n in zip(stats.err_sq, stats.norm_sq, strict=True)],
        layer_output_rel_error=out_err,
    )


def weight_rounding_study(model: Any, ids: Any, configs: Sequence[RoundingConfig], *,
                          capture_rows: int = CAPTURE_ROWS, progress: bool | None = None,
                          budget_s: float | None = None) -> LLMWeightResult:
    """Evaluate every configuration on ``ids`` (``[B, T]`` token windows); ``model`` itself
    is never changed (a deep copy is rounded, configuration after configuration).

    ``budget_s``: no configuration starts after this many seconds; those left are listed in
    ``failed`` as not run.
    """
    import time

    from tqdm.auto import tqdm

    t0 = time.monotonic()

    if ids.ndim != 2 or ids.shape[1] < 2:
        raise ValueError(f"ids must be [windows, tokens >= 2], got shape {tuple(ids.shape)}")
    reference = Reference(model, ids, capture_rows)
    work = copy.deepcopy(model)
    results, failed = [], {}
    bar = tqdm(list(configs), desc="weight rounding", unit="config",
               disable=None if progress is None else not progress)
    for config in bar:
        bar.set_postfix_str(config.name)
        if budget_s is not None and time.monotonic() - t0 > budget_s:
            failed[config.name] = f"not run: the time budget of {budget_s:.0f} s was spent"
            continue
        t = time.monotonic()
        try:
            results.append(evaluate(work, config, reference, source=model))
            results[-1].seconds = time.monotonic() - t
        except (ValueError, TypeError) as exc:  # a scheme this lowbit build cannot apply
            failed[config.name] = str(exc)
    layers = [n for n, _ in linear_layers(model)]
    return LLMWeightResult(
        reference_perplexity=float(reference.nll.double().mean().exp()),
        tokens=int(ids.numel()), window=int(ids.shape[1]), layers=layers,
        rounded_weights=sum(m.weight.numel() for _, m in linear_layers(model)),
        results=results, failed=failed)
