"""The PE/COFF builder's fields against Microsoft's "PE Format" rules for images, field by field:
what the COFF header, the optional header and each section header must hold, and where the
layout puts headers, raw data and virtual addresses. ``tests/interop/test_pe_builder_tools.py``
reads the same images with objdump and signs them with sbsign."""

from __future__ import annotations

import pytest

from cvm.errors import UsageError
from cvm.formats.pe.builder import CODE, DATA, SectionSpec, build_pe
from cvm.formats.pe.image import SECTION_HEADER, SECTION_HEADER_SIZE, PeImage

IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_FILE_MACHINE_I386 = 0x014C
IMAGE_FILE_EXECUTABLE_IMAGE = 0x0002
IMAGE_FILE_LARGE_ADDRESS_AWARE = 0x0020
IMAGE_FILE_32BIT_MACHINE = 0x0100
IMAGE_DLLCHARACTERISTICS_NX_COMPAT = 0x0100
DLL_CHARACTERISTICS_RESERVED = 0x000F  # "Reserved, must be zero."
IMAGE_SCN_CNT_UNINITIALIZED_DATA = 0x80


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _section_header(image: PeImage, index: int) -> dict[str, int | bytes]:
    offset = image.section_table_offset + index * SECTION_HEADER_SIZE
    return SECTION_HEADER.unpack(image.data[offset : offset + SECTION_HEADER_SIZE])


def _mixed() -> list[SectionSpec]:
    """Data before code, a section larger than a page, an empty one and a long name."""
    return [SectionSpec(".sbat", b"sbat,1\n"), SectionSpec(".vendor_cert", b"v" * 5000),
            SectionSpec(".text", b"\xc3" * 700, CODE), SectionSpec(".bss", b""),
            SectionSpec(".data", b"d" * 0x1000)]


# --- the layout -----------------------------------------------------------------------------

@pytest.mark.parametrize("count", range(1, 101))
def test_size_of_headers_is_the_headers_rounded_up_to_file_alignment(count: int) -> None:
    """SizeOfHeaders: "the combined size of an MS-DOS stub, PE header, and section headers
    rounded up to a multiple of FileAlignment"; the padding up to it is zero."""
    image = PeImage.parse(build_pe([SectionSpec(f"s{i}", b"x") for i in range(count)]))
    table_end = image.section_table_offset + count * SECTION_HEADER_SIZE
    assert image.section_table_offset == 0x40 + 4 + 0x14 + 0x70 + 16 * 8
    assert image.size_of_headers == _align(table_end, 0x200)
    assert image.data[table_end : image.size_of_headers] == bytes(
        image.size_of_headers - table_end)
    # Each section is loaded past the headers, at SectionAlignment, adjacent to the one before.
    first = image.sections[0].virtual_address
    assert first == _align(image.size_of_headers, 0x1000)
    assert [s.virtual_address for s in image.sections] == [
        first + 0x1000 * i for i in range(count)]


def test_sections_are_placed_at_their_alignments_and_size_of_image_covers_them() -> None:
    image = PeImage.parse(build_pe(_mixed()))
    assert (image.optional["section_alignment"], image.optional["file_alignment"]) == (
        0x1000, 0x200)
    expected_addresses, address = [], 0x1000
    expected_offsets, offset = [], image.size_of_headers
    for spec in _mixed():
        expected_addresses.append(address)
        address += _align(max(len(spec.data), 1), 0x1000)
        expected_offsets.append(offset if spec.data else 0)
        offset += _align(len(spec.data), 0x200)
    sections = image.sections
    assert [s.virtual_address for s in sections] == expected_addresses
    assert [s.virtual_size for s in sections] == [len(spec.data) for spec in _mixed()]
    assert [s.size_of_raw_data for s in sections] == [
        _align(len(spec.data), 0x200) for spec in _mixed()]
    # "When a section contains only uninitialized data, this field should be zero."
    assert [s.pointer_to_raw_data for s in sections] == expected_offsets
    assert [s.loaded_data for s in sections] == [spec.data for spec in _mixed()]
    # SizeOfImage: "must be a multiple of SectionAlignment", the end of the last section.
    assert image.optional["size_of_image"] == address == 0x7000
    assert image.optional["size_of_image"] % 0x1000 == 0


def test_section_headers_hold_no_relocations_or_line_numbers() -> None:
    """An image's section headers: "zero for executable images" (relocations), and line numbers
    "should be zero for an image because COFF debugging information is deprecated"."""
    image = PeImage.parse(build_pe(_mixed()))
    for index, spec in enumerate(_mixed()):
        header = _section_header(image, index)
        assert (header["pointer_to_relocations"], header["number_of_relocations"],
                header["pointer_to_linenumbers"], header["number_of_linenumbers"]) == (0, 0, 0, 0)
        assert header["characteristics"] == spec.characteristics


# --- the entry point and the sizes ------------------------------------------------------------

def test_the_entry_point_is_the_first_code_section_wherever_it_lies() -> None:
    image = PeImage.parse(build_pe(_mixed()))
    text = image.section(".text")
    assert text is not None and text.virtual_address == 0x4000
    assert image.optional["address_of_entry_point"] == 0x4000
    assert image.optional["base_of_code"] == 0x4000


def test_an_image_without_code_has_no_entry_point() -> None:
    image = PeImage.parse(build_pe([SectionSpec(".data", b"d"), SectionSpec(".rodata", b"r")]))
    assert image.optional["address_of_entry_point"] == 0
    assert image.optional["base_of_code"] == 0
    assert image.optional["size_of_code"] == 0


def test_code_and_data_sizes_are_the_sums_of_their_sections() -> None:
    image = PeImage.parse(build_pe([*_mixed(), SectionSpec(".text2", b"\x90" * 10, CODE)]))
    assert image.optional["size_of_code"] == 0x400 + 0x200
    assert image.optional["size_of_initialized_data"] == 0x200 + 0x1400 + 0 + 0x1000
    uninitialized = [s for s in image.sections
                     if s.characteristics & IMAGE_SCN_CNT_UNINITIALIZED_DATA]
    assert uninitialized == []
    assert image.optional["size_of_uninitialized_data"] == 0


# --- the COFF and optional header fields ------------------------------------------------------

def test_a_pe32_plus_image_is_amd64_large_address_aware_and_nx_compatible() -> None:
    image = PeImage.parse(build_pe(_mixed()))
    assert image.is_pe32_plus
    assert image.coff["machine"] == IMAGE_FILE_MACHINE_AMD64
    assert image.coff["number_of_sections"] == 5
    assert image.coff["characteristics"] == (
        IMAGE_FILE_EXECUTABLE_IMAGE | IMAGE_FILE_LARGE_ADDRESS_AWARE)
    assert image.coff["size_of_optional_header"] == 0x70 + 16 * 8
    dll = image.optional["dll_characteristics"]
    assert dll & IMAGE_DLLCHARACTERISTICS_NX_COMPAT
    assert dll & DLL_CHARACTERISTICS_RESERVED == 0
    assert image.optional["subsystem"] == 10  # EFI application
    assert image.optional["number_of_rva_and_sizes"] == 16


def test_a_pe32_image_is_i386_32_bit() -> None:
    data = build_pe([SectionSpec(".text", b"\xc3" * 50, CODE), SectionSpec(".data", b"d")],
                    pe32=True)
    image = PeImage.parse(data)
    assert not image.is_pe32_plus
    assert image.coff["machine"] == IMAGE_FILE_MACHINE_I386
    assert image.coff["characteristics"] == (
        IMAGE_FILE_EXECUTABLE_IMAGE | IMAGE_FILE_32BIT_MACHINE)
    assert image.coff["size_of_optional_header"] == 0x60 + 16 * 8
    assert image.optional["base_of_code"] == 0x1000
    # BaseOfData: "the address ... of the beginning-of-data section".
    assert image.optional["base_of_data"] == 0x2000
    only_code = PeImage.parse(build_pe([SectionSpec(".text", b"\xc3", CODE)], pe32=True))
    assert only_code.optional["base_of_data"] == 0


def test_reserved_and_unused_fields_are_zero() -> None:
    """Win32VersionValue and LoaderFlags: "Reserved, must be 0"; ImageBase "must be a multiple
    of 64 K"; CheckSum 0 (not computed: UEFI does not check it, sbsign writes it); a stack or
    heap commit no larger than its reserve; no symbols."""
    for pe32 in (False, True):
        image = PeImage.parse(build_pe(_mixed(), pe32=pe32))
        optional = image.optional
        assert optional["win32_version_value"] == 0
        assert optional["loader_flags"] == 0
        assert optional["image_base"] % 0x10000 == 0
        assert optional["check_sum"] in (0, image.computed_checksum())
        assert optional["size_of_stack_commit"] <= optional["size_of_stack_reserve"]
        assert optional["size_of_heap_commit"] <= optional["size_of_heap_reserve"]
        assert image.coff["number_of_symbols"] == 0
        assert all(d.virtual_address == d.size == 0 for d in image.data_directories)


def test_the_time_stamp_is_the_one_given() -> None:
    image = PeImage.parse(build_pe(_mixed(), timestamp=0x12345678))
    assert image.coff["time_date_stamp"] == 0x12345678


def test_the_ms_dos_header_points_at_the_pe_signature() -> None:
    data = build_pe(_mixed())
    assert data[:2] == b"MZ"
    assert int.from_bytes(data[0x3C:0x40], "little") == 0x40
    assert data[2:0x3C] == bytes(0x3A)
    assert data[0x40:0x44] == b"PE\0\0"


# --- names and the string table ---------------------------------------------------------------

def test_names_of_eight_bytes_stay_in_the_header_and_longer_ones_go_to_the_string_table() -> None:
    data = build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec("12345678", b"a"),
                     SectionSpec("123456789", b"b"), SectionSpec(".sbatlevel", b"c")])
    image = PeImage.parse(data)
    assert [s.raw_name for s in image.sections] == [
        b".text\0\0\0", b"12345678", b"/4\0\0\0\0\0\0", b"/14\0\0\0\0\0"]
    assert [s.name for s in image.sections] == [".text", "12345678", "123456789", ".sbatlevel"]
    # The table follows the last section's raw data; its first 4 bytes are its size, little
    # endian, counting themselves.
    table = image.coff["pointer_to_symbol_table"]
    last = image.sections[-1]
    assert table == last.pointer_to_raw_data + last.size_of_raw_data
    assert data[table:] == (25).to_bytes(4, "little") + b"123456789\0.sbatlevel\0"


def test_without_long_names_there_is_no_string_table() -> None:
    data = build_pe([SectionSpec(".text", b"\xc3", CODE)], trailer=b"T")
    image = PeImage.parse(data)
    assert image.coff["pointer_to_symbol_table"] == 0
    assert data == data[:0x400] + b"T" and len(data) == 0x401


@pytest.mark.parametrize("name", ["", ".te\0xt", "\0"])
def test_a_section_name_empty_or_with_a_nul_is_refused(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        build_pe([SectionSpec(name, b"x", DATA)])
    assert str(caught.value) == f"section name {name!r} is empty or holds a NUL"


def test_an_image_needs_a_section() -> None:
    with pytest.raises(UsageError) as caught:
        build_pe([])
    assert str(caught.value) == "a PE image needs at least one section"
