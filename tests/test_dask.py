"""lowbit on dask arrays: bit-identical to the in-memory call for any chunking and scheduler.

Every property compares the computed lazy result with ``lowbit.quantize`` (``round``,
``hadamard``) of the whole array in memory, codes and fields bit for bit, on the threaded
scheduler and on a ``dask.distributed`` LocalCluster of 2 worker processes (one per module).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import lowbit  # noqa: E402
from lowbit.chunking import block_starts, flat_chunks, is_flat, iter_blocks  # noqa: E402
from lowbit.rounding.reference import mix64, random_bits  # noqa: E402
from lowbit.rounding.streams import seed_at, unmix64  # noqa: E402

MODES = ["nearest_even", "nearest_away", "toward_zero", "up", "down", "odd", "stochastic"]


@pytest.fixture(scope="module")
def cluster_client():
    """A LocalCluster of 2 single-threaded worker processes, shared by the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit="1GiB") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def assert_same(q, lazy, scheduler="threads"):
    """``lazy`` computed equals the in-memory ``q``: metadata, codes, fields, reconstruction."""
    assert isinstance(lazy.codes, da.Array)
    got = lazy.compute(scheduler=scheduler)
    assert got.meta == q.meta
    assert type(got.codes) is type(q.codes)
    np.testing.assert_array_equal(got.codes, q.codes)
    assert sorted(got.fields) == sorted(q.fields)
    for k, f in q.fields.items():
        assert got.fields[k].dtype == f.dtype
        np.testing.assert_array_equal(got.fields[k], f)
    x_hat = lazy.dequantize()
    assert isinstance(x_hat, da.Array)
    want = q.dequantize()
    np.testing.assert_array_equal(x_hat.compute(scheduler=scheduler), want)


# -- the pieces: skip-ahead seeds and flat chunk plans ---------------------------------------------
@given(st.integers(0, 2**64 - 1))
def test_unmix64_inverts_mix64(z):
    assert unmix64(mix64(z)) == z
    assert mix64(unmix64(z)) == z


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**62), st.integers(0, 1000))
def test_seed_at_skips_ahead(seed, start, i):
    assert random_bits(seed_at(seed, start), i) == random_bits(seed, start + i)


def test_seed_at_zero_is_identity():
    assert seed_at(123456789, 0) == 123456789


@st.composite
def plan_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)))
    steps = [1] * len(shape)
    steps[-1] = draw(st.sampled_from([d for d in range(1, shape[-1] + 1) if shape[-1] % d == 0]))
    return shape, steps, draw(st.integers(1, 200)), draw(st.sampled_from([1, 2, 4, 8]))


@given(plan_cases())
def test_flat_chunks_are_flat_runs_on_boundaries(case):
    shape, steps, target, byte_unit = case
    chunks = flat_chunks(shape, target, steps, byte_unit)
    assert [sum(c) for c in chunks] == list(shape)
    assert is_flat(shape, chunks, steps, byte_unit)
    # each block is a consecutive run of the flat array: the starts C order gives are the
    # flat indices of the blocks' first elements
    index = np.arange(int(np.prod(shape))).reshape(shape)
    starts = block_starts(chunks)
    offsets = [np.cumsum((0, *c))[:-1] for c in chunks]
    blocks = list(iter_blocks(chunks))
    grid = np.indices([len(c) for c in chunks]).reshape(len(shape), -1).T
    for k, (cell, block) in enumerate(zip(grid, blocks, strict=True)):
        lo = [int(offsets[d][cell[d]]) for d in range(len(shape))]
        piece = index[tuple(slice(a, a + b) for a, b in zip(lo, block, strict=True))].reshape(-1)
        np.testing.assert_array_equal(piece, np.arange(starts[k], starts[k + 1]))
        if k < len(blocks) - 1:
            assert piece.size % byte_unit == 0
        if len(block) and block[-1] < shape[-1]:  # split along the grouped axis
            assert lo[-1] % steps[-1] == 0


def test_is_flat_rejects_split_rows():
    assert is_flat((10, 8), ((5, 5), (8,)), (1, 1))
    assert not is_flat((10, 8), ((5, 5), (4, 4)), (1, 1))  # blocks are not consecutive runs
    assert not is_flat((10, 8), ((10,), (3, 5)), (1, 4))   # a group of 4 would span two blocks
    assert is_flat((1, 8), ((1,), (4, 4)), (1, 4))


# -- quantize: bit identity ---------------------------------------------------------------------------
def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def quantize_cases(draw, max_dim=40, max_ndim=3, min_chunks=1):
    """(shape, chunks, dtype, quantize kwargs); ``min_chunks``: chunks hold at least
    1 / ``min_chunks`` of each dimension (bounds the task count)."""
    ndim = draw(st.integers(1, max_ndim))
    shape = tuple(draw(st.lists(st.integers(1, max_dim), min_size=ndim, max_size=ndim)))
    family = draw(st.sampled_from(["rtn", "element", "block"]))
    rounding = draw(st.sampled_from(MODES))
    kw = {"rounding": rounding, "seed": draw(st.integers(0, 2**64 - 1))}
    if rounding == "stochastic":
        kw["rbits"] = draw(st.integers(1, 32))
    axis = draw(st.integers(-ndim, ndim - 1))
    if family == "rtn":
        kw.update(scheme="rtn", bits=draw(st.integers(1, 8)), symmetric=draw(st.booleans()),
                  scale_dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])))
        grouping = draw(st.sampled_from(["group", "fibre", "tensor"]))
        if grouping == "tensor":
            kw["axis"] = None
        else:
            kw["axis"] = axis
            if grouping == "group":
                kw["group_size"] = draw(st.sampled_from(divisors(shape[axis])))
    elif family == "element":
        kw["scheme"] = draw(st.sampled_from(["fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp4_e2m1", "fixed"]))
        if kw["scheme"] == "fixed":
            kw.update(bits=draw(st.integers(2, 8)), frac_bits=draw(st.integers(0, 3)))
        if draw(st.booleans()):
            kw.update(scale="absmax", axis=axis)
            if draw(st.booleans()):
                kw["group_size"] = draw(st.sampled_from(divisors(shape[axis])))
    else:
        kw.update(scheme=draw(st.sampled_from(["mxfp8", "mxfp6", "mxfp4", "mxint8", "nvfp4"])), axis=axis)
    chunks = tuple(draw(st.integers(max(1, -(-s // min_chunks)), s)) for s in shape)
    dtype = draw(st.sampled_from(["float32", "float64", "float16"]))
    return shape, chunks, dtype, kw


def make_input(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.exp(rng.uniform(-3, 3, shape[:1] + (1,) * (len(shape) - 1)))
    return x.astype(dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantize_cases(min_chunks=6), st.integers(0, 2**32 - 1))
def test_quantize_bit_identical_threads(case, data_seed):
    shape, chunks, dtype, kw = case
    x = make_input(shape, dtype, data_seed)
    assert_same(lowbit.quantize(x, **kw), lowbit.quantize(da.from_array(x, chunks=chunks), **kw))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantize_cases(max_dim=24, max_ndim=2, min_chunks=3), st.integers(0, 2**32 - 1))
def test_quantize_bit_identical_cluster(cluster_client, case, data_seed):
    shape, chunks, dtype, kw = case
    x = make_input(shape, dtype, data_seed)
    lazy = lowbit.quantize(da.from_array(x, chunks=chunks), **kw)
    assert_same(lowbit.quantize(x, **kw), lazy, scheduler=cluster_client)


@pytest.mark.parametrize("kw", [
    {"scheme": "kvarn", "bits": 2, "kind": "key", "group_size": 64},
    {"scheme": "kvarn-k4v2-g64", "kind": "value"},
    {"scheme": "kvarn", "bits": 2, "kind": "value", "group_size": 32, "scale_dtype": "float8_e4m3"},
    {"scheme": "kivi", "bits": 2, "kind": "key", "group_size": 32},
    {"scheme": "quarot", "bits": 4, "kind": "value"}, {"scheme": "fp8", "kind": "key"},
])
@pytest.mark.parametrize("chunks", [(1, 1, 40, 64), (2, 1, 150, 32), (1, 2, 70, 9)])
def test_kv_schemes_bit_identical(kw, chunks, rng):
    # T = 150 is not a multiple of the tile: tails (stored after every full tile) included
    x = rng.standard_normal((3, 2, 150, 64)).astype(np.float32)
    assert_same(lowbit.quantize(x, **kw), lowbit.quantize(da.from_array(x, chunks=chunks), **kw))


def test_kv_scheme_on_cluster(cluster_client, rng):
    x = rng.standard_normal((2, 1, 200, 64)).astype(np.float32)
    kw = {"scheme": "kvarn-k2v2-g64", "kind": "key"}
    lazy = lowbit.quantize(da.from_array(x, chunks=(1, 1, 100, 64)), **kw)
    assert_same(lowbit.quantize(x, **kw), lazy, scheduler=cluster_client)


def test_a_group_never_spans_two_chunks(rng):
    x = rng.standard_normal((6, 96)).astype(np.float32)
    lazy = lowbit.quantize(da.from_array(x, chunks=(6, 40)), bits=4, group_size=32)
    rows, cols = lazy.chunks
    assert all(c % 32 == 0 for c in cols[:-1]) and sum(cols) == 96
    assert len(cols) == 1 or set(rows) == {1}  # a split row is the only chunk of its row
    lazy = lowbit.quantize(da.from_array(x, chunks=(6, 40)), bits=4, axis=None)
    assert lazy.chunks == ((6,), (96,))  # per tensor: one group, one chunk


def test_aligned_chunks_are_kept(rng):
    x = rng.standard_normal((64, 128)).astype(np.float32)
    lazy = lowbit.quantize(da.from_array(x, chunks=(16, 128)), bits=4, group_size=32)
    assert lazy.chunks == ((16, 16, 16, 16), (128,))
    assert lazy.codes.chunks == ((16 * 128 // 2,) * 4,)


def test_quantize_is_lazy():
    boom = da.from_delayed(_delayed_failure(), (8, 32), np.float32)
    lazy = lowbit.quantize(boom, bits=4, group_size=32)  # builds the graph, reads no data
    with pytest.raises(RuntimeError, match="chunk read"):
        lazy.compute(scheduler="threads")


def _delayed_failure():
    import dask

    def read():
        raise RuntimeError("chunk read")

    return dask.delayed(read)()


def test_bad_arguments_raise_at_call_and_bad_data_at_compute():
    x = da.zeros((4, 32), chunks=(2, 32), dtype=np.float32)
    with pytest.raises(ValueError, match="bits"):
        lowbit.quantize(x, bits=99)
    with pytest.raises(ValueError, match="group_size"):
        lowbit.quantize(x, bits=4, group_size=5)
    with pytest.raises(TypeError, match="dtype"):
        lowbit.quantize(da.zeros((4,), dtype=np.int32), bits=4)
    bad = da.from_array(np.array([[1.0, np.nan] * 16] * 4, np.float32), chunks=(2, 32))
    lazy = lowbit.quantize(bad, bits=4)
    with pytest.raises(ValueError, match="NaN"):
        lazy.compute(scheduler="threads")


def test_stochastic_without_seed_records_the_drawn_seed(rng):
    x = rng.standard_normal((5, 32)).astype(np.float32)
    lazy = lowbit.quantize(da.from_array(x, chunks=(2, 16)), bits=3, rounding="stochastic")
    seed = lazy.meta["seed"]
    assert isinstance(seed, int)
    assert_same(lowbit.quantize(x, bits=3, rounding="stochastic", seed=seed), lazy)


def test_persist_and_lowbit_dequantize(rng):
    x = rng.standard_normal((10, 64)).astype(np.float32)
    lazy = lowbit.quantize(da.from_array(x, chunks=(3, 64)), scheme="nvfp4").persist(scheduler="threads")
    assert isinstance(lazy, lowbit.QuantizedArray) and isinstance(lazy.codes, da.Array)
    want = lowbit.quantize(x, scheme="nvfp4")
    assert_same(want, lazy)
    np.testing.assert_array_equal(lowbit.dequantize(lazy).compute(), want.dequantize())
    assert lazy.bits_per_element == want.bits_per_element


# -- round and hadamard -------------------------------------------------------------------------------
@st.composite
def round_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 30), min_size=2, max_size=3)))
    mode = draw(st.sampled_from([*MODES, "diffuse"]))
    kw = {"seed": draw(st.integers(0, 2**64 - 1)), "rbits": draw(st.integers(1, 32)),
          "first_index": draw(st.integers(0, 2**40))}
    if mode == "diffuse":
        kw = {"axis": draw(st.integers(0, len(shape) - 1)), "order": draw(st.sampled_from([1, 2]))}
        if draw(st.booleans()):
            kw = {"kernel": draw(st.sampled_from(["floyd_steinberg", "atkinson"])),
                  "scan": draw(st.sampled_from(["raster", "serpentine"]))}
    chunks = tuple(draw(st.integers(1, s)) for s in shape)
    return shape, chunks, mode, kw


@settings(max_examples=40, deadline=None)
@given(round_cases(), st.integers(0, 2**32 - 1))
def test_round_bit_identical(case, data_seed):
    shape, chunks, mode, kw = case
    x = (make_input(shape, "float32", data_seed) * 4).astype(np.float32)
    got = lowbit.round(da.from_array(x, chunks=chunks), mode, **kw)
    assert isinstance(got, da.Array)
    np.testing.assert_array_equal(got.compute(scheduler="threads"), lowbit.round(x, mode, **kw))


def test_round_on_cluster_and_drawn_seed(cluster_client, rng):
    x = (rng.standard_normal((40, 30)) * 3).astype(np.float32)
    got, seed = lowbit.round(da.from_array(x, chunks=(7, 11)), "stochastic", return_seed=True)
    want = lowbit.round(x, "stochastic", seed=seed)
    np.testing.assert_array_equal(got.compute(scheduler=cluster_client), want)


@pytest.mark.parametrize("kw", [{"axis": 1}, {"axis": 0, "seed": 7, "normalize": False}])
@pytest.mark.parametrize("inverse", [False, True])
def test_hadamard_bit_identical(kw, inverse, rng):
    fn = lowbit.inverse_hadamard if inverse else lowbit.hadamard
    x = rng.standard_normal((24, 32)).astype(np.float32)
    got = fn(da.from_array(x, chunks=(5, 7)), **kw)
    assert isinstance(got, da.Array)
    np.testing.assert_array_equal(got.compute(scheduler="threads"), fn(x, **kw))


def test_hadamard_bad_length_raises_at_call():
    with pytest.raises(ValueError, match="does not support"):
        lowbit.hadamard(da.zeros((4, 7), chunks=2), axis=1)


# -- imports --------------------------------------------------------------------------------------------
def test_import_lowbit_imports_neither_dask_nor_zarr():
    code = "import sys, lowbit; print(sorted(m for m in ('dask', 'zarr', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- CuPy chunks (the coordinator runs these on the GPU) -------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("kw", [{"bits": 4, "group_size": 32}, {"bits": 3, "axis": 0},
                                {"bits": 8, "group_size": 128, "symmetric": True},
                                {"bits": 2, "group_size": 24, "scale_dtype": "bfloat16"}])
def test_cupy_chunks_rtn_bit_identical(cp, kw, rounding):
    x = cp.asarray(make_input((48, 384), "float32", 5))
    kw = dict(kw, rounding=rounding, seed=11)
    lazy = lowbit.quantize(da.from_array(x, chunks=(10, 100), asarray=False), **kw)
    assert isinstance(lazy.codes._meta, cp.ndarray)
    got = lazy.compute(scheduler="threads")
    want = lowbit.quantize(x, **kw)
    assert isinstance(got.codes, cp.ndarray) and got.meta == want.meta
    cp.testing.assert_array_equal(got.codes, want.codes)
    for k in want.fields:
        cp.testing.assert_array_equal(got.fields[k], want.fields[k])
    x_hat = lazy.dequantize().compute(scheduler="threads")
    assert isinstance(x_hat, cp.ndarray)
    cp.testing.assert_array_equal(x_hat, want.dequantize())


@pytest.mark.gpu
def test_cupy_chunks_float16_stochastic(cp):
    x = cp.asarray(make_input((64, 256), "float16", 6))
    kw = {"bits": 4, "group_size": 64, "rounding": "stochastic", "seed": 3}
    got = lowbit.quantize(da.from_array(x, chunks=(16, 64), asarray=False), **kw).compute()
    want = lowbit.quantize(x, **kw)
    cp.testing.assert_array_equal(got.codes, want.codes)
    cp.testing.assert_array_equal(got.fields["scale"], want.fields["scale"])
