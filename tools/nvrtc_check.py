"""Compile lowbit/cuda/<name>.cu with NVRTC on a machine without a GPU (syntax/semantics check).

Needs cupy-cuda13x and nvidia-cuda-nvrtc installed under /tmp/cupysite (pip --target):
  PYTHONPATH=$PWD LD_LIBRARY_PATH=/tmp/cupysite/nvidia/cu13/lib python tools/nvrtc_check.py rtn packing [-DNAME=VALUE ...]
"""
import glob
import sys

sys.path.insert(0, "/tmp/cupysite")
from cupy_backends.cuda.libs import nvrtc  # noqa: E402

from lowbit.cuda._module import OPTIONS, source  # noqa: E402

inc = glob.glob("/tmp/cupysite/cupy/_core/include")[0]
defines = [a for a in sys.argv[1:] if a.startswith("-D")]
for name in (a for a in sys.argv[1:] if not a.startswith("-D")):
    src = source(name)
    prog = nvrtc.createProgram(src, name + ".cu", [], [])
    opts = [o.encode() for o in OPTIONS + ("-arch=compute_90", "-ftz=true", f"-I{inc}", "-I/usr/local/cuda/include", *defines)]
    try:
        nvrtc.compileProgram(prog, [o.decode() for o in opts])
        print(name, "ok")
    except Exception as e:
        print(name, "FAILED", e)
        print(nvrtc.getProgramLog(prog))
