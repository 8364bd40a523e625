"""The ``newc`` cpio archive: the format of a Linux initramfs.

Linux ``Documentation/driver-api/early-userspace/buffer-format.rst`` and ``cpio(5)`` (the
"new ASCII" format, ``cpio -H newc``): each member is a 110-byte ASCII header — magic
``070701`` then thirteen 8-digit hexadecimal fields (ino, mode, uid, gid, nlink, mtime,
filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check) — followed by the
NUL-terminated name, padded with NULs so that header + name is a multiple of 4 bytes, then the
file data, padded to a multiple of 4. ``namesize`` counts the NUL. The archive ends with the
member ``TRAILER!!!``; the kernel ignores zero padding after it (archives are often padded to
512 bytes). ``check`` is 0 in ``newc`` (only the ``070702`` "crc" variant sums the data).
"""

from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass

from cvm.errors import FormatError

NEWC_MAGIC = b"070701"
HEADER_SIZE = 110
FIELD_DIGITS = 8
FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
          "rdevmajor", "rdevminor", "namesize", "check")
TRAILER = "TRAILER!!!"
ALIGNMENT = 4
S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000
KNOWN_TYPES = (S_IFREG, S_IFDIR, S_IFLNK)
MAX_FIELD = 0xFFFFFFFF
FIELD_WORDS = struct.Struct(f">{len(FIELDS)}I")
NOT_HEX = re.compile(rb"[^0-9a-fA-F]")

assert len(NEWC_MAGIC) + len(FIELDS) * FIELD_DIGITS == HEADER_SIZE


def _pad(size: int) -> int:
    return -size % ALIGNMENT


def member_type(mode: int) -> int:
    """The file type bits of a member's mode (``S_IFMT``)."""
    return mode & S_IFMT


def member_key(name: str) -> str:
    """The path a member names: ``/a``, ``./a`` and ``a`` are the same file to the kernel."""
    return name.lstrip("/").removeprefix("./")


@dataclass(frozen=True)
class CpioEntry:
    """One member: a regular file, a directory or a symbolic link (its target as data)."""

    name: str
    mode: int
    data: bytes = b""
    ino: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    mtime: int = 0
    devmajor: int = 0
    devminor: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0

    @property
    def kind(self) -> int:
        return member_type(self.mode)

    @classmethod
    def file(cls, name: str, data: bytes, permissions: int = 0o644, ino: int = 0) -> CpioEntry:
        return cls(name, S_IFREG | permissions, data, ino)

    @classmethod
    def directory(cls, name: str, permissions: int = 0o755, ino: int = 0) -> CpioEntry:
        return cls(name, S_IFDIR | permissions, b"", ino, nlink=2)

    def header(self, namesize: int) -> bytes:
        values = (self.ino, self.mode, self.uid, self.gid, self.nlink, self.mtime,
                  len(self.data), self.devmajor, self.devminor, self.rdevmajor,
                  self.rdevminor, namesize, 0)
        for field, value in zip(FIELDS, values, strict=True):
            if not 0 <= value <= MAX_FIELD:
                raise FormatError(f"cpio member {self.name!r}: {field} {value} does not fit")
        return NEWC_MAGIC + b"".join(f"{v:08X}".encode("ascii") for v in values)


def _fields(data: bytes, position: int) -> tuple[int, ...]:
    """The thirteen header fields of the member at ``position``: 8 hexadecimal digits each
    (no sign, space or ``0x``), read as big-endian words."""
    start = position + len(NEWC_MAGIC)
    digits = data[start : position + HEADER_SIZE]
    bad = NOT_HEX.search(digits)
    if bad is not None:
        index = bad.start() // FIELD_DIGITS
        raise FormatError(f"cpio: field {FIELDS[index]} at offset "
                          f"{start + index * FIELD_DIGITS:#x} is not hexadecimal")
    return FIELD_WORDS.unpack(binascii.unhexlify(digits))


def _member(entry: CpioEntry) -> bytes:
    name = entry.name.encode("utf-8") + b"\0"
    head = entry.header(len(name)) + name
    return head + bytes(_pad(len(head))) + entry.data + bytes(_pad(len(entry.data)))


@dataclass(frozen=True)
class CpioArchive:
    """The members of a newc archive, in order, without the trailer."""

    entries: tuple[CpioEntry, ...]

    def to_bytes(self) -> bytes:
        names = [entry.name for entry in self.entries]
        if TRAILER in names:
            raise FormatError(f"cpio: a member may not be named {TRAILER}")
        if len({member_key(name) for name in names}) != len(names):
            raise FormatError("cpio: a member name appears twice")
        for entry in self.entries:
            if entry.kind not in KNOWN_TYPES:
                raise FormatError(f"cpio member {entry.name!r}: unsupported mode {entry.mode:o}")
            if not entry.name or "\0" in entry.name:
                raise FormatError("cpio: a member name is empty or holds a NUL")
        trailer = CpioEntry(TRAILER, 0, b"", 0, 0, 0, 1, 0)
        return b"".join(_member(e) for e in (*self.entries, trailer))

    def get(self, name: str) -> CpioEntry | None:
        """The member called ``name`` (leading ``/`` and ``./`` ignored), or None."""
        wanted = member_key(name)
        for entry in self.entries:
            if member_key(entry.name) == wanted:
                return entry
        return None

    @classmethod
    def parse(cls, data: bytes) -> CpioArchive:
        """Strict: magic, hex fields, NUL-terminated names, zero padding, one trailer, no
        path twice (``a`` and ``./a`` included: the kernel would keep the later one)."""
        entries: list[CpioEntry] = []
        seen: set[str] = set()
        position = 0
        while True:
            if position + HEADER_SIZE > len(data):
                raise FormatError(f"cpio: truncated header at offset {position:#x} (no trailer)")
            if data[position : position + 6] != NEWC_MAGIC:
                raise FormatError(f"cpio: bad magic at offset {position:#x} (newc is 070701)")
            values = dict(zip(FIELDS, _fields(data, position), strict=True))
            namesize, filesize = values["namesize"], values["filesize"]
            name_start = position + HEADER_SIZE
            name_end = name_start + namesize
            data_start = name_end + _pad(HEADER_SIZE + namesize)
            data_end = data_start + filesize
            next_member = data_end + _pad(filesize)
            if namesize < 2 or next_member > len(data):
                raise FormatError(f"cpio: member at offset {position:#x} runs past the archive")
            raw_name = data[name_start:name_end]
            if not raw_name.endswith(b"\0") or b"\0" in raw_name[:-1]:
                raise FormatError(f"cpio: the name at offset {name_start:#x} is not "
                                  "NUL-terminated")
            if any(data[name_end:data_start]) or any(data[data_end:next_member]):
                raise FormatError(f"cpio: non-zero padding in member at offset {position:#x}")
            try:
                name = raw_name[:-1].decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"cpio: the name at offset {name_start:#x} is not "
                                  "UTF-8") from None
            if values["check"] != 0:
                raise FormatError(f"cpio member {name!r}: check is not 0 in a newc archive")
            if name == TRAILER:
                if data[next_member:].strip(b"\0"):
                    raise FormatError("cpio: data after the trailer")
                return cls(tuple(entries))
            entry = CpioEntry(name, values["mode"], data[data_start:data_end], values["ino"],
                              values["uid"], values["gid"], values["nlink"], values["mtime"],
                              values["devmajor"], values["devminor"], values["rdevmajor"],
                              values["rdevminor"])
            if entry.kind not in KNOWN_TYPES:
                raise FormatError(f"cpio member {name!r}: unsupported mode {entry.mode:o}")
            if member_key(name) in seen:
                raise FormatError(f"cpio: member {name!r} appears twice")
            seen.add(member_key(name))
            entries.append(entry)
            position = next_member
