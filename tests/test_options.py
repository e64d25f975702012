"""Scheme options are read from the schemes: help(lowbit.quantize) and `lowbit quantize --help`
list every scheme's options (generated, so they cannot fall behind), and an option without a
default is required (issue 18 item 3: no silent defaults)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import lowbit
from lowbit import api
from lowbit.cli import main


def entries(text: str) -> dict[str, str]:
    """schemes_help() as {scheme name: its options text} (an entry: names, colon, options)."""
    out = {}
    for entry in text.replace("\n    ", " ").splitlines():
        names, _, options = entry.partition(": ")
        out.update({n: " ".join(options.split()) for n in names.split(", ")})
    return out


@pytest.mark.parametrize("name", sorted(api.SCHEMES))
def test_every_scheme_and_option_is_in_the_help(name, capsys):
    listed = entries(api.schemes_help())
    assert listed[name] == api.describe_options(name)
    for p in api.scheme_options(name).parameters.values():
        assert p.name in listed[name]
    assert main(["quantize", "--help"]) == 0
    cli_help = " ".join(capsys.readouterr().out.split())
    doc = " ".join((lowbit.quantize.__doc__ or "").split())
    for where in (cli_help, doc):
        assert listed[name] in where and name in where


def test_the_help_is_generated_from_the_signatures():
    """The rtn entry is exactly its quantize signature after (arr, origin)."""
    from lowbit import affine

    params = list(inspect.signature(affine.quantize).parameters.values())[2:]
    assert list(api.scheme_options("rtn").parameters.values()) == params
    assert api.describe_options("rtn").startswith("bits (required), axis=-1, group_size=None")


def test_bits_are_required_where_the_scheme_takes_them():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"scheme 'rtn' needs bits= "):
        lowbit.quantize(x, scheme="rtn")
    with pytest.raises(ValueError, match=r"scheme 'rtn' needs bits= "):
        lowbit.quantize(x)  # the default scheme guesses no width either
    with pytest.raises(ValueError, match=r"scheme 'codebook' needs codebook= "):
        lowbit.quantize(x, scheme="codebook")
    assert lowbit.quantize(x, bits=4).meta["bits"] == 4
    assert "bits" not in api.required_options("fp8_e4m3")  # a format fixes its width


def test_cli_options_have_help_text(capsys):
    assert main(["quantize", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--scheme SCHEME       quantization scheme" in out and "--bits BITS           bits per code" in out
    assert main(["eval", "weights", "--help"]) == 0
    assert "round its weights with nearest-even" in capsys.readouterr().out


@pytest.mark.parametrize("scheme", ["kvarn", "kivi", "quarot", "fp8", "kvarn-k4v2-g128"])
def test_kv_schemes_require_the_kind(scheme):
    """A preset names both K and V widths (k4v2): quantizing without saying which is refused."""
    x = np.ones((1, 16, 64), np.float32)
    bits = {} if scheme in ("fp8", "kvarn-k4v2-g128") else {"bits": 2}
    with pytest.raises(ValueError, match=rf"scheme '{scheme}' needs kind= "):
        lowbit.quantize(x, scheme=scheme, **bits)
    assert "kind" in api.required_options(scheme)
    key = lowbit.quantize(x, scheme=scheme, kind="key", **bits)
    assert key.meta["kind"] == "key"


def test_preset_bits_follow_the_kind():
    x = np.random.default_rng(0).standard_normal((1, 128, 64)).astype(np.float32)
    assert lowbit.quantize(x, scheme="kvarn-k4v2-g128", kind="key").meta["bits"] == 4
    assert lowbit.quantize(x, scheme="kvarn-k4v2-g128", kind="value").meta["bits"] == 2
    assert api.required_options("kvarn-k4v2-g128") == ["kind"]  # bits fixed by the preset
    assert api.required_options("kvarn") == ["bits", "kind"]


def test_kv_options_come_from_the_codec():
    from lowbit.kv import codecs

    assert "iterations=8" in api.describe_options("kvarn")
    assert f"value_group_size={codecs.KiviCodec().value_group_size}" in api.describe_options("kivi")


def test_fixed_point_needs_its_width_and_formats_take_none():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match=r"scheme 'fixed' needs bits= "):
        lowbit.quantize(x, scheme="fixed", frac_bits=2)
    assert api.describe_options("fixed").startswith("bits (required), frac_bits=0, signed=True")
    assert lowbit.quantize(x, scheme="fixed", bits=6).meta["bits"] == 6
    assert "bits" not in api.scheme_options("fp8_e4m3").parameters  # the format's own width
    assert "**" not in api.describe_options("fp4_e2m1")
