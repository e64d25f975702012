"""lowbit.kv: KV-cache quantization (KVarN and baselines) and a streaming quantized cache.

``lowbit.quantize(x, scheme="kvarn" | "kivi" | "quarot" | "fp8" | "<preset>", kind=...)``
quantizes K or V blocks ``[..., T, D]``; :class:`QuantizedKVCache` keeps a streaming cache
with exact sink and recent regions and fused decode attention.  The transformers
integration lives in :mod:`lowbit.kv.hf` (imports torch and transformers).
See docs/kv.md.
"""

from lowbit.kv.cache import QuantizedKVCache, reference_attention
from lowbit.kv.schemes import PRESETS, Preset

__all__ = ["PRESETS", "Preset", "QuantizedKVCache", "reference_attention"]
