"""Byte storage under a volume: a file (or block device) read and written at offsets.

The LUKS2 and GPT layers never touch ``open()`` themselves: they read and write through a
:class:`Storage`, so tests can inject one that fails at the n-th write (crash safety) and the
CLI hands in a :class:`FileStorage`.

Public API: the :class:`Storage` protocol (``size``, ``read``, ``write``, ``flush``) and
:class:`FileStorage` (``os.pread``/``os.pwrite`` on one descriptor; ``flush`` is ``fsync``).
A path that is missing, unreadable or a directory raises :class:`OSError` with the path (the
CLI's exit code 74, as for every file it cannot read or write).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import Protocol

from cvm.errors import FormatError, UsageError


class Storage(Protocol):
    """Random-access bytes; ``write`` may grow the storage, ``flush`` makes writes durable."""

    def size(self) -> int: ...

    def read(self, offset: int, size: int) -> bytes: ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def flush(self) -> None: ...


class FileStorage:
    """A file opened for reading (and writing unless ``read_only``)."""

    def __init__(self, path: str | Path, read_only: bool = False, create: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        flags = os.O_RDONLY if read_only else os.O_RDWR | (os.O_CREAT if create else 0)
        self._fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        if stat.S_ISDIR(os.fstat(self._fd).st_mode):
            self.close()
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(self.path))

    def size(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_END)

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise FormatError(
                f"{self.path}: truncated: need {size} bytes at offset {offset}, "
                f"the file has {self.size()}"
            )
        return data

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self.read_only:
            raise UsageError(f"{self.path} is open read-only")
        view = memoryview(data).cast("B")
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def flush(self) -> None:
        if not self.read_only:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class StorageWindow:
    """A window ``[offset, offset + size)`` of another storage (a partition of a disk)."""

    def __init__(self, inner: Storage, offset: int, size: int) -> None:
        if offset < 0 or size < 0:
            raise UsageError("a storage window needs a non-negative offset and size")
        self._inner = inner
        self.offset = offset
        self._size = size

    def size(self) -> int:
        return self._size

    def _check(self, offset: int, size: int) -> None:
        if offset < 0 or offset + size > self._size:
            raise FormatError(
                f"range {offset}+{size} lies outside the {self._size}-byte partition"
            )

    def read(self, offset: int, size: int) -> bytes:
        self._check(offset, size)
        return self._inner.read(self.offset + offset, size)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check(offset, len(memoryview(data).cast("B")))
        self._inner.write(self.offset + offset, data)

    def flush(self) -> None:
        self._inner.flush()
