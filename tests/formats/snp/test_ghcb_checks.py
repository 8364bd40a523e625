"""GHCB, the GHCB MSR protocol and the PSC buffer: each bit and each refusal, pinned.

The guest reads back through the shared GHCB what the host wrote, and the host reads what the
guest wrote: the valid bitmap decides which registers a side may trust, the MSR values carry
the function in their low 12 bits, and a page-state change names each page's frame and
operation. A bit moved or a check loosened here lets one side read what the other never said.
"""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.ghcb import GHCB_SIZE, SAVE_AREA_REGISTERS, SHARED_BUFFER_SIZE, Ghcb
from cvm.formats.snp.ghcb_msr import (
    GHCB_MSR,
    MsrFunction,
    MsrMessage,
    PscOperation,
    cpuid_request,
    cpuid_response,
    psc_request,
    psc_response,
    register_ghcb_request,
    run_vmpl_request,
    run_vmpl_response,
    sev_info_request,
    sev_info_response,
    terminate,
)
from cvm.formats.snp.psc_buffer import NAE_PSC, PSC_MAX_ENTRIES, PscBuffer, PscEntry

# -- GHCB ----------------------------------------------------------------------------------------

# Each register's save-area offset (GHCB spec 56421 Table 3) and so its valid-bitmap bit.
OFFSETS = {
    "cpl": 0x0CB, "xss": 0x140, "dr7": 0x160, "rax": 0x1F8, "rcx": 0x308, "rdx": 0x310,
    "rbx": 0x318, "sw_exitcode": 0x390, "sw_exitinfo1": 0x398, "sw_exitinfo2": 0x3A0,
    "sw_scratch": 0x3A8, "xcr0": 0x3E8,
}


@pytest.mark.parametrize("name", SAVE_AREA_REGISTERS)
def test_each_register_sits_at_its_offset_with_its_valid_bit(name: str) -> None:
    value = 0x5A if name == "cpl" else 0x0102030405060708
    data = Ghcb.build(**{name: value}).to_bytes()
    offset = OFFSETS[name]
    size = 1 if name == "cpl" else 8
    assert int.from_bytes(data[offset : offset + size], "little") == value
    assert int.from_bytes(data[0x3F0:0x400], "little") == 1 << (offset // 8)
    others = bytearray(data)
    others[offset : offset + size] = bytes(size)
    others[0x3F0:0x400] = bytes(16)
    assert others[:0xFF0] == bytes(0x800) + bytes(SHARED_BUFFER_SIZE)
    parsed = Ghcb.from_bytes(data)
    assert parsed.get(name) == value
    assert [n for n in SAVE_AREA_REGISTERS if parsed.get(n) is not None] == [name]


def test_a_register_marked_valid_with_the_value_zero_is_present() -> None:
    parsed = Ghcb.from_bytes(Ghcb.build(rax=0, sw_exitinfo2=0).to_bytes())
    assert parsed.get("rax") == 0 and parsed.get("sw_exitinfo2") == 0
    assert parsed.get("rbx") is None
    assert parsed.registers == (("rax", 0), ("sw_exitinfo2", 0))


def test_a_value_without_its_valid_bit_is_refused_by_name() -> None:
    for name in SAVE_AREA_REGISTERS:
        data = bytearray(Ghcb.build(rax=1).to_bytes() if name != "rax" else Ghcb().to_bytes())
        data[OFFSETS[name]] = 1
        with pytest.raises(FormatError) as caught:
            Ghcb.from_bytes(bytes(data))
        assert str(caught.value) == f"GHCB: {name} is non-zero but not marked valid"


@pytest.mark.parametrize("bit", [0, 1, 24, 26, 62, 64, 96, 127])
def test_a_valid_bit_for_a_quadword_cvm_does_not_exchange_is_refused(bit: int) -> None:
    data = bytearray(Ghcb.build(rax=1).to_bytes())
    bitmap = int.from_bytes(data[0x3F0:0x400], "little") | 1 << bit
    data[0x3F0:0x400] = bitmap.to_bytes(16, "little")
    with pytest.raises(FormatError) as caught:
        Ghcb.from_bytes(bytes(data))
    assert str(caught.value) == f"GHCB: valid bitmap {bitmap:#x} marks unknown quadwords"


def test_the_shared_buffer_version_and_usage_are_read_and_written() -> None:
    ghcb = Ghcb((("rax", 3),), b"\x01" + bytes(SHARED_BUFFER_SIZE - 2) + b"\x02", 0x1234, 0xABCD)
    data = ghcb.to_bytes()
    assert len(data) == GHCB_SIZE
    assert data[0x800] == 1 and data[0xFEF] == 2
    assert data[0xFFA:0xFFC] == bytes([0x34, 0x12])
    assert data[0xFFC:] == bytes([0xCD, 0xAB, 0, 0])
    assert Ghcb.from_bytes(data) == ghcb
    assert Ghcb().protocol_version == 2 and Ghcb().ghcb_usage == 0


def test_the_x87_state_gpa_is_read_and_written_at_0x400() -> None:
    ghcb = Ghcb(x87_state_gpa=0x0123_4567_89AB_C000)
    data = ghcb.to_bytes()
    assert data[0x400:0x408] == (0x0123_4567_89AB_C000).to_bytes(8, "little")
    assert Ghcb.from_bytes(data) == ghcb
    assert Ghcb.from_bytes(data).x87_state_gpa == 0x0123_4567_89AB_C000
    assert Ghcb().to_bytes()[0x400:0x408] == bytes(8)


def test_build_pads_the_shared_buffer_and_sorts_the_registers() -> None:
    ghcb = Ghcb.build(b"abc", rcx=2, rax=1)
    assert ghcb.shared_buffer == b"abc" + bytes(SHARED_BUFFER_SIZE - 3)
    assert ghcb.registers == (("rax", 1), ("rcx", 2))
    assert Ghcb.build().shared_buffer == bytes(SHARED_BUFFER_SIZE)


def test_the_ghcb_constructor_refuses_unknown_registers_and_buffer_sizes() -> None:
    with pytest.raises(UsageError) as caught:
        Ghcb.build(rip=1)
    assert str(caught.value) == "GHCB has no save-area register 'rip'"
    with pytest.raises(UsageError) as caught:
        Ghcb((), bytes(SHARED_BUFFER_SIZE - 1))
    assert str(caught.value) == "GHCB shared buffer must be 0x7f0 bytes"
    with pytest.raises(UsageError):
        Ghcb.build(bytes(SHARED_BUFFER_SIZE + 1))


# -- the GHCB MSR protocol -----------------------------------------------------------------------


def test_each_msr_request_and_response_is_table_2() -> None:
    assert GHCB_MSR == 0xC001_0130
    assert sev_info_request() == 0x002
    assert sev_info_response(2, 1, 51) == 0x0002_0001_3300_0001
    assert cpuid_request(0x8000_001F, "eax") == 0x8000_001F_0000_0004
    assert cpuid_request(0x8000_001F, "ebx") == 0x8000_001F_4000_0004
    assert cpuid_request(1, "edx") == 0x0000_0001_C000_0004
    assert cpuid_response(0xDEAD_BEEF, "ecx") == 0xDEAD_BEEF_8000_0005
    assert register_ghcb_request(0x1234_5FFF) == 0x1234_5012
    assert psc_request(0x7000_0ABC, PscOperation.PRIVATE) == 0x0010_0000_7000_0014
    assert psc_request(0x7000_0000, PscOperation.SHARED) == 0x0020_0000_7000_0014
    assert psc_response(0) == 0x015 and psc_response(7) == 0x0000_0007_0000_0015
    assert run_vmpl_request(0) == 0x016 and run_vmpl_request(3) == 0x0000_0003_0000_0016
    assert run_vmpl_response(5) == 0x0000_0005_0000_0017
    assert terminate(0, 1) == 0x0001_0100 and terminate(0xF, 0xFF) == 0x00FF_F100


def test_msr_requests_refuse_values_they_cannot_carry() -> None:
    with pytest.raises(UsageError) as caught:
        cpuid_request(1, "rax")
    assert str(caught.value) == "CPUID register must be one of ('eax', 'ebx', 'ecx', 'edx')"
    for vmpl in (-1, 4):
        with pytest.raises(UsageError) as caught:
            run_vmpl_request(vmpl)
        assert str(caught.value) == f"VMPL {vmpl} is not 0..3"


@pytest.mark.parametrize("function", list(MsrFunction))
def test_every_function_parses_and_its_data_is_the_upper_52_bits(function: MsrFunction) -> None:
    value = (0xF_FFFF_FFFF_FFFF << 12) | function
    message = MsrMessage.parse(value)
    assert message.function is function and message.data == 0xF_FFFF_FFFF_FFFF
    assert message.to_int() == value
    assert MsrMessage(function, 0x123).to_int() == 0x123 << 12 | function


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0x000, "GHCB MSR function 0x0 is unknown"),
        (0x003, "GHCB MSR function 0x3 is unknown"),
        (0x0FFF, "GHCB MSR function 0xfff is unknown"),
        (-1, "GHCB MSR value -0x1 is not 64 bits"),
        (1 << 64, "GHCB MSR value 0x10000000000000000 is not 64 bits"),
    ],
)
def test_an_msr_value_with_an_unknown_function_is_refused(value: int, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        MsrMessage.parse(value)
    assert str(caught.value) == message


def test_the_function_is_only_the_low_12_bits() -> None:
    assert MsrMessage.parse(0x1012).function is MsrFunction.REGISTER_GHCB_REQUEST
    assert MsrMessage.parse(0x1012).data == 1
    assert MsrMessage.parse((1 << 64) - 0x1000 + 0x100).function is MsrFunction.TERMINATE


# -- the page-state-change buffer ----------------------------------------------------------------


def test_an_entry_is_table_8() -> None:
    assert NAE_PSC == 0x8000_0010
    entry = PscEntry(gfn=0xFF_FFFF_FFFF, operation=4, huge=True, current_page=0xABC)
    assert entry.to_int() == 0x014F_FFFF_FFFF_FABC
    assert PscEntry.from_int(entry.to_int()) == entry
    assert PscEntry(1, 1).to_int() == 0x0010_0000_0000_1000
    assert PscEntry.from_int(0x0020_0000_0000_2000) == PscEntry(2, 2)


@pytest.mark.parametrize(
    "entry", [PscEntry(1, 0), PscEntry(1, 5), PscEntry(1 << 40, 1), PscEntry(-1, 1)]
)
def test_an_entry_that_cannot_be_written_is_refused(entry: PscEntry) -> None:
    with pytest.raises(UsageError) as caught:
        entry.to_int()
    assert str(caught.value) == f"bad page-state change entry {entry}"


def test_the_largest_frame_number_is_written() -> None:
    assert PscEntry((1 << 40) - 1, 3).to_int() == 0x003F_FFFF_FFFF_F000
    assert PscEntry(0, 1).to_int() == 0x0010_0000_0000_0000


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1 << 57 | 1 << 52, "page-state change entry 0x210000000000000: reserved bits 63:57 set"),
        (1 << 63 | 1 << 52, "page-state change entry 0x8010000000000000: reserved bits 63:57 set"),
        (0, "page-state change entry 0x0: unknown operation 0"),
        (5 << 52, "page-state change entry 0x50000000000000: unknown operation 5"),
        (0xF << 52, "page-state change entry 0xf0000000000000: unknown operation 15"),
    ],
)
def test_an_entry_with_reserved_bits_or_an_unknown_operation_is_refused(
    value: int, message: str
) -> None:
    with pytest.raises(FormatError) as caught:
        PscEntry.from_int(value)
    assert str(caught.value) == message


def test_the_buffer_header_counts_the_entries() -> None:
    entries = (PscEntry(1, 1), PscEntry(2, 2), PscEntry(3, 1))
    data = PscBuffer(entries, cur_entry=1).to_bytes()
    assert data[:8] == bytes([1, 0, 2, 0, 0, 0, 0, 0]) and len(data) == 8 + 3 * 8
    assert PscBuffer.from_bytes(data) == PscBuffer(entries, 1)
    done = PscBuffer(entries, cur_entry=3).to_bytes()
    assert PscBuffer.from_bytes(done).cur_entry == 3


def test_a_buffer_holds_1_to_253_entries() -> None:
    for count in (0, PSC_MAX_ENTRIES + 1):
        with pytest.raises(UsageError) as caught:
            PscBuffer(tuple(PscEntry(i, 1) for i in range(count))).to_bytes()
        assert str(caught.value) == "a PSC request holds 1..253 entries"
    full = PscBuffer(tuple(PscEntry(i, 1) for i in range(PSC_MAX_ENTRIES)))
    data = full.to_bytes()
    assert len(data) == 8 + 253 * 8 and PscBuffer.from_bytes(data) == full


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (bytes([0, 0, 0, 0, 1, 0, 0, 0]), "reserved header bytes are not zero"),
        (bytes([0, 0, 0, 0, 0, 0, 0, 0x80]), "reserved header bytes are not zero"),
        (bytes([0, 0, 253, 0, 0, 0, 0, 0]), "entry range 0..253 is invalid"),
        (bytes([3, 0, 1, 0, 0, 0, 0, 0]), "entry range 3..1 is invalid"),
    ],
)
def test_a_buffer_with_a_bad_header_is_refused(header: bytes, message: str) -> None:
    data = header + PscEntry(1, 1).to_int().to_bytes(8, "little") * 254
    with pytest.raises(FormatError) as caught:
        PscBuffer.from_bytes(data)
    assert str(caught.value) == f"PSC buffer: {message} (at offset 0x8)"


def test_a_buffer_takes_the_last_entry_index_and_one_past_it() -> None:
    entries = tuple(PscEntry(i, 2) for i in range(PSC_MAX_ENTRIES))
    data = bytearray(PscBuffer(entries).to_bytes())
    data[0:2] = (PSC_MAX_ENTRIES).to_bytes(2, "little")  # every entry done
    assert PscBuffer.from_bytes(bytes(data)).cur_entry == PSC_MAX_ENTRIES
    data[2:4] = (PSC_MAX_ENTRIES - 1).to_bytes(2, "little")
    assert len(PscBuffer.from_bytes(bytes(data)).entries) == PSC_MAX_ENTRIES


def test_nothing_may_follow_the_last_entry() -> None:
    data = PscBuffer((PscEntry(1, 1),)).to_bytes().ljust(SHARED_BUFFER_SIZE, b"\0")
    assert PscBuffer.from_bytes(data) == PscBuffer((PscEntry(1, 1),))
    for offset in (16, SHARED_BUFFER_SIZE - 1):
        dirty = bytearray(data)
        dirty[offset] = 1
        with pytest.raises(FormatError) as caught:
            PscBuffer.from_bytes(bytes(dirty))
        assert str(caught.value) == "PSC buffer: bytes after the last entry are not zero"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00", "cur_entry needs 2 bytes at offset 0x0, only 1 left"),
        (bytes(3), "end_entry needs 2 bytes at offset 0x2, only 1 left"),
        (bytes(7), "reserved needs 4 bytes at offset 0x4, only 3 left"),
        (bytes([0, 0, 1, 0, 0, 0, 0, 0]) + PscEntry(1, 1).to_int().to_bytes(8, "little"),
         "entry needs 8 bytes at offset 0x10, only 0 left"),
    ],
)
def test_a_cut_buffer_names_the_field_it_ends_in(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        PscBuffer.from_bytes(data)
    assert str(caught.value) == f"PSC buffer: {message}"
