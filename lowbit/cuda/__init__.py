"""CUDA kernel table (CuPy raw kernels).  Kernels hold no policy.

Each wrapper has the same name and signature as its CPU twin in :mod:`lowbit.cpu`,
takes CuPy arrays, and launches on the current CuPy stream.  CuPy is imported
lazily, inside the wrappers, so this table can be inspected without a GPU.
"""

KERNELS: tuple[str, ...] = ()

#: CPU kernels that have no CUDA twin yet (a known gap, documented in docs/backends.md).
#: A CuPy array reaching one of these raises NotImplementedError naming the kernel.
KNOWN_GAPS: tuple[str, ...] = ()

__all__ = list(KERNELS)
