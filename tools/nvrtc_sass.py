"""Registers (from the sm_90 cubin NVRTC builds) and PTX instruction counts per kernel of
lowbit/cuda/<module>.cu, on a machine without a GPU: a quick check of what a kernel change does
to its register use and code size before a device run.  (nvdisasm/cuobjdump 13.5 from PyPI
reject NVRTC's cubins here, hence PTX.)

Needs cupy-cuda13x + nvidia-cuda-nvrtc under /tmp/cupysite (pip --target):
  LD_LIBRARY_PATH=/tmp/cupysite/nvidia/cu13/lib PYTHONPATH=$PWD python tools/nvrtc_sass.py codec [filter] [--dump] [-DNAME=VALUE ...]
(-D options are passed to NVRTC: e.g. kv_attend -DLOWBIT_ATTEND_MMA=1 for its tensor-core kernel)

--sass DIR: also the SASS of each matching kernel in DIR/<kernel>.sass, with its loops (backward
branches: body size and the most frequent opcodes) in DIR/<kernel>.loops: NVRTC's PTX (its
.version lowered to what the local ptxas accepts; no newer PTX features are used) assembled by
ptxas (PATH, /usr/local/cuda/bin) for sm_90, disassembled by nvdisasm (PATH, or NVDISASM=...;
e.g. pip install --target /tmp/nvdis nvidia-cuda-nvdisasm).  Registers match NVRTC's to within
the ptxas versions; dynamic counts = loop bodies x trip counts.
"""
import collections
import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, "/tmp/cupysite")
from cupy_backends.cuda.libs import nvrtc  # noqa: E402

from lowbit.cuda._module import OPTIONS, source  # noqa: E402


def regcounts(cubin: bytes) -> dict[str, tuple[int, int]]:
    """(registers, SASS instructions) per kernel from the ELF: EIATTR_REGCOUNT (0x2f) entries of
    the global .nv.info section, and the size of each .text.<kernel> section / 16 bytes."""
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    heads = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]

    def cstr(table: int, at: int) -> str:
        start = heads[table][4] + at
        return cubin[start:cubin.index(b"\0", start)].decode()

    names = {cstr(shstrndx, h[0]): h for h in heads}
    symtab = names[".symtab"]
    syms = [struct.unpack_from("<IBBHQQ", cubin, symtab[4] + k * 24) for k in range(symtab[5] // 24)]
    info = names[".nv.info"]
    regs, at, end = {}, info[4], info[4] + info[5]
    while at < end:
        fmt, attr, size = struct.unpack_from("<BBH", cubin, at)
        if fmt == 0x04 and attr == 0x2F:
            sym, value = struct.unpack_from("<II", cubin, at + 4)
            regs[cstr(symtab[6], syms[sym][0])] = value
        at += 4 + (size if fmt == 0x04 else 0)
    return {k: (r, names[".text." + k][5] // 16) for k, r in regs.items() if ".text." + k in names}


def loops(sass: str) -> list[str]:
    """One line per loop of a kernel's nvdisasm text (a branch back to an earlier label)."""
    ins: list[tuple[int, str]] = []
    labels: dict[str, int] = {}
    pending = None
    for line in sass.splitlines():
        m = re.match(r"(\.L_x_\d+):", line)
        if m:
            pending = m.group(1)
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            addr = int(m.group(1), 16)
            ins.append((addr, m.group(2).strip()))
            if pending:
                labels[pending], pending = addr, None
    index = {a: i for i, (a, _) in enumerate(ins)}
    out = []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"BRA\b.*?(\.L_x_\d+)", text)
        if m and m.group(1) in labels and labels[m.group(1)] <= a:
            body = ins[index[labels[m.group(1)]]:i + 1]
            ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for _, t in body)
            top = ", ".join(f"{k}:{v}" for k, v in ops.most_common(12))
            out.append(f"loop {labels[m.group(1)]:#07x}-{a:#07x} n={len(body)} [{top}]")
    return out


def write_sass(ptx: str, kernels: list[str], outdir: str) -> None:
    """DIR/<kernel>.sass and DIR/<kernel>.loops for `kernels` (see the module docstring)."""
    ptxas = shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"
    nvdisasm = os.environ.get("NVDISASM") or shutil.which("nvdisasm") or next(
        iter(glob.glob("/tmp/nvdis/nvidia/cu*/bin/nvdisasm")), "nvdisasm")
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", version)
    if m and int(m.group(1)) >= 12:  # CUDA 12.x accepts PTX 8.x, 13.x PTX 9.x
        ptx = re.sub(r"^\.version \d+\.\d+", f".version {int(m.group(1)) - 4}.{m.group(2)}", ptx, flags=re.M)
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        subprocess.run([ptxas, "-arch=sm_90", src, "-o", cubin], check=True)
        text = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=True).stdout
    parts = re.split(r"^(?=\.text\.)", text, flags=re.M)
    for k in kernels:
        part = next((p for p in parts if p.startswith(f".text.{k}:")), "")
        with open(os.path.join(outdir, f"{k}.sass"), "w") as f:
            f.write(part)
        with open(os.path.join(outdir, f"{k}.loops"), "w") as f:
            f.write("\n".join(loops(part)) + "\n")
        print(f"{k}: SASS in {outdir}/{k}.sass, loops in {outdir}/{k}.loops")


def main() -> None:
    sass_dir = sys.argv[sys.argv.index("--sass") + 1] if "--sass" in sys.argv else None
    if sass_dir:
        i = sys.argv.index("--sass")
        del sys.argv[i:i + 2]
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    defines = [a for a in sys.argv[1:] if a.startswith("-D")]
    dump = "--dump" in sys.argv
    name, pattern = args[0], (args[1] if len(args) > 1 else "")
    inc = glob.glob("/tmp/cupysite/cupy/_core/include")[0]
    prog = nvrtc.createProgram(source(name), name + ".cu", [], [])
    opts = list(OPTIONS) + ["-arch=sm_90", "-ftz=true", f"-I{inc}", "-I/usr/local/cuda/include", *defines]
    try:
        nvrtc.compileProgram(prog, opts)
    except Exception:
        print(nvrtc.getProgramLog(prog))
        raise
    cubin = nvrtc.getCUBIN(prog)
    regs = regcounts(cubin)
    prog = nvrtc.createProgram(source(name), name + ".cu", [], [])
    nvrtc.compileProgram(prog, [o.replace("sm_90", "compute_90") for o in opts])
    ptx = nvrtc.getPTX(prog).decode()
    kernel, counts, body = None, {}, {}
    for line in ptx.splitlines():
        m = re.match(r"\.visible \.entry (\S+)\(", line)
        if m:
            kernel = m.group(1)
            counts[kernel], body[kernel] = 0, []
        elif kernel and re.match(r"\s+[@a-z]", line) and not line.strip().startswith((".", "//")):
            counts[kernel] += 1
            body[kernel].append(line)
    for k in sorted(counts):
        if pattern in k:
            print(f"{k}: {regs.get(k, ('?', '?'))[0]} registers, {regs.get(k, ('?', '?'))[1]} SASS and {counts[k]} PTX instructions")
            if dump:
                print("\n".join(body[k]))
    if sass_dir:
        write_sass(ptx, sorted(k for k in counts if pattern in k), sass_dir)


if __name__ == "__main__":
    main()
