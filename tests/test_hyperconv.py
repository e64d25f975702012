"""HyperConv2d (lowbit.research.hyperconv): the layer, its FLOP/parameter counter, the study.

Oracles: hand-computed costs of small layers; torch's FlopCounterMode (what actually ran) and a
brute-force loop that counts its own multiplies for plain convolutions; torch's own conv2d for
the generated kernels.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from lowbit.research.hyperconv import (  # noqa: E402
    DESCRIPTORS,
    Cost,
    HyperConv2d,
    TiledConv2d,
    band_edges,
    costs_at_sizes,
    format_cost_table,
    layer_cost,
)

# Float32 convolutions of the same numbers by different algorithms (tiled vs whole-image,
# grouped vs not) agree to a few ulps of the output's magnitude (outputs here are O(1)).
ATOL = 1e-5


def _measured(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def test_cost_of_a_small_position_layer_by_hand():
    layer = HyperConv2d(2, 3, 3, tiles=4, descriptor="position", hidden=5)
    c = layer_cost(layer, 6, 8, batch=2)
    # MLP sizes: d = 10 position features, hidden 5, m = 3·2·3² + 3 = 57.
    assert layer.mlp_sizes == (10, 5, 57)
    assert c.conv == 2 * (2 * 6 * 8) * 2 * 3 * 9            # 2·B·H·W·C_in·C_out·k² = 10368
    assert c.conv_bias == 2 * 6 * 8 * 3                      # 288
    assert c.mlp == 4 * 2 * (10 * 5 + 5 * 57)                # T = 4 evaluations: 2680
    assert c.mlp_elementwise == 4 * ((5 + 57) + 5 + 57)      # biases, ReLUs, gains: 496
    assert c.descriptor == 0                                 # a constant buffer
    assert c.params == (10 + 1) * 5 + (5 + 1) * 57 == 397
    assert c.params == sum(p.numel() for p in layer.parameters())
    assert c.flops == 10368 + 288 + 2680 + 496
    assert c.per_pixel == c.flops / 96


def test_cost_of_a_small_content_layer_by_hand():
    layer = HyperConv2d(2, 1, 1, tiles=(1, 2), descriptor="content", hidden=(3, 4))
    c = layer_cost(layer, 2, 3, batch=2)
    assert layer.mlp_sizes == (2, 3, 4, 3)                   # m = 1·2·1 + 1
    assert c.conv == 2 * 12 * 2 and c.conv_bias == 12
    assert c.mlp == (2 * 2) * 2 * (2 * 3 + 3 * 4 + 4 * 3)    # B·T = 4 evaluations: 240
    assert c.mlp_elementwise == 4 * ((3 + 4 + 3) + (3 + 4) + 3)
    assert c.descriptor == 2 * (2 * 3 * 2 + 2 * 2)           # sums and divisions: 32
    assert c.params == 3 * 3 + 4 * 4 + 5 * 3 == sum(p.numel() for p in layer.parameters())


def _brute_force_conv(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, int]:
    """Zero-padded 'same' convolution (cross-correlation) by loops, counting its multiplies."""
    b, c_in, h, wd = x.shape
    c_out, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.zeros((b, c_out, h, wd))
    multiplies = 0
    for n in range(b):
        for o in range(c_out):
            for i in range(h):
                for j in range(wd):
                    for c in range(c_in):
                        for di in range(k):
                            for dj in range(k):
                                y[n, o, i, j] += w[o, c, di, dj] * xp[n, c, i + di, j + dj]
                                multiplies += 1
    return y, multiplies


@pytest.mark.parametrize("c_in,c_out,k,h,w,b", [(1, 1, 1, 3, 4, 1), (2, 3, 3, 5, 4, 2),
                                                 (3, 2, 5, 6, 7, 1)])
def test_plain_conv_cost_matches_measured_counts(c_in, c_out, k, h, w, b):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False).double()
    x = torch.randn(b, c_in, h, w, dtype=torch.float64)
    cost = layer_cost(conv, h, w, b)
    y, multiplies = _brute_force_conv(x.numpy(), conv.weight.detach().numpy())
    np.testing.assert_allclose(y, conv(x).detach().numpy(), rtol=1e-12, atol=1e-12)
    assert cost.conv == 2 * multiplies == _measured(conv, x)
    assert cost.conv_bias == 0 and cost.params == c_in * c_out * k * k


@pytest.mark.parametrize("descriptor", DESCRIPTORS)
@pytest.mark.parametrize("tiles", [1, 4, (2, 3)])
def test_hyperconv_counter_matches_flop_counter(descriptor, tiles):
    torch.manual_seed(0)
    layer = HyperConv2d(3, 4, 3, tiles=tiles, descriptor=descriptor, hidden=(7, 5))
    x = torch.randn(2, 3, 11, 9)
    assert layer_cost(layer, 11, 9, 2).matmul_flops == _measured(layer, x)
    if descriptor == "position":  # precomputed: the convolution alone
        tiled = layer.precompute()
        assert _measured(tiled, x) == layer_cost(tiled, 11, 9, 2).matmul_flops
        assert layer_cost(tiled, 11, 9, 2).mlp == 0


def test_mlp_share_vanishes_with_image_size():
    layer = HyperConv2d(8, 8, 3, tiles=16, descriptor="both", hidden=1024)
    share = [(c.mlp + c.mlp_elementwise) / c.flops for _, c in costs_at_sizes(layer, (16, 32, 32))]
    # 1024 hidden units, 16 tiles, batch 16: the MLP dominates a training step (94 %), is
    # 1.7 % at 1 MP and 0.14 % at 12 MP.
    assert share[0] > 0.9 and share[0] > share[1] > share[2] and share[2] < 0.002
    rows = format_cost_table(costs_at_sizes(layer, (16, 32, 32)))
    assert len(rows) == 5 and "1 MP" in rows[3] and "12 MP" in rows[4]


def test_single_tile_constant_descriptor_is_an_ordinary_conv():
    torch.manual_seed(1)
    layer = HyperConv2d(3, 5, 3, tiles=1, descriptor="position", hidden=16)
    x = torch.randn(2, 3, 9, 10)
    weight, bias = layer.kernels()
    assert weight.shape == (1, 5, 3, 3, 3) and bias.shape == (1, 5)
    expected = F.conv2d(x, weight[0], bias[0], padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_each_tile_is_a_conv_with_its_own_kernel(descriptor):
    torch.manual_seed(2)
    layer = HyperConv2d(2, 3, 3, tiles=(2, 3), descriptor=descriptor, hidden=8)
    x = torch.randn(2, 2, 7, 8)
    y = layer(x)
    weight, bias = layer.kernels(x)
    re, ce = band_edges(7, 2), band_edges(8, 3)
    assert re == [0, 3, 7] and ce == [0, 2, 5, 8]
    for s in range(2):
        for t in range(6):
            i, j = divmod(t, 3)
            w_t, b_t = (weight[t], bias[t]) if descriptor == "position" else (weight[s, t], bias[s, t])
            full = F.conv2d(x[s:s + 1], w_t, b_t, padding=1)[0]
            torch.testing.assert_close(y[s, :, re[i]:re[i + 1], ce[j]:ce[j + 1]],
                                       full[:, re[i]:re[i + 1], ce[j]:ce[j + 1]], rtol=0, atol=ATOL)
    if descriptor == "content":  # the descriptor is the per-tile mean of the input
        z = layer.descriptors(x)
        torch.testing.assert_close(z[1, 4], x[1, :, 3:7, 2:5].mean(dim=(1, 2)))


def test_generated_kernels_start_near_he_variance_for_any_width():
    torch.manual_seed(3)
    stds = []
    for h in (4, 64, 1024):
        w, _ = HyperConv2d(16, 16, 3, tiles=16, hidden=h).kernels()
        stds.append(float(w.detach().std()))
    he = (2 / (16 * 9)) ** 0.5
    # Only the order of magnitude is promised: the hidden activations' scale depends on the
    # descriptor (mean square ~0.5 for the position features, ReLU halves it).
    assert all(0.2 * he < s < 2 * he for s in stds), (stds, he)


def test_precompute_equals_and_refuses_content():
    torch.manual_seed(4)
    layer = HyperConv2d(3, 4, 3, tiles=4, descriptor="position", hidden=12)
    x = torch.randn(1, 3, 12, 12)
    tiled = layer.precompute()
    assert isinstance(tiled, TiledConv2d) and not list(tiled.parameters())
    torch.testing.assert_close(tiled(x), layer(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="descriptor='position'"):
        HyperConv2d(3, 4, 3, descriptor="both").precompute()


@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_one_step_lowers_the_loss_and_reaches_every_mlp_weight(descriptor):
    torch.manual_seed(5)
    layer = HyperConv2d(3, 3, 3, tiles=4, descriptor=descriptor, hidden=(16, 8))
    x, target = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    loss0 = F.mse_loss(layer(x), target)
    opt.zero_grad()
    loss0.backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    opt.step()
    with torch.no_grad():
        assert float(F.mse_loss(layer(x), target)) < float(loss0.detach())


def test_deterministic_under_a_seed():
    def run():
        torch.manual_seed(6)
        layer = HyperConv2d(2, 2, 3, tiles=4, descriptor="both", hidden=8)
        x = torch.randn(2, 2, 8, 8)
        return layer(x).detach()

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="descriptor"):
        HyperConv2d(2, 2, descriptor="pixels")
    with pytest.raises(ValueError, match="tiles"):
        HyperConv2d(2, 2, tiles=3)
    with pytest.raises(ValueError, match="kernel_size"):
        HyperConv2d(2, 2, kernel_size=2)
    with pytest.raises(ValueError, match="hidden"):
        HyperConv2d(2, 2, hidden=0)
    with pytest.raises(ValueError, match="shape"):
        HyperConv2d(2, 2)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="tile grid"):
        HyperConv2d(2, 2, tiles=16)(torch.zeros(1, 2, 3, 8))
    with pytest.raises(TypeError, match="Linear"):
        layer_cost(nn.Linear(2, 2), 4, 4)
    with pytest.raises(ValueError, match="stride"):
        layer_cost(nn.Conv2d(2, 2, 3, stride=2, padding=1), 4, 4)
    with pytest.raises(ValueError, match="height"):
        layer_cost(nn.Conv2d(2, 2, 3, padding=1), 0, 4)
    assert Cost(conv=1, pixels=1).flops == 1


# -- the study and its report -------------------------------------------------------------------
def _tiny_config():
    import dataclasses

    from lowbit.research.hyperconv_study import QUICK

    return dataclasses.replace(
        QUICK, steps=2, batch=2, patch=16, seeds=2, test_size=32, e1_plain_widths=(4, 6),
        e1_hc_width=4, e1_hidden=(4, 8), e1_other_descriptors=("position",), e2_sizes=(16, 32),
        e2_hidden=(4,), e2_repeats=1, e3_hidden=(2, 4, 8), e3_patches=2, e3_patch=8, e3_steps=2,
        e4_bits=(1, 2, 32), e4_hidden_at_32=2, e4_steps=2, e4_shadow_steps=2,
        e4_stochastic_seeds=2)


def test_nets_have_equal_conv_flops():
    pytest.importorskip("skimage")
    from lowbit.research.hyperconv_study import RestorationNet

    for task in ("denoise", "demosaic"):
        plain = RestorationNet(task, 8).cost(64, 64)
        hc = RestorationNet(task, 8, hidden=256).cost(64, 64)
        assert plain.conv == hc.conv and plain.conv_bias == hc.conv_bias
        assert plain.mlp == 0 < hc.mlp and hc.params > 10 * plain.params
        assert RestorationNet(task, 8, hidden=4)(torch.zeros(1, 3 if task == "denoise" else 4,
                                                            8, 8)).shape[1] == 3
    # Demosaicing runs at half resolution: a quarter of the denoiser's conv work per layer.
    assert RestorationNet("demosaic", 8).cost(64, 64).pixels == 64 * 64


def test_demosaic_input_is_the_packed_bayer_mosaic():
    pytest.importorskip("skimage")
    from lowbit.research.hyperconv_study import NOISE, degrade

    clean = torch.rand(1, 3, 4, 6)
    g = torch.Generator().manual_seed(0)
    packed = degrade("demosaic", clean, g)
    noise = packed - torch.stack([clean[:, 0, ::2, ::2], clean[:, 1, ::2, 1::2],
                                  clean[:, 1, 1::2, ::2], clean[:, 2, 1::2, 1::2]], dim=1)
    assert packed.shape == (1, 4, 2, 3)
    assert float(noise.abs().max()) < 6 * NOISE["demosaic"]  # six sigma: never by chance


def test_quick_report_on_a_tiny_configuration(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("tqdm")
    import json

    from lowbit.research.cli import eval_hyperconv

    report = eval_hyperconv(out=tmp_path, config=_tiny_config(), progress=False)
    text = report.read_text(encoding="utf-8")
    for heading in ("## E1", "## E2", "## E3", "## E4", "reconstruction"):
        assert heading in text
    # A Python call with custom sizes does not pretend to be a `lowbit eval` command line.
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["command"].startswith("Python call") and "custom sizes" in meta["command"]
    assert "CPU time" in meta["machine"] and "load average" in meta["machine"]
    data = json.loads((tmp_path / "results.json").read_text())["study"]
    # E1: 2 tasks × 2 seeds × (2 plain + 2 HC + 1 other descriptor).
    assert len(data["e1"]) == 20 and len(data["e3"]) == 6 and len(data["e4"]) == 3
    e4 = {r["bits"]: r for r in data["e4"]}
    # The fixed budget: h_b = round(32·2/b) and weights linear in h.
    assert [e4[b]["hidden"] for b in (1, 2, 32)] == [64, 32, 2]
    assert e4[1]["weight_bits"] == e4[2]["weight_bits"] == e4[32]["weight_bits"]
    assert e4[32]["test"]["nearest_even"] == e4[32]["test"]["float"]
    for r in data["e2"]:
        assert r["measured_flops_per_pixel"] <= r["flops_per_pixel"]
    import importlib.util

    if importlib.util.find_spec("matplotlib") is not None:
        assert sorted(p.name for p in tmp_path.glob("*.png")) == [
            "e1_quality.png", "e2_amortization.png", "e3_double_descent.png",
            "e4_fixed_memory.png"]


def test_study_is_deterministic_and_independent_of_jobs():
    pytest.importorskip("skimage")
    import dataclasses

    from lowbit.research.hyperconv_study import plan_jobs, run_job

    cfg = dataclasses.replace(_tiny_config(), tasks=("demosaic",))
    job = next(j for j in plan_jobs(cfg) if j[0] == "e1" and j[1]["hidden"] == 8)
    a, b = run_job(job), run_job(job)
    a.pop("train_seconds"), b.pop("train_seconds")
    assert a == b


def test_report_states_the_command_actually_run(tmp_path, monkeypatch, capsys):
    """The report's command line is the one typed (options and --out included), not a fixed
    string; a Python call on a preset records the equivalent command."""
    pytest.importorskip("skimage")
    pytest.importorskip("tqdm")
    import dataclasses
    import json

    from lowbit.cli import main
    from lowbit.research import hyperconv_study
    from lowbit.research.cli import eval_hyperconv

    tiny = _tiny_config()
    tiny = dataclasses.replace(tiny, tasks=("demosaic",), seeds=1, e1_plain_widths=(4,),
                               e1_hidden=(4,), e1_other_descriptors=(), e2_sizes=(16,),
                               e3_hidden=(2,), e3_seeds=1, e4_bits=(2, 32), e4_seeds=1,
                               e4_stochastic_seeds=1)
    monkeypatch.setattr(hyperconv_study, "QUICK", tiny)  # --quick now means the tiny sizes
    out = tmp_path / "cli out"
    argv = ["eval", "hyperconv", "--quick", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    expected = f"lowbit eval hyperconv --quick --no-progress --out '{out}'"
    assert f"- command: {expected}\n" in (out / "report.md").read_text(encoding="utf-8")
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["command"] == expected
    assert "CPU time" in meta["machine"] and "s wall" in meta["machine"]

    report = eval_hyperconv(quick=True, out=tmp_path / "py", jobs=1, progress=False)
    meta = json.loads((report.parent / "results.json").read_text())["meta"]
    assert meta["command"] == f"lowbit eval hyperconv --quick --out {tmp_path / 'py'}"


def test_cli_rejects_bad_jobs(capsys):
    from lowbit.cli import main

    assert main(["eval", "hyperconv", "--jobs", "0", "--out", "unused"]) == 2
    assert "--jobs" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_study_on_real_images(tmp_path):
    """One real-image run: HC and plain denoisers learn (beat the noisy input's PSNR)."""
    pytest.importorskip("skimage")
    import dataclasses
    import math

    from lowbit.research.hyperconv_study import NOISE, QUICK, job_e1

    cfg = dataclasses.replace(QUICK, steps=300)
    noisy_psnr = 10 * math.log10(1 / NOISE["denoise"] ** 2)   # 20.2 dB
    # The quick report's 500 steps reach 27.5-29.4 dB; 120 steps reached only 22.9 dB.
    for hidden in (None, 512):
        res = job_e1(cfg, "denoise", 8, hidden, 0)
        assert res["test"]["psnr"] > noisy_psnr + 2, res["test"]
