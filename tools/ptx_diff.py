"""Per-kernel PTX of lowbit's CUDA sources, compiled with NVRTC (no GPU needed), and a diff.

Used to check that a refactoring of the .cu files (e.g. splitting rtn.cu into one file per
kernel family) leaves the code of every kernel unchanged::

    # dump: SOURCE[:DEFINE,DEFINE...] ... -> JSON {symbol: normalized PTX of its .entry/.func}
    PYTHONPATH=$PWD LD_LIBRARY_PATH=/tmp/cupysite/nvidia/cu13/lib \\
        python tools/ptx_diff.py dump before.json rtn rtn:-DLOWBIT_LANE_BITS=4
    python tools/ptx_diff.py diff before.json after.json

Needs cupy-cuda13x and nvidia-cuda-nvrtc (``pip install --target /tmp/cupysite``), or a
machine with CuPy.  Labels (``$L__BB<function index>_<n>``) are renumbered per function, so
that moving a function to another file does not count as a change; so are the call sequences
(``// callseq <n>`` comments).
"""

from __future__ import annotations

import glob
import json
import re
import sys

sys.path.insert(0, "/tmp/cupysite")

_FUNC = re.compile(r"^(?:\.visible |\.weak )?(?:\.entry|\.func)\s+(?:\([^)]*\)\s*)?([A-Za-z0-9_$]+)", re.MULTILINE)


def compile_ptx(name: str, defines: tuple[str, ...]) -> str:
    from cupy_backends.cuda.libs import nvrtc

    from lowbit.cuda._module import OPTIONS, source

    includes = glob.glob("/tmp/cupysite/cupy/_core/include") + ["/usr/local/cuda/include"]
    prog = nvrtc.createProgram(source(name), name + ".cu", [], [])
    opts = list(OPTIONS) + ["-arch=compute_90", "-ftz=true"] + [f"-I{i}" for i in includes] + list(defines)
    try:
        nvrtc.compileProgram(prog, opts)
    except Exception:
        sys.stderr.write(nvrtc.getProgramLog(prog))
        raise
    ptx = nvrtc.getPTX(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def functions(ptx: str) -> dict[str, str]:
    """{symbol: body} for every .entry and .func definition (declarations skipped)."""
    out = {}
    starts = [m for m in _FUNC.finditer(ptx)]
    for m in starts:
        depth, i = 0, ptx.find("{", m.end())
        semi = ptx.find(";", m.end())
        if i < 0 or (0 <= semi < i and ptx[m.end():semi].count("(") == ptx[m.end():semi].count(")")):
            continue  # a declaration (".func f(...);")
        j = i
        while True:
            c = ptx[j]
            depth += c == "{"
            depth -= c == "}"
            j += 1
            if depth == 0:
                break
        body = ptx[m.start():j]
        out[m.group(1)] = normalize(body)
    return out


def normalize(body: str) -> str:
    """Drop the module-wide numbering of labels and call sequences (comments)."""
    body = re.sub(r"\$L__BB\d+_", "$L__BB_", body)
    body = re.sub(r"\$L__tmp\d+", "$L__tmp", body)
    return re.sub(r"// callseq \d+", "// callseq", body)


def dump(path: str, specs: list[str]) -> None:
    result: dict[str, str] = {}
    for spec in specs:
        name, _, defs = spec.partition(":")
        defines = tuple(d for d in defs.split(",") if d)
        for sym, body in functions(compile_ptx(name, defines)).items():
            key = f"{sym}{'[' + ','.join(defines) + ']' if defines else ''}"
            result[key] = body
        print(f"{spec}: {sum(1 for k in result)} functions so far", file=sys.stderr)
    with open(path, "w") as f:
        json.dump(result, f, indent=0, sort_keys=True)


def diff(a_path: str, b_path: str) -> int:
    a, b = ({k: normalize(v) for k, v in json.load(open(p)).items()} for p in (a_path, b_path))
    entries = [k for k in a if ".entry" in a[k].split("(")[0]]
    same = [k for k in entries if b.get(k) == a[k]]
    changed = [k for k in entries if k in b and b[k] != a[k]]
    missing = [k for k in entries if k not in b]
    print(f"{len(entries)} kernels before: {len(same)} identical PTX, {len(changed)} changed, "
          f"{len(missing)} missing after")
    for k in changed + missing:
        print("  ", "changed" if k in changed else "missing", k)
    funcs = [k for k in a if k not in entries]
    fchanged = [k for k in funcs if b.get(k) != a[k]]
    print(f"{len(funcs)} non-inlined device functions: {len(funcs) - len(fchanged)} identical")
    for k in fchanged:
        print("   changed/missing func", k)
    return 1 if changed or missing or fchanged else 0


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "diff":
        sys.exit(diff(sys.argv[2], sys.argv[3]))
    else:
        sys.exit("usage: ptx_diff.py dump OUT.json SOURCE[:DEFINES] ... | diff A.json B.json")
