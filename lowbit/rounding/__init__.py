"""Rounding: modes, ``round`` on grid units, error diffusion, and the scalar reference."""

from lowbit.rounding.core import round
from lowbit.rounding.modes import RoundMode, mode_code

__all__ = ["RoundMode", "mode_code", "round"]
