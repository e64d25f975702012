"""Zarr storage: to_zarr / lowbit.load round trips (lazy), and hostile stores refused with ValueError."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

import lowbit  # noqa: E402

CASES = [
    {"bits": 4, "group_size": 32},
    {"bits": 3, "axis": 0, "rounding": "stochastic", "seed": 5, "symmetric": True},
    {"scheme": "nvfp4"},
    {"scheme": "mxfp6", "axis": 0},
    {"scheme": "fp8_e4m3", "scale": "absmax", "group_size": 16},
    {"scheme": "fp4_e2m1"},
]


@pytest.fixture
def x(rng):
    return (rng.standard_normal((37, 64)) * 3).astype(np.float32)


def assert_loaded_equals(path, q):
    loaded = lowbit.load(path)
    assert isinstance(loaded, lowbit.QuantizedArray)
    assert isinstance(loaded.codes, da.Array)  # read lazily
    assert loaded.meta == q.meta
    got = loaded.compute(scheduler="threads")
    np.testing.assert_array_equal(got.codes, q.codes)
    assert sorted(got.fields) == sorted(q.fields)
    for k, f in q.fields.items():
        assert got.fields[k].dtype == f.dtype
        np.testing.assert_array_equal(got.fields[k], f)
    np.testing.assert_array_equal(loaded.dequantize().compute(scheduler="threads"), q.dequantize())


@pytest.mark.parametrize("kw", CASES)
def test_round_trip_lazy_and_in_memory(tmp_path, x, kw):
    q = lowbit.quantize(x, **kw)
    lazy = lowbit.quantize(da.from_array(x, chunks=(5, 16)), **kw)
    lazy.to_zarr(tmp_path / "lazy.zarr")
    q.to_zarr(str(tmp_path / "memory.zarr"))
    assert_loaded_equals(tmp_path / "lazy.zarr", q)
    assert_loaded_equals(str(tmp_path / "memory.zarr"), q)


@pytest.mark.parametrize("kw", [{"scheme": "kivi", "bits": 2, "kind": "key", "group_size": 32},
                                {"scheme": "kvarn-k4v2-g64", "kind": "value"}])
def test_round_trip_kv(tmp_path, rng, kw):
    x = rng.standard_normal((2, 2, 150, 64)).astype(np.float32)
    q = lowbit.quantize(x, **kw)
    lowbit.quantize(da.from_array(x, chunks=(1, 1, 64, 64)), **kw).to_zarr(tmp_path / "kv.zarr")
    assert_loaded_equals(tmp_path / "kv.zarr", q)


def test_store_is_written_in_chunks(tmp_path, rng):
    x = rng.standard_normal((64, 256)).astype(np.float32)
    lazy = lowbit.quantize(da.from_array(x, chunks=(16, 256)), bits=4, group_size=64)
    lazy.to_zarr(tmp_path / "s.zarr")
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group["codes"].chunks == (16 * 256 // 2,)
    assert group["field.scale"].chunks == (16 * 256 // 64,)
    assert json.loads(json.dumps(dict(group.attrs)))["lowbit"] == lazy.header()


def test_existing_store_needs_overwrite(tmp_path, x):
    q = lowbit.quantize(x, bits=4)
    q.to_zarr(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="overwrite"):
        q.to_zarr(tmp_path / "s.zarr")
    lowbit.quantize(x, bits=2).to_zarr(tmp_path / "s.zarr", overwrite=True)
    assert lowbit.load(tmp_path / "s.zarr").bits == 2


def test_npz_still_loads_from_a_file(tmp_path, x):
    q = lowbit.quantize(x, bits=4)
    q.save(tmp_path / "q.npz")
    loaded = lowbit.load(tmp_path / "q.npz")
    assert isinstance(loaded.codes, np.ndarray)
    np.testing.assert_array_equal(loaded.codes, q.codes)


# -- hostile stores ---------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path, x):
    """A valid store (rtn, 4 bits, groups of 32) to tamper with."""
    path = tmp_path / "s.zarr"
    lowbit.quantize(x, bits=4, group_size=32).to_zarr(path)
    return path


def set_header(path, change):
    group = zarr.open_group(path, mode="r+")
    header = dict(group.attrs["lowbit"])
    change(header)
    group.attrs["lowbit"] = header


def test_not_a_store(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a readable Zarr store"):
        lowbit.load(tmp_path / "empty")


def test_a_group_without_the_header(tmp_path):
    zarr.open_group(tmp_path / "g.zarr", mode="w").create_array("codes", shape=(4,), dtype="uint8")
    with pytest.raises(ValueError, match="not a lowbit store"):
        lowbit.load(tmp_path / "g.zarr")


def test_interrupted_write_leaves_no_header(tmp_path, x):
    x[30, 5] = np.nan  # the chunk holding it fails while the others are written
    lazy = lowbit.quantize(da.from_array(x, chunks=(4, 64)), bits=4)
    with pytest.raises(ValueError, match="NaN"):
        lazy.to_zarr(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="not a lowbit store"):
        lowbit.load(tmp_path / "s.zarr")


def test_delayed_write(tmp_path, x):
    q = lowbit.quantize(x, bits=4)
    job = lowbit.quantize(da.from_array(x, chunks=(8, 64)), bits=4).to_zarr(tmp_path / "s.zarr", compute=False)
    with pytest.raises(ValueError, match="not a lowbit store"):
        lowbit.load(tmp_path / "s.zarr")  # nothing written yet but the empty arrays
    job.compute(scheduler="threads")
    assert_loaded_equals(tmp_path / "s.zarr", q)


@pytest.mark.parametrize("change, match", [
    (lambda h: h.update(format=99), "unsupported lowbit file format"),
    (lambda h: h.update(meta=[1, 2]), "flat JSON object"),
    (lambda h: h["meta"].update(nested={"a": 1}), "flat JSON object"),
    (lambda h: h.update(fields="scale"), "the header lists fields 'scale'; rtn metadata implies"),
    (lambda h: h.update(fields=["scale", "scale"]), "lists fields"),
    (lambda h: h["meta"].pop("bits"), "metadata 'bits' is missing"),
    (lambda h: h["meta"].update(scheme="nope"), "metadata 'scheme' must be one of"),
    (lambda h: h["meta"].update(bits=99), "metadata 'bits' must be an integer in 1..8"),
    (lambda h: h["meta"].update(shape=[37, 65]), "metadata 'group_size' 32 does not divide"),
    (lambda h: h["meta"].update(shape=[37, 128]), "the metadata implies"),
    (lambda h: h["meta"].update(group_size=16), "the metadata implies"),
    (lambda h: h.update(fields=["offset"]), "lists fields"),
    (lambda h: h.update(fields=["offset", "scale", "extra"]), "lists fields"),
])
def test_bad_header(store, change, match):
    set_header(store, change)
    with pytest.raises(ValueError, match=match):
        lowbit.load(store)


def test_huge_header(store):
    set_header(store, lambda h: h["meta"].update(note="x" * (1 << 17)))
    with pytest.raises(ValueError, match="longer than"):
        lowbit.load(store)


def replace_member(path, name, **spec):
    group = zarr.open_group(path, mode="r+")
    del group[name]
    return group.create_array(name, **spec)


@pytest.mark.parametrize("name, spec, match", [
    ("codes", {"shape": (37 * 64 // 2,), "dtype": "float32"}, "member 'codes' has dtype float32"),
    ("codes", {"shape": (37 * 32, 2), "dtype": "uint8"}, "1-D array"),
    ("codes", {"shape": (2**45,), "dtype": "uint8", "chunks": (2**20,)}, r"member 'codes' has dtype uint8 and shape \(35184372088832,\)"),
    ("field.scale", {"shape": (74,), "dtype": "float16"}, "member 'field.scale' has dtype float16"),
    ("field.scale", {"shape": (2**50,), "dtype": "float32", "chunks": (2**20,)}, r"'field.scale' has dtype float32 and shape \(2\*\*50|'field.scale' has dtype float32 and shape \(1125899906842624,\)"),
    ("field.scale", {"shape": (74,), "dtype": "bool"}, "numbers only"),
])
def test_bad_member(store, name, spec, match):
    replace_member(store, name, **spec)
    with pytest.raises(ValueError, match=match):
        lowbit.load(store)  # decided from the stores' metadata: no data is read


def test_string_member_is_refused(store):
    replace_member(store, "field.offset", shape=(74,), dtype=str)
    with pytest.raises(ValueError, match="numbers only"):
        lowbit.load(store)


def test_extra_member_is_refused_unread(store):
    zarr.open_group(store, mode="r+").create_array("junk", shape=(2**40,), dtype="uint8", chunks=(2**20,))
    with pytest.raises(ValueError, match="unknown member 'junk'"):
        lowbit.load(store)


def test_subgroup_in_place_of_an_array(store):
    group = zarr.open_group(store, mode="r+")
    del group["codes"]
    group.create_group("codes")
    with pytest.raises(ValueError, match="1-D array"):
        lowbit.load(store)


def test_corrupt_chunk_raises_on_compute(store):
    chunk_dir = store / "codes" / "c"
    files = [os.path.join(d, f) for d, _, fs in os.walk(chunk_dir) for f in fs]
    assert files
    with open(files[0], "r+b") as fh:
        fh.write(b"\x00garbage\xff" * 4)
    q = lowbit.load(store)  # metadata is fine: loads lazily
    with pytest.raises(ValueError, match="corrupt chunk"):
        q.compute(scheduler="threads")
