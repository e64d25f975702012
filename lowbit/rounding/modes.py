"""Rounding modes: one name, one number, one definition each.

The integer values are the ``mode`` argument of every kernel (CPU and CUDA);
fronts translate names with :func:`mode_code`.
"""

from __future__ import annotations

from enum import IntEnum


class RoundMode(IntEnum):
    """Rounding of a value v (in grid units) to an integer."""

    #: The integer nearest to v; halfway cases go to the even integer (IEEE 754 default).
    nearest_even = 0
    #: The integer nearest to v; halfway cases go away from zero.
    nearest_away = 1
    #: The largest integer r with |r| <= |v| (truncation).
    toward_zero = 2
    #: The smallest integer r >= v (ceiling).
    up = 3
    #: The largest integer r <= v (floor).
    down = 4
    #: v if v is an integer, else the odd one of floor(v) and ceil(v) (sticky rounding).
    odd = 5
    #: floor(v) + 1 with probability v - floor(v), else floor(v); random bits from the
    #: counter-based generator keyed by (seed, element index).
    stochastic = 6
    #: Error diffusion: round in order along an axis and carry the residual forward.
    diffuse = 7


#: Modes that round each element on its own (no carry between elements).
ELEMENTWISE = tuple(m.name for m in RoundMode if m is not RoundMode.diffuse)


def mode_code(mode: str, name: str = "rounding", *, allow_diffuse: bool = True) -> int:
    """Translate a mode name to its kernel code, with a clear error for unknown names."""
    if not isinstance(mode, str) or mode not in RoundMode.__members__:
        raise ValueError(f"{name} must be one of {list(RoundMode.__members__)}, got {mode!r}")
    if mode == "diffuse" and not allow_diffuse:
        raise ValueError(f"{name}='diffuse' is not available here; use one of {list(ELEMENTWISE)}")
    return int(RoundMode[mode])
