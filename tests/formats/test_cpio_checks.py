"""The newc reader's checks at their edges, each refusal by its message: the header, the name
and its NUL, the padding of name and data, the check field, the member types, the trailer,
and one path given twice (``a``, ``./a`` and ``/a`` are one file to the kernel, which keeps
the last; the reader keeps the names it has seen in a set, so a long archive costs linear
time)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.errors import FormatError
from cvm.formats.cpio import (
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    CpioArchive,
    CpioEntry,
    member_key,
    member_type,
)


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(FormatError) as refused:
        call()
    assert type(refused.value) is FormatError
    return str(refused.value)


def _header(name: bytes, mode: int = S_IFREG | 0o644, size: int = 0, check: int = 0,
            namesize: int | None = None) -> bytes:
    values = (0, mode, 0, 0, 1, 0, size, 0, 0, 0, 0,
              len(name) if namesize is None else namesize, check)
    return b"070701" + b"".join(b"%08X" % v for v in values)


def _member(name: bytes, data: bytes = b"", mode: int = S_IFREG | 0o644, check: int = 0,
            name_pad: bytes | None = None, data_pad: bytes | None = None) -> bytes:
    head = _header(name, mode, len(data), check) + name
    pad = bytes(-len(head) % 4) if name_pad is None else name_pad
    tail = bytes(-len(data) % 4) if data_pad is None else data_pad
    return head + pad + data + tail


TRAILER = _member(b"TRAILER!!!\0", mode=0)


def test_one_path_given_twice_is_refused_in_any_spelling() -> None:
    for first, second in (("a", "a"), ("a", "./a"), ("./a", "/a"), ("/a", "a"), ("//a", "a")):
        data = _member(first.encode() + b"\0", b"1") + _member(second.encode() + b"\0", b"2")
        assert _refusal(lambda data=data: CpioArchive.parse(data + TRAILER)) == (
            f"cpio: member {second!r} appears twice")
        assert _refusal(CpioArchive((CpioEntry.file(first, b"1"),
                                     CpioEntry.file(second, b"2"))).to_bytes) == (
            "cpio: a member name appears twice")
    assert [member_key(n) for n in ("a", "./a", "/a", "/./a", "a/", ".", "./")] == [
        "a", "a", "a", "a", "a/", ".", ""]
    both = CpioArchive.parse(_member(b"a\0", b"1") + _member(b"b/a\0", b"2") + TRAILER)
    assert [e.name for e in both.entries] == ["a", "b/a"]


def test_a_member_and_its_padding() -> None:
    archive = CpioArchive.parse(_member(b"abc\0", b"hello") + TRAILER)
    assert archive.entries == (CpioEntry("abc", S_IFREG | 0o644, b"hello"),)
    assert _refusal(lambda: CpioArchive.parse(
        _member(b"abc\0", b"hello", name_pad=b"\0\1") + TRAILER)) == (
        "cpio: non-zero padding in member at offset 0x0")
    assert _refusal(lambda: CpioArchive.parse(
        _member(b"abc\0", b"hello", data_pad=b"\0\0\1") + TRAILER)) == (
        "cpio: non-zero padding in member at offset 0x0")


def test_the_name_is_nul_terminated_utf8_of_at_least_one_character() -> None:
    second = len(_member(b"a\0"))
    assert _refusal(lambda: CpioArchive.parse(_member(b"a\0") + _member(b"bc") + TRAILER)) == (
        f"cpio: the name at offset {second + 110:#x} is not NUL-terminated")
    assert _refusal(lambda: CpioArchive.parse(_member(b"b\0c\0") + TRAILER)) == (
        "cpio: the name at offset 0x6e is not NUL-terminated")
    assert _refusal(lambda: CpioArchive.parse(_member(b"\xff\0") + TRAILER)) == (
        "cpio: the name at offset 0x6e is not UTF-8")
    assert _refusal(lambda: CpioArchive.parse(_member(b"\0") + TRAILER)) == (
        "cpio: member at offset 0x0 runs past the archive")


def test_a_member_must_end_inside_the_archive() -> None:
    whole = _member(b"a\0", b"hello") + TRAILER
    assert CpioArchive.parse(whole).entries[0].data == b"hello"
    member = _member(b"a\0", b"hello")
    assert _refusal(lambda: CpioArchive.parse(member[:-1])) == (
        "cpio: member at offset 0x0 runs past the archive")
    assert _refusal(lambda: CpioArchive.parse(TRAILER[:-1])) == (
        "cpio: member at offset 0x0 runs past the archive")
    assert CpioArchive.parse(TRAILER).entries == ()
    assert _refusal(lambda: CpioArchive.parse(member + TRAILER[:109])) == (
        f"cpio: truncated header at offset {len(member):#x} (no trailer)")
    assert _refusal(lambda: CpioArchive.parse(b"")) == (
        "cpio: truncated header at offset 0x0 (no trailer)")


def test_the_magic_and_the_check_field() -> None:
    assert _refusal(lambda: CpioArchive.parse(b"070702" + TRAILER[6:])) == (
        "cpio: bad magic at offset 0x0 (newc is 070701)")
    assert _refusal(lambda: CpioArchive.parse(_member(b"a\0", b"x", check=1) + TRAILER)) == (
        "cpio member 'a': check is not 0 in a newc archive")


@pytest.mark.parametrize("mode", [S_IFREG | 0o644, S_IFDIR | 0o755, S_IFLNK | 0o777])
def test_files_directories_and_links_are_read(mode: int) -> None:
    assert CpioArchive.parse(_member(b"a\0", b"", mode) + TRAILER).entries[0].mode == mode


@pytest.mark.parametrize("mode", [0o010644, 0o020644, 0o060644, 0o140644, 0])
def test_other_member_types_are_refused(mode: int) -> None:
    assert _refusal(lambda: CpioArchive.parse(_member(b"dev\0", b"", mode) + TRAILER)) == (
        f"cpio member 'dev': unsupported mode {mode:o}")
    assert _refusal(CpioArchive((CpioEntry("dev", mode),)).to_bytes) == (
        f"cpio member 'dev': unsupported mode {mode:o}")


def test_a_member_may_not_be_named_like_the_trailer() -> None:
    assert _refusal(CpioArchive((CpioEntry.file("TRAILER!!!", b""),)).to_bytes) == (
        "cpio: a member may not be named TRAILER!!!")
    assert _refusal(CpioArchive((CpioEntry.file("", b""),)).to_bytes) == (
        "cpio: a member name is empty or holds a NUL")
    assert _refusal(CpioArchive((CpioEntry.file("a\0", b""),)).to_bytes) == (
        "cpio: a member name is empty or holds a NUL")


def test_every_field_that_does_not_fit_is_named() -> None:
    for field in ("ino", "uid", "gid", "nlink", "mtime", "devmajor", "devminor", "rdevmajor",
                  "rdevminor"):
        entry = CpioEntry("a", S_IFREG, **{field: 1 << 32})  # type: ignore[arg-type]
        assert _refusal(lambda entry=entry: entry.header(2)) == (
            f"cpio member 'a': {field} {1 << 32} does not fit")
        negative = CpioEntry("a", S_IFREG, **{field: -1})  # type: ignore[arg-type]
        assert _refusal(lambda entry=negative: entry.header(2)).endswith("-1 does not fit")
    assert CpioEntry("a", S_IFREG, ino=0xFFFFFFFF).header(2)[6:14] == b"FFFFFFFF"
    assert _refusal(lambda: CpioEntry("a", 1 << 32).header(2)) == (
        f"cpio member 'a': mode {1 << 32} does not fit")
    assert _refusal(lambda: CpioEntry("a", S_IFREG).header(1 << 32)) == (
        f"cpio member 'a': namesize {1 << 32} does not fit")


def test_the_type_is_the_top_four_bits_of_the_mode() -> None:
    assert member_type(0o100644) == S_IFREG and member_type(0o040755) == S_IFDIR
    assert member_type(0o120777) == S_IFLNK and member_type(0o777) == 0
    assert member_type(0o170000 | 0o7777) == 0o170000
    assert CpioEntry("l", S_IFLNK | 0o777, b"target").kind == S_IFLNK


def test_the_helpers_default_to_inode_0() -> None:
    assert CpioEntry.file("f", b"x") == CpioEntry("f", S_IFREG | 0o644, b"x", 0, nlink=1)
    assert CpioEntry.directory("d") == CpioEntry("d", S_IFDIR | 0o755, b"", 0, nlink=2)
    assert CpioArchive((CpioEntry.file("f", b"x"),)).to_bytes()[6:14] == b"00000000"


def test_the_trailer_is_written_as_gnu_cpio_writes_it() -> None:
    data = CpioArchive((CpioEntry.file("f", b"x"),)).to_bytes()
    assert data.endswith(TRAILER)
    assert TRAILER[6:110] == b"".join(b"%08X" % v for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                                                            11, 0))


def test_a_header_of_exactly_110_bytes_left_is_read() -> None:
    assert _refusal(lambda: CpioArchive.parse(TRAILER[:110])) == (
        "cpio: member at offset 0x0 runs past the archive")


def test_only_zeros_may_follow_the_trailer() -> None:
    for tail in (b"X", b"XX\0", b"\0X"):
        assert _refusal(lambda tail=tail: CpioArchive.parse(TRAILER + tail)) == (
            "cpio: data after the trailer")


def test_only_slashes_and_one_dot_slash_are_dropped_from_a_path() -> None:
    assert [member_key(n) for n in ("Xa", "X/a", "XX", "../a", ".a")] == [
        "Xa", "X/a", "XX", "../a", ".a"]
