"""The CPU and CUDA kernel tables match, and optional dependencies stay optional."""

from __future__ import annotations

import inspect
import subprocess
import sys

import lowbit.cpu as cpu
import lowbit.cuda as cuda


def _params(fn) -> list[str]:
    return list(inspect.signature(getattr(fn, "py_func", fn)).parameters)


def test_every_cpu_kernel_has_a_cuda_twin_or_is_a_known_gap():
    assert set(cpu.KERNELS) == set(cuda.KERNELS) | set(cuda.KNOWN_GAPS)
    assert not set(cuda.KERNELS) & set(cuda.KNOWN_GAPS)
    assert len(cpu.KERNELS) == len(set(cpu.KERNELS))


def test_twins_have_the_same_signature():
    for name in cuda.KERNELS:
        assert _params(getattr(cpu, name)) == _params(getattr(cuda, name)), name


def test_known_gaps_raise_a_clear_error():
    for name in cuda.KNOWN_GAPS:
        try:
            getattr(cuda, name)
        except NotImplementedError as exc:
            assert name in str(exc) and "known gap" in str(exc)
        else:
            raise AssertionError(f"{name} is a known gap but resolves to something")


def test_import_lowbit_imports_no_optional_dependency():
    code = (
        "import sys, lowbit, lowbit.cuda\n"
        "bad = [m for m in ('cupy', 'torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_backends_page_is_generated_from_the_tables():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "docs" / "gen_backends.py"
    spec = importlib.util.spec_from_file_location("gen_backends", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.PAGE.read_text() == mod.render(), "docs/backends.md is stale: run python docs/gen_backends.py"


#: The CUDA kernels each README-named entry point needs (its CPU kernels' twins).
GPU_NEEDS = {
    "rtn": ("rtn_quantize_groups", "rtn_encode", "rtn_decode", "group_range"),
    "lowbit.hadamard": ("fwht", "hadamard_signs"),
    "lowbit.balance": ("balance_tiles",),
    "lowbit.pack": ("pack_codes",),
    "lowbit.unpack": ("unpack_codes",),
    "lowbit.round": ("round_elementwise",),
    "kvarn": ("kvarn_encode", "kvarn_decode"),
    "fp8_e4m3": ("minifloat_encode", "decode_table", "block_absmax"),
    "mxfp4": ("block_quantize", "block_dequantize", "finite_block_amax"),
    "kivi": ("rtn_quantize_groups", "rtn_encode", "rtn_decode", "group_range"),
    "quarot": ("rtn_quantize_groups", "rtn_encode", "rtn_decode", "group_range", "fwht", "hadamard_signs"),
    "fp8": ("minifloat_encode", "decode_table", "block_absmax"),  # the KV scheme
    "kv_attend": ("kv_attend",),
    # the streaming cache and the transformers caches: KVarN's store/decode and the fused decode
    # attention (layouts kv_attend does not take attend on tiles dequantized on the device)
    "QuantizedKVCache": ("kvarn_encode", "kvarn_decode", "kv_attend"),
    "lowbit.kv.hf": ("kvarn_encode", "kvarn_decode", "kv_attend"),
}


def test_readme_says_what_runs_on_the_gpu():
    # The headline example's note lists, in backticks, exactly the entry points whose CUDA
    # kernels all exist: whoever lands a CUDA twin (or names a new entry point) updates it.
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    note = re.search(r"\*\*On the GPU today\*\*(.*?)\.\s", readme, re.S)
    assert note, "README.md lost its 'On the GPU today' note under the headline example"
    listed = set(re.findall(r"`([\w.]+)`", note.group(1)))
    runs = {name for name, needs in GPU_NEEDS.items() if set(needs) <= set(cuda.KERNELS)}
    assert listed == runs, (listed, runs)
    assert "docs/backends.md" in readme[note.end(): note.end() + 600]
