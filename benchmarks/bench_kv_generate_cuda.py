"""GPU end to end: greedy decoding of a Llama-architecture model at long context, transformers'
``DynamicCache`` + SDPA against lowbit's memory-saving caches (attention ``"lowbit"``: the fused
``kv_attend`` kernel on the packed codes), float16, on one CUDA device.

The model is built in the script from a config (random weights: no model can be fetched on the
GPU machine; the KV shapes are what matter): Hq = 32, Hk = 8, D = 128 (Llama-3-8B's attention
geometry), ``--layers`` decoder layers.  For each cache, in the same process: prefill a
``--context``-token random prompt for ``--batch`` sequences, then ``--steps`` greedy decode
steps, each timed with a device synchronization (tokens/s = batch / median step time).  KV
memory: DynamicCache's key/value tensors, lowbit's ``memory_bytes()`` (codes, scales, exact
sink/recent tokens) and the tile capacity it allocated; also the peak of
``torch.cuda.max_memory_allocated`` during the run.  From the measured bytes per token the
script prints the largest batch at ``--context`` that fits ``--budget-gib`` of KV memory for
each cache (arithmetic on measured numbers, not a run at that size).

Run: ``python benchmarks/bench_kv_generate_cuda.py [--context 32768 --batch 4 --layers 4]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from common import dynamic_cache_bytes, lowbit_cache_bytes

PRESETS = ("kvarn-k4v2-g128", "kvarn-k2v2-g128")


def build_model(layers: int) -> Any:
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.float16).eval()
    return model






def run_one(model: Any, ids: Any, cache: Any, steps: int) -> tuple[float, list[float], Any]:
    import torch

    import lowbit.kv.hf as lkv

    arg = lkv.cache_argument()
    tokens = []
    with torch.no_grad():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, logits_to_keep=1, **{arg: cache})  # no [B, T, vocab] logits
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t0
        nxt = out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(input_ids=nxt, **{arg: cache})
            nxt = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            tokens.append(nxt)
    return prefill, times, torch.cat(tokens, dim=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--context", type=int, default=32768)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--budget-gib", type=float, default=80.0)
    p.add_argument("--presets", nargs="*", default=list(PRESETS))
    args = p.parse_args()
    import torch
    import transformers

    if not torch.cuda.is_available():
        print("bench_kv_generate_cuda: skipped (no CUDA device)", file=sys.stderr)
        return 0
    import lowbit.kv.hf as lkv

    model = build_model(args.layers)
    gen = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.context), device="cuda", generator=gen)
    print(f"{torch.cuda.get_device_name()}; Llama geometry Hq 32 / Hk 8 / D 128, {args.layers} layers, float16, "
          f"random weights; batch {args.batch} x context {args.context}, {args.steps} decode steps")
    print(f"{'cache':<30}{'KV MiB':>10}{'alloc MiB':>11}{'x Dyn':>8}{'peak GiB':>10}{'prefill s':>11}"
          f"{'step ms':>9}{'tok/s':>9}{'x Dyn':>8}{'max batch':>11}")
    budget = args.budget_gib * 2**30
    rows = []
    model.set_attn_implementation("sdpa")
    base = None
    for name in ["DynamicCache + sdpa", *args.presets]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        if base is None:
            cache = transformers.DynamicCache(config=model.config)
        else:
            lkv.use_lowbit_attention(model)
            cache = lkv.KVarNCache(model.config, preset=name)
        pre, times, toks = run_one(model, ids, cache, args.steps)
        peak = torch.cuda.max_memory_allocated()
        step = statistics.median(times)
        if base is None:
            held = alloc = dynamic_cache_bytes(cache)
        else:
            held, alloc = lowbit_cache_bytes(cache)
        per_seq = alloc / args.batch  # bytes of one sequence's KV at this context, as allocated
        max_batch = int(budget // per_seq)
        if base is None:
            base = (held, step, toks)
        rel_mem, rel_speed = held / base[0], base[1] / step
        agree = float((toks == base[2]).float().mean())
        rows.append((name, held, alloc, rel_mem, peak, pre, step, args.batch / step, rel_speed, max_batch, agree))
        print(f"{name:<30}{held / 2**20:>10.1f}{alloc / 2**20:>11.1f}{rel_mem:>8.3f}{peak / 2**30:>10.2f}"
              f"{pre:>11.2f}{step * 1e3:>9.2f}{args.batch / step:>9.1f}{rel_speed:>8.2f}{max_batch:>11}",
              flush=True)
        del cache
    print(f"max batch: sequences of {args.context} tokens whose allocated KV fits {args.budget_gib:g} GiB "
          "(from the measured bytes; weights and activations not counted)")
    print("greedy tokens equal to DynamicCache's (random weights, so near-ties flip easily): "
          + ", ".join(f"{r[0]} {100 * r[10]:.0f}%" for r in rows[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
