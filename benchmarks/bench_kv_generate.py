"""KV cache in a real model on the CPU: SmolLM2-135M at a long context, DynamicCache vs lowbit.

Prefill a ``--tokens``-token prompt (a passage repeated), then time ``--steps`` greedy decode
steps one by one (``model(next_token, cache=...)``), for transformers' ``DynamicCache`` (SDPA)
and lowbit's memory-saving caches (attn_implementation ``"lowbit"``: the fused kernel on the
packed codes).  Prints the cache's bytes (DynamicCache: its key/value tensors; lowbit:
``memory_bytes()``, plus the allocated tile capacity) and the median decode step time, with
the ratios to DynamicCache measured in the same run.  Needs the offline model
(``lowbit.research.model.load_model``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers
from common import dynamic_cache_bytes, lowbit_cache_bytes

import lowbit.kv.hf as lkv
from lowbit.research.model import load_model

TEXT = ("Paris is the capital and largest city of France. It lies on the river Seine in the north of "
        "the country. The city is known for the Eiffel Tower and for the Louvre. ")






def run_one(model: object, ids: torch.Tensor, cache: object, steps: int) -> tuple[float, list[float]]:
    arg = lkv.cache_argument()
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, **{arg: cache})
        prefill = time.perf_counter() - t0
        nxt = out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(input_ids=nxt, **{arg: cache})
            times.append(time.perf_counter() - t0)
            nxt = out.logits[:, -1:].argmax(-1)
    return prefill, times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--presets", nargs="*", default=["kvarn-k4v2-g128", "kvarn-k2v2-g128"])
    args = p.parse_args()
    loaded = load_model()
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(TEXT * (args.tokens // 30 + 1), return_tensors="pt")["input_ids"][:, : args.tokens]
    print(f"SmolLM2-135M, float32, CPU ({torch.get_num_threads()} threads), prompt {ids.shape[1]} tokens, "
          f"{args.steps} decode steps")
    model.set_attn_implementation("sdpa")
    dyn = transformers.DynamicCache(config=model.config)
    pre, times = run_one(model, ids, dyn, args.steps)
    base_mem, base_t = dynamic_cache_bytes(dyn), statistics.median(times)
    print(f"{'cache':<28}{'KV MiB':>10}{'alloc MiB':>11}{'x Dynamic':>11}{'prefill s':>11}"
          f"{'decode ms':>11}{'x Dynamic':>11}")
    print(f"{'DynamicCache + sdpa':<28}{base_mem / 2**20:>10.2f}{base_mem / 2**20:>11.2f}{1:>11.3f}"
          f"{pre:>11.1f}{base_t * 1e3:>11.1f}{1:>11.3f}")
    lkv.use_lowbit_attention(model)
    for preset in args.presets:
        cache = lkv.KVarNCache(model.config, preset=preset)
        pre, times = run_one(model, ids, cache, args.steps)
        held, alloc = lowbit_cache_bytes(cache)
        t = statistics.median(times)
        print(f"{preset + ' (lowbit attn)':<28}{held / 2**20:>10.2f}{alloc / 2**20:>11.2f}"
              f"{held / base_mem:>11.3f}{pre:>11.1f}{t * 1e3:>11.1f}{t / base_t:>11.3f}")
        print("   step times ms:", " ".join(f"{x * 1e3:.0f}" for x in times))


if __name__ == "__main__":
    main()
