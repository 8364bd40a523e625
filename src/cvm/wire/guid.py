"""GUIDs in the UEFI/Microsoft mixed-endian byte order (first three groups little-endian)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cvm.errors import FormatError

GUID_SIZE = 16


@dataclass(frozen=True, order=True)
class Guid:
    """A GUID; ``bytes_le`` is its 16-byte wire form as UEFI, GPT and SEV tables store it."""

    value: uuid.UUID

    @classmethod
    def parse(cls, text: str) -> Guid:
        try:
            return cls(uuid.UUID(text))
        except ValueError:
            raise FormatError(f"not a GUID: {text!r}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> Guid:
        if len(data) != GUID_SIZE:
            raise FormatError(f"GUID: expected 16 bytes, got {len(data)}")
        return cls(uuid.UUID(bytes_le=bytes(data)))

    def to_bytes(self) -> bytes:
        return self.value.bytes_le

    def __str__(self) -> str:
        return str(self.value)
