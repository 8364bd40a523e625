"""The GRUB core image's module walk at its edges: the module info's magic and size, each
module's size, the first module of a kind winning (as GRUB's own walk does), the texts cut at
their NUL, and files read from the memdisk without regard to case."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from tests.formats.fat.conftest import entry, make_fat

from cvm.errors import FormatError
from cvm.formats.fat.boot_sector import FatType
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage

MAGIC = 0x676D696D


def _module(kind: int, body: bytes, size: int | None = None) -> bytes:
    return struct.pack("<II", kind, 8 + len(body) if size is None else size) + body


def _image(modules: bytes, offset: int = 24, size: int | None = None, magic: int = MAGIC,
           tail: bytes = b"") -> bytes:
    total = offset + len(modules) if size is None else size
    info = struct.pack("<IIQQ", magic, 0, offset, total) + bytes(offset - 24)
    return build_pe([SectionSpec(".text", b"\xc3" * 64, CODE),
                     SectionSpec("mods", info + modules + tail)])


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(FormatError) as refused:
        call()
    return str(refused.value)


def test_each_module_kind_and_the_first_of_a_kind_wins() -> None:
    modules = (_module(0, b"\x7fELF....") + _module(3, b"/EFI/first\0\0")
               + _module(2, b"set root\0junk") + _module(3, b"/EFI/second\0")
               + _module(2, b"second config\0") + _module(1, b"disk") + _module(1, b"other"))
    core = GrubCoreImage.parse(_image(modules))
    assert core == GrubCoreImage("set root", "/EFI/first", b"disk")


def test_a_module_info_without_modules_gives_empty_texts() -> None:
    assert GrubCoreImage.parse(_image(b"")) == GrubCoreImage("", "", b"")
    assert GrubCoreImage.parse(_image(_module(2, b"\xff\xfeok\0"))).config == "\ufffd\ufffdok"


def test_the_image_may_be_given_parsed() -> None:
    data = _image(_module(3, b"/EFI/x\0"))
    assert GrubCoreImage.parse(PeImage.parse(data)) == GrubCoreImage.parse(data)


def test_the_module_info_is_checked() -> None:
    assert _refusal(lambda: GrubCoreImage.parse(build_pe(
        [SectionSpec(".text", b"\xc3" * 64, CODE)]))) == "GRUB image: no 'mods' section"
    assert _refusal(lambda: GrubCoreImage.parse(_image(b"", magic=MAGIC + 1))) == (
        "GRUB image: module info magic is not 'mimg'")
    section = PeImage.parse(_image(b"")).section("mods")
    assert section is not None
    whole = len(section.data)
    body = b"m" * (whole - 32)  # one module filling the section to its last byte
    filled = _image(_module(1, body), size=whole)
    filled_section = PeImage.parse(filled).section("mods")
    assert filled_section is not None and len(filled_section.data) == whole
    assert GrubCoreImage.parse(filled).memdisk == body
    assert _refusal(lambda: GrubCoreImage.parse(_image(b"", size=whole + 1))) == (
        "GRUB image: modules run past the 'mods' section")


def test_each_module_size_is_checked() -> None:
    empty = _module(1, b"", size=8)
    assert GrubCoreImage.parse(_image(_module(2, b"c\0") + empty)).memdisk == b""
    for size in (0, 7):
        assert _refusal(lambda size=size: GrubCoreImage.parse(
            _image(_module(2, b"c\0") + _module(1, b"", size=size)))) == (
            f"GRUB image: module at 0x22 has size {size}")
    assert _refusal(lambda: GrubCoreImage.parse(_image(_module(1, b"abcd", size=13)))) == (
        "GRUB image: module at 0x18 has size 13")
    exact = _module(1, b"abcd", size=12)
    assert GrubCoreImage.parse(_image(exact)).memdisk == b"abcd"


def test_the_walk_starts_at_the_offset_and_stops_short_of_a_header() -> None:
    core = GrubCoreImage.parse(_image(_module(3, b"/EFI/later\0"), offset=32))
    assert core.prefix == "/EFI/later"
    modules = _module(3, b"/EFI/p\0") + b"\1\0\0\0\xff\xff\xff"  # 7 bytes: no header
    assert GrubCoreImage.parse(_image(modules)).prefix == "/EFI/p"
    last = _module(3, b"/EFI/p\0") + struct.pack("<II", 1, 9)  # 8 bytes left: a header
    assert _refusal(lambda: GrubCoreImage.parse(_image(last))) == (
        "GRUB image: module at 0x27 has size 9")
    inside = _image(_module(3, b"/EFI/p\0"), size=24 + 15, tail=_module(2, b"after\0"))
    assert GrubCoreImage.parse(inside) == GrubCoreImage("", "/EFI/p", b"")


def test_memdisk_files_are_found_without_regard_to_case() -> None:
    disk = make_fat(FatType.FAT12)
    disk.chain(5)
    disk.write(5, b"configfile $prefix/grub.cfg\n")
    disk.chain(6)
    disk.put(disk.root_offset(), entry(b"GRUB    CFG", 0x20, 5, 28),
             entry(b"BOOT       ", 0x10, 6))
    disk.put(disk.cluster_offset(6), entry(b"X       CFG", 0x20, 0, 0))
    disk.put(disk.root_offset() + 64, entry(b"X       CFX", 0x20, 0, 0))
    core = GrubCoreImage.parse(_image(_module(1, disk.to_bytes())))
    for path in ("grub.cfg", "/GRUB.CFG", "\\grub.cfg", "grub.cfg/"):
        assert core.memdisk_file(path) == b"configfile $prefix/grub.cfg\n"
    assert core.memdisk_file("boot\\x.cfg") == b""
    assert core.memdisk_file("X.CFX") == b"" and core.memdisk_file("/x.cfx/") == b""
    assert core.memdisk_file("x.cfg") is None
    assert core.memdisk_file("boot") is None
    assert GrubCoreImage("", "", b"").memdisk_file("grub.cfg") is None


def _short_mods(length: int, content: bytes) -> bytes:
    """An image whose ``mods`` section holds only ``length`` bytes of ``content``."""
    data = bytearray(build_pe([SectionSpec(".text", b"\xc3" * 64, CODE),
                               SectionSpec("mods", content)]))
    at = data.index(b"mods\0\0\0\0")
    data[at + 0x10 : at + 0x14] = length.to_bytes(4, "little")  # SizeOfRawData
    return bytes(data)


def test_a_module_info_cut_short_names_the_field() -> None:
    info = struct.pack("<IIQQ", MAGIC, 0, 24, 24)
    for length, field, at, left in ((2, "magic", 0, 2), (6, "padding", 4, 2),
                                    (12, "offset", 8, 4), (20, "size", 16, 4)):
        assert _refusal(lambda length=length: GrubCoreImage.parse(_short_mods(length, info))) == (
            f"GRUB module info: {field} needs {4 if at < 8 else 8} bytes at offset {at:#x}, "
            f"only {left} left")
    assert GrubCoreImage.parse(_short_mods(24, info)) == GrubCoreImage("", "", b"")
