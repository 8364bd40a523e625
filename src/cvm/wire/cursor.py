"""Cursors for variable-length formats (event logs, TPM marshalling, signature lists).

A :class:`Reader` names the structure it reads, so a short or malformed input becomes a
:class:`~cvm.errors.FormatError` saying what was being read and at which offset.
"""

from __future__ import annotations

from cvm.errors import FormatError, UsageError
from cvm.wire.layout import Endian


class Reader:
    """Reads integers and byte strings from a buffer, front to back."""

    def __init__(
        self, data: bytes | bytearray | memoryview, what: str, endian: Endian = "little"
    ) -> None:
        self.data = bytes(data)
        self.what = what
        self.endian: Endian = endian
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, field: str = "data") -> bytes:
        start = self.offset
        end = start + size
        if size < 0 or end > len(self.data):
            raise self._short(size, field)
        self.offset = end
        return self.data[start:end]

    def uint(self, size: int, field: str = "integer", endian: Endian | None = None) -> int:
        start = self.offset
        end = start + size
        if size < 0 or end > len(self.data):
            raise self._short(size, field)
        self.offset = end
        return int.from_bytes(self.data[start:end], endian or self.endian)

    def _short(self, size: int, field: str) -> FormatError:
        return FormatError(
            f"{self.what}: {field} needs {size} bytes at offset {self.offset:#x}, "
            f"only {self.remaining} left"
        )

    def u8(self, field: str = "u8") -> int:
        return self.uint(1, field)

    def u16(self, field: str = "u16") -> int:
        return self.uint(2, field)

    def u32(self, field: str = "u32") -> int:
        return self.uint(4, field)

    def u64(self, field: str = "u64") -> int:
        return self.uint(8, field)

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")

    def expect_end(self) -> None:
        if self.remaining:
            raise FormatError(
                f"{self.what}: {self.remaining} unexpected trailing bytes "
                f"at offset {self.offset:#x}"
            )

    def fail(self, message: str) -> FormatError:
        """A format error about the current position, for the caller to raise."""
        return FormatError(f"{self.what}: {message} (at offset {self.offset:#x})")


class Writer:
    """Appends integers and byte strings to a buffer."""

    def __init__(self, endian: Endian = "little") -> None:
        self.endian: Endian = endian
        self.buffer = bytearray()

    def uint(self, value: int, size: int, endian: Endian | None = None) -> Writer:
        if not 0 <= value < (1 << (8 * size)):
            raise UsageError(f"value {value} does not fit in {size} bytes")
        self.buffer += value.to_bytes(size, endian or self.endian)
        return self

    def u8(self, value: int) -> Writer:
        return self.uint(value, 1)

    def u16(self, value: int) -> Writer:
        return self.uint(value, 2)

    def u32(self, value: int) -> Writer:
        return self.uint(value, 4)

    def u64(self, value: int) -> Writer:
        return self.uint(value, 8)

    def put(self, data: bytes | bytearray) -> Writer:
        self.buffer += data
        return self

    def to_bytes(self) -> bytes:
        return bytes(self.buffer)
