"""The SEV hash table: kernel, initrd and command-line hashes for measured direct boot.

QEMU ``target/i386/sev.c`` (``SevHashTable``/``PaddedSevHashTable``, written by
``sev_add_kernel_loader_hashes``) and edk2 ``OvmfPkg/Library/BlobVerifierLib`` (which checks the
fw_cfg blobs against it). Little-endian, GUIDs in the UEFI mixed-endian form:

=====  ====  =====================================================================
off    size  field
=====  ====  =====================================================================
0x00   16    header GUID 9438d606-4f22-4cc9-b479-a793d411fd21
0x10   2     length of the table without padding (0xA8)
0x12   50    entry: GUID 97d02dd8-bd20-4c94-aa78-e7714d36ab2a (cmdline), u16 0x32, SHA-256
0x44   50    entry: GUID 44baf731-3a2f-4bd7-9af1-41e29169781d (initrd), u16 0x32, SHA-256
0x76   50    entry: GUID 4de79437-abd2-427f-b835-d5b172d2045b (kernel), u16 0x32, SHA-256
0xA8   8     zero padding to a multiple of 16
=====  ====  =====================================================================

The command-line hash covers the string and its terminating NUL (an absent command line
hashes a single NUL); an absent initrd hashes the empty string.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Guid, Layout, raw, reserved, u16

HASH_SIZE = 32
ENTRY_SIZE = 0x32
TABLE_LENGTH = 0xA8
PADDED_SIZE = 0xB0
PAGE_SIZE = 0x1000
HEADER_GUID = Guid.parse("9438d606-4f22-4cc9-b479-a793d411fd21")
CMDLINE_GUID = Guid.parse("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
INITRD_GUID = Guid.parse("44baf731-3a2f-4bd7-9af1-41e29169781d")
KERNEL_GUID = Guid.parse("4de79437-abd2-427f-b835-d5b172d2045b")
_ENTRIES = (
    ("cmdline", CMDLINE_GUID, 0x12),
    ("initrd", INITRD_GUID, 0x44),
    ("kernel", KERNEL_GUID, 0x76),
)

SEV_HASH_TABLE_LAYOUT = Layout(
    "SEV hash table",
    PADDED_SIZE,
    [
        raw("guid", 0x00, 16),
        u16("length", 0x10),
        *(
            field
            for name, _, offset in _ENTRIES
            for field in (
                raw(f"{name}_guid", offset, 16),
                u16(f"{name}_length", offset + 0x10),
                raw(f"{name}_hash", offset + 0x12, HASH_SIZE),
            )
        ),
        reserved(TABLE_LENGTH, PADDED_SIZE - TABLE_LENGTH),
    ],
)


@dataclass(frozen=True)
class SevHashTable:
    """The three SHA-256 hashes QEMU publishes to the firmware."""

    cmdline: bytes
    initrd: bytes
    kernel: bytes

    def __post_init__(self) -> None:
        for name in ("cmdline", "initrd", "kernel"):
            if len(getattr(self, name)) != HASH_SIZE:
                raise UsageError(f"SEV hash table: the {name} hash must be 32 bytes")

    @classmethod
    def for_boot(
        cls, kernel: bytes, initrd: bytes | None = None, cmdline: str | None = None
    ) -> SevHashTable:
        """The table for a kernel, an optional initrd and an optional command line."""
        line = (cmdline or "").encode() + b"\0"
        return cls(
            cmdline=hashlib.sha256(line).digest(),
            initrd=hashlib.sha256(initrd or b"").digest(),
            kernel=hashlib.sha256(kernel).digest(),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SevHashTable:
        values = SEV_HASH_TABLE_LAYOUT.unpack(data)
        if values["guid"] != HEADER_GUID.to_bytes():
            raise FormatError("SEV hash table: header GUID is wrong")
        if values["length"] != TABLE_LENGTH:
            raise FormatError(f"SEV hash table: length {values['length']!r}, expected 0xa8")
        hashes: dict[str, bytes] = {}
        for name, guid, _ in _ENTRIES:
            if values[f"{name}_guid"] != guid.to_bytes():
                raise FormatError(f"SEV hash table: the {name} entry GUID is wrong")
            if values[f"{name}_length"] != ENTRY_SIZE:
                raise FormatError(f"SEV hash table: the {name} entry length is not 0x32")
            digest = values[f"{name}_hash"]
            if not isinstance(digest, bytes):
                raise FormatError(f"SEV hash table: the {name} hash is not bytes")
            hashes[name] = digest
        return cls(**hashes)

    def to_bytes(self) -> bytes:
        """The padded table (0xB0 bytes), as QEMU copies it into guest memory."""
        values: dict[str, int | bytes] = {"guid": HEADER_GUID.to_bytes(), "length": TABLE_LENGTH}
        for name, guid, _ in _ENTRIES:
            values[f"{name}_guid"] = guid.to_bytes()
            values[f"{name}_length"] = ENTRY_SIZE
            values[f"{name}_hash"] = getattr(self, name)
        return SEV_HASH_TABLE_LAYOUT.pack(values)

    def to_page(self, offset: int) -> bytes:
        """A zero 4 KiB page with the padded table at ``offset`` (the table GPA's page offset)."""
        if not 0 <= offset <= PAGE_SIZE - PADDED_SIZE:
            raise UsageError(f"SEV hash table offset {offset:#x} does not fit in a page")
        return bytes(offset) + self.to_bytes() + bytes(PAGE_SIZE - offset - PADDED_SIZE)

    @classmethod
    def from_page(cls, page: bytes, offset: int) -> SevHashTable:
        """The table at ``offset`` of a 4 KiB page."""
        if len(page) != PAGE_SIZE or not 0 <= offset <= PAGE_SIZE - PADDED_SIZE:
            raise FormatError("SEV hash table page: wrong page size or offset")
        return cls.from_bytes(page[offset : offset + PADDED_SIZE])
