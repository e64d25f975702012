"""The ``lowbit eval kv`` report: command line, texts, plots (zeros off log axes), re-rendering.

Synthetic results (no model): the report only formats numbers, so they are made up here with
the shapes a real run has (blocks x layers) and exact zeros where a real run has them (the
blocks that cannot see quantized history, step 0 of the greedy decode).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.research import cli as research_cli
from lowbit.research.decode import DecodeResult
from lowbit.research.kv_error import KVErrorSplit, PseudoDecodeResult
from lowbit.research.report import load_kv_results, rewrite_kv_report, write_kv_report

BLOCKS, LAYERS = 6, 3
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed")


def fake_result(name: str, level: float) -> PseudoDecodeResult:
    rng = np.random.default_rng(int(level * 100))
    err = level * (1 + rng.random((BLOCKS, LAYERS)))
    err[:2] = 0  # blocks 0 (sink) and 1 see no quantized history: exactly 0, as in a real run
    kl = level * (1 + rng.random(BLOCKS))
    kl[:2] = 0
    split = KVErrorSplit(relative_error=0.1, magnitude_share=0.05, magnitude_share_top=0.06,
                         top_error_share=0.2)
    return PseudoDecodeResult(
        scheme=name, description=name, bits_per_element={"key": 2.5, "value": 2.5, "mean": 2.5},
        block_size=128, sink_tokens=128, block_end=[128 * (b + 1) for b in range(BLOCKS)],
        static_rel=err, static_mae=err / 2, accum_rel=2 * err, accum_mae=err,
        kl=kl, top1=1 - kl / 10, nll=1 + kl, nll_reference=np.ones(BLOCKS),
        kv_split={"key": split, "value": split})


def fake_decode(name: str, level: float) -> DecodeResult:
    kl = np.full((2, 5), level)
    kl[:, 0] = 0  # step 0 is predicted by the full-precision prefill
    return DecodeResult(scheme=name, bits_per_element={"key": 2.5, "value": 2.5, "mean": 2.5},
                        prompt_tokens=[40, 40], kl=kl, top1=np.ones((2, 5)),
                        first_divergence=[None, 3], greedy_tokens=[[1] * 5, [1] * 5])


@pytest.fixture
def report(tmp_path: Path) -> Path:
    results = [fake_result("kvarn-k2v2-g128", 0.04), fake_result("kivi-k2v2-g128", 0.1)]
    decode = ([[1] * 5, [2] * 5], [fake_decode(r.scheme, 0.1) for r in results])
    return write_kv_report(tmp_path, results, decode, {"command": "lowbit eval kv --quick"},
                           reference_texts=["first text", "second text"])


def test_report_explains_growth_and_step_numbering(report):
    text = report.read_text(encoding="utf-8")
    assert "- command: lowbit eval kv --quick" in text
    assert "*accum MAE last/first block*: the accumulated MAE of the last block (context 768) " \
           "divided by that of the first block that sees quantized history (block 2, context 384)" in text
    assert "Steps are numbered from 0" in text
    assert "0. (40 prompt tokens) “first text”" in text


def test_results_read_back_and_report_rewritten(report):
    before = report.read_text(encoding="utf-8")
    results, decode, meta, texts = load_kv_results(report.parent)
    assert [r.scheme for r in results] == ["kvarn-k2v2-g128", "kivi-k2v2-g128"]
    np.testing.assert_array_equal(results[1].accum_mae, fake_result("kivi-k2v2-g128", 0.1).accum_mae)
    assert decode is not None and decode[1][1].first_divergence == [None, 3]
    assert meta == {"command": "lowbit eval kv --quick"} and texts == ["first text", "second text"]
    report.write_text("stale", encoding="utf-8")
    assert rewrite_kv_report(report.parent).read_text(encoding="utf-8") == before


@needs_matplotlib
def test_zeros_are_not_drawn_on_log_axes():
    """Zeros become markers on the bottom edge; the axis spans the real values only."""
    from matplotlib.figure import Figure

    from lowbit.research.report import ZERO_LABEL, _log_plot

    ax = Figure().subplots()
    ax.set_yscale("log")
    zeros: list = []
    line = _log_plot(ax, [1, 2, 3, 4], [0.0, 0.0, 0.05, 0.9], zeros=zeros, marker="o")
    assert np.isnan(line.get_ydata()[:2]).all() and list(line.get_ydata()[2:]) == [0.05, 0.9]
    assert len(zeros) == 1 and zeros[0].get_label() == ZERO_LABEL
    assert list(zeros[0].get_xdata()) == [1, 2]
    lo, hi = ax.get_ylim()
    assert 1e-3 < lo < 0.05 and hi > 0.9  # not stretched down to a fake 1e-12


@needs_matplotlib
def test_every_line_style_has_a_legend_entry(report):
    """The by-layer and KVarN - KIVI plots draw two regimes per scheme: both styles are named."""
    from lowbit.research import report as rep

    labels = [h.get_label() for h in rep._style_handles()]
    assert labels == ["accumulated regime (solid)", "static regime (dashed)"]
    for name in ("kv_error_by_layer.png", "kv_kl_vs_context.png", "kv_kvarn_minus_kivi.png",
                 "decode_kl_vs_step.png", "kv_error_vs_context.png"):
        assert (report.parent / name).read_bytes()[:4] == b"\x89PNG"


def test_command_line_is_the_one_typed(monkeypatch, tmp_path):
    seen = {}

    def fake_eval_kv(**kwargs):
        seen.update(kwargs)
        return tmp_path / "report.md"

    monkeypatch.setattr(research_cli, "eval_kv", fake_eval_kv)
    argv = ["eval", "kv", "--schemes", "kvarn-k2v2-g128", "--out", str(tmp_path / "a b")]
    assert main(argv) == 0
    assert seen["command"] == f"lowbit eval kv --schemes kvarn-k2v2-g128 --out '{tmp_path}/a b'"


def test_equivalent_command_of_a_python_call():
    cmd = research_cli._equivalent_command(
        "kv", {"quick": True, "out": "r", "schemes": ["kivi-k2v2-g128"], "tokens": None,
               "device": "cpu", "block_size": 128}, {"device": "cpu", "block_size": 128})
    assert cmd == "lowbit eval kv --quick --out r --schemes kivi-k2v2-g128"


def test_first_progress_line_comes_before_the_model_loads(monkeypatch, capsys, tmp_path):
    """The slow part (importing torch and transformers, loading the model) is announced first."""
    from lowbit.research import model

    class Stop(Exception):
        pass

    def load_model(*args, **kwargs):
        assert "[1/4] loading the model" in capsys.readouterr().err
        raise Stop

    monkeypatch.setattr(model, "load_model", load_model)
    monkeypatch.setattr(model, "default_model_file", lambda: Path("model.gguf"))
    with pytest.raises(Stop):
        research_cli.eval_kv(out=tmp_path, progress=False)
