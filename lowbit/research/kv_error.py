"""KV-cache error accumulation on a real model: the pseudo-decode protocol (KVarN paper, Fig. 5).

A fixed token sequence is fed to the model in blocks of ``block_size`` tokens (128). Within a
block, attention sees the block's own keys and values in full precision (the not-yet-full tile
of a real cache); once the block has been processed, its K/V are replaced in the cache by
``dequantize(quantize(.))`` under the scheme under test, so every later block attends over
quantized history. The first ``sink_tokens`` (128) stay in full precision. Three model runs are
kept in lockstep, block by block:

* **reference** -- the unquantized model;
* **static** regime -- at every layer, the *reference* query attends over the *reference*
  history quantized by the scheme (plus the current block in full precision); the reference
  output is fed forward, so each layer sees unquantized inputs and errors cannot propagate.
  This is computed inside the reference run.
* **accumulated** regime -- the model runs on a cache holding its *own* K/V quantized, so
  quantization errors change later hidden states, later keys and values, and later layers.

Per block and per layer, the attention output ``softmax(QK^T/sqrt(D))V`` before the output
projection is compared with the reference: relative error ``||O - O_ref||_F / ||O_ref||_F``
and mean absolute error (element-weighted, as in the paper). Per block, for the accumulated
regime: KL(reference || quantized) of the next-token distribution (nats, mean over the
block's tokens), top-1 agreement, and the next-token negative log-likelihood of the text.
For the K/V tensors themselves (reference K/V, static regime) the squared error of every
token vector is split into its magnitude part ``(||k|| - ||k̂||)^2`` and its direction part
``2 ||k|| ||k̂|| (1 - cos θ)``, overall and among the 5 % of vectors with the largest error.

A lossless scheme gives exactly zero static and accumulated error and exactly zero KL:
all three runs execute the same operations on bit-identical tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lowbit.research import _hooks
from lowbit.research.schemes import KVRoundtrip, kv_scheme

#: Fraction of K/V token vectors, by error, in the "worst errors" magnitude share.
TOP_FRACTION = 0.05


def _check_blocks(block_size: int, sink_tokens: int) -> None:
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not isinstance(sink_tokens, int) or sink_tokens < 0 or sink_tokens % block_size:
        raise ValueError(
            f"sink_tokens must be a non-negative multiple of block_size={block_size}, "
            f"got {sink_tokens!r}"
        )


class BlockQuantizer:
    """Quantizes each completed ``block_size``-token block of a cache once, in place.

    Blocks start at multiples of ``block_size``; blocks inside the first ``sink_tokens`` and
    the trailing incomplete block are left in full precision. All layers' K (then V) of a block
    go through the scheme in one call, stacked along a leading axis.
    """

    def __init__(self, scheme: KVRoundtrip, block_size: int, sink_tokens: int):
        _check_blocks(block_size, sink_tokens)
        self.scheme = scheme
        self.block_size = block_size
        self.sink_tokens = sink_tokens
        #: tokens [0, done) are final (quantized or sink)
        self.done = 0

    def update(self, cache: Any) -> list[tuple[int, int]]:
        """Quantize the blocks completed since the last call; returns their token ranges."""
        layers = _hooks.cache_layers(cache)
        length = layers[0].keys.shape[-2]
        ranges = []
        while self.done + self.block_size <= length:
            start, stop = self.done, self.done + self.block_size
            self.done = stop
            if stop <= self.sink_tokens:
                continue
            for attr, kind in (("keys", "key"), ("values", "value")):
                stacked = _stack_block(layers, attr, start, stop)
                quantized = self.scheme.roundtrip(stacked, kind)
                for i, layer in enumerate(layers):
                    getattr(layer, attr)[..., start:stop, :] = quantized[i]
            ranges.append((start, stop))
        return ranges


def _stack_block(layers: list[Any], attr: str, start: int, stop: int) -> Any:
    import torch

    return torch.stack([getattr(layer, attr)[..., start:stop, :] for layer in layers])


def _errors(out: Any, ref: Any) -> tuple[float, float]:
    """(relative Frobenius error, mean absolute error) of ``out`` against ``ref``."""
    import torch

    diff = out - ref
    err = float(torch.linalg.vector_norm(diff, dtype=torch.float64))
    norm = float(torch.linalg.vector_norm(ref, dtype=torch.float64))
    rel = err / norm if norm > 0 else (0.0 if err == 0 else math.inf)
    return rel, float(diff.abs().mean(dtype=torch.float64))


class _Recorder(_hooks.Probe):
    """The probe used by :func:`pseudo_decode`."""

    def __init__(self, n_layers: int, static_names: list[str]):
        self.n_layers = n_layers
        self.mode = "reference"
        #: layer -> reference attention output of the current block
        self.ref_out: dict[int, Any] = {}
        #: scheme -> layer -> (K, V) static history: sink in full precision, blocks quantized
        self.static_kv: dict[str, dict[int, tuple[Any, Any]]] = {n: {} for n in static_names}
        #: scheme -> layer -> (rel, mae) of the current block
        self.static_err: dict[str, dict[int, tuple[float, float]]] = {}
        self.accum_err: dict[str, dict[int, tuple[float, float]]] = {}

    def observe(self, module: Any, query: Any, key: Any, value: Any, mask: Any,
                kwargs: dict[str, Any], out: Any) -> None:
        import torch

        layer = module.layer_idx
        if self.mode == "reference":
            self.ref_out[layer] = out.detach()
            for name, store in self.static_kv.items():
                if layer in store:
                    k_hist, v_hist = store[layer]
                    n = k_hist.shape[-2]
                    k = torch.cat([k_hist, key[..., n:, :]], dim=-2)
                    v = torch.cat([v_hist, value[..., n:, :]], dim=-2)
                else:  # nothing quantized yet: same call as the reference
                    k, v = torch.cat([key], dim=-2), torch.cat([value], dim=-2)
                static_out = _hooks.sdpa(module, query, k, v, mask, **kwargs)
                self.static_err.setdefault(name, {})[layer] = _errors(static_out, out)
        else:
            self.accum_err.setdefault(self.mode, {})[layer] = _errors(out, self.ref_out[layer])

    def take(self, table: dict[str, dict[int, tuple[float, float]]], name: str) -> np.ndarray:
        rows = table.pop(name, {})
        if len(rows) != self.n_layers:
            raise RuntimeError(
                f"the attention probe saw {len(rows)} of {self.n_layers} layers; this model's "
                "attention does not go through transformers' AttentionInterface"
            )
        return np.array([rows[i] for i in range(self.n_layers)], dtype=np.float64)


@dataclass
class KVErrorSplit:
    """Squared error of K (or V) token vectors, split into magnitude and direction parts."""

    #: sum ||x - x̂||^2 / sum ||x||^2 over all quantized token vectors
    relative_error: float
    #: share of the squared error due to the vector norm, (||x|| - ||x̂||)^2
    magnitude_share: float
    #: the same share among the TOP_FRACTION of vectors with the largest squared error
    magnitude_share_top: float
    #: share of the total squared error carried by those vectors
    top_error_share: float


@dataclass
class PseudoDecodeResult:
    """Per-block, per-layer errors of one scheme (arrays are ``[n_blocks, n_layers]``)."""

    scheme: str
    description: str
    bits_per_element: dict[str, float]
    block_size: int
    sink_tokens: int
    #: context length at the end of each block
    block_end: list[int]
    static_rel: np.ndarray
    static_mae: np.ndarray
    accum_rel: np.ndarray
    accum_mae: np.ndarray
    #: per block: mean KL(ref || scheme) in nats, top-1 agreement, NLL of the text (nats)
    kl: np.ndarray
    top1: np.ndarray
    nll: np.ndarray
    nll_reference: np.ndarray
    kv_split: dict[str, KVErrorSplit] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, np.ndarray):
                d[k] = v.tolist()
        return d


class _SplitAccumulator:
    def __init__(self) -> None:
        self.err: list[np.ndarray] = []
        self.mag: list[np.ndarray] = []
        self.norm2 = 0.0

    def add(self, x: Any, x_hat: Any) -> None:
        x64, h64 = x.double(), x_hat.double()
        n, nh = x64.norm(dim=-1), h64.norm(dim=-1)
        self.err.append(((x64 - h64) ** 2).sum(-1).flatten().cpu().numpy())
        self.mag.append(((n - nh) ** 2).flatten().cpu().numpy())
        self.norm2 += float((n**2).sum())

    def result(self) -> KVErrorSplit:
        if not self.err:
            return KVErrorSplit(math.nan, math.nan, math.nan, math.nan)
        err, mag = np.concatenate(self.err), np.concatenate(self.mag)
        total = float(err.sum())
        k = max(1, int(round(TOP_FRACTION * err.size)))
        top = np.argpartition(err, err.size - k)[err.size - k:]
        top_total = float(err[top].sum())

        def share(a: float, b: float) -> float:
            return a / b if b > 0 else 0.0

        return KVErrorSplit(
            relative_error=share(total, self.norm2),
            magnitude_share=share(float(mag.sum()), total),
            magnitude_share_top=share(float(mag[top].sum()), top_total),
            top_error_share=share(top_total, total),
        )


def _logit_metrics(ref_logits: Any, logits: Any, targets: Any) -> tuple[float, float, float]:
    """(mean KL(ref || q), top-1 agreement, NLL of targets under q) over the block."""
    import torch

    lp_ref = torch.log_softmax(ref_logits, dim=-1)
    lp = torch.log_softmax(logits, dim=-1)
    kl = (lp_ref.exp() * (lp_ref - lp)).sum(-1)
    top1 = (ref_logits.argmax(-1) == logits.argmax(-1)).double()
    n = targets.shape[-1]
    nll = -lp[:, :n].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return float(kl.double().mean()), float(top1.mean()), float(nll.double().mean()) if n else math.nan


def pseudo_decode(
    model: Any,
    input_ids: Any,
    schemes: Sequence[str | KVRoundtrip],
    *,
    block_size: int = 128,
    sink_tokens: int = 128,
    progress: bool | None = None,
) -> list[PseudoDecodeResult]:
    """Run the pseudo-decode protocol for several schemes on one token sequence.

    Parameters
    ----------
    model : transformers causal LM
        Decoder whose attention goes through ``AttentionInterface`` (Llama family, ...);
        put it in eval mode on the device to use.
    input_ids : torch.LongTensor, shape (1, n_tokens)
        ``n_tokens`` must be a multiple of ``block_size``.
    schemes : sequence of str or KVRoundtrip
        Names (see :mod:`lowbit.research.schemes`) or ready-made round trips.
    block_size, sink_tokens : int
        Pseudo-decode block (= quantization tile along tokens) and full-precision prefix.
    progress : bool or None
        tqdm progress bar over blocks (None: only on a terminal).

    Returns
    -------
    list of PseudoDecodeResult
        One per scheme, in order.

    Raises
    ------
    ValueError
        Bad shapes or block arguments.
    RuntimeError
        The model's attention cannot be probed.
    """
    import torch
    from tqdm.auto import tqdm

    _check_blocks(block_size, sink_tokens)
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must have shape (1, n_tokens), got {tuple(input_ids.shape)}")
    n_tokens = int(input_ids.shape[1])
    if n_tokens < block_size or n_tokens % block_size:
        raise ValueError(
            f"the number of tokens ({n_tokens}) must be a positive multiple of "
            f"block_size={block_size}"
        )
    resolved = [kv_scheme(s) for s in schemes]
    names = [s.name for s in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"scheme names must be unique, got {names}")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    n_layers = len(_hooks.attention_modules(model))
    n_blocks = n_tokens // block_size

    recorder = _Recorder(n_layers, names)
    ref_cache = _hooks.new_cache(model)
    caches = {s.name: _hooks.new_cache(model) for s in resolved}
    quantizers = {s.name: BlockQuantizer(s, block_size, sink_tokens) for s in resolved}
    splits = {s.name: {"key": _SplitAccumulator(), "value": _SplitAccumulator()} for s in resolved}
    rows: dict[str, dict[str, list[Any]]] = {
        s.name: {k: [] for k in ("static", "accum", "kl", "top1", "nll", "nll_ref")}
        for s in resolved
    }
    with torch.no_grad(), _hooks.attach(model, recorder):
        bar = tqdm(range(n_blocks), desc="pseudo-decode", unit="block", disable=_disable(progress))
        for b in bar:
            start, stop = b * block_size, (b + 1) * block_size
            ids = input_ids[:, start:stop]
            targets = input_ids[:, start + 1: stop + 1]
            recorder.mode = "reference"
            ref_logits = _hooks.forward(model, ids, ref_cache)
            _, _, nll_ref = _logit_metrics(ref_logits, ref_logits, targets)
            for s in resolved:
                recorder.mode = s.name
                logits = _hooks.forward(model, ids, caches[s.name])
                kl, top1, nll = _logit_metrics(ref_logits, logits, targets)
                r = rows[s.name]
                r["static"].append(recorder.take(recorder.static_err, s.name))
                r["accum"].append(recorder.take(recorder.accum_err, s.name))
                r["kl"].append(kl)
                r["top1"].append(top1)
                r["nll"].append(nll)
                r["nll_ref"].append(nll_ref)
                quantizers[s.name].update(caches[s.name])
            _extend_static(recorder, ref_cache, resolved, start, stop, sink_tokens, splits)
    results = []
    for s in resolved:
        r = rows[s.name]
        static, accum = np.stack(r["static"]), np.stack(r["accum"])
        results.append(PseudoDecodeResult(
            scheme=s.name,
            description=s.description,
            bits_per_element={
                "key": s.bits_per_element("key"),
                "value": s.bits_per_element("value"),
                "mean": s.bits_per_element(),
            },
            block_size=block_size,
            sink_tokens=sink_tokens,
            block_end=[(b + 1) * block_size for b in range(n_blocks)],
            static_rel=static[..., 0], static_mae=static[..., 1],
            accum_rel=accum[..., 0], accum_mae=accum[..., 1],
            kl=np.array(r["kl"]), top1=np.array(r["top1"]),
            nll=np.array(r["nll"]), nll_reference=np.array(r["nll_ref"]),
            kv_split={k: acc.result() for k, acc in splits[s.name].items()},
        ))
    return results


def _extend_static(recorder: _Recorder, ref_cache: Any, schemes: list[KVRoundtrip], start: int,
                   stop: int, sink_tokens: int, splits: dict[str, dict[str, Any]]) -> None:
    """Append the reference block [start, stop) to every scheme's static history, quantized
    unless it lies in the sink."""
    import torch

    layers = _hooks.cache_layers(ref_cache)
    blocks = {attr: _stack_block(layers, attr, start, stop) for attr in ("keys", "values")}
    for s in schemes:
        store = recorder.static_kv[s.name]
        new = {}
        for attr, kind in (("keys", "key"), ("values", "value")):
            x = blocks[attr]
            if stop > sink_tokens:
                x_hat = s.roundtrip(x, kind)
                splits[s.name][kind].add(x, x_hat)
            else:
                x_hat = x.clone()
            new[attr] = x_hat
        for i in range(len(layers)):
            if i in store:
                k_hist, v_hist = store[i]
                store[i] = (torch.cat([k_hist, new["keys"][i]], dim=-2),
                            torch.cat([v_hist, new["values"][i]], dim=-2))
            else:
                store[i] = (new["keys"][i], new["values"][i])


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
