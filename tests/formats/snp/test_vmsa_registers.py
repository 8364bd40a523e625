"""The world switch's register codec: the same bytes and registers as the full save area."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.vmsa import (
    REGISTER_NAMES,
    VMSA_LAYOUT,
    VMSA_SIZE,
    Vmsa,
    pack_registers,
    pack_registers_exact,
    unpack_registers,
)

WIDTHS = {name: VMSA_LAYOUT.field(name).size for name in REGISTER_NAMES}
REGISTER_FILES = st.fixed_dictionaries(
    {name: st.integers(0, (1 << (8 * size)) - 1) for name, size in WIDTHS.items()})


@given(REGISTER_FILES)
def test_pack_is_the_save_area_with_zero_areas(registers: dict[str, int]) -> None:
    page = pack_registers(registers)
    assert page == Vmsa(registers).to_bytes()
    assert unpack_registers(page) == dict(Vmsa.from_bytes(page).registers) == registers


@given(st.binary(min_size=VMSA_SIZE, max_size=VMSA_SIZE))
def test_unpack_reads_every_register_of_any_page(page: bytes) -> None:
    assert unpack_registers(page) == dict(Vmsa.from_bytes(page).registers)


def test_each_register_lands_at_its_own_offset() -> None:
    for name, size in WIDTHS.items():
        registers = dict.fromkeys(REGISTER_NAMES, 0)
        registers[name] = (1 << (8 * size)) - 1
        page = pack_registers(registers)
        field = VMSA_LAYOUT.field(name)
        assert page[field.offset : field.end] == b"\xff" * size
        assert page.count(0) == VMSA_SIZE - size


def test_a_partial_register_file_takes_the_defaults() -> None:
    assert pack_registers({"rax": 5}) == Vmsa({"rax": 5}).to_bytes()


@pytest.mark.parametrize("value", [1 << 64, -1, True])
def test_a_value_out_of_range_or_not_an_int_is_refused(value: int) -> None:
    registers = dict.fromkeys(REGISTER_NAMES, 0)
    registers["rax"] = value
    with pytest.raises(UsageError, match="rax"):
        pack_registers(registers)


def test_an_unknown_register_is_refused() -> None:
    registers = dict.fromkeys(REGISTER_NAMES, 0)
    del registers["rax"]
    registers["rxx"] = 1
    with pytest.raises(UsageError, match="rxx"):
        pack_registers(registers)


def test_a_page_of_another_size_is_refused() -> None:
    with pytest.raises(FormatError, match="expected 0x1000 bytes"):
        unpack_registers(bytes(VMSA_SIZE - 1))


@given(REGISTER_FILES)
def test_an_exact_pack_unpacks_to_the_same_registers(registers: dict[str, int]) -> None:
    page = pack_registers_exact(registers)
    assert page == pack_registers(registers)
    assert page is not None and unpack_registers(page) == registers


@pytest.mark.parametrize("change", ["missing", "extra", "unknown", "wide", "negative", "bool"])
def test_a_register_file_that_would_not_unpack_to_itself_is_not_exact(change: str) -> None:
    registers: dict[str, int] = dict.fromkeys(REGISTER_NAMES, 0)
    if change == "missing":
        del registers["rax"]
    elif change == "extra":
        registers["rxx"] = 0
    elif change == "unknown":
        del registers["rax"]
        registers["rxx"] = 0
    else:
        registers["rax"] = {"wide": 1 << 64, "negative": -1, "bool": True}[change]
    assert pack_registers_exact(registers) is None
