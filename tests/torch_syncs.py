"""Shared by the CUDA-graph tests: capture a step with torch's own host synchronizations raising."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def torch_syncs_raise(torch: Any) -> None:
    """``torch.cuda.set_sync_debug_mode("error")`` without its "prototype feature" UserWarning
    (which the test suite's warning filter would turn into an error inside the capture, leaving
    the graph empty: seen on the H100, 2026-12-06).  Reset with ``set_sync_debug_mode("default")``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype", UserWarning)
        torch.cuda.set_sync_debug_mode("error")


def capture(torch: Any, stream: Any, step: Callable[[], Any]) -> tuple[Any, Any]:
    """``step()`` captured on ``stream`` into a new ``torch.cuda.CUDAGraph``, torch's syncs
    raising meanwhile (entering the capture itself synchronizes, by design): (graph, output)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        torch_syncs_raise(torch)
        try:
            got = step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return graph, got
