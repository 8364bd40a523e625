"""TCB_VERSION's refusals, each with the message that names the field (56860 Table 3)."""

from __future__ import annotations

import re

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion


@pytest.mark.parametrize("value", [1.5, "1", None, True, -1, 256])
def test_a_component_must_be_an_int_byte(value: object) -> None:
    """Only a plain int 0..255 is a component: a float, a string, a bool are refused too."""
    with pytest.raises(UsageError) as caught:
        TcbVersion(snp=value)  # type: ignore[arg-type]
    assert str(caught.value) == f"TCB_VERSION.snp: {value!r} is not a byte value"


def test_the_limits_of_a_component_are_taken() -> None:
    assert TcbVersion(boot_loader=0, tee=255).to_bytes() == bytes([0, 255, 0, 0, 0, 0, 0, 0])


def test_milan_has_no_fmc() -> None:
    with pytest.raises(UsageError) as caught:
        TcbVersion(fmc=1)
    assert str(caught.value) == "TCB_VERSION: the Milan/Genoa layout has no FMC component"
    assert TcbVersion(fmc=1, layout=TcbLayout.TURIN).fmc == 1


def test_a_wrong_size_is_refused_with_its_size() -> None:
    for size in (7, 9):
        with pytest.raises(FormatError) as caught:
            TcbVersion.from_bytes(bytes(size))
        assert str(caught.value) == f"TCB_VERSION: expected 8 bytes, got {size}"


def test_a_reserved_byte_is_named_with_its_value() -> None:
    data = bytearray(8)
    data[4] = 0xA5
    with pytest.raises(FormatError) as caught:
        TcbVersion.from_bytes(bytes(data), TcbLayout.TURIN)
    assert str(caught.value) == (
        "TCB_VERSION (TURIN layout): reserved byte 4 is 0xa5, must be zero"
    )


@pytest.mark.parametrize("value", [-1, 1 << 64, 2 << 64])
def test_from_int_takes_only_a_u64(value: int) -> None:
    with pytest.raises(FormatError, match=re.escape(f"TCB_VERSION: {value} is not a u64")):
        TcbVersion.from_int(value)


def test_from_int_takes_the_largest_u64_when_its_reserved_bytes_are_zero() -> None:
    top = TcbVersion.from_int(0xFF00000000FFFFFF, TcbLayout.TURIN)
    assert (top.fmc, top.boot_loader, top.tee, top.microcode) == (0xFF, 0xFF, 0xFF, 0xFF)


def test_str_names_every_component_of_the_layout() -> None:
    milan = TcbVersion(boot_loader=2, snp=5, microcode=68)
    assert str(milan) == "0x4405000000000002 (boot_loader=2 tee=0 snp=5 microcode=68)"
    turin = TcbVersion(fmc=1, boot_loader=2, tee=3, snp=4, microcode=9, layout=TcbLayout.TURIN)
    assert str(turin) == "0x0900000004030201 (fmc=1 boot_loader=2 tee=3 snp=4 microcode=9)"
