"""The PE/COFF reader's checks one by one: each bound it enforces (with its message), the
offsets Authenticode hashing relies on, the data directories, the sections' data and the
``.sbat`` metadata as shim picks them."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.certificate_table import WinCertificate, certificate_table_bytes
from cvm.formats.pe.image import DataDirectory, PeImage, directory_name, sbat_metadata

SBAT = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
PE = 0x40                 # e_lfanew of the builder's images
OPTIONAL = PE + 4 + 0x14  # the optional header
DIRECTORIES = OPTIONAL + 0x70
TABLE = OPTIONAL + 0x70 + 16 * 8   # the section table of a PE32+ image with 16 directories


def _image(*sections: SectionSpec, trailer: bytes = b"", pe32: bool = False) -> bytes:
    return build_pe(list(sections) or [SectionSpec(".text", b"\xc3" * 16, CODE)],
                    trailer=trailer, pe32=pe32)


def _put(data: bytes, offset: int, value: int, size: int) -> bytes:
    return data[:offset] + value.to_bytes(size, "little") + data[offset + size:]


def _refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        PeImage.parse(data)
    assert str(caught.value) == message


def _signed(table: bytes, start: int | None = None, size: int | None = None) -> bytes:
    body = _image()
    data = body + table
    data = _put(data, DIRECTORIES + 32, len(body) if start is None else start, 4)
    return _put(data, DIRECTORIES + 36, len(table) if size is None else size, 4)


# --- the headers ----------------------------------------------------------------------------

def test_the_ms_dos_header() -> None:
    data = _image()
    _refused(b"MZ" + bytes(0x3D), "PE image: no MS-DOS header (MZ)")
    _refused(b"ZM" + data[2:], "PE image: no MS-DOS header (MZ)")
    _refused(data[:0x40], "PE image: no PE signature at e_lfanew 0x40")


def test_the_pe_signature_at_e_lfanew() -> None:
    data = _image()
    _refused(_put(data, 0x3C, 0x44, 4), "PE image: no PE signature at e_lfanew 0x44")
    _refused(data[:PE] + b"PE\0\1" + data[PE + 4:], "PE image: no PE signature at e_lfanew 0x40")


def test_a_cut_coff_header_or_magic_is_outside_the_file() -> None:
    data = _image()
    _refused(data[: PE + 4 + 0x13], "PE image: COFF header at 0x44..0x58 is outside the file")
    _refused(data[: OPTIONAL + 1], "PE image: magic at 0x58..0x5a is outside the file")
    _refused(data[: OPTIONAL + 0x6F], "PE image: optional header at 0x58..0xc8 is outside the file")


def test_the_optional_header_magic() -> None:
    _refused(_put(_image(), OPTIONAL, 0x107, 2), "PE image: unknown optional header magic 0x107")
    assert PeImage.parse(_image()).is_pe32_plus
    assert not PeImage.parse(_image(pe32=True)).is_pe32_plus


@pytest.mark.parametrize(("optional_size", "count"), [
    (0x6F, 16), (0x70 + 15 * 8, 16), (0x70 + 17 * 8, 17), (0x70 + 7, 1)])
def test_the_directories_must_fit_the_optional_header(optional_size: int, count: int) -> None:
    data = _put(_image(), PE + 4 + 0x10, optional_size, 2)
    data = _put(data, OPTIONAL + 0x6C, count, 4)
    _refused(data, f"PE image: {count} data directories do not fit an optional header of "
                   f"{optional_size:#x} bytes")


def test_fewer_directories_than_room_for_them() -> None:
    image = PeImage.parse(_put(_image(), OPTIONAL + 0x6C, 4, 4))
    assert [d.index for d in image.data_directories] == [0, 1, 2, 3]
    assert image.certificate_directory_offset is None
    assert image.certificate_table == DataDirectory(4, 0, 0)
    image = PeImage.parse(_put(_image(), OPTIONAL + 0x6C, 5, 4))
    assert image.certificate_directory_offset == DIRECTORIES + 32
    # An optional header with room for exactly its directories: the section table follows it.
    data = _put(_put(_image(), PE + 4 + 0x10, 0x70 + 5 * 8, 2), OPTIONAL + 0x6C, 5, 4)
    image = PeImage.parse(data)
    assert len(image.data_directories) == 5
    assert image.section_table_offset == image.sections[0].header_offset == OPTIONAL + 0x98
    assert image.sections[0].raw_name == bytes(8)


def test_the_directories_are_read_in_order() -> None:
    data = _image()
    for index in range(16):
        data = _put(data, DIRECTORIES + 8 * index, 0x1000 + index, 4)
        data = _put(data, DIRECTORIES + 8 * index + 4, 0x10 * index if index != 4 else 0, 4)
    image = PeImage.parse(data)
    assert image.data_directories == tuple(
        DataDirectory(i, 0x1000 + i, 0x10 * i if i != 4 else 0) for i in range(16))
    assert [d.name for d in image.data_directories][:6] == [
        "export", "import", "resource", "exception", "certificate", "base_relocation"]
    assert directory_name(15) == "reserved" and directory_name(16) == "unknown"


def test_the_offsets_authenticode_skips() -> None:
    image = PeImage.parse(_image())
    assert image.optional_header_offset == OPTIONAL
    assert image.checksum_offset == OPTIONAL + 0x40
    assert image.data_directory_offset == OPTIONAL + 0x70
    assert image.certificate_directory_offset == OPTIONAL + 0x70 + 32
    assert image.section_table_offset == TABLE and image.size_of_headers == 0x200
    small = PeImage.parse(_image(pe32=True))
    assert small.checksum_offset == OPTIONAL + 0x40
    assert small.data_directory_offset == OPTIONAL + 0x60
    assert small.certificate_directory_offset == OPTIONAL + 0x60 + 32


def test_the_checksum_of_an_odd_sized_file() -> None:
    data = _image(trailer=b"\x01\x02\x03")
    image = PeImage.parse(data)
    words = bytearray(data + b"\0")
    words[image.checksum_offset : image.checksum_offset + 4] = bytes(4)
    total = 0
    for i in range(0, len(words), 2):
        total += int.from_bytes(words[i : i + 2], "little")
        total = (total & 0xFFFF) + (total >> 16)
    assert image.computed_checksum() == total + len(data)
    # The CheckSum field's own value does not count.
    patched = _put(data, image.checksum_offset, 0xFFFFFFFF, 4)
    assert PeImage.parse(patched).computed_checksum() == image.computed_checksum()


# --- the section table and the sections -----------------------------------------------------

def test_the_section_table_must_end_inside_the_headers() -> None:
    data = _image()
    _refused(_put(data, OPTIONAL + 0x3C, TABLE + 0x27, 4),
             f"PE image: section table ends at {TABLE + 0x28:#x}, SizeOfHeaders is "
             f"{TABLE + 0x27:#x}, file is {len(data):#x} bytes")
    assert PeImage.parse(_put(data, OPTIONAL + 0x3C, TABLE + 0x28, 4)).size_of_headers == (
        TABLE + 0x28)
    _refused(_put(data, OPTIONAL + 0x3C, len(data) + 1, 4),
             f"PE image: section table ends at {TABLE + 0x28:#x}, SizeOfHeaders is "
             f"{len(data) + 1:#x}, file is {len(data):#x} bytes")
    _refused(_put(data, PE + 6, 0x1000, 2),
             f"PE image: section table at {TABLE:#x}..{TABLE + 0x28000:#x} is outside the file")


def _section_field(data: bytes, index: int, offset: int, value: int, size: int = 4) -> bytes:
    return _put(data, TABLE + 0x28 * index + offset, value, size)


def test_section_data_must_lie_after_the_headers_and_inside_the_file() -> None:
    data = _image()
    _refused(_section_field(data, 0, 0x14, 0x1FF),
             f"PE image: section 0 raw data 0x1ff+0x200 is outside the file ({len(data):#x} "
             "bytes) or inside the headers")
    _refused(_section_field(data, 0, 0x10, 0x201),
             f"PE image: section 0 raw data 0x200+0x201 is outside the file ({len(data):#x} "
             "bytes) or inside the headers")
    # Raw data ending at the file's end, or none at all wherever it points, is accepted.
    assert PeImage.parse(_section_field(data, 0, 0x10, 0x100)).sections[0].data == (
        b"\xc3" * 16 + bytes(0xF0))
    empty = PeImage.parse(_section_field(_section_field(data, 0, 0x10, 0), 0, 0x14, 0x10))
    assert empty.sections[0].data == b"" and empty.sections[0].loaded_data == bytes(16)


def test_a_section_reads_its_fields() -> None:
    data = _image(SectionSpec(".text", b"\xc3" * 16, CODE), SectionSpec(".data", b"d" * 700))
    (text, more) = PeImage.parse(data).sections
    assert (text.index, text.header_offset, text.raw_name, text.name) == (
        0, TABLE, b".text\0\0\0", ".text")
    assert (text.virtual_size, text.virtual_address, text.size_of_raw_data,
            text.pointer_to_raw_data, text.characteristics) == (16, 0x1000, 0x200, 0x200, CODE)
    assert (more.index, more.header_offset, more.pointer_to_raw_data, more.size_of_raw_data,
            more.virtual_address) == (1, TABLE + 0x28, 0x400, 0x400, 0x2000)
    assert more.data == b"d" * 700 + bytes(0x400 - 700)
    assert more.loaded_data == b"d" * 700


def test_loaded_data_is_cut_or_zero_filled_to_the_virtual_size() -> None:
    data = _section_field(_image(), 0, 0x08, 0x300)
    assert PeImage.parse(data).sections[0].loaded_data == b"\xc3" * 16 + bytes(0x300 - 16)
    data = _section_field(_image(), 0, 0x08, 4)
    assert PeImage.parse(data).sections[0].loaded_data == b"\xc3" * 4


def test_long_section_names_come_from_the_string_table() -> None:
    data = _image(SectionSpec(".text", b"\xc3", CODE), SectionSpec(".vendor_cert", b"v"))
    image = PeImage.parse(data)
    assert [s.raw_name for s in image.sections] == [b".text\0\0\0", b"/4\0\0\0\0\0\0"]
    assert image.section(".vendor_cert") is image.sections[1]
    # Without a symbol table pointer the name stays as written.
    plain = PeImage.parse(_put(data, PE + 4 + 8, 0, 4))
    assert plain.sections[1].name == "/4"
    # A symbol count moves the string table by 18 bytes a symbol.
    table = int.from_bytes(data[PE + 4 + 8 : PE + 4 + 12], "little")
    moved = _put(_put(data, PE + 4 + 8, table - 18, 4), PE + 4 + 12, 1, 4)
    assert PeImage.parse(moved).sections[1].name == ".vendor_cert"
    # A reference past the file's end, or without a terminating NUL, is refused.
    _refused(_put(data, PE + 4 + 8, len(data), 4),
             "PE section name /4: string table reference out of the file")
    _refused(data[:-1] + b"x", "PE section name /4: string table reference out of the file")
    # "/" followed by something else is an ordinary name.
    odd = data[: TABLE + 0x28] + b"/x\0\0\0\0\0\0" + data[TABLE + 0x30:]
    assert PeImage.parse(odd).sections[1].name == "/x"


# --- the certificate table ------------------------------------------------------------------

def test_a_certificate_table_is_read_where_directory_4_points() -> None:
    table = certificate_table_bytes([WinCertificate(b"\x30\x01\x02")])
    image = PeImage.parse(_signed(table))
    assert image.certificates == (WinCertificate(b"\x30\x01\x02"),)
    assert image.certificate_table == DataDirectory(4, len(_image()), len(table))


def test_a_certificate_table_outside_the_file_or_in_the_headers_is_refused() -> None:
    table = certificate_table_bytes([WinCertificate(b"\x30\x01\x02")])
    size = len(_image()) + len(table)
    _refused(_signed(table, size=len(table) + 1),
             f"PE image: certificate table {len(_image()):#x}+{len(table) + 1:#x} lies outside "
             f"the file ({size:#x} bytes) or inside the headers")
    _refused(_signed(table, start=0x1FF),
             f"PE image: certificate table 0x1ff+{len(table):#x} lies outside "
             f"the file ({size:#x} bytes) or inside the headers")
    # A table starting right at SizeOfHeaders is inside the file; its bytes are then parsed.
    with pytest.raises(FormatError, match="certificate table: entry at 0x0"):
        PeImage.parse(_signed(table, start=0x200))
    # A size of zero means no table, wherever the address points.
    assert PeImage.parse(_signed(b"", start=0xFFFFFFFF, size=0)).certificates == ()


# --- the .sbat metadata ---------------------------------------------------------------------

def test_the_sbat_metadata_are_the_virtual_size_bytes() -> None:
    image = PeImage.parse(_image(SectionSpec(".text", b"\xc3", CODE), SectionSpec(".sbat", SBAT)))
    assert image.sbat == SBAT
    assert sbat_metadata(image.sections) == SBAT
    assert PeImage.parse(_image()).sbat is None


def test_two_sbat_sections_are_refused_as_shim_does() -> None:
    data = _image(SectionSpec(".sbat", SBAT), SectionSpec(".sbat", b"grub,1,x,y,z,w\n"))
    with pytest.raises(FormatError) as caught:
        _ = PeImage.parse(data).sbat
    assert str(caught.value) == "PE image: 2 .sbat sections (shim loads none)"


@pytest.mark.parametrize(("offset", "size"), [(0x18, 4), (0x20, 2)])
def test_an_sbat_section_with_relocations_is_refused(offset: int, size: int) -> None:
    data = _image(SectionSpec(".text", b"\xc3", CODE), SectionSpec(".sbat", SBAT))
    image = PeImage.parse(_section_field(data, 1, offset, 1, size))
    with pytest.raises(FormatError) as caught:
        _ = image.sbat
    assert str(caught.value) == "PE image: section 1 (.sbat) has relocations"


def test_an_sbat_section_larger_in_memory_than_on_disk_is_ignored() -> None:
    data = _image(SectionSpec(".text", b"\xc3", CODE), SectionSpec(".sbat", SBAT))
    assert PeImage.parse(_section_field(data, 1, 0x08, 0x201)).sbat is None
    assert PeImage.parse(_section_field(data, 1, 0x08, 0x200)).sbat == (
        SBAT + bytes(0x200 - len(SBAT)))
    assert PeImage.parse(_section_field(data, 1, 0x10, 0)).sbat is None


def test_only_the_eight_byte_name_sbat_counts() -> None:
    # A long name from the string table that reads ".sbat" is not shim's .sbat section.
    data = _image(SectionSpec(".text", b"\xc3", CODE), SectionSpec(".vendor_cert", SBAT))
    table = int.from_bytes(data[PE + 4 + 8 : PE + 4 + 12], "little")
    renamed = data[: table + 4] + b".sbat\0" + data[table + 10:]
    image = PeImage.parse(renamed)
    assert image.sections[1].name == ".sbat" and image.sbat is None


# --- edges the first mutation run found unchecked -------------------------------------------

def test_an_optional_header_without_directories() -> None:
    # SizeOfOptionalHeader equal to the fixed part and NumberOfRvaAndSizes 0: no directories,
    # the section table right after the fixed part.
    data = _put(_put(_image(), PE + 4 + 0x10, 0x70, 2), OPTIONAL + 0x6C, 0, 4)
    image = PeImage.parse(data)
    assert image.data_directories == () and image.certificate_directory_offset is None
    assert image.certificate_table == DataDirectory(4, 0, 0)
    assert image.section_table_offset == OPTIONAL + 0x70


@pytest.mark.parametrize("count", [0, 1])
def test_an_optional_header_shorter_than_its_fixed_part_is_refused(count: int) -> None:
    data = _put(_put(_image(), PE + 4 + 0x10, 0x6F, 2), OPTIONAL + 0x6C, count, 4)
    _refused(data, f"PE image: {count} data directories do not fit an optional header of "
                   "0x6f bytes")


def test_a_file_cut_inside_the_directories() -> None:
    _refused(_image()[: DIRECTORIES + 10],
             f"PE image: directories at {DIRECTORIES:#x}..{DIRECTORIES + 0x80:#x} is outside "
             "the file")


def test_a_file_of_headers_alone_ending_with_the_section_table() -> None:
    data = _image()[: TABLE + 0x28]
    data = _put(data, OPTIONAL + 0x3C, TABLE + 0x28, 4)    # SizeOfHeaders: the whole file
    data = _section_field(data, 0, 0x10, 0)                 # no raw data
    image = PeImage.parse(data)
    assert image.size_of_headers == len(data) and image.sections[0].data == b""


def test_a_section_name_ending_in_x_keeps_it() -> None:
    data = _image(SectionSpec(".BOX", b"\xc3", CODE), SectionSpec(".XX", b"x"))
    assert [s.name for s in PeImage.parse(data).sections] == [".BOX", ".XX"]


def test_the_checksum_folds_every_carry() -> None:
    # A trailer word chosen so that the first fold of the sum leaves a carry to fold again.
    base = _image()
    image = PeImage.parse(base)
    words = bytearray(base)
    words[image.checksum_offset : image.checksum_offset + 4] = bytes(4)
    plain = sum(int.from_bytes(words[i : i + 2], "little") for i in range(0, len(words), 2))
    trailer = ((0xFFFF - plain) & 0xFFFF).to_bytes(2, "little")
    total = plain + int.from_bytes(trailer, "little")
    assert total & 0xFFFF == 0xFFFF and (total & 0xFFFF) + (total >> 16) > 0xFFFF
    folded = total
    while folded > 0xFFFF:
        folded = (folded & 0xFFFF) + (folded >> 16)
    assert PeImage.parse(base + trailer).computed_checksum() == folded + len(base) + 2
