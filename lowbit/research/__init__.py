"""Experiments on real data: KV-cache error accumulation, weight rounding at fixed memory,
hypernetwork convolutions.

Entry points (also ``lowbit eval kv`` / ``lowbit eval weights``):

- :func:`lowbit.research.kv_error.pseudo_decode` -- the KVarN paper's pseudo-decode protocol;
- :func:`lowbit.research.decode.greedy_divergence` -- greedy decoding with a quantized cache;
- :func:`lowbit.research.weights.weight_study` -- rounding methods at a fixed weight budget;
- :class:`lowbit.research.hyperconv.HyperConv2d` -- hypernetwork convolutions (a documented
  reconstruction) and their FLOP/parameter counter :func:`lowbit.research.hyperconv.layer_cost`.

Nothing here is imported by ``import lowbit``; torch and transformers are imported on use.
"""
