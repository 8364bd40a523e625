"""Cursors for variable-length formats (event logs, TPM marshalling, signature lists).

A :class:`Reader` names the structure it reads, so a short or malformed input becomes a
:class:`~cvm.errors.FormatError` saying what was being read and at which offset.
"""

from __future__ import annotations

from cvm.errors import FormatError, OversizeError, TruncatedError, UsageError
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
        # The reader's own methods compute this inline (no property call), so the mutation
        # tests reach the arithmetic they decide on; mutmut leaves properties unmutated.
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

    def _short(self, size: int, field: str) -> TruncatedError:
        return TruncatedError(
            f"{self.what}: {field} needs {size} bytes at offset {self.offset:#x}, "
            f"only {len(self.data) - self.offset} left"
        )

    # The fixed widths inline the bounds check and the conversion (no second call): TPM and
    # state marshalling reads thousands of them per boot.
    def u8(self, field: str = "u8") -> int:
        start = self.offset
        if start + 1 > len(self.data):
            raise self._short(1, field)
        self.offset = start + 1
        return self.data[start]

    def u16(self, field: str = "u16") -> int:
        start = self.offset
        end = start + 2
        if end > len(self.data):
            raise self._short(2, field)
        self.offset = end
        return int.from_bytes(self.data[start:end], self.endian)

    def u32(self, field: str = "u32") -> int:
        start = self.offset
        end = start + 4
        if end > len(self.data):
            raise self._short(4, field)
        self.offset = end
        return int.from_bytes(self.data[start:end], self.endian)

    def u64(self, field: str = "u64") -> int:
        start = self.offset
        end = start + 8
        if end > len(self.data):
            raise self._short(8, field)
        self.offset = end
        return int.from_bytes(self.data[start:end], self.endian)

    def sized(self, width: int, field: str, max_size: int) -> bytes:
        """A byte string after its ``width``-byte length (a TPM2B is ``u16 size ‖ buffer``);
        a length above ``max_size`` is refused. One call for what ``uint`` then ``take`` read,
        with the same errors at the same offsets."""
        data, start = self.data, self.offset
        begin = start + width
        if begin > len(data):
            raise self._short(width, f"{field}.size")
        size = int.from_bytes(data[start:begin], self.endian)
        self.offset = begin
        if size > max_size:
            raise OversizeError(f"{self.what}: {field}.size {size} exceeds the maximum "
                                f"{max_size} (at offset {self.offset:#x})")
        end = begin + size
        if end > len(data):
            raise self._short(size, field)
        self.offset = end
        return data[begin:end]

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.offset, "rest")

    def expect_end(self) -> None:
        left = len(self.data) - self.offset
        if left:
            raise FormatError(
                f"{self.what}: {left} unexpected trailing bytes "
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
        if not 0 <= value < 0x100:
            raise UsageError(f"value {value} does not fit in 1 bytes")
        self.buffer.append(value)
        return self

    def u16(self, value: int) -> Writer:
        if not 0 <= value < 0x1_0000:
            raise UsageError(f"value {value} does not fit in 2 bytes")
        self.buffer += value.to_bytes(2, self.endian)
        return self

    def u32(self, value: int) -> Writer:
        if not 0 <= value < 0x1_0000_0000:
            raise UsageError(f"value {value} does not fit in 4 bytes")
        self.buffer += value.to_bytes(4, self.endian)
        return self

    def u64(self, value: int) -> Writer:
        if not 0 <= value < 1 << 64:
            raise UsageError(f"value {value} does not fit in 8 bytes")
        self.buffer += value.to_bytes(8, self.endian)
        return self

    def sized(self, data: bytes | bytearray, width: int) -> Writer:
        """``data`` after its length in ``width`` bytes (the caller bounds the length)."""
        self.buffer += len(data).to_bytes(width, self.endian)
        self.buffer += data
        return self

    def put(self, data: bytes | bytearray) -> Writer:
        self.buffer += data
        return self

    def to_bytes(self) -> bytes:
        return bytes(self.buffer)
