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


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'benchmark':<34} {'size':<22} {'time':>10} {'baseline':<26} {'base time':>10} {'ratio':>7} {'GB/s':>7} {'%copy':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<34} {r['size']:<22} {r['seconds'] * 1e3:>8.2f}ms {r['baseline']:<26} "
            f"{r['baseline_seconds'] * 1e3:>8.2f}ms {r['ratio']:>6.2f}x {r['gbps']:>7.2f} {r['pct_copy']:>5.1f}%"
        )
    return "\n".join(lines)


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
        mod = _load(f)
        got = mod.run(quick=quick)
        print(format_table(got), flush=True)
        rows.extend(got)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    return 0
