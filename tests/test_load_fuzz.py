"""Hostile files for every scheme: ``lowbit.load`` raises ValueError, cheaply (issue 12 item 6).

Each example starts from a legitimate small file of one scheme and breaks it one way: a
truncated or bit-flipped archive, a member with the wrong dtype or shape, a header declaring a
huge shape, an extra member, an object array (pickle), a missing or unknown metadata key, or a
metadata value of the wrong type or out of its range (taken from the schema's own record).
The load must raise ValueError -- or, where the change leaves a valid file (a flipped bit in a
zip timestamp, a seed changed to another seed), load and dequantize -- and its peak memory
(tracemalloc) must stay within a small multiple of the legitimate file's size.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowbit
from lowbit import schema

X = np.random.default_rng(9).standard_normal((3, 40)).astype(np.float32)
KV = np.random.default_rng(9).standard_normal((1, 2, 24, 16)).astype(np.float32)

#: One legitimate file per scheme (small: every example rewrites one of them).
CASES = {
    "rtn": (X, dict(bits=4, scheme="rtn", group_size=8, scale_dtype="bfloat16")),
    "rtn_sym": (X, dict(bits=3, scheme="rtn", symmetric=True, axis=0)),
    "fixed": (X, dict(scheme="fixed", bits=6, frac_bits=3)),
    **{s: (X, dict(scheme=s, scale="absmax", group_size=20)) for s in
       ("fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1")},
    **{s: (X, dict(scheme=s)) for s in
       ("mxfp8", "mxfp8_e5m2", "mxfp6", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4")},
    "kvarn": (KV, dict(bits=2, scheme="kvarn", kind="key", group_size=16)),
    "kvarn_fp8": (KV, dict(bits=3, scheme="kvarn", kind="value", group_size=16, scale_dtype="float8_e4m3")),
    "kvarn-k4v2-g64": (np.random.default_rng(1).standard_normal((1, 70, 16)).astype(np.float32),
                       dict(scheme="kvarn-k4v2-g64", kind="value")),
    "kivi": (KV, dict(bits=2, scheme="kivi", kind="value", group_size=16, value_group_size=8)),
    "quarot": (KV, dict(bits=3, scheme="quarot", kind="key")),
    "fp8": (KV, dict(scheme="fp8", kind="value")),
    "kvarn_grid": (KV, dict(bits=2, scheme="kvarn", kind="value", group_size=16, value_grid="lloyd-max")),
    "turboquant": (KV, dict(bits=3, scheme="turboquant", kind="key", variant="prod", seed=5)),
    "turboquant-mse-k2v2": (KV, dict(scheme="turboquant-mse-k2v2", kind="value")),
    "codebook": (X, dict(scheme="codebook", codebook="nf4", group_size=20, scale_dtype="float16")),
    "codebook_direct": (X, dict(scheme="codebook", bits=2, codebook="lloyd-max-gaussian", scale=None,
                                rounding="stochastic", seed=4)),
}

#: Headroom for the load's own objects (zipfile's directory, JSON, the schema) beyond the data.
OVERHEAD = 256 * 1024


def _legit(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.npz"
    if not path.exists():
        x, kwargs = CASES[name]
        lowbit.quantize(x, **kwargs).save(path)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_header(descr: str, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _header(members: dict[str, bytes]) -> dict:
    return json.loads(np.load(io.BytesIO(members["header.npy"])).tobytes())


def _with_header(members: dict[str, bytes], header: dict) -> dict[str, bytes]:
    out = dict(members)
    out["header.npy"] = _npy(np.frombuffer(json.dumps(header).encode(), np.uint8))
    return out


def _bad_values(md: dict) -> list:
    """Values a key of this description must refuse: wrong types, just out of range, unknown
    choices."""
    kind = md["kind"]
    out: list = [{"a": 1}, "x" * 3, 2.5] + ([] if kind == "shape" else [[1]])
    if not md["nullable"]:
        out.append(None)
    if kind is int:
        out += [True, "3", 3.0]
        if md["lo"] is not None:
            out.append(md["lo"] - 1)
        if md["hi"] is not None:
            out.append(md["hi"] + 1)
    elif kind is bool:
        out += [0, 1, "true"]
    elif kind is str:
        out += [7, False, "not-a-choice"]
    elif kind == "floats":
        out += [[0.5], [1.0, 0.5], [0.0, float("nan")], [0.0, float("inf")], [True, 1.0], "0,1",
                [0.0, 0.1], list(range(300))]
    else:  # shape
        out += [[4.5, 64], [4, 0], [-1], [2**70], [True, 2], "4,4", [1] * 40, [2**31, 2**31, 2**31]]
    return out


def _field_mutations(name: str) -> list[tuple[str, object]]:
    """(key, value) pairs that make the metadata of ``name`` invalid, for every key."""
    x, kwargs = CASES[name]
    record = schema.parse(lowbit.quantize(x, **kwargs).meta)
    def refused(key: str, md: dict, value: object) -> bool:
        # a free-text key (a codebook's name or distribution) takes any string
        return not (isinstance(value, str) and md["kind"] is str and md["choices"] is None
                    and key != "scheme")

    return [(f.name, v) for f in dataclasses.fields(record) for v in _bad_values(dict(f.metadata))
            if f.name in record.to_meta() and refused(f.name, dict(f.metadata), v)]


def _is_type_ok(key: str, value: object, name: str) -> bool:
    """Whether ``value`` has the type and range ``key`` takes on its own (so that the error may
    name the other key it contradicts)."""
    x, kwargs = CASES[name]
    record = schema.parse(lowbit.quantize(x, **kwargs).meta)
    md = {f.name: dict(f.metadata) for f in dataclasses.fields(record)}[key]
    return schema._value_ok(value, md)


MUTATIONS = ("truncate", "flip", "member_dtype", "member_shape", "huge_shape", "extra_member",
             "pickle", "drop_member", "drop_key", "unknown_key", "bad_value")


def _mutate(members: dict[str, bytes], data: bytes, kind: str, draw: st.DrawFn, name: str) -> tuple[bytes, bool]:
    """(hostile bytes, whether it is certainly invalid)."""
    arrays = sorted(k for k in members if k != "header.npy")
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))], True
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(out), False  # a flip in a timestamp leaves a valid file
    if kind in ("member_dtype", "member_shape", "huge_shape", "pickle"):
        target = draw(st.sampled_from(arrays))
        arr = np.load(io.BytesIO(members[target]))
        if kind == "member_dtype":
            other = draw(st.sampled_from([d for d in ("<f4", "<f2", "|u1", "<u2", "<i8", "|i1")
                                          if np.dtype(d) != arr.dtype]))
            new = arr.view(np.uint8)[: arr.nbytes // np.dtype(other).itemsize * np.dtype(other).itemsize]
            blob = _npy(new.view(other))
        elif kind == "member_shape":
            blob = _npy(np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1]]) if draw(st.booleans())
                        else arr.reshape(-1)[:-1] if arr.size > 1 else arr.reshape(1, -1, 1))
        elif kind == "huge_shape":
            size = draw(st.sampled_from([2**45, 2**31 + 1, 2**62]))
            blob = _npy_header(arr.dtype.str, (size,), arr.tobytes())
        else:
            blob = _npy(np.array([{"evil": 1}], dtype=object))
        return _zip({**members, target: blob}), True
    if kind == "extra_member":
        extra = draw(st.sampled_from(["junk.npy", "field.extra.npy", "codes2.npy", "x.txt"]))
        return _zip({**members, extra: _npy(np.zeros(4, np.uint8))}), True
    if kind == "drop_member":
        target = draw(st.sampled_from(arrays + ["header.npy"]))
        return _zip({k: v for k, v in members.items() if k != target}), True
    header = _header(members)
    meta = header["meta"]
    if kind == "drop_key":
        meta.pop(draw(st.sampled_from(sorted(meta))))
    elif kind == "unknown_key":
        meta[draw(st.sampled_from(["extra", "Scheme", "offset2", "group_size_"]))] = 1
    else:
        key, value = draw(st.sampled_from(_field_mutations(name)))
        meta[key] = value
    return _zip(_with_header(members, header)), True


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_files_raise_value_error_cheaply(tmp_path_factory, data):
    tmp = tmp_path_factory.getbasetemp() / "fuzz"
    tmp.mkdir(exist_ok=True)
    name = data.draw(st.sampled_from(sorted(CASES)))
    legit = _legit(tmp, name)
    lowbit.load(legit)  # imports and first-use caches happen here, not in the measured load
    members = _members(legit)
    kind = data.draw(st.sampled_from(MUTATIONS))
    hostile, invalid = _mutate(members, legit.read_bytes(), kind, data.draw, name)
    path = tmp / "hostile.npz"
    path.write_bytes(hostile)
    tracemalloc.start()
    try:
        try:
            q = lowbit.load(path)
        except ValueError:
            q = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 4 * legit.stat().st_size + OVERHEAD, (kind, peak)
    if q is not None:
        assert not invalid, f"{kind} on {name}: loaded"
        try:
            q.dequantize()
        except ValueError:
            pass


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_metadata_key_is_checked(tmp_path, name):
    """Each key set to each wrong type or out-of-range value: a ValueError naming the key (or,
    where the value is of the right type but contradicts another key, naming that one)."""
    legit = _legit(tmp_path, name)
    members = _members(legit)
    for key, value in _field_mutations(name):
        header = _header(members)
        header["meta"][key] = value
        path = tmp_path / "bad.npz"
        path.write_bytes(_zip(_with_header(members, header)))
        with pytest.raises(ValueError, match=r"metadata '\w+'") as info:
            lowbit.load(path)
        named = str(info.value).split("metadata '")[1].split("'")[0]
        assert named == key or _is_type_ok(key, value, name), (key, value, str(info.value))
