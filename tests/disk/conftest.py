"""Fixtures for the disk tests: in-memory storage, a storage that crashes at the n-th write,
and cheap KDF settings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.disk.keyslot import KdfSpec


class MemoryStorage:
    """A growable bytearray behind the Storage protocol."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.writes = 0
        self.flushes = 0

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size > len(self.data):
            from cvm.errors import FormatError

            raise FormatError("memory storage: read past the end (truncated)")
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        self.data[offset : offset + len(chunk)] = chunk
        self.writes += 1

    def flush(self) -> None:
        self.flushes += 1


class CrashError(Exception):
    """The injected power cut."""


class CrashingStorage(MemoryStorage):
    """Fails at write number ``crash_at`` (0-based), having written ``torn`` of its bytes;
    ``complete`` tells whether the torn write left the bytes it meant to write anyway (the
    part it missed already held them)."""

    def __init__(self, data: bytearray, crash_at: int, torn: float) -> None:
        super().__init__(0)
        self.data = bytearray(data)
        self.crash_at = crash_at
        self.torn = torn
        self.complete = False

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.writes == self.crash_at:
            whole = bytes(data)
            chunk = whole[: int(len(whole) * self.torn)]
            self.data[offset : offset + len(chunk)] = chunk
            self.complete = bytes(self.data[offset : offset + len(whole)]) == whole
            self.writes += 1
            raise CrashError(f"crash at write {self.crash_at}")
        super().write(offset, data)


@pytest.fixture
def memory_storage() -> Callable[[int], MemoryStorage]:
    return MemoryStorage


@pytest.fixture
def crashing_storage() -> Callable[[bytearray, int, float], CrashingStorage]:
    return CrashingStorage


@pytest.fixture
def crash_type() -> type[Exception]:
    return CrashError


@pytest.fixture
def fast_kdf() -> KdfSpec:
    return KdfSpec("pbkdf2", iterations=1000)
