"""The newc header's thirteen hexadecimal fields: read as numbers, refused by name."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.cpio import FIELDS, CpioArchive, CpioEntry

ENTRY = CpioEntry("a", 0o100644, b"xyz", ino=0x1234ABCD, uid=7, gid=8, mtime=0xFFFFFFFF,
                  devmajor=1, devminor=2, rdevmajor=3, rdevminor=4)


def _archive() -> bytes:
    return CpioArchive((ENTRY, CpioEntry.directory("d"))).to_bytes()


def test_every_field_is_read_and_lower_case_digits_are_accepted() -> None:
    data = _archive()
    assert CpioArchive.parse(data).entries[0] == ENTRY
    lower = data[:6] + data[6:110].lower() + data[110:]
    assert CpioArchive.parse(lower).entries[0] == ENTRY


@pytest.mark.parametrize("index", range(len(FIELDS)))
@pytest.mark.parametrize("digit", [0, 7])
@pytest.mark.parametrize("bad", [b"g", b" ", b"+", b"x", b"\0", b"\xff"])
def test_a_field_that_is_not_hexadecimal_is_named(index: int, digit: int, bad: bytes) -> None:
    data = bytearray(_archive())
    offset = 6 + index * 8
    data[offset + digit : offset + digit + 1] = bad
    with pytest.raises(FormatError, match=f"^cpio: field {FIELDS[index]} at offset "
                                          f"{offset:#x} is not hexadecimal$"):
        CpioArchive.parse(bytes(data))


def test_the_first_bad_field_is_named_in_the_second_member() -> None:
    data = bytearray(_archive())
    second = 110 + 2 + 4  # header and "a\0" (112, a multiple of 4), "xyz" padded to 4
    assert data[second : second + 6] == b"070701"
    data[second + 6 + 8 * 3] = ord("z")  # gid
    data[second + 6 + 8 * 5] = ord("z")  # mtime
    with pytest.raises(FormatError, match=f"^cpio: field gid at offset {second + 30:#x} is "
                                          "not hexadecimal$"):
        CpioArchive.parse(bytes(data))


def test_zeros_after_the_trailer_are_padding_anything_else_is_data() -> None:
    data = _archive()
    assert CpioArchive.parse(data + bytes(1000)).entries[0] == ENTRY
    for tail in (b"\1", bytes(999) + b"\1", b"\0\0 \0"):
        with pytest.raises(FormatError, match=r"^cpio: data after the trailer$"):
            CpioArchive.parse(data + tail)
