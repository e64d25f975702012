"""Write tests/data/legacy/*.npz with the code as it is (file format 1), once.

The files pin the on-disk format: tests/test_load.py loads them with the current code and
compares their reconstruction with the ``expected`` arrays stored next to them.
Run from the repository root: ``python tools/make_legacy_files.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import lowbit

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "legacy"


def cases() -> dict[str, tuple[np.ndarray, dict]]:
    rng = np.random.default_rng(20261201)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    kv = rng.standard_normal((1, 2, 24, 16)).astype(np.float32)
    return {
        "rtn_asym_g8_f16": (x, dict(bits=5, scheme="rtn", group_size=8, scale_dtype="float16")),
        "rtn_sym_bf16": (x, dict(bits=4, scheme="rtn", symmetric=True, scale_dtype="bfloat16")),
        "rtn_sign_tensor": (x, dict(bits=1, scheme="rtn", symmetric=True, axis=None)),
        "fp8_e4m3_absmax_sr": (x, dict(scheme="fp8_e4m3", scale="absmax", group_size=20,
                                       rounding="stochastic", seed=7, first_index=3)),
        "fp4_e2m1_direct": (x, dict(scheme="fp4_e2m1")),
        "fixed_q3_4": (x, dict(scheme="fixed", bits=6, frac_bits=3, signed=True)),
        "mxfp4": (x, dict(scheme="mxfp4")),
        "mxint8_axis0": (x, dict(scheme="mxint8", axis=0)),
        "nvfp4": (x, dict(scheme="nvfp4")),
        "kvarn_key_f16": (kv, dict(bits=2, scheme="kvarn", kind="key", group_size=16)),
        "kvarn_value_fp8": (kv, dict(bits=4, scheme="kvarn", kind="value", group_size=16,
                                     scale_dtype="float8_e4m3")),
        "kivi_key": (kv, dict(bits=2, scheme="kivi", kind="key", group_size=16, value_group_size=8)),
        "quarot_value": (kv, dict(bits=3, scheme="quarot", kind="value")),
        "fp8_kv": (kv, dict(scheme="fp8", kind="key")),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (x, kwargs) in cases().items():
        q = lowbit.quantize(x, **kwargs)
        q.save(OUT / f"{name}.npz")
        expected[name] = np.asarray(q.dequantize())
    np.savez(OUT / "expected.npz", **expected)


if __name__ == "__main__":
    main()
