"""The matched-bits KV study (lowbit/research/kv_study.py) on runs of a tiny random Llama."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lowbit.research.kv_error import pseudo_decode  # noqa: E402
from lowbit.research.kv_study import (  # noqa: E402
    group_stats,
    load_results,
    scheme_stats,
    seed_group,
    verdict,
    write_study,
)
from lowbit.research.report import write_kv_report  # noqa: E402

BLOCK = 32
SCHEMES = ["turboquant-k2v2-s0", "turboquant-k2v2-s1", "turboquant-k2v2-prod-s0",
           "kvarn-k2v2-g32-fp8-vlm", "kvarn-k2v2-g32-fp8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (1, 6 * BLOCK), generator=torch.Generator().manual_seed(1))
    results = pseudo_decode(model, ids, SCHEMES, block_size=BLOCK, sink_tokens=BLOCK, progress=False)
    dirs = []
    for i, part in enumerate((results[:2], results[2:])):  # a study made of two runs
        d = tmp_path_factory.mktemp(f"run{i}")
        write_kv_report(d, part, None, {"model": "tiny", "time": f"run {i}"})
        dirs.append(d)
    return results, dirs


def test_seed_groups() -> None:
    assert seed_group("turboquant-k2v2-s12") == "turboquant-k2v2"
    assert seed_group("turboquant-k2v2-s3-prod") == "turboquant-k2v2-prod"
    assert seed_group("kvarn-k2v2-g128-fp8") == "kvarn-k2v2-g128-fp8"


def test_runs_merge_into_seed_groups(runs, tmp_path) -> None:
    results, dirs = runs
    merged, metas = load_results(dirs)
    assert [r.scheme for r in merged] == SCHEMES and len(metas) == 2
    for a, b in zip(merged, results, strict=True):
        np.testing.assert_allclose(a.kl, b.kl, rtol=1e-12)
    stats = group_stats(merged)
    assert list(stats) == ["turboquant-k2v2", "turboquant-k2v2-prod", "kvarn-k2v2-g32-fp8-vlm",
                           "kvarn-k2v2-g32-fp8"]
    tq = stats["turboquant-k2v2"]
    assert tq["seeds"] == 2
    assert tq["bits"][0] == pytest.approx(2 + 16 / 64)  # codes + a float16 norm per 64 values
    assert stats["turboquant-k2v2-prod"]["bits_key"][0] == pytest.approx(2 + 32 / 64)
    per = [scheme_stats(r) for r in merged[:2]]
    assert tq["kl"] == pytest.approx((np.mean([p["kl"] for p in per]), min(p["kl"] for p in per),
                                      max(p["kl"] for p in per)))
    # blocks 2..5 see quantized history: first half = blocks 2, 3
    r = merged[0]
    assert per[0]["kl_first_half"] == pytest.approx(r.kl[2:4].mean())
    assert per[0]["kl_second_half"] == pytest.approx(r.kl[4:].mean())
    assert all(math.isfinite(v) and v > 0 for v in (per[0]["kl"], per[1]["kl"]))
    assert not np.array_equal(merged[0].kl, merged[1].kl)  # the seed changes the rotation

    path = write_study(tmp_path, merged, metas, max_bits=4.0)  # 32-token tiles cost more bits
    text = path.read_text(encoding="utf-8")
    assert "| turboquant-k2v2 | 2 |" in text and "Ratio of mean KL" in text
    data = json.loads((tmp_path / "study.json").read_text())
    assert data["groups"]["turboquant-k2v2"]["schemes"] == SCHEMES[:2]


def test_verdict_sentences() -> None:
    def entry(bits: float, kl: tuple[float, float, float], seeds: int = 1) -> dict:
        return {"bits": (bits, bits, bits), "kl": kl, "seeds": seeds}

    stats = {"turboquant-k2v2": entry(2.25, (1.0, 0.8, 1.2), 3),
             "kvarn-k2v2-g128-fp8-vlm": entry(2.375, (0.7, 0.7, 0.7)),
             "kvarn-k2v2-g128": entry(2.56, (0.1, 0.1, 0.1))}  # over the 2.4-bit limit
    text = "\n".join(verdict(stats))
    assert "kvarn-k2v2-g128-fp8-vlm" in text and "0.7×" in text
    assert "reached on the mean, but not against every TurboQuant seed" in text  # 0.7 / 0.8 > 0.8
    stats["turboquant-k2v2"] = entry(2.25, (1.0, 0.95, 1.05), 3)
    assert "**reached**" in "\n".join(verdict(stats))
    stats["kvarn-k2v2-g128-fp8-vlm"] = entry(2.375, (0.95, 0.95, 0.95))
    assert "not reached" in "\n".join(verdict(stats))
    stats["kvarn-k2v2-g128-fp8-vlm"] = entry(2.2, (0.5, 0.5, 0.5))  # fewer bits than TurboQuant
    assert "no verdict" in "\n".join(verdict(stats))


def test_bad_inputs(runs, tmp_path) -> None:
    _, dirs = runs
    with pytest.raises(ValueError, match="results.json"):
        load_results([tmp_path])
    merged, metas = load_results([dirs[0], dirs[0]])  # the same results twice: kept once
    assert [r.scheme for r in merged] == SCHEMES[:2] and metas[0]["reproduced"] == SCHEMES[:2]
    data = json.loads((dirs[0] / "results.json").read_text())
    data["pseudo_decode"][0]["kl"][-1] *= 1.5
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="different results"):
        load_results([dirs[0], tmp_path / "changed"])
    from lowbit.cli import main

    assert main(["eval", "kv-study", str(tmp_path)]) == 2
