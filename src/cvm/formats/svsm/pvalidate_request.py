"""The SVSM_CORE_PVALIDATE request: pages the guest OS asks the SVSM to validate or rescind.

AMD "Secure VM Service Module for SEV-SNP Guests" (58019, revision 1.00), section 5.2, the
PVALIDATE operation structure (little-endian): ``0x00 u16 entries · 0x02 u16 next (the first
entry not yet done; the SVSM advances it) · 0x04 u32 reserved`` then ``entries`` u64 entries of
``bits 1:0 page size (0 = 4 KiB, 1 = 2 MiB) · bit 2 action (1 validate, 0 rescind) · bit 3
ignore CF (do not fail on "unchanged") · bits 11:4 reserved · bits 63:12 guest frame number``.
The structure may not cross its page.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, reserved, u16

HEADER_SIZE = 8
ENTRY_SIZE = 8
PAGE_SIZE = 0x1000
MAX_ENTRIES = (PAGE_SIZE - HEADER_SIZE) // ENTRY_SIZE
HEADER_LAYOUT = Layout("SVSM PVALIDATE request header", HEADER_SIZE,
                       [u16("entries", 0x00), u16("next", 0x02), reserved(0x04, 4)])
SIZE_4K, SIZE_2M = 0, 1
ACTION_BIT, IGNORE_CF_BIT = 1 << 2, 1 << 3
RESERVED_BITS = 0xFF0


def frame_address(gfn: int) -> int:
    """The guest-physical address of frame ``gfn``: the page the SVSM validates or rescinds
    (a plain function so that mutation testing reaches it)."""
    return gfn << 12


@dataclass(frozen=True)
class PvalidateEntry:
    """One page: its frame, validate or rescind, and whether "unchanged" is an error."""

    gfn: int
    validate: bool
    page_size: int = SIZE_4K
    ignore_cf: bool = False

    @classmethod
    def from_int(cls, value: int) -> PvalidateEntry:
        if value & RESERVED_BITS:
            raise FormatError(f"PVALIDATE entry {value:#x}: reserved bits 11:4 are set")
        size = value & 0x3
        if size not in (SIZE_4K, SIZE_2M):
            raise FormatError(f"PVALIDATE entry {value:#x}: page size {size} is reserved")
        return cls(value >> 12, bool(value & ACTION_BIT), size, bool(value & IGNORE_CF_BIT))

    def to_int(self) -> int:
        if not 0 <= self.gfn < 1 << 52 or self.page_size not in (SIZE_4K, SIZE_2M):
            raise UsageError(f"PVALIDATE entry: frame {self.gfn:#x} or size {self.page_size}")
        return (self.gfn << 12 | (IGNORE_CF_BIT if self.ignore_cf else 0)
                | (ACTION_BIT if self.validate else 0) | self.page_size)

    @property
    def gpa(self) -> int:
        return frame_address(self.gfn)


@dataclass(frozen=True)
class PvalidateRequest:
    """The header and its entries."""

    entries: tuple[PvalidateEntry, ...]
    next: int = 0

    @staticmethod
    def count(header: bytes) -> tuple[int, int]:
        """(entries, next) of a header, checked: at most one page of entries, next <= entries."""
        fields = HEADER_LAYOUT.unpack(header[:HEADER_SIZE])
        entries, following = int(fields["entries"]), int(fields["next"])
        if entries > MAX_ENTRIES or following > entries:
            raise FormatError(f"PVALIDATE request: {entries} entries, next {following}")
        return entries, following

    @classmethod
    def from_bytes(cls, data: bytes) -> PvalidateRequest:
        if len(data) < HEADER_SIZE:
            raise FormatError(f"PVALIDATE request: {len(data)} bytes, the header needs 8")
        entries, following = cls.count(data)
        if len(data) != HEADER_SIZE + entries * ENTRY_SIZE:
            raise FormatError(f"PVALIDATE request: {len(data)} bytes for {entries} entries")
        values = tuple(PvalidateEntry.from_int(int.from_bytes(
            data[HEADER_SIZE + i * ENTRY_SIZE:HEADER_SIZE + (i + 1) * ENTRY_SIZE], "little"))
            for i in range(entries))
        return cls(values, following)

    def to_bytes(self) -> bytes:
        if len(self.entries) > MAX_ENTRIES or not 0 <= self.next <= len(self.entries):
            raise UsageError(f"PVALIDATE request: {len(self.entries)} entries, next {self.next}")
        header = HEADER_LAYOUT.pack({"entries": len(self.entries), "next": self.next})
        return header + b"".join(e.to_int().to_bytes(ENTRY_SIZE, "little") for e in self.entries)
