"""A one-line notice when a Numba kernel is about to be compiled for the first time.

The kernels are compiled on first call and cached on disk (``cache=True``); a cold cache makes
the first call of a heavy kernel take tens of seconds, which looks like a hang without a word.
Detection is cheap and reliable: Numba's cache index of the kernel (one small file next to the
source, or under ``NUMBA_CACHE_DIR``) is missing, unreadable or stale for the current source,
and the kernel has not been compiled in this process.  The check runs once per kernel, on its
first call; afterwards the table holds the plain Numba dispatcher again (no per-call cost).
"""

from __future__ import annotations

import functools
import sys
from typing import Any

#: Measured first compilations on the project's loaded 2-core VM (docs/kv.md), in seconds.
EXPECTED_S = {"kvarn_encode": 60, "kv_attend": 20, "balance_tiles": 30}


def is_cold(dispatcher: Any) -> bool:
    """True when calling ``dispatcher`` now compiles it (nothing cached for its source)."""
    if getattr(dispatcher, "overloads", None):  # already compiled in this process
        return False
    cache = getattr(dispatcher, "_cache", None)
    cache_file = getattr(cache, "_cache_file", None)
    if cache_file is None:  # not a caching dispatcher: nothing to say
        return False
    try:
        return not cache_file._load_index()  # {} when the index is missing or stale
    except Exception:  # an unreadable index is recompiled, and so is cold
        return True


def notice(name: str) -> str:
    """The message for kernel ``name``."""
    seconds = EXPECTED_S.get(name)
    expect = f"about {seconds} s on 2 cores" if seconds else "typically 5-30 s"
    return (f"lowbit: compiling the Numba kernel {name} for first use ({expect}; "
            "cached for later runs)")


def watch(namespace: dict[str, Any], names: tuple[str, ...]) -> None:
    """Replace each kernel in ``namespace`` by a wrapper that checks the cache on its first
    call, prints :func:`notice` on stderr when it is cold, and puts the dispatcher back.

    A kernel may also be a Python function that checks its operands and calls the Numba
    dispatchers it lists in its ``dispatchers`` attribute; it is cold when one of those is."""
    for name in names:
        kernel = namespace[name]
        inner = getattr(kernel, "dispatchers", None)
        if inner is None:
            if getattr(kernel, "_cache", None) is None:
                continue
            inner = (kernel,)

        def first_call(*args: Any, _name: str = name, _k: Any = kernel, _inner: Any = inner,
                       **kwargs: Any) -> Any:
            namespace[_name] = _k
            if any(is_cold(d) for d in _inner):
                print(notice(_name), file=sys.stderr, flush=True)
            return _k(*args, **kwargs)

        wrapper = functools.wraps(kernel, updated=())(first_call)
        if hasattr(kernel, "py_func"):
            wrapper.py_func = kernel.py_func  # type: ignore[attr-defined]  # as on the dispatcher
        else:
            wrapper.dispatchers = inner  # type: ignore[attr-defined]
        namespace[name] = wrapper
