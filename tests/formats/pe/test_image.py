"""PE/COFF parsing: built images read back, Debian's real binaries parse with their sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import IMAGE_DIRECTORY_ENTRY_SECURITY, PeImage
from cvm.formats.pe.sbat import SbatLevelSection, SbatSection
from cvm.formats.pe.vendor_cert import VendorCertSection

SBAT = b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"


def test_built_image_reads_back() -> None:
    data = build_pe([SectionSpec(".text", b"\xc3" * 300, CODE), SectionSpec(".sbat", SBAT)],
                    trailer=b"symbols")
    image = PeImage.parse(data)
    assert image.to_bytes() == data
    assert image.is_pe32_plus
    assert [s.name for s in image.sections] == [".text", ".sbat"]
    assert image.sections[0].loaded_data == b"\xc3" * 300
    assert image.sbat == SBAT
    assert len(image.data_directories) == 16
    assert image.certificate_table.size == 0
    assert image.certificates == ()
    assert image.certificate_directory_offset == image.data_directory_offset + 8 * 4
    assert image.section(".missing") is None


def test_builder_refuses_bad_sections() -> None:
    with pytest.raises(UsageError):
        build_pe([])
    with pytest.raises(UsageError):
        build_pe([SectionSpec("", b"x")])


def test_builder_puts_long_section_names_in_the_string_table() -> None:
    data = build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec(".vendor_cert", b"v"),
                     SectionSpec(".sbatlevel", b"l")])
    image = PeImage.parse(data)
    assert [s.name for s in image.sections] == [".text", ".vendor_cert", ".sbatlevel"]
    assert image.section(".vendor_cert") is not None
    assert b"/4\0" in data and b".vendor_cert\0.sbatlevel\0" in data


def test_checksum_is_recomputed_like_imagehlp() -> None:
    data = build_pe([SectionSpec(".text", bytes(range(256)) * 3, CODE)])
    image = PeImage.parse(data)
    value = image.computed_checksum()
    patched = bytearray(data)
    patched[image.checksum_offset : image.checksum_offset + 4] = value.to_bytes(4, "little")
    assert PeImage.parse(bytes(patched)).computed_checksum() == value
    assert value > len(data)


@pytest.mark.parametrize("cut", [0, 2, 0x3F, 0x50, 0x100])
def test_truncated_images_are_format_errors(cut: int) -> None:
    data = build_pe([SectionSpec(".text", b"\x90" * 600, CODE)])
    with pytest.raises(FormatError):
        PeImage.parse(data[:cut])


def test_section_outside_the_file_is_refused() -> None:
    data = build_pe([SectionSpec(".text", b"\x90" * 600, CODE)])
    with pytest.raises(FormatError, match="section 0"):
        PeImage.parse(data[:-1])


def test_certificate_table_outside_the_file_is_refused() -> None:
    data = bytearray(build_pe([SectionSpec(".text", b"\x90" * 600, CODE)]))
    image = PeImage.parse(bytes(data))
    offset = image.certificate_directory_offset
    assert offset is not None
    data[offset : offset + 8] = (len(data)).to_bytes(4, "little") + (16).to_bytes(4, "little")
    with pytest.raises(FormatError, match="certificate table"):
        PeImage.parse(bytes(data))


def test_debian_shim_sections_and_signatures(debian_boot_binaries: dict[str, Path]) -> None:
    image = PeImage.parse(debian_boot_binaries["shim"].read_bytes())
    names = [s.name for s in image.sections]
    assert {".text", ".sbat", ".sbatlevel", ".vendor_cert"} <= set(names)
    assert len(image.certificates) == 2
    table = image.data_directories[IMAGE_DIRECTORY_ENTRY_SECURITY]
    assert table.virtual_address + table.size == len(image.data)
    assert image.sbat is not None
    sbat = SbatSection.parse(image.sbat)
    assert sbat.entries[0].component_name == "sbat"
    assert sbat.generation_of("shim") is not None
    levels = image.section(".sbatlevel")
    assert levels is not None
    parsed = SbatLevelSection.parse(levels.loaded_data)
    assert parsed.previous.datestamp <= parsed.latest.datestamp
    vendor = image.section(".vendor_cert")
    assert vendor is not None
    certs = VendorCertSection.parse(vendor.loaded_data)
    assert certs.authorized[:2] == b"\x30\x82"
    assert VendorCertSection.parse(certs.to_bytes()) == certs


def test_debian_grub_and_kernel(debian_boot_binaries: dict[str, Path]) -> None:
    grub = PeImage.parse(debian_boot_binaries["grub"].read_bytes())
    kernel = PeImage.parse(debian_boot_binaries["kernel"].read_bytes())
    assert len(grub.certificates) == 1 and len(kernel.certificates) == 1
    assert grub.sbat is not None
    assert SbatSection.parse(grub.sbat).generation_of("grub") is not None
    assert kernel.sbat is None


def test_pe32_image_reads_back() -> None:
    data = build_pe([SectionSpec(".text", b"\xc3" * 50, CODE)], pe32=True)
    image = PeImage.parse(data)
    assert not image.is_pe32_plus
    assert image.coff["machine"] == 0x014C
    assert image.data_directory_offset == image.optional_header_offset + 0x60
    assert image.checksum_offset == image.optional_header_offset + 0x40
