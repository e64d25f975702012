"""Shared fixtures: GPU detection, seeded generators."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def cuda_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # a broken CuPy install means no GPU tests, not a crash
        return False


HAS_CUDA = cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no CUDA device with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261129)


@pytest.fixture
def cp():
    import cupy

    return cupy


class Backend:
    """One array library a test body runs on (STYLE.md §7): ``numpy`` (the CPU kernels),
    ``cupy`` and ``torch_cuda`` (the CUDA kernels; GPU only).

    ``asarray`` moves a numpy test input onto the backend explicitly (the test's own copy, never
    lowbit's); ``to_numpy`` brings a result back for comparison; ``is_native`` checks the
    array type-in = array type-out rule.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    @property
    def on_gpu(self) -> bool:
        return self.name != "numpy"

    def asarray(self, a: np.ndarray):
        if self.name == "numpy":
            return np.asarray(a)
        if self.name == "cupy":
            import cupy

            return cupy.asarray(a)
        import torch

        if a.dtype == np.dtype("uint16"):  # the tests' bfloat16 bits
            return torch.from_numpy(a.copy()).view(torch.bfloat16).cuda()
        return torch.from_numpy(a.copy(order="C")).cuda()  # ascontiguousarray makes 0-d 1-d

    def to_numpy(self, a) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy.asnumpy(a)
        import torch

        if a.dtype == torch.bfloat16:
            return a.detach().cpu().view(torch.uint16).numpy().view(np.uint16)
        return a.detach().cpu().numpy()

    def is_native(self, a) -> bool:
        if self.name == "numpy":
            return isinstance(a, np.ndarray)
        if self.name == "cupy":
            return type(a).__module__.startswith("cupy")
        import torch

        return isinstance(a, torch.Tensor) and a.is_cuda

    def assert_same_as_host(self, got, want, shape: tuple[int, ...]) -> None:
        """``got`` (a QuantizedArray of this backend's input) equals ``want`` (the numpy path's)
        bit for bit: meta, codes, every field and the reconstruction, which is of this backend's
        array type and has ``shape``."""
        assert got.meta == want.meta
        np.testing.assert_array_equal(self.to_numpy(got.codes), want.codes)
        assert set(got.fields) == set(want.fields)
        for k, v in want.fields.items():
            np.testing.assert_array_equal(self.to_numpy(got.fields[k]), v, err_msg=k)
        y = got.dequantize()
        assert self.is_native(y) and tuple(y.shape) == shape
        np.testing.assert_array_equal(self.to_numpy(y), want.dequantize())


@pytest.fixture(params=[
    "numpy",
    pytest.param("cupy", marks=pytest.mark.gpu),
    pytest.param("torch_cuda", marks=pytest.mark.gpu),
])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Run the test body on numpy, CuPy and torch CUDA arrays (the last two marked ``gpu``)."""
    if request.param == "torch_cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device for torch")
    return Backend(request.param)
