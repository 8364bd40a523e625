"""Appending sections, field by field as objcopy lays them out (``tests/interop`` compares the
two): each header's every field, the raw data where the file alignment puts it and nothing
else, the counts and sizes of the headers, a section table that fills the headers exactly, an
image whose sections carry no file data, and every refusal's message."""

from __future__ import annotations

import pytest

from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate
from cvm.errors import UsageError
from cvm.formats.pe.builder import CODE, DATA, SectionSpec, build_pe
from cvm.formats.pe.image import SECTION_HEADER, PeImage
from cvm.formats.pe.section_append import append_sections
from cvm.image.signing import sign_pe

TEXT = SectionSpec(".text", b"\x90" * 300 + b"\xc3", CODE)
PARTS = [(".osrel", b"ID=x\n"), (".cmdline", b"quiet"), (".linux", b"K" * 5000)]


def _header(name: bytes, size: int, address: int, raw_size: int, pointer: int,
            characteristics: int = DATA) -> bytes:
    return SECTION_HEADER.pack({
        "name": name.ljust(8, b"\0"), "virtual_size": size, "virtual_address": address,
        "size_of_raw_data": raw_size, "pointer_to_raw_data": pointer,
        "pointer_to_relocations": 0, "pointer_to_linenumbers": 0, "number_of_relocations": 0,
        "number_of_linenumbers": 0, "characteristics": characteristics})


def test_every_byte_of_the_appended_image() -> None:
    stub = build_pe([TEXT])
    assert len(stub) == 0x400
    out = append_sections(stub, PARTS)
    table = PeImage.parse(stub).section_table_offset + SECTION_HEADER.size
    assert out[table : table + 3 * SECTION_HEADER.size] == (
        _header(b".osrel", 5, 0x2000, 0x200, 0x400)
        + _header(b".cmdline", 5, 0x3000, 0x200, 0x600)
        + _header(b".linux", 5000, 0x4000, 0x1400, 0x800))
    assert out[0x400:] == (b"ID=x\n".ljust(0x200, b"\0") + b"quiet".ljust(0x200, b"\0")
                           + (b"K" * 5000).ljust(0x1400, b"\0"))
    image = PeImage.parse(out)
    assert image.coff["number_of_sections"] == 4
    assert image.optional["size_of_image"] == 0x6000
    assert image.optional["size_of_initialized_data"] == 0x200 + 0x200 + 0x1400
    # nothing else of the stub changed: the count, the two sizes and the new headers only
    changed = {i for i in range(len(stub)) if stub[i] != out[i]}
    count = image.pe_offset + 4 + 2
    optional = image.optional_header_offset
    allowed = ({count, count + 1} | set(range(optional + 0x08, optional + 0x0C))
               | set(range(optional + 0x38, optional + 0x3C))
               | set(range(table, table + 3 * SECTION_HEADER.size)))
    assert changed <= allowed
    assert out[optional + 0x38 : optional + 0x3C] == (0x6000).to_bytes(4, "little")
    assert out[optional + 0x08 : optional + 0x0C] == (0x1800).to_bytes(4, "little")


def test_the_initialized_data_adds_to_the_stubs_own() -> None:
    stub = build_pe([TEXT, SectionSpec(".data", b"d" * 10)], pe32=True)
    assert PeImage.parse(stub).optional["size_of_initialized_data"] == 0x200
    out = PeImage.parse(append_sections(stub, PARTS))
    assert out.optional["size_of_initialized_data"] == 0x200 + 0x1800
    assert [s.virtual_address for s in out.sections] == [0x1000, 0x2000, 0x3000, 0x4000, 0x5000]


def test_a_section_table_may_fill_the_headers_to_the_last_byte() -> None:
    stub = build_pe([TEXT], pe32=True)  # PE32: room for exactly five headers before 0x200
    image = PeImage.parse(stub)
    assert image.section_table_offset + 5 * SECTION_HEADER.size == image.size_of_headers
    out = PeImage.parse(append_sections(stub, [*PARTS, (".sbat", b"sbat,1\n")]))
    assert [s.name for s in out.sections] == [".text", ".osrel", ".cmdline", ".linux", ".sbat"]
    with pytest.raises(UsageError) as caught:
        append_sections(stub, [*PARTS, (".sbat", b"s"), (".x", b"x")])
    assert str(caught.value) == "the image's headers have no room for 5 more section headers"


def test_data_after_the_last_section_is_kept_and_the_new_data_aligned() -> None:
    stub = build_pe([TEXT], trailer=b"xyz")
    out = append_sections(stub, [(".osrel", b"ID=x\n")])
    assert out[: len(stub)][0x400:] == b"xyz"
    assert out[0x403:0x600] == bytes(0x600 - 0x403)
    assert out[0x600:] == b"ID=x\n".ljust(0x200, b"\0")
    assert PeImage.parse(out).sections[-1].pointer_to_raw_data == 0x600


def test_an_image_whose_sections_have_no_file_data() -> None:
    stub = build_pe([SectionSpec(".bss", b"")])
    image = PeImage.parse(stub)
    assert all(s.size_of_raw_data == 0 for s in image.sections)
    out = PeImage.parse(append_sections(stub, [(".osrel", b"ID=x\n")]))
    assert out.section(".osrel") is not None
    # an empty section takes no address: the next one starts where it does (VA + 0, aligned)
    assert [s.virtual_address for s in out.sections] == [0x1000, 0x1000]
    assert out.sections[-1].pointer_to_raw_data == len(stub)


def test_the_refusals_say_why() -> None:
    key = generate_rsa_key()
    signed = sign_pe(build_pe([TEXT]), key, issue_certificate("cvm test", key))
    with pytest.raises(UsageError) as caught:
        append_sections(signed, [(".osrel", b"x")])
    assert str(caught.value) == ("the image is signed: appending sections would void its "
                                 "signature")
    with pytest.raises(UsageError) as caught:
        append_sections(build_pe([TEXT]), [(f".s{i}", b"x") for i in range(4)])
    assert str(caught.value) == "the image's headers have no room for 4 more section headers"
    for name in ("", ".toolong!"):
        with pytest.raises(UsageError) as caught:
            append_sections(build_pe([TEXT]), [(name, b"x")])
        assert str(caught.value) == f"section name {name!r} must be 1 to 8 ASCII characters"
