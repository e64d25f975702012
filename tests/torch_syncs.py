"""Shared by the CUDA-graph tests: make torch raise on its own host synchronizations."""

from __future__ import annotations

import warnings
from typing import Any


def torch_syncs_raise(torch: Any) -> None:
    """``torch.cuda.set_sync_debug_mode("error")`` without its "prototype feature" UserWarning
    (which the test suite's warning filter would turn into an error inside the capture, leaving
    the graph empty: seen on the H100, 2026-12-06).  Reset with ``set_sync_debug_mode("default")``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype", UserWarning)
        torch.cuda.set_sync_debug_mode("error")
