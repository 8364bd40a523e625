"""The OVMF GUIDed footer table, read backwards from just below the reset vector.

edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`` ("guidedStructureStart"), as QEMU's
``hw/i386/pc_sysfw_ovmf.c`` reads it. The table ends ``FOOTER_GAP`` (32) bytes before the end
of the firmware image with an 18-byte footer entry header ``{u16 size; GUID}`` whose GUID is
``96b582de-1fb2-45f7-baea-a366c55a082d`` and whose size covers the whole table including that
header. Every entry before it is ``data || u16 size || GUID`` (size includes the 18-byte
header), so entries are found by walking backwards from the footer. GUIDs are stored in the
UEFI mixed-endian form; integers are little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Guid

FOOTER_GAP = 32
ENTRY_HEADER_SIZE = 18
FOOTER_GUID = Guid.parse("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_ES_RESET_BLOCK_GUID = Guid.parse("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
SEV_HASH_TABLE_GUID = Guid.parse("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_SECRET_AREA_GUID = Guid.parse("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
SEV_METADATA_GUID = Guid.parse("dc886566-984a-4798-a75e-5585a7bf67cc")
TDX_METADATA_GUID = Guid.parse("e47a6535-984a-4798-865e-4685a7bf8ec2")
SVSM_INFO_GUID = Guid.parse("a789a612-0597-4c4b-a49f-cbb1fe9d1ddd")
_MAX_ENTRY_SIZE = 0xFFFF


def table_size(entries: tuple[FooterEntry, ...]) -> int:
    """Bytes of a table of ``entries`` including the footer entry header."""
    return ENTRY_HEADER_SIZE + sum(len(e.data) + ENTRY_HEADER_SIZE for e in entries)


@dataclass(frozen=True)
class FooterEntry:
    """One GUIDed entry: its GUID and its data (without the 18-byte header)."""

    guid: Guid
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) + ENTRY_HEADER_SIZE > _MAX_ENTRY_SIZE:
            raise UsageError(f"footer entry {self.guid}: {len(self.data)} bytes is too large")

    def to_bytes(self) -> bytes:
        size = len(self.data) + ENTRY_HEADER_SIZE
        return self.data + size.to_bytes(2, "little") + self.guid.to_bytes()


@dataclass(frozen=True)
class FooterTable:
    """The entries of the table in file order (front to back), without the footer entry."""

    entries: tuple[FooterEntry, ...]

    def __post_init__(self) -> None:
        guids = [entry.guid for entry in self.entries]
        if len(set(guids)) != len(guids):
            raise UsageError("footer table: an entry GUID appears twice")
        if FOOTER_GUID in guids:
            raise UsageError("footer table: the footer GUID cannot be an entry")
        if self.size > _MAX_ENTRY_SIZE:
            raise UsageError(f"footer table: {self.size} bytes is too large")

    @property
    def size(self) -> int:
        """Bytes of the table including the footer entry header."""
        return table_size(self.entries)

    def get(self, guid: Guid) -> bytes | None:
        """The data of the entry with ``guid``, or None."""
        return next((entry.data for entry in self.entries if entry.guid == guid), None)

    @classmethod
    def from_bytes(cls, data: bytes) -> FooterTable:
        """Parse exactly the table bytes: the entries followed by the footer entry header."""
        if len(data) < ENTRY_HEADER_SIZE:
            raise FormatError("OVMF footer table: shorter than its footer header")
        footer_size = int.from_bytes(data[-ENTRY_HEADER_SIZE:-16], "little")
        if Guid.from_bytes(data[-16:]) != FOOTER_GUID:
            raise FormatError("OVMF footer table: footer GUID not found")
        if footer_size != len(data):
            raise FormatError(
                f"OVMF footer table: footer says {footer_size:#x} bytes, got {len(data):#x}"
            )
        rest = data[:-ENTRY_HEADER_SIZE]
        backwards: list[FooterEntry] = []
        while rest:
            if len(rest) < ENTRY_HEADER_SIZE:
                raise FormatError(f"OVMF footer table: {len(rest)} stray bytes before an entry")
            size = int.from_bytes(rest[-ENTRY_HEADER_SIZE:-16], "little")
            guid = Guid.from_bytes(rest[-16:])
            if size < ENTRY_HEADER_SIZE or size > len(rest):
                raise FormatError(f"OVMF footer table: entry {guid} has invalid size {size:#x}")
            backwards.append(FooterEntry(guid, rest[len(rest) - size : -ENTRY_HEADER_SIZE]))
            rest = rest[: len(rest) - size]
        try:
            return cls(tuple(reversed(backwards)))
        except UsageError as error:
            raise FormatError(f"OVMF footer table: {error}") from None

    def to_bytes(self) -> bytes:
        body = b"".join(entry.to_bytes() for entry in self.entries)
        return body + self.size.to_bytes(2, "little") + FOOTER_GUID.to_bytes()

    @classmethod
    def locate(cls, image: bytes) -> FooterTable | None:
        """The table of a firmware ``image``, or None when the image has no footer GUID."""
        header = len(image) - FOOTER_GAP - ENTRY_HEADER_SIZE
        if header < 0 or Guid.from_bytes(image[header + 2 : header + ENTRY_HEADER_SIZE]) != (
            FOOTER_GUID
        ):
            return None
        size = int.from_bytes(image[header : header + 2], "little")
        start = header + ENTRY_HEADER_SIZE - size
        if size < ENTRY_HEADER_SIZE or start < 0:
            raise FormatError(f"OVMF footer table: footer size {size:#x} does not fit the image")
        return cls.from_bytes(image[start : header + ENTRY_HEADER_SIZE])
