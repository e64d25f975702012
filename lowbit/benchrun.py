"""Discover and run ``benchmarks/bench_<family>.py`` files, print one table."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any


def default_dir() -> Path:
    """The repository's benchmarks/ folder (next to the lowbit package)."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def _load(path: Path) -> Any:
    sys.path.insert(0, str(path.parent))  # benchmarks import their shared `common` module
    try:
        spec = importlib.util.spec_from_file_location(f"lowbit_bench_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(path.parent))


def _is_ours(module: str | None) -> bool:
    """A module of lowbit or of the benchmarks folder (missing: a bug, not an optional package)."""
    top = (module or "").partition(".")[0]
    return top in ("lowbit", "common", "cuda_common") or top.startswith("bench_")


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (columns as wide as their longest entry)."""
    cells = [[r["name"], r["size"], f"{r['seconds'] * 1e3:.2f}ms", r["baseline"],
              f"{r['baseline_seconds'] * 1e3:.2f}ms", f"{r['ratio']:.2f}x", f"{r['gbps']:.2f}",
              f"{r['pct_copy']:.1f}%"] for r in rows]
    head = ["benchmark", "size", "time", "baseline", "base time", "ratio", "GB/s", "%copy"]
    left = (True, True, False, True, False, False, False, False)
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

    def line(c: list[str]) -> str:
        return " ".join(v.ljust(w) if lt else v.rjust(w) for v, w, lt in zip(c, widths, left, strict=True)).rstrip()

    return "\n".join([line(head), "-" * len(line(head)), *map(line, cells)])


def run_benchmarks(directory: str | None, only: list[str], *, quick: bool, json_path: str | None) -> int:
    folder = Path(directory) if directory else default_dir()
    files = sorted(folder.glob("bench_*.py"))
    if not files:
        print(f"lowbit bench: no benchmarks/bench_*.py under {folder}", file=sys.stderr)
        return 2
    if only:
        files = [f for f in files if f.stem.removeprefix("bench_") in only]
        if not files:
            print(f"lowbit bench: none of {only} found under {folder}", file=sys.stderr)
            return 2
    sys.path.insert(0, str(folder))
    from common import copy_bandwidth  # type: ignore[import-not-found]

    print(f"# lowbit bench ({'quick' if quick else 'full'}), {platform.node()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, measured host copy bandwidth "
          f"{copy_bandwidth() / 1e9:.1f} GB/s (read + write)")
    rows: list[dict[str, Any]] = []
    for f in files:
        print(f"\n## {f.stem}", flush=True)
        try:
            mod = _load(f)
            if not callable(getattr(mod, "run", None)):  # a stand-alone script
                print(f"note: {f.stem} is a script with its own options (python "
                      f"benchmarks/{f.name} --help); lowbit bench does not run it", flush=True)
                continue
            got = mod.run(quick=quick)
        except ModuleNotFoundError as exc:
            if _is_ours(exc.name):
                raise
            print(f"note: {f.stem} skipped (it needs {exc.name}, which is not installed; "
                  f"`pip install {exc.name}` adds it)", flush=True)
            continue
        if got:
            print(format_table(got), flush=True)
        rows.extend(got)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    return 0
