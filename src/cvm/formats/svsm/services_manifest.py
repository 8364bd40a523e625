"""The SVSM services manifest (SVSM spec 58019, section 7.1, Table 10): a GUID table.

``GUID 63849ebb-3d92-4670-a1ff-58f9c94b87bb ‖ u32 total size ‖ u32 count`` then ``count``
entries ``GUID ‖ u32 offset ‖ u32 size`` (offsets from the start of the manifest), then the
services' data. The vTPM service (GUID c476f1eb-0123-45a5-9641-b4e7dde5bfe3) carries the EK's
TPMT_PUBLIC; an attestation binds it with ``REPORT_DATA = SHA-512(nonce ‖ manifest)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Guid, Reader, Writer

MANIFEST_GUID = Guid.parse("63849ebb-3d92-4670-a1ff-58f9c94b87bb")
VTPM_SERVICE_GUID = Guid.parse("c476f1eb-0123-45a5-9641-b4e7dde5bfe3")
HEADER_SIZE = 24
ENTRY_SIZE = 24


@dataclass(frozen=True)
class ServicesManifest:
    """Services and their manifest data, in table order."""

    services: tuple[tuple[Guid, bytes], ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> ServicesManifest:
        source = Reader(data, "SVSM services manifest")
        if Guid.from_bytes(source.take(16, "guid")) != MANIFEST_GUID:
            raise FormatError("SVSM services manifest: wrong header GUID")
        total = source.u32("size")
        count = source.u32("count")
        if total != len(data) or HEADER_SIZE + count * ENTRY_SIZE > total:
            raise FormatError("SVSM services manifest: size fields do not match the data")
        services = []
        for _ in range(count):
            guid = Guid.from_bytes(source.take(16, "service guid"))
            offset, size = source.u32("offset"), source.u32("size")
            if offset < HEADER_SIZE + count * ENTRY_SIZE or offset + size > total:
                raise FormatError("SVSM services manifest: entry points outside the data")
            services.append((guid, data[offset : offset + size]))
        return cls(tuple(services))

    def to_bytes(self) -> bytes:
        offset = HEADER_SIZE + ENTRY_SIZE * len(self.services)
        total = offset + sum(len(data) for _, data in self.services)
        sink = Writer().put(MANIFEST_GUID.to_bytes()).u32(total).u32(len(self.services))
        for guid, data in self.services:
            sink.put(guid.to_bytes()).u32(offset).u32(len(data))
            offset += len(data)
        for _, data in self.services:
            sink.put(data)
        return sink.to_bytes()

    def service(self, guid: Guid) -> bytes:
        for found, data in self.services:
            if found == guid:
                return data
        raise FormatError(f"SVSM services manifest has no service {guid}")
