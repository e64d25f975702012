"""transformers plumbing shared by the KV experiments: the attention probe and cache access.

The probe is an attention function registered with transformers' ``AttentionInterface`` (and
the matching mask function with ``AttentionMaskInterface``) under the name ``lowbit_probe``.
It computes attention exactly as transformers' own ``sdpa`` implementation does and, while a
:class:`Probe` is attached to the model, hands each layer's query, keys, values and output
(``softmax(QK^T)V`` before the output projection, shape ``[B, T, H, D]``) to it. Models whose
attention goes through ``AttentionInterface`` (Llama, Mistral, Qwen2/3, SmolLM, ... in
transformers 5.x) are supported; others are detected and refused.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from typing import Any

PROBE_NAME = "lowbit_probe"
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    AttentionInterface.register(PROBE_NAME, _probe_attention)
    AttentionMaskInterface.register(PROBE_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    _registered = ALL_ATTENTION_FUNCTIONS.get(PROBE_NAME) is _probe_attention


def sdpa(module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> Any:
    """transformers' sdpa attention; returns the output ``[B, T, H, D]``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, mask, **kwargs)[0]


def _probe_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
) -> tuple[Any, Any]:
    out = sdpa(module, query, key, value, attention_mask, **kwargs)
    probe = getattr(module, "_lowbit_probe", None)
    if probe is not None:
        probe.observe(module, query, key, value, attention_mask, kwargs, out)
    return out, None


class Probe:
    """Receives every attention call of a model while attached (see :func:`attach`)."""

    def observe(
        self, module: Any, query: Any, key: Any, value: Any, mask: Any, kwargs: dict[str, Any],
        out: Any,
    ) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def attention_modules(model: Any) -> list[Any]:
    """The model's self-attention modules, in layer order (those with a ``layer_idx``)."""
    mods = [
        m for m in model.modules()
        if hasattr(m, "layer_idx") and hasattr(m, "o_proj") and hasattr(m, "config")
    ]
    return sorted(mods, key=lambda m: m.layer_idx)


@contextlib.contextmanager
def attach(model: Any, probe: Probe) -> Iterator[None]:
    """Route the model's attention through the probe for the duration of the block.

    Raises
    ------
    ValueError
        The model has no attention modules the probe can reach.
    """
    _register()
    mods = attention_modules(model)
    if not mods:
        raise ValueError(
            f"{type(model).__name__} has no attention modules with layer_idx and o_proj; the KV "
            "harness supports transformers decoder models that use AttentionInterface"
        )
    configs = {id(m.config): m.config for m in mods}
    configs[id(model.config)] = model.config
    saved = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = PROBE_NAME
        for m in mods:
            m._lowbit_probe = probe
        yield
    finally:
        for m in mods:
            m._lowbit_probe = None
        for k, c in configs.items():
            c._attn_implementation = saved[k]


def cache_kwarg(model: Any) -> str:
    """The keyword the model's ``forward`` takes its cache under (``cache`` from transformers
    5.24, ``past_key_values`` before)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` for the model."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def copy_cache(cache: Any) -> Any:
    """An independent copy of a cache (tensors included)."""
    return copy.deepcopy(cache)


def cache_layers(cache: Any) -> list[Any]:
    """The per-layer cache objects (each with ``keys`` / ``values`` ``[B, Hkv, T, D]``)."""
    layers = list(cache.layers)
    for layer in layers:
        if not hasattr(layer, "keys") or not hasattr(layer, "values"):
            raise TypeError(
                f"cache layer {type(layer).__name__} has no keys/values tensors; the KV harness "
                "needs full-attention DynamicLayer caches"
            )
    return layers


def forward(model: Any, ids: Any, cache: Any) -> Any:
    """Logits ``[B, T, V]`` (float32) of ``ids`` appended to ``cache``."""
    out = model(input_ids=ids, use_cache=True, **{cache_kwarg(model): cache})
    return out.logits.float()
