"""``lowbit.load``: saved files load back exactly, and hostile files raise ValueError cheaply."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lowbit

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


def _saved(tmp_path: Path, name: str = "q.npz") -> Path:
    x = np.random.default_rng(5).standard_normal((4, 32)).astype(np.float32)
    path = tmp_path / name
    lowbit.quantize(x, bits=4, scheme="rtn", group_size=8).save(path)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write(path: Path, members: dict[str, bytes], compress: dict[str, int] | None = None) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=(compress or {}).get(name, zipfile.ZIP_STORED))


@pytest.mark.parametrize("name", sorted(p.stem for p in LEGACY.glob("*.npz") if p.stem != "expected"))
def test_files_written_before_the_schema_still_load(name):
    with np.load(LEGACY / "expected.npz") as npz:
        want = npz[name]
    q = lowbit.load(LEGACY / f"{name}.npz")
    np.testing.assert_array_equal(q.dequantize(), want)


def _legacy_meta(name: str) -> dict:
    with zipfile.ZipFile(LEGACY / f"{name}.npz") as z, z.open("header.npy") as fh:
        return json.loads(np.lib.format.read_array(fh).tobytes())["meta"]


# (legacy file, key as written then, key today, value): renames of 2026-12-02 (issue 12)
RENAMED = [("fp8_e4m3_absmax_sr", "offset", "first_index", 3),
           ("kvarn_key_f16", "group", "group_size", 16), ("kivi_key", "group", "group_size", 16),
           ("fp8_kv", "group", "group_size", None)]


@pytest.mark.parametrize("name, old, new, value", RENAMED)
def test_renamed_metadata_keys_of_old_files_load_under_todays_name(name, old, new, value):
    written = _legacy_meta(name)
    assert written[old] == value and new not in written  # the file really holds the old key
    q = lowbit.load(LEGACY / f"{name}.npz")
    assert q.meta[new] == value and old not in q.meta


@pytest.mark.parametrize("name, old, new, value", RENAMED)
def test_a_file_holding_a_key_under_both_names_is_refused(name, old, new, value):
    from lowbit.schema import parse

    meta = _legacy_meta(name)
    with pytest.raises(ValueError, match=f"metadata '{old}' is the old name of '{new}'"):
        parse({**meta, new: value})


# --- archive-level problems: the true reason, as a ValueError ---------------------------------


def test_a_npy_file_is_named_as_such(tmp_path):
    path = tmp_path / "x.npz"
    np.save(tmp_path / "x.npy", np.ones(3, np.float32))
    path.write_bytes((tmp_path / "x.npy").read_bytes())
    with pytest.raises(ValueError, match=r"not a readable \.npz file: it is a \.npy file"):
        lowbit.load(path)


@pytest.mark.parametrize("content, reason", [
    (b"hello world", "not a zip archive"),
    (b"", "the file is empty"),
])
def test_a_non_archive_is_named_as_such(tmp_path, content, reason):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"not a readable \.npz file: {reason}"):
        lowbit.load(path)


def test_a_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a readable .npz file: no such file"):
        lowbit.load(tmp_path / "absent.npz")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_archive_is_refused(tmp_path, keep):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"not a readable \.npz file: truncated"):
        lowbit.load(path)


def test_a_bad_crc_is_refused(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("codes.npy")
    # the member's data: after its local header (30 bytes + name + extra field) and npy header
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
    at = info.header_offset + 30 + int(name_len) + int(extra_len) + 128 + 3
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad CRC-32"):
        lowbit.load(path)


def test_an_unknown_member_is_refused_without_reading_it(tmp_path):
    """An extra member (here 256 MiB of deflated zeros in a 250 kB file) is never inflated."""
    import tracemalloc

    path = _saved(tmp_path)
    members = _members(path)
    junk = io.BytesIO()
    np.lib.format.write_array_header_1_0(junk, {"descr": "|u1", "fortran_order": False,
                                                "shape": (1 << 28,)})
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        zi = zipfile.ZipInfo("junk.npy")
        zi.compress_type = zipfile.ZIP_DEFLATED
        with z.open(zi, "w", force_zip64=True) as fh:
            fh.write(junk.getvalue())
            block = bytes(1 << 24)
            for _ in range(16):
                fh.write(block)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="unknown member 'junk.npy'"):
            lowbit.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_a_compressed_member_is_refused(tmp_path):
    path = _saved(tmp_path)
    _write(path, _members(path), {"codes.npy": zipfile.ZIP_DEFLATED})
    with pytest.raises(ValueError, match="member 'codes' is compressed"):
        lowbit.load(path)


def test_a_duplicate_member_is_refused(tmp_path):
    path = _saved(tmp_path)
    members = _members(path)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as z:
        z.writestr("codes.npy", members["codes.npy"])
    with pytest.raises(ValueError, match="lists a member name twice"):
        lowbit.load(path)


def test_too_many_members_are_refused_before_the_directory_is_parsed(tmp_path):
    path = tmp_path / "many.npz"
    _write(path, {f"m{i}.npy": b"" for i in range(100)})
    with pytest.raises(ValueError, match="lists 100 members"):
        lowbit.load(path)


def test_a_pickle_is_refused(tmp_path):
    path = _saved(tmp_path)
    members = _members(path)
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    members["field.scale.npy"] = buf.getvalue()
    _write(path, members)
    with pytest.raises(ValueError, match="member 'field.scale' holds Python objects"):
        lowbit.load(path)


def test_a_header_declaring_more_data_than_it_holds_is_refused(tmp_path):
    """A header claiming shape (2**45,) raised MemoryError; the bytes held are checked first."""
    path = _saved(tmp_path)
    members = _members(path)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                               "shape": (2**45,)})
    members["codes.npy"] = buf.getvalue() + bytes(64)
    _write(path, members)
    with pytest.raises(ValueError, match=r"member 'codes' has shape \(35184372088832,\), expected"):
        lowbit.load(path)


def test_a_member_declaring_what_the_metadata_implies_but_holding_less_is_refused(tmp_path):
    """Metadata, header and data agree on 2**33 codes; the member holds 64 bytes of them."""
    path = _saved(tmp_path)
    members = _members(path)
    header = _read_header(members)
    header["meta"].update(shape=[2**34, 1], group_size=None, axis=None)
    header["fields"] = ["offset", "scale"]
    members = _with_header(members, header)
    members["codes.npy"] = _npy_header("|u1", (2**33,)) + bytes(64)
    members["field.scale.npy"] = _npy_bytes(np.ones(1, np.float32))
    members["field.offset.npy"] = _npy_bytes(np.zeros(1, np.float32))
    _write(path, members)
    with pytest.raises(ValueError, match=r"declares shape \(8589934592,\).* but holds 64 bytes"):
        lowbit.load(path)


# --- the defects issue 12 item 6 names: each loaded or crashed before -------------------------


def _read_header(members: dict[str, bytes]) -> dict:
    return json.loads(np.lib.format.read_array(io.BytesIO(members["header.npy"])).tobytes())


def _with_header(members: dict[str, bytes], header: dict) -> dict[str, bytes]:
    return {**members, "header.npy": _npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8))}


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _saved_scheme(tmp_path: Path, scheme: str, **kwargs) -> tuple[Path, dict[str, bytes]]:
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    path = tmp_path / f"{scheme}.npz"
    if scheme == "rtn":
        kwargs.setdefault("bits", 8)  # rtn takes no default width
    lowbit.quantize(x, scheme=scheme, **kwargs).save(path)
    return path, _members(path)


def _retouched(path: Path, members: dict[str, bytes], **meta) -> Path:
    header = _read_header(members)
    for k, v in meta.items():
        if v is _DROP:
            header["meta"].pop(k)
        else:
            header["meta"][k] = v
    _write(path, _with_header(members, header))
    return path


_DROP = object()


@pytest.mark.parametrize("scheme, meta, match", [
    # ZeroDivisionError before
    ("mxfp4", dict(shape=[4, 0], padded_length=0), "metadata 'shape' must be a list of at most 32 positive"),
    # KeyError before
    ("rtn", dict(symmetric=_DROP), "metadata 'symmetric' is missing"),
    # loaded and decoded garbage before
    ("mxfp4", dict(dtype="int8"), "metadata 'dtype' must be one of"),
    ("nvfp4", dict(bits=99), "metadata 'bits' must be an integer in 1..8"),
    ("mxfp8", dict(bits=4), "metadata 'bits' of mxfp8 must be 8"),
    # passed, failed later
    ("rtn", dict(shape=[4.5, 64]), "metadata 'shape' must be a list"),
    ("fp8_e4m3", dict(shape=[4.0, 64]), "metadata 'shape' must be a list"),
])
def test_the_named_metadata_defects_are_value_errors(tmp_path, scheme, meta, match):
    path, members = _saved_scheme(tmp_path, scheme)
    with pytest.raises(ValueError, match=match):
        lowbit.load(_retouched(path, members, **meta))


@pytest.mark.parametrize("tensor_scale, match", [
    (np.zeros(0, np.float32), r"member 'field.tensor_scale' has shape \(0,\), expected \(1,\)"),
    (np.array([np.nan], np.float32), "tensor_scale' must be positive and finite"),
    (np.array([-1.0], np.float32), "tensor_scale' must be positive and finite"),
    (np.array([1.0]), "has dtype float64, expected float32"),
])
def test_the_nvfp4_tensor_scale_is_checked(tmp_path, tensor_scale, match):
    """An empty tensor_scale loaded and raised IndexError on dequantize."""
    path, members = _saved_scheme(tmp_path, "nvfp4")
    members["field.tensor_scale.npy"] = _npy_bytes(tensor_scale)
    _write(path, members)
    with pytest.raises(ValueError, match=match):
        lowbit.load(path)


@pytest.mark.parametrize("header", [b"[" * 60000, b"[" * 70000, b"\xff\xfe", b'{"format": 1, "meta": 3, "fields": []}'])
def test_a_corrupt_json_header_is_refused(tmp_path, header):
    path = _saved(tmp_path)
    members = _members(path)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(header, np.uint8))
    members["header.npy"] = buf.getvalue()
    _write(path, members)
    with pytest.raises(ValueError, match="corrupt header|flat JSON object|at most 65536"):
        lowbit.load(path)


def test_the_header_field_list_must_be_what_the_metadata_implies(tmp_path):
    path = _saved(tmp_path)
    members = _members(path)
    with zipfile.ZipFile(path) as z, z.open("header.npy") as fh:
        header = json.loads(np.lib.format.read_array(fh).tobytes())
    header["fields"] = ["scale", "scale", "offset"]
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(header).encode(), np.uint8))
    members["header.npy"] = buf.getvalue()
    _write(path, members)
    with pytest.raises(ValueError, match=r"lists fields \['scale', 'scale', 'offset'\]; rtn metadata implies"):
        lowbit.load(path)
