"""One LUKS2 header copy: binary header + JSON area, bound by the header checksum.

LUKS2 On-Disk Format Specification v1.1.4, section 2.1 ("the checksum is calculated over the
binary header and the JSON area with the checksum field zeroed") and section 2.2 (two copies:
the primary at offset 0, the secondary at ``hdr_size``; the higher ``seqid`` of two valid
copies wins). This module holds no I/O: the volume layer reads and writes the bytes.

Public API: :class:`HeaderCopy` with ``parse(area)`` (verifies the checksum, then parses the
binary header and the JSON) and ``to_bytes()`` (seals it with a fresh checksum).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from cvm.errors import FormatError, IntegrityError
from cvm.formats.luks2.binary_header import (
    BINARY_HEADER_SIZE,
    CSUM_ALGS,
    CSUM_SPAN,
    BinaryHeader,
)
from cvm.formats.luks2.metadata import Metadata


def header_checksum(area: bytes, csum_alg: str) -> bytes:
    """``csum_alg`` over the header area with the checksum field zeroed, padded to 64 bytes."""
    zeroed = area[: CSUM_SPAN.start] + bytes(64) + area[CSUM_SPAN.stop :]
    return hashlib.new(csum_alg, zeroed).digest().ljust(64, b"\0")


@dataclass(frozen=True)
class HeaderCopy:
    """A whole header copy (``hdr_size`` bytes): its binary header and its metadata."""

    binary: BinaryHeader
    metadata: Metadata

    @classmethod
    def parse(cls, area: bytes,
              parse_metadata: Callable[[bytes], Metadata] = Metadata.parse) -> HeaderCopy:
        """Checksum, binary header, then the JSON area through ``parse_metadata`` (a reader
        of both copies may pass one that parses a JSON area it has seen only once)."""
        if len(area) < BINARY_HEADER_SIZE:
            raise FormatError(f"LUKS2 header: {len(area)} bytes, need at least 4096")
        binary = BinaryHeader.from_bytes(area[:BINARY_HEADER_SIZE])
        if len(area) != binary.hdr_size:
            raise FormatError(
                f"LUKS2 header: area of {len(area)} bytes, binary header says {binary.hdr_size}"
            )
        if header_checksum(area, binary.csum_alg) != binary.csum:
            which = "secondary" if binary.secondary else "primary"
            raise IntegrityError(f"LUKS2 {which} header: checksum mismatch")
        metadata = parse_metadata(area[BINARY_HEADER_SIZE:])
        if metadata.config.json_size != binary.hdr_size - BINARY_HEADER_SIZE:
            raise FormatError(
                f"LUKS2 header: config.json_size {metadata.config.json_size} does not match "
                f"hdr_size {binary.hdr_size}"
            )
        return cls(binary, metadata)

    def to_bytes(self) -> bytes:
        """The sealed copy: binary header with its checksum, then the JSON area."""
        unsealed = replace(self.binary, csum=bytes(64))
        area = unsealed.to_bytes() + self.metadata.to_area()
        if len(area) != self.binary.hdr_size:
            raise FormatError(
                f"LUKS2 header: json_size {self.metadata.config.json_size} does not match "
                f"hdr_size {self.binary.hdr_size}"
            )
        csum = header_checksum(area, self.binary.csum_alg)
        return replace(self.binary, csum=csum).to_bytes() + area[BINARY_HEADER_SIZE:]

    def sealed(self) -> HeaderCopy:
        """This copy with the checksum its bytes carry (for comparisons after a round trip)."""
        return HeaderCopy.parse(self.to_bytes())


__all__ = ["CSUM_ALGS", "HeaderCopy", "header_checksum"]
