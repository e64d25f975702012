"""lowbit: low-bit numerics on numpy, CuPy and PyTorch arrays.

Importing lowbit imports neither cupy, torch nor transformers.
"""

__version__ = "0.1.0"
