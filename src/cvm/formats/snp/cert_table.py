"""The certificate table of an extended report (SNP_EXT_GUEST_REQUEST).

GHCB specification (AMD 56421), "SNP Extended Guest Request" (NAE exit
0x8000_0012), certificate table: the host returns, beside the report, a table of 24-byte entries

=======  ====  ===================================================
offset   size  field
=======  ====  ===================================================
0x00     16    GUID naming the certificate (mixed-endian bytes)
0x10     4     OFFSET of the certificate from the start of the table
0x14     4     LENGTH of the certificate
=======  ====  ===================================================

terminated by an all-zero entry, followed by the certificates (DER). Known GUIDs: VCEK
63da758d-e664-4564-adc5-f4b93be8accd, VLEK a8074bc2-a25a-483e-aae6-39c045a0b8a1, ASK (also
ASVK) 4ab7b379-bbac-4fe4-a02f-05aef327c782, ARK c0b406a4-a803-4952-9743-3fb6014cd0ae.

``to_bytes`` writes the canonical form: the entries, the terminator, then each certificate in
entry order with no padding. ``from_bytes`` accepts any offsets inside the buffer (hosts pad
to pages) but refuses entries pointing into the entry array or past the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Guid, Layout, raw, u32

ENTRY_SIZE = 24
VCEK_GUID = Guid.parse("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = Guid.parse("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = Guid.parse("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = Guid.parse("c0b406a4-a803-4952-9743-3fb6014cd0ae")
MAX_ENTRIES = 64

ENTRY_LAYOUT = Layout(
    "CERT_TABLE_ENTRY",
    ENTRY_SIZE,
    [raw("guid", 0x00, 16), u32("offset", 0x10), u32("length", 0x14)],
)


@dataclass(frozen=True)
class CertTable:
    """Certificates by GUID, in table order."""

    entries: tuple[tuple[Guid, bytes], ...]

    def __post_init__(self) -> None:
        guids = [guid for guid, _ in self.entries]
        if len(set(guids)) != len(guids):
            raise UsageError("certificate table: a GUID appears twice")
        if any(guid.to_bytes() == bytes(16) for guid in guids):
            raise UsageError("certificate table: the zero GUID is the terminator")
        if any(not data for _, data in self.entries):
            raise UsageError("certificate table: empty certificate")

    def get(self, guid: Guid) -> bytes | None:
        return next((data for key, data in self.entries if key == guid), None)

    @classmethod
    def from_bytes(cls, data: bytes) -> CertTable:
        data = bytes(data)
        raw_entries: list[tuple[Guid, int, int]] = []
        position = 0
        while True:
            if position + ENTRY_SIZE > len(data):
                raise FormatError("certificate table: no terminating all-zero entry")
            chunk = data[position : position + ENTRY_SIZE]
            position += ENTRY_SIZE
            if not any(chunk):
                break
            if len(raw_entries) == MAX_ENTRIES:
                raise FormatError(f"certificate table: more than {MAX_ENTRIES} entries")
            values = ENTRY_LAYOUT.unpack(chunk)
            guid_bytes, offset, length = values["guid"], values["offset"], values["length"]
            assert isinstance(guid_bytes, bytes) and isinstance(offset, int)
            assert isinstance(length, int)
            raw_entries.append((Guid.from_bytes(guid_bytes), offset, length))
        entries: list[tuple[Guid, bytes]] = []
        for guid, offset, length in raw_entries:
            if length == 0 or offset < position or offset + length > len(data):
                raise FormatError(
                    f"certificate table: entry {guid} points to {offset:#x}+{length:#x}, outside "
                    f"the certificate area {position:#x}..{len(data):#x}"
                )
            entries.append((guid, data[offset : offset + length]))
        try:
            return cls(tuple(entries))
        except UsageError as error:
            raise FormatError(str(error)) from None

    def to_bytes(self) -> bytes:
        offset = ENTRY_SIZE * (len(self.entries) + 1)
        header = bytearray()
        body = bytearray()
        for guid, data in self.entries:
            values: dict[str, int | bytes] = {
                "guid": guid.to_bytes(), "offset": offset + len(body), "length": len(data)
            }
            header += ENTRY_LAYOUT.pack(values)
            body += data
        return bytes(header) + bytes(ENTRY_SIZE) + bytes(body)
