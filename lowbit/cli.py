"""The ``lowbit`` command (also ``python -m lowbit``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import lowbit


def _info(args: argparse.Namespace) -> int:
    import numba

    print(f"lowbit     {lowbit.__version__}")
    print(f"python     {platform.python_version()} ({platform.machine()})")
    print(f"numpy      {np.__version__}")
    print(f"numba      {numba.__version__} (CPU backend: usable, {numba.get_num_threads()} threads)")
    for mod in ("torch", "cupy", "transformers"):
        spec = importlib.util.find_spec(mod)
        if spec is None:
            print(f"{mod:<10} not installed")
            continue
        try:
            m = importlib.import_module(mod)
            print(f"{mod:<10} {m.__version__}")
        except Exception as exc:  # report a broken optional install instead of crashing
            print(f"{mod:<10} installed but fails to import: {exc}")
    print(f"CUDA       {_gpu_description()}")
    return 0


def _gpu_description() -> str:
    if importlib.util.find_spec("cupy") is None:
        return "backend unavailable (CuPy not installed: pip install lowbit[cuda13])"
    try:
        import cupy

        if not cupy.cuda.is_available():
            return "backend unavailable (no CUDA device)"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"backend usable: {cupy.cuda.runtime.getDeviceCount()} device(s), device 0 = {name}"
    except Exception as exc:
        return f"backend unavailable ({exc})"


def _parse_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _quantize(args: argparse.Namespace) -> int:
    x = np.load(args.input, allow_pickle=False)
    kwargs = _parse_kwargs(args.option)
    if args.axis is not None:
        kwargs["axis"] = None if args.axis == "none" else int(args.axis)
    if args.group_size is not None:
        kwargs["group_size"] = args.group_size
    if args.symmetric:
        kwargs["symmetric"] = True
    if args.rounding:
        kwargs["rounding"] = args.rounding
    try:
        q = lowbit.quantize(x, bits=args.bits, scheme=args.scheme, **kwargs)
    except (TypeError, ValueError) as exc:
        print(f"lowbit quantize: {exc}", file=sys.stderr)
        return 2
    q.save(args.output)
    print(q)
    return 0


def _dequantize(args: argparse.Namespace) -> int:
    try:
        q = lowbit.load(args.input)
    except ValueError as exc:
        print(f"lowbit dequantize: {exc}", file=sys.stderr)
        return 2
    np.save(args.output, q.dequantize())
    print(f"{q} -> {args.output}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from lowbit.benchrun import run_benchmarks

    return run_benchmarks(args.dir, args.only, quick=args.quick, json_path=args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description=lowbit.__doc__)
    p.add_argument("--version", action="version", version=f"lowbit {lowbit.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="versions, usable backends, GPU name")
    s.set_defaults(func=_info)

    s = sub.add_parser("quantize", help="quantize a .npy array into a .npz file")
    s.add_argument("input", help="input .npy file (floating dtype)")
    s.add_argument("output", help="output .npz file")
    s.add_argument("--bits", type=int, default=None)
    s.add_argument("--scheme", default="rtn")
    s.add_argument("--axis", default=None, help="integer axis, or 'none' for per tensor")
    s.add_argument("--group-size", type=int, default=None)
    s.add_argument("--symmetric", action="store_true")
    s.add_argument("--rounding", default=None)
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra scheme option (JSON value), repeatable")
    s.set_defaults(func=_quantize)

    s = sub.add_parser("dequantize", help="reconstruct a .npz file into a .npy array")
    s.add_argument("input")
    s.add_argument("output")
    s.set_defaults(func=_dequantize)

    s = sub.add_parser("bench", help="run the benchmarks in benchmarks/ (baseline in the same run)")
    s.add_argument("only", nargs="*", help="benchmark families to run (e.g. affine hadamard)")
    s.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    s.add_argument("--dir", default=None, help="benchmarks folder (default: the repository's)")
    s.add_argument("--json", default=None, help="also write the rows to this JSON file")
    s.set_defaults(func=_bench)

    if importlib.util.find_spec("lowbit.research.cli") is not None:
        from lowbit.research.cli import add_eval_parser

        add_eval_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
