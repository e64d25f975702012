"""Registers (from the sm_90 cubin NVRTC builds) and PTX instruction counts per kernel of
lowbit/cuda/<module>.cu, on a machine without a GPU: a quick check of what a kernel change does
to its register use and code size before a device run.  (nvdisasm/cuobjdump 13.5 from PyPI
reject NVRTC's cubins here, hence PTX.)

Needs cupy-cuda13x + nvidia-cuda-nvrtc under /tmp/cupysite (pip --target):
  LD_LIBRARY_PATH=/tmp/cupysite/nvidia/cu13/lib PYTHONPATH=$PWD python tools/nvrtc_sass.py codec [filter] [--dump] [-DNAME=VALUE ...]
(-D options are passed to NVRTC: e.g. kv_attend -DLOWBIT_ATTEND_MMA=1 for its tensor-core kernel)
"""
import glob
import re
import struct
import sys

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


def main() -> None:
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


if __name__ == "__main__":
    main()
