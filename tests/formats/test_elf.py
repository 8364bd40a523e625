"""ELF64 sections found by name, and a kernel module's .modinfo, with every malformed field
refused in one line."""

from __future__ import annotations

import struct

import pytest

from cvm.errors import FormatError
from cvm.formats.elf import modinfo, section

from .elf_builder import elf_object

INFO = b"license=GPL\0depends=virtio,virtio_ring\0\0\0retpoline=Y\0"


def test_a_section_is_found_by_its_exact_name() -> None:
    data = elf_object([(".text", b"\x90" * 7), (".modinfo", INFO), (".modinfo.x", b"no")])
    assert section(data, ".modinfo", "m.ko") == INFO
    assert section(data, ".text", "m.ko") == b"\x90" * 7
    assert section(data, ".modinf", "m.ko") is None and section(data, ".data", "m.ko") is None


def test_a_section_without_bytes_in_the_file_is_not_read() -> None:
    data = elf_object([(".bss", b"\xff" * 4096), (".modinfo", INFO)], nobits=(".bss",))
    assert section(data, ".bss", "m.ko") is None
    assert section(data, ".modinfo", "m.ko") == INFO


def test_two_sections_of_one_name_are_refused() -> None:
    data = elf_object([(".modinfo", b"depends=a\0"), (".modinfo", b"depends=b\0")])
    with pytest.raises(FormatError, match=r"^m.ko: 2 sections named .modinfo$"):
        section(data, ".modinfo", "m.ko")


def test_the_modinfo_entries_are_read_in_order_past_the_padding() -> None:
    data = elf_object([(".modinfo", INFO), (".rodata", b"depends=fake\0")])
    assert modinfo(data, "m.ko") == [("license", "GPL"), ("depends", "virtio,virtio_ring"),
                                     ("retpoline", "Y")]
    assert modinfo(elf_object([(".modinfo", b"depends=\0")]), "m.ko") == [("depends", "")]
    assert modinfo(elf_object([(".modinfo", b"a=b=c")]), "m.ko") == [("a", "b=c")]


def test_a_module_without_modinfo_or_with_an_entry_that_is_not_one_is_refused() -> None:
    with pytest.raises(FormatError, match=r"^m.ko: no .modinfo section$"):
        modinfo(elf_object([(".text", b"\x90")]), "m.ko")
    with pytest.raises(FormatError, match=r"^m.ko: .modinfo entry 'license' has no '='$"):
        modinfo(elf_object([(".modinfo", b"depends=\0license\0")]), "m.ko")


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


GOOD = elf_object([(".modinfo", INFO)])
SHOFF = struct.unpack_from("<Q", GOOD, 0x28)[0]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "not an ELF object"),
    (GOOD[:63], "not an ELF object"),
    (b"\x7fELG" + GOOD[4:], "not an ELF object"),
    (GOOD[:4] + b"\x03" + GOOD[5:], "ELF class 3, data 1: only ELF64 little-endian is read"),
    (GOOD[:64], "the section header table (3 at {shoff:#x}) is not inside the file's 64 bytes"),
    (_patched(GOOD, 0x28, "<Q", 1 << 63),
     f"the section header table (3 at {1 << 63:#x}) is not inside the file's {len(GOOD)} "
     "bytes"),
    (_patched(GOOD, 0x3C, "<H", 0x8000),
     f"the section header table (32768 at {SHOFF:#x}) is not inside the file's {len(GOOD)} "
     "bytes"),
    (GOOD[:5] + b"\x02" + GOOD[6:], "ELF class 2, data 2: only ELF64 little-endian is read"),
    (_patched(GOOD, 0x3A, "<H", 40), "section headers of 40 bytes, expected 64"),
    (_patched(GOOD, 0x28, "<Q", len(GOOD)),
     f"the section header table (3 at {len(GOOD):#x}) is not inside the file's {len(GOOD)} "
     "bytes"),
    (_patched(GOOD, 0x28, "<Q", 8),
     f"the section header table (3 at 0x8) is not inside the file's {len(GOOD)} bytes"),
    (_patched(GOOD, 0x3C, "<H", 4),
     f"the section header table (4 at {SHOFF:#x}) is not inside the file's {len(GOOD)} bytes"),
    (_patched(GOOD, 0x3E, "<H", 3), "the section name table is section 3 of 3"),
    (_patched(GOOD, SHOFF + 64 + 32, "<Q", 1 << 20),
     f"section 1 (1048576 bytes at 0x40) is not inside the file's {len(GOOD)} bytes"),
    (_patched(GOOD, SHOFF + 64, "<I", 1 << 16), "a section name at 65536 is outside its table"),
])
def test_a_malformed_object_is_refused_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as refused:
        section(data, ".modinfo", "m.ko")
    assert str(refused.value) == f"m.ko: {message.format(shoff=SHOFF)}"


def test_a_table_right_after_the_header_and_a_section_ending_the_file_are_read() -> None:
    data = elf_object([(".modinfo", INFO)], table_first=True)
    assert struct.unpack_from("<Q", data, 0x28)[0] == 64
    assert data.endswith(b".shstrtab\0")  # the name table ends the file
    assert section(data, ".modinfo", "m.ko") == INFO
    assert section(data, ".shstrtab", "m.ko") == b"\0.modinfo\0.shstrtab\0"


def test_a_value_that_is_not_utf8_is_read_with_replacement_characters() -> None:
    data = elf_object([(".modinfo", b"author=Andr\xe9\0depends=\0")])
    assert modinfo(data, "m.ko") == [("author", "Andr\ufffd"), ("depends", "")]


def test_a_name_that_runs_off_the_end_of_its_table_is_refused() -> None:
    data = bytearray(GOOD)
    data[SHOFF - 1] = ord("x")  # the name table's last NUL
    label = struct.unpack_from("<I", data, SHOFF + 2 * 64)[0]  # the name of .shstrtab itself
    with pytest.raises(FormatError) as refused:
        section(bytes(data), ".modinfo", "m.ko")
    assert str(refused.value) == f"m.ko: a section name at {label} is outside its table"


def test_the_last_byte_of_the_file_may_end_a_section_and_the_table() -> None:
    data = elf_object([(".modinfo", INFO)])
    assert len(data) == SHOFF + 3 * 64  # the table ends the file exactly
    assert section(data, ".modinfo", "m.ko") == INFO
