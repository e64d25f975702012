"""docs/dask.md: every Python block runs, in order, in one namespace (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("zarr")
pytest.importorskip("torch")
pytest.importorskip("safetensors")

DOC = Path(__file__).resolve().parents[1] / "docs" / "dask.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_dask_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "LazyQuantizedArray(scheme='rtn'" in out and "bits per element" in out
    assert sorted(p.name for p in (tmp_path / "model-lowbit").iterdir()) == [
        f"layers.{i}.{kind}.weight" for i in range(2) for kind in ("attn", "mlp")]
