"""The ``lowbit`` command (also ``python -m lowbit``).

Every error is one line on stderr, ``<command>: <what is wrong>``, naming the argument or file,
with exit status 2 (bad arguments, unreadable or invalid files, options a scheme refuses) or 1
(an unexpected failure: a bug).  ``--debug`` (anywhere on the command line) shows the traceback
instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

import lowbit


class UsageError(Exception):
    """A problem with the command line or its files: printed as one line, exit status 2."""


#: Exceptions that are the user's to fix (exit status 2); anything else is a bug (status 1).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, ValueError, TypeError, OSError, NotImplementedError,
    ImportError,  # an optional package is not installed (the message says which)
)


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def error_line(exc: BaseException) -> str:
    """``exc`` as one line: an OSError names its file, whitespace (newlines) is collapsed."""
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{os.fspath(exc.filename)!r}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


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
            print(f"{mod:<10} installed but fails to import: {error_line(exc)}")
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
        return f"backend unavailable ({error_line(exc)})"


# -- files ----------------------------------------------------------------------------------
def read_npy(path: str, name: str = "input") -> np.ndarray:
    """The floating array in the ``.npy`` file ``path``; its header is checked before its data.

    Raises
    ------
    UsageError
        The file is missing, is not a ``.npy`` file (an ``.npz`` archive, other bytes), is
        truncated, or holds Python objects or a non-floating dtype.
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
            fh.seek(0)
            if head != b"\x93NUMPY":
                kind = "an .npz archive" if head.startswith(b"PK") else "not a .npy file"
                raise UsageError(f"{name} {path!r} is {kind}; expected one array saved with numpy.save")
            try:
                version = fmt.read_magic(fh)
                read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
                if version not in read_header:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, fortran, dtype = read_header[version](fh)
            except (ValueError, OSError, EOFError, SyntaxError) as exc:
                raise UsageError(f"{name} {path!r} has a corrupt .npy header ({error_line(exc)})") from None
            if dtype.hasobject:
                raise UsageError(f"{name} {path!r} holds Python objects (dtype {dtype}); "
                                 "expected a float16, float32 or float64 array")
            if dtype.kind != "f" or dtype.fields is not None:
                raise UsageError(f"{name} {path!r} has dtype {dtype}; "
                                 "expected a float16, float32 or float64 array")
            need = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            size = os.fstat(fh.fileno()).st_size
            if size != need:
                raise UsageError(f"{name} {path!r} is truncated or corrupt: its header declares "
                                 f"shape {tuple(shape)} of {dtype} ({need} bytes), the file has {size}")
            x = np.fromfile(fh, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    except FileNotFoundError:
        raise UsageError(f"{name} {path!r}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{name} {path!r} is a folder, not a .npy file") from None
    return x


def check_output(path: str, name: str = "output") -> None:
    """Raise :class:`UsageError` now (before any work) if ``path`` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{name} {path!r} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{name} {path!r}: folder {os.path.dirname(path) or '.'!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{name} {path!r}: folder {os.path.dirname(path) or '.'!r} is not writable")


# -- quantize / dequantize ------------------------------------------------------------------
def _parse_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _axis(text: str) -> int | None:
    if text == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


#: scheme option -> the flag that sets it (other options: --option NAME=VALUE).
FLAGS = {"bits": "--bits", "kind": "--kind", "axis": "--axis", "group_size": "--group-size",
         "rounding": "--rounding", "symmetric": "--symmetric"}


def _quantize(args: argparse.Namespace) -> int:
    from lowbit.api import describe_options, required_options

    kwargs = _parse_kwargs(args.option)
    for key in ("axis", "group_size", "rounding", "kind"):  # only those given (default: SUPPRESS)
        if hasattr(args, key):
            kwargs[key] = getattr(args, key)
    if args.symmetric:
        kwargs["symmetric"] = True
    try:
        required = required_options(args.scheme)
    except ValueError as exc:  # not a scheme name
        raise UsageError(f"--scheme: {exc}") from None
    missing = [FLAGS.get(n, f"--option {n}=VALUE") for n in required
               if n not in kwargs and not (n == "bits" and args.bits is not None)]
    if missing:  # before reading the input: no silent default where a guess could be wrong
        raise UsageError(f"--scheme {args.scheme} needs {' and '.join(missing)} "
                         f"(its options: {describe_options(args.scheme)})")
    check_output(args.output)
    x = read_npy(args.input)
    q = lowbit.quantize(x, bits=args.bits, scheme=args.scheme, **kwargs)
    q.save(args.output)
    print(q)
    return 0


def _dequantize(args: argparse.Namespace) -> int:
    check_output(args.output)
    q = lowbit.load(args.input)
    with open(args.output, "wb") as fh:  # a file object: numpy.save adds no ".npy" suffix
        np.save(fh, q.dequantize())
    print(f"{q} -> {args.output}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from lowbit.benchrun import run_benchmarks

    return run_benchmarks(args.dir, args.only, quick=args.quick, json_path=args.json)


# -- the parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lowbit", description=lowbit.__doc__)
    p.add_argument("--version", action="version", version=f"lowbit {lowbit.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="versions, usable backends, GPU name")
    s.set_defaults(func=_info)

    from lowbit.api import schemes_help

    s = sub.add_parser(
        "quantize", help="quantize a .npy array into a .npz file",
        description="Quantize the array in INPUT (.npy) with lowbit.quantize and save the "
        "QuantizedArray to OUTPUT (.npz; read it back with `lowbit dequantize` or lowbit.load).",
        epilog=textwrap.fill("Schemes and their options (lowbit.quantize's keyword arguments, "
                             "read from the schemes; 'required': no default, give it; an option "
                             "without a flag of its own: --option NAME=VALUE):", 78)
        + "\n" + schemes_help(width=78, indent="  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("input", help="input .npy file (float16, float32 or float64)")
    s.add_argument("output", help="output .npz file")
    s.add_argument("--scheme", default="rtn",
                   help="quantization scheme, one of those listed below (default: %(default)s)")
    s.add_argument("--bits", type=int, default=None,
                   help="bits per code (e.g. rtn: 1..8); required by the schemes whose list "
                   "below says 'bits (required)'")
    s.add_argument("--kind", choices=("key", "value"), default=argparse.SUPPRESS,
                   help="KV schemes (kvarn, kivi, quarot, fp8, presets): quantize keys or "
                   "values; required by them")
    s.add_argument("--axis", type=_axis, default=argparse.SUPPRESS,
                   help="axis of the groups (integer), or 'none' for one group per tensor")
    s.add_argument("--group-size", type=int, default=argparse.SUPPRESS,
                   help="elements per group along --axis")
    s.add_argument("--symmetric", action="store_true", help="rtn: symmetric grid, no offset")
    s.add_argument("--rounding", default=argparse.SUPPRESS,
                   help="rounding mode: nearest_even (default), nearest_away, toward_zero, up, "
                   "down, odd, stochastic, diffuse")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other scheme option (VALUE parsed as JSON), repeatable")
    s.set_defaults(func=_quantize)

    s = sub.add_parser("dequantize", help="reconstruct a .npz file into a .npy array",
                       description="Load a file written by `lowbit quantize` (or "
                       "QuantizedArray.save) and save its reconstruction with numpy.save.")
    s.add_argument("input", help="input .npz file written by lowbit")
    s.add_argument("output", help="output .npy file")
    s.set_defaults(func=_dequantize)

    s = sub.add_parser("bench", help="run the benchmarks in benchmarks/ (baseline in the same run)",
                       description="Run benchmarks/bench_<family>.py and print one table per "
                       "family: time, the baseline measured in the same run, the ratio and "
                       "%% of the measured copy bandwidth. Baselines whose package is not "
                       "installed are skipped with a one-line note.")
    s.add_argument("only", nargs="*", help="benchmark families to run (e.g. affine hadamard)")
    s.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    s.add_argument("--dir", default=None, help="benchmarks folder (default: the repository's)")
    s.add_argument("--json", default=None, help="also write the rows to this JSON file")
    s.set_defaults(func=_bench)

    if importlib.util.find_spec("lowbit.research.cli") is not None:
        from lowbit.research.cli import add_eval_parser

        add_eval_parser(sub)
    for leaf in _leaf_parsers(p):
        leaf.add_argument("--debug", action="store_true",
                          help="show the full traceback of an error")
        leaf.set_defaults(prog=leaf.prog)
    return p


def _leaf_parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run a command (those without subcommands)."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield p
    for action in subs:
        for child in dict.fromkeys(action.choices.values()):  # aliases map to one parser
            yield from _leaf_parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0, 1: a bug, 2: the user's error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv  # the command line as typed, for reports (lowbit eval)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if args.debug:
            raise
        status = 2 if isinstance(exc, USER_ERRORS) else 1
        hint = "" if status == 2 else f" ({type(exc).__name__}: a bug in lowbit? --debug shows the traceback)"
        print(f"{args.prog}: {error_line(exc)}{hint}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{args.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
