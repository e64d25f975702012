"""Out-of-core quantization with lowbit.dask: an on-disk float32 array four times the memory
given to the workers, quantized (rtn, 4 bits, groups of 128) to a Zarr store on a
``dask.distributed.LocalCluster``.

Baseline, same run: ``lowbit.quantize`` in memory on the part of the array that fits (its time
scaled to the whole array).  The file's pages are dropped from the page cache before the run
(``posix_fadvise``), so the dask run reads from disk.  Peak memory per worker is each worker
process's resident set sampled every 20 ms during the run; codes and scales are stored
uncompressed (``compressors=None``: zstd would dominate the time).  The run fails if a worker was restarted (the
nanny restarts a worker that exceeds its memory limit).  Full run: 8 GiB array, 2 workers of
1 GiB; ``--quick``: 512 MiB (not 4x the workers' memory: a smoke test).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from common import best_time, row

import lowbit

GIB = 1 << 30
COLS = 4096
CHUNK_BYTES = 32 << 20
WORKERS = 2
WORKER_MEMORY = GIB


class RawRows:
    """Row blocks of a raw C-order float32 file, read with plain reads (no memory map, so the
    file's pages never count in a worker's resident set); picklable."""

    def __init__(self, path: str, rows: int, cols: int) -> None:
        self.path, self.cols = path, cols
        self.shape = (rows, cols)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        start, stop, _ = rows.indices(self.shape[0])
        with open(self.path, "rb") as fh:
            fh.seek(start * self.cols * 4)
            out = np.fromfile(fh, np.float32, max(0, stop - start) * self.cols)
        return out.reshape(-1, self.cols)[:, cols]


def write_array(path: str, rows: int, cols: int) -> None:
    """Random normal float32 data, written in blocks, then dropped from the page cache."""
    rng = np.random.default_rng(0)
    step = max(1, (64 << 20) // (4 * cols))
    with open(path, "wb") as fh:
        for start in range(0, rows, step):
            rng.standard_normal((min(step, rows - start), cols), dtype=np.float32).tofile(fh)
        fh.flush()
        os.fsync(fh.fileno())
    drop_cache(path)


def drop_cache(path: str) -> None:
    """Evict the file's pages from the page cache (the next read comes from disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_all(path: str, block: int = 64 << 20) -> None:
    """Read the whole file with plain reads (the cold-read baseline)."""
    buf = bytearray(block)
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


def _warm_up() -> int:
    """Load the kernels a worker needs (Numba cache, CPU dispatch) before timing; its RSS."""
    lowbit.quantize(np.ones((8, 256), np.float32), bits=4, group_size=128)
    return 0


def _start_sampling(dask_worker: Any) -> int:
    """Sample the worker process's resident set every 20 ms from now on (ru_maxrss would
    include the parent's pages that a spawned process held before exec); its RSS now."""
    import threading

    import psutil

    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss, "run": True}

    def loop() -> None:
        while state["run"]:
            state["peak"] = max(state["peak"], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=loop, daemon=True).start()
    dask_worker.lowbit_rss = state
    return int(state["peak"])


def _stop_sampling(dask_worker: Any) -> int:
    state = dask_worker.lowbit_rss
    state["run"] = False
    return int(state["peak"])


def run(quick: bool = False) -> list[dict]:
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    # RawRows reaches the workers by value: cloudpickle copies classes of modules the workers
    # cannot import (this file is loaded by path)
    total = (512 << 20) if quick else 8 * GIB
    rows = total // (4 * COLS)
    part_rows = min(rows, GIB // (4 * COLS))  # the part that fits: 1 GiB
    tmp = tempfile.mkdtemp(prefix="lowbit-bench-dask-")
    try:
        path = os.path.join(tmp, "x.f32")
        write_array(path, rows, COLS)
        part = RawRows(path, rows, COLS)[0:part_rows, :]
        t_part = best_time(functools.partial(lowbit.quantize, part, bits=4, group_size=128), repeat=2)
        part = None  # free the 1 GiB before the cluster starts
        drop_cache(path)
        t_read = best_time(functools.partial(read_all, path), repeat=1, warmup=0)
        drop_cache(path)
        with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                          memory_limit=WORKER_MEMORY, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            before = sorted(client.scheduler_info()["workers"])
            client.run(_warm_up)
            idle = client.run(_start_sampling)
            x = da.from_array(RawRows(path, rows, COLS), chunks=(CHUNK_BYTES // (4 * COLS), COLS),
                              name="bench-dask-x")
            t0 = time.perf_counter()
            lowbit.quantize(x, bits=4, group_size=128).to_zarr(os.path.join(tmp, "q.zarr"), compressors=None)
            t = time.perf_counter() - t0
            after = sorted(client.scheduler_info()["workers"])
            peaks = client.run(_stop_sampling)
        if before != after:
            raise RuntimeError(f"a worker was restarted during the run (memory limit?): {before} -> {after}")
        check = lowbit.load(os.path.join(tmp, "q.zarr"))
        want = lowbit.quantize(RawRows(path, rows, COLS)[rows - 64:rows, :], bits=4, group_size=128)
        got = check.codes[-want.codes.size:].compute(scheduler="threads")
        assert np.array_equal(got, want.codes), "stored codes differ from the in-memory call"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"# bench dask: {total / GIB:.2f} GiB on disk, {WORKERS} workers x {WORKER_MEMORY / GIB:.0f} GiB "
          f"memory limit; peak RSS per worker {', '.join(f'{p / 2**20:.0f} MiB' for p in peaks.values())} "
          f"(RSS after import and warm-up, before the run: {', '.join(f'{p / 2**20:.0f} MiB' for p in idle.values())}); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    n = rows * COLS
    # traffic: read x once + write codes (4 bits) and float32 scale + offset per 128
    nbytes = 4 * n + n // 2 + 8 * (n // 128)
    scaled = t_part * rows / part_rows
    size = f"{total / GIB:.2f} GiB f32"
    return [row("dask rtn 4-bit g128 disk->zarr", size, t,
                f"in-memory ({part_rows * COLS * 4 / GIB:.2f} GiB part, scaled)", scaled, nbytes, n),
            row("dask rtn 4-bit g128 disk->zarr", size, t, "cold read of the file", t_read, nbytes, n)]
