"""Rounding to low-bit formats vs pychop (NumPy backend) and a plain NumPy implementation.

Cases (>= 16 Mi float32 values, standard normal times 50, so that the format's range is
exceeded and saturation matters):

* stochastic rounding to fp8 e4m3,
* stochastic rounding to 8-bit fixed point (Q3.4, saturating),
* nearest-even to fp4 e2m1.

The baselines return the rounded *values*; lowbit is timed twice: ``quantize`` alone (codes,
packed -- what lowbit stores) and ``quantize`` + ``dequantize`` (values, the like-for-like
comparison).  pychop's "e4m3"/"e2m1" are IEEE-style (top exponent reserved: max 240 and 3),
not OCP's 448 and 6, so its work is the same but its clipping points differ; the NumPy
baseline implements the OCP formats exactly as lowbit does (checked before timing, for the
deterministic case bit for bit, for the stochastic cases by the mean error).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from common import best_time, optional_baseline, row

import lowbit
from lowbit.formats import FP4_E2M1, FP8_E4M3, MiniFloat


def numpy_minifloat(x: np.ndarray, fmt: MiniFloat, rng: np.random.Generator | None) -> np.ndarray:
    """Round float32 x to an OCP minifloat (saturating), nearest-even or stochastic, in float64."""
    a = np.abs(x).astype(np.float64)
    e = np.clip(np.frexp(a)[1] - 1, fmt.emin, fmt.emax + 1)
    ulp = np.ldexp(1.0, e - fmt.man_bits)
    v = a / ulp
    r = np.floor(v + rng.random(v.shape)) if rng is not None else np.rint(v)
    return np.copysign(np.minimum(r * ulp, fmt.max), x).astype(np.float32)


def numpy_fixed(x: np.ndarray, frac_bits: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding to signed fixed point, saturating."""
    v = x.astype(np.float64) * 2.0**frac_bits
    q = np.clip(np.floor(v + rng.random(v.shape)), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return (q / 2.0**frac_bits).astype(np.float32)


def _pychop() -> Any:
    """pychop, or None (it is not a lowbit dependency; its rows are skipped when absent)."""
    os.environ["chop_backend"] = "numpy"  # pychop reads this on every call
    return optional_baseline("pychop")


def run(quick: bool = False) -> list[dict]:
    n = (1 << 20) if quick else (16 << 20)
    x = (np.random.default_rng(0).standard_normal(n, dtype=np.float32) * 50).astype(np.float32)
    size = f"{n >> 20} Mi f32"
    repeat = 3 if quick else 5
    pychop = _pychop()
    rng = np.random.default_rng(1)
    cases: list[tuple[str, dict[str, Any], Callable[[], Any], Callable[[], Any], int]] = [
        ("fp8_e4m3 stochastic", dict(scheme="fp8_e4m3", rounding="stochastic", seed=1),
         lambda: pychop.Chop(4, 3, rmode=5)(x), lambda: numpy_minifloat(x, FP8_E4M3, rng), 8),
        ("fixed Q3.4 stochastic", dict(scheme="fixed", bits=8, frac_bits=4, rounding="stochastic", seed=1),
         lambda: pychop.Chopf(4, 4, rmode=5)(x), lambda: numpy_fixed(x, 4, 8, rng), 8),
        ("fp4_e2m1 nearest_even", dict(scheme="fp4_e2m1"),
         lambda: pychop.Chop(2, 1, rmode=1)(x), lambda: numpy_minifloat(x, FP4_E2M1, None), 4),
    ]
    rows = []
    for name, kw, chop, plain, bits in cases:
        # correctness gate, same run
        y = lowbit.quantize(x, **kw).dequantize()
        z = plain()
        if kw.get("rounding", "nearest_even") == "nearest_even":
            assert np.array_equal(y, z), f"{name}: lowbit and the NumPy baseline disagree"
        else:
            inside = np.abs(x) < 7  # away from saturation: both unbiased
            assert abs(float((y - x)[inside].mean())) < 1e-3 and abs(float((z - x)[inside].mean())) < 1e-3
        t_codes = best_time(lambda kw=kw: lowbit.quantize(x, **kw), repeat)
        t_values = best_time(lambda kw=kw: lowbit.quantize(x, **kw).dequantize(), repeat)
        t_numpy = best_time(plain, repeat)
        codes_bytes = x.nbytes + n * bits // 8
        values_bytes = codes_bytes + n * bits // 8 + x.nbytes
        rows.append(row(f"{name} quantize (codes)", size, t_codes, "numpy plain", t_numpy, codes_bytes, n))
        rows.append(row(f"{name} quantize+dequantize", size, t_values, "numpy plain", t_numpy, values_bytes, n))
        if pychop is not None:
            t_chop = best_time(chop, 2, warmup=0)  # pychop is slow; its first call is representative
            rows.append(row(f"{name} quantize (codes)", size, t_codes, "pychop numpy", t_chop, codes_bytes, n))
            rows.append(row(f"{name} quantize+dequantize", size, t_values, "pychop numpy", t_chop, values_bytes, n))
    return rows


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(f"{r['name']:<44} {r['seconds']*1e3:9.1f} ms  vs {r['baseline']:<13} "
              f"{r['baseline_seconds']*1e3:9.1f} ms  x{r['ratio']:6.1f}  "
              f"{r['elements_per_s']/1e6:8.1f} Melem/s  {r['pct_copy']:5.1f}% copy")
