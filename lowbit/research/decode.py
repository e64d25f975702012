"""Free-running greedy decode with a quantized KV cache, against the unquantized model.

Each prompt is prefilled once in full precision (as a serving engine does: the prefill attends
over raw K/V); the cache is then copied for every scheme and its completed blocks beyond the
sink are quantized. Decoding proceeds greedily for ``steps`` tokens. At every step all caches
are fed the *reference* model's greedy token, and the scheme's next-token distribution is
compared with the reference one (KL, nats; top-1 agreement). Newly completed blocks are
quantized as the cache grows, exactly once.

Feeding the reference token keeps the per-step KL comparable across steps, and loses nothing
for the divergence measurement: up to and including the first step where the scheme's greedy
choice differs from the reference token, a free-running quantized decode has seen exactly the
same prefix, so the first mismatch *is* the step where free-running greedy decoding first
diverges from the unquantized model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.research import _hooks
from lowbit.research.kv_error import BlockQuantizer, _disable
from lowbit.research.schemes import KVRoundtrip, kv_scheme


@dataclass
class DecodeResult:
    """One scheme over all prompts; arrays are ``[n_prompts, steps]``."""

    scheme: str
    bits_per_element: dict[str, float]
    prompt_tokens: list[int]
    kl: np.ndarray
    top1: np.ndarray
    #: per prompt: first step (0-based) whose greedy token differs, or None
    first_divergence: list[int | None]
    #: per prompt: the scheme's greedy tokens at each step (under the reference prefix)
    greedy_tokens: list[list[int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "bits_per_element": self.bits_per_element,
            "prompt_tokens": self.prompt_tokens,
            "kl": self.kl.tolist(),
            "top1": self.top1.tolist(),
            "first_divergence": self.first_divergence,
        }


def greedy_divergence(
    model: Any,
    prompts: Sequence[Any],
    schemes: Sequence[str | KVRoundtrip],
    *,
    steps: int = 64,
    block_size: int = 128,
    sink_tokens: int = 128,
    progress: bool | None = None,
) -> tuple[list[list[int]], list[DecodeResult]]:
    """Greedy decode from each prompt with every scheme's cache and the unquantized cache.

    Parameters
    ----------
    model : transformers causal LM (eval mode)
    prompts : sequence of torch.LongTensor, each of shape (1, prompt_tokens)
    schemes : sequence of str or KVRoundtrip
    steps : int
        Tokens generated per prompt.
    block_size, sink_tokens : int
        Quantization tile along tokens and full-precision prefix (as in :func:`pseudo_decode`).

    Returns
    -------
    reference_tokens : list of list of int
        The unquantized model's greedy continuation of each prompt.
    results : list of DecodeResult
        One per scheme.
    """
    import torch
    from tqdm.auto import tqdm

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    for i, p in enumerate(prompts):
        if p.ndim != 2 or p.shape[0] != 1 or p.shape[1] < 1:
            raise ValueError(f"prompt {i} must have shape (1, n>=1), got {tuple(p.shape)}")
    resolved = [kv_scheme(s) for s in schemes]
    device = next(model.parameters()).device
    kl = {s.name: np.zeros((len(prompts), steps)) for s in resolved}
    top1 = {s.name: np.zeros((len(prompts), steps)) for s in resolved}
    chosen: dict[str, list[list[int]]] = {s.name: [] for s in resolved}
    reference: list[list[int]] = []
    bar = tqdm(total=len(prompts) * steps, desc="greedy decode", unit="step",
               disable=_disable(progress))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            prompt = prompt.to(device)
            ref_cache = _hooks.new_cache(model)
            ref_logits = _hooks.forward(model, prompt, ref_cache)[:, -1]
            caches, quantizers = {}, {}
            for s in resolved:
                caches[s.name] = _hooks.copy_cache(ref_cache)
                quantizers[s.name] = BlockQuantizer(s, block_size, sink_tokens)
                quantizers[s.name].update(caches[s.name])
            logits = {s.name: ref_logits for s in resolved}  # step 0 comes from the prefill
            tokens: list[int] = []
            for s in resolved:
                chosen[s.name].append([])
            for step in range(steps):
                lp_ref = torch.log_softmax(ref_logits, dim=-1)
                token = ref_logits.argmax(-1, keepdim=True)
                for s in resolved:
                    lp = torch.log_softmax(logits[s.name], dim=-1)
                    kl[s.name][i, step] = float((lp_ref.exp() * (lp_ref - lp)).sum(-1).double())
                    pick = int(logits[s.name].argmax(-1))
                    top1[s.name][i, step] = float(pick == int(token))
                    chosen[s.name][i].append(pick)
                tokens.append(int(token))
                bar.update(1)
                if step + 1 == steps:
                    break
                ref_logits = _hooks.forward(model, token, ref_cache)[:, -1]
                for s in resolved:
                    logits[s.name] = _hooks.forward(model, token, caches[s.name])[:, -1]
                    quantizers[s.name].update(caches[s.name])
            reference.append(tokens)
    bar.close()
    results = []
    for s in resolved:
        firsts: list[int | None] = []
        for i in range(len(prompts)):
            miss = np.flatnonzero(top1[s.name][i] == 0)
            firsts.append(int(miss[0]) if miss.size else None)
        results.append(DecodeResult(
            scheme=s.name,
            bits_per_element={"key": s.bits_per_element("key"),
                              "value": s.bits_per_element("value"),
                              "mean": s.bits_per_element()},
            prompt_tokens=[int(p.shape[1]) for p in prompts],
            kl=kl[s.name], top1=top1[s.name], first_divergence=firsts,
            greedy_tokens=chosen[s.name],
        ))
    return reference, results
