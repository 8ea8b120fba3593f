"""The command line's parsing of parameter overrides."""

from __future__ import annotations

import argparse

import pytest

from local.__main__ import parse_args, parse_overrides

pytestmark = pytest.mark.unit


def test_overrides_in_both_spellings() -> None:
    pairs = ["A=1", "B=x=y", "ParameterKey=C,ParameterValue=3", "D="]
    assert parse_overrides(pairs) == {"A": "1", "B": "x=y", "C": "3", "D": ""}


def test_a_pair_without_a_key_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected Key=Value"):
        parse_overrides(["novalue"])


def test_defaults() -> None:
    args = parse_args([])
    assert (args.port, str(args.data_dir), str(args.template)) == (4566, ".local", "template.yaml")
    assert (args.throttling, args.time_scale) == (False, 1.0)
