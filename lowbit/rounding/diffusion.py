"""2-D error-diffusion kernels as data.

Each kernel is a list of taps (dy, dx, numerator) over a common ``divisor``: the error of the
current pixel goes to the pixel dy rows below and dx columns to the right (in scan direction)
with weight numerator / divisor.  The current pixel is at (0, 0); taps only point forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ErrorKernel:
    """An error-diffusion filter: ``taps`` = ((dy, dx, numerator), ...) over ``divisor``."""

    name: str
    taps: tuple[tuple[int, int, int], ...]
    divisor: int

    @property
    def total_weight(self) -> float:
        #: Fraction of each pixel's error passed on (1 for all but Atkinson, which passes 3/4).
        return sum(t[2] for t in self.taps) / self.divisor

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dy int64, dx int64, weight float64) arrays for the kernel ``diffuse_2d``."""
        dy = np.array([t[0] for t in self.taps], np.int64)
        dx = np.array([t[1] for t in self.taps], np.int64)
        w = np.array([t[2] / self.divisor for t in self.taps], np.float64)
        return dy, dx, w


def _rows(*rows: tuple[int, ...], origin: int) -> tuple[tuple[int, int, int], ...]:
    """Taps from a picture of the kernel: row 0 lists the weights right of the pixel,
    rows 1.. list weights from dx = -origin to +origin."""
    taps = [(0, dx + 1, w) for dx, w in enumerate(rows[0]) if w]
    for dy, row in enumerate(rows[1:], start=1):
        taps += [(dy, dx - origin, w) for dx, w in enumerate(row) if w]
    return tuple(taps)


#: Floyd & Steinberg (1976):      . * 7 / 3 5 1, over 16.
FLOYD_STEINBERG = ErrorKernel("floyd_steinberg", _rows((7,), (3, 5, 1), origin=1), 16)
#: Jarvis, Judice & Ninke (1976): . . * 7 5 / 3 5 7 5 3 / 1 3 5 3 1, over 48.
JARVIS_JUDICE_NINKE = ErrorKernel(
    "jarvis_judice_ninke", _rows((7, 5), (3, 5, 7, 5, 3), (1, 3, 5, 3, 1), origin=2), 48
)
#: Stucki (1981):                 . . * 8 4 / 2 4 8 4 2 / 1 2 4 2 1, over 42.
STUCKI = ErrorKernel("stucki", _rows((8, 4), (2, 4, 8, 4, 2), (1, 2, 4, 2, 1), origin=2), 42)
#: Atkinson (Apple, 1980s):       . * 1 1 / 1 1 1 / . 1 ., over 8 (passes on only 6/8 of the error).
ATKINSON = ErrorKernel("atkinson", _rows((1, 1), (1, 1, 1), (0, 1, 0), origin=1), 8)

ERROR_KERNELS: dict[str, ErrorKernel] = {
    k.name: k for k in (FLOYD_STEINBERG, JARVIS_JUDICE_NINKE, STUCKI, ATKINSON)
}
