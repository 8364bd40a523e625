"""The vTPM's capabilities as tpm2-tools read them, beside swtpm's (a reference TPM 2.0).

``tpm2_getcap algorithms`` lists each algorithm's TPMA_ALGORITHM bits: every algorithm the
vTPM implements must carry the bits swtpm gives it, and name no algorithm swtpm does not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.interop.test_vtpm_server import vtpm  # noqa: F401

pytestmark = pytest.mark.interop
BITS = ("asymmetric", "symmetric", "hash", "object", "reserved", "signing", "encrypting",
        "method")


def _algorithms(printed: str) -> dict[int, dict[str, str]]:
    """``tpm2_getcap algorithms``' YAML: each algorithm's value and attribute fields."""
    table: dict[int, dict[str, str]] = {}
    for block in re.split(r"\n(?=\S)", printed.strip()):
        lines = block.splitlines()
        fields = dict(line.strip().split(":", 1) for line in lines[1:])
        fields = {key: value.strip() for key, value in fields.items()}
        table[int(fields["value"], 16)] = {"name": lines[0].rstrip(":"),
                                           **{bit: fields[bit] for bit in BITS}}
    return table


def test_every_algorithm_has_the_attributes_swtpm_gives_it(
        vtpm: dict[str, Any], tools: tuple[Callable[..., Any], Path]) -> None:  # noqa: F811
    ours = _algorithms(vtpm["run"]("tpm2_getcap", "algorithms").stdout)
    reference = _algorithms(tools[0]("tpm2_getcap", "algorithms").stdout)
    assert ours and len(reference) > len(ours)
    for value, fields in ours.items():
        assert reference.get(value) == fields, f"algorithm {value:#06x}"
