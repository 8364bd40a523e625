"""The page-state-change request a guest puts in the GHCB shared buffer (NAE event 0x8000_0010).

GHCB specification (AMD 56421, rev. 2.03) §4.1.6, Table 8: a header {u16 cur_entry;
u16 end_entry; u32 reserved} and up to 253 entries of 8 bytes: [11:0] current page,
[51:12] guest frame number, [55:52] operation (1 private, 2 shared, 3 PSMASH, 4 UNSMASH),
[56] page size (1 = 2 MiB), [63:57] reserved. ``end_entry`` is the index of the last entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Reader, Writer

PSC_MAX_ENTRIES = 253
PSC_HEADER_SIZE = 8
NAE_PSC = 0x8000_0010
_OPERATIONS = (1, 2, 3, 4)


@dataclass(frozen=True)
class PscEntry:
    gfn: int
    operation: int
    huge: bool = False
    current_page: int = 0

    def to_int(self) -> int:
        if self.operation not in _OPERATIONS or not 0 <= self.gfn < 1 << 40:
            raise UsageError(f"bad page-state change entry {self}")
        return (
            (int(self.huge) << 56) | (self.operation << 52) | (self.gfn << 12) | self.current_page
        )

    @classmethod
    def from_int(cls, value: int) -> PscEntry:
        if value >> 57:
            raise FormatError(f"page-state change entry {value:#x}: reserved bits 63:57 set")
        operation = value >> 52 & 0xF
        if operation not in _OPERATIONS:
            raise FormatError(f"page-state change entry {value:#x}: unknown operation {operation}")
        return cls(value >> 12 & ((1 << 40) - 1), operation, bool(value >> 56 & 1), value & 0xFFF)


@dataclass(frozen=True)
class PscBuffer:
    """A page-state-change request: ``entries[cur_entry..]`` remain to be processed."""

    entries: tuple[PscEntry, ...]
    cur_entry: int = 0

    def to_bytes(self) -> bytes:
        if not 1 <= len(self.entries) <= PSC_MAX_ENTRIES:
            raise UsageError(f"a PSC request holds 1..{PSC_MAX_ENTRIES} entries")
        writer = Writer().u16(self.cur_entry).u16(len(self.entries) - 1).u32(0)
        for entry in self.entries:
            writer.u64(entry.to_int())
        return writer.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> PscBuffer:
        reader = Reader(data, "PSC buffer")
        cur, end = reader.u16("cur_entry"), reader.u16("end_entry")
        if reader.u32("reserved"):
            raise reader.fail("reserved header bytes are not zero")
        if end >= PSC_MAX_ENTRIES or cur > end + 1:
            raise reader.fail(f"entry range {cur}..{end} is invalid")
        entries = tuple(PscEntry.from_int(reader.u64("entry")) for _ in range(end + 1))
        if any(reader.rest()):
            raise FormatError("PSC buffer: bytes after the last entry are not zero")
        return cls(entries, cur)
