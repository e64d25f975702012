"""Experiments on real data: KV-cache error accumulation and weight rounding at fixed memory.

Entry points (also ``lowbit eval kv`` / ``lowbit eval weights``):

- :func:`lowbit.research.kv_error.pseudo_decode` -- the KVarN paper's pseudo-decode protocol;
- :func:`lowbit.research.decode.greedy_divergence` -- greedy decoding with a quantized cache;
- :func:`lowbit.research.weights.weight_study` -- rounding methods at a fixed weight budget.

Nothing here is imported by ``import lowbit``; torch and transformers are imported on use.
"""
