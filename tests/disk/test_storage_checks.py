"""``FileStorage`` and ``StorageWindow``: what a missing, read-only or directory path does, a
short read named as truncated, a window that keeps its reads and writes inside itself."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cvm.disk.storage import FileStorage, Storage, StorageWindow
from cvm.errors import FormatError, UsageError


def test_a_missing_file_is_an_os_error_unless_created(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with pytest.raises(FileNotFoundError) as refused:
        FileStorage(path)
    assert refused.value.filename == str(path)
    with pytest.raises(FileNotFoundError):
        FileStorage(path, read_only=True, create=True)  # read-only never creates
    old = os.umask(0)
    try:
        with FileStorage(path, create=True) as storage:
            assert storage.size() == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_directory_is_refused_with_its_path(tmp_path: Path) -> None:
    for read_only in (True, False):
        with pytest.raises(IsADirectoryError) as refused:
            FileStorage(tmp_path, read_only=read_only)
        assert refused.value.filename == str(tmp_path)
        assert refused.value.errno == errno.EISDIR
        assert str(refused.value) == f"[Errno {errno.EISDIR}] Is a directory: '{tmp_path}'"


def test_a_short_read_is_named_truncated(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(100)))
    with FileStorage(path, read_only=True) as storage:
        assert storage.read(90, 10) == bytes(range(90, 100))
        with pytest.raises(FormatError) as refused:
            storage.read(95, 10)
    assert str(refused.value) == (f"{path}: truncated: need 10 bytes at offset 95, the file "
                                  "has 100")


def test_a_read_only_storage_refuses_writes_and_does_not_sync(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(16))
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    with FileStorage(path, read_only=True) as storage:
        with pytest.raises(UsageError) as refused:
            storage.write(0, b"x")
        assert str(refused.value) == f"{path} is open read-only"
        storage.flush()
        assert synced == []
    with FileStorage(path) as writable:
        writable.flush()
        assert len(synced) == 1
    assert path.read_bytes() == bytes(16)


def test_writes_land_at_their_offset_grow_the_file_and_truncate_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with FileStorage(path, create=True) as storage:
        storage.write(10, memoryview(b"abcd"))
        storage.write(2, bytearray(b"xy"))
        assert storage.size() == 14
        storage.truncate(12)
        assert storage.size() == 12
    assert path.read_bytes() == b"\0\0xy" + bytes(6) + b"ab"


def test_a_write_that_the_system_takes_in_pieces_is_finished(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    real = os.pwrite
    calls: list[int] = []

    def in_pieces(fd: int, data: memoryview, offset: int) -> int:
        calls.append(offset)
        return real(fd, data[:3], offset)

    monkeypatch.setattr(os, "pwrite", in_pieces)
    path = tmp_path / "disk.img"
    with FileStorage(path, create=True) as storage:
        storage.write(5, b"0123456789")
    assert calls == [5, 8, 11, 14]
    assert path.read_bytes() == bytes(5) + b"0123456789"


def test_close_is_idempotent_and_the_context_closes(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"x")
    with FileStorage(path) as storage:
        descriptor = storage._fd
    assert storage._fd == -1
    with pytest.raises(OSError):
        os.fstat(descriptor)
    storage.close()
    assert storage._fd == -1


def test_descriptor_zero_is_closed_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With standard input closed the system hands out descriptor 0: it is a file like any."""
    path = tmp_path / "disk.img"
    path.write_bytes(b"x")
    closed: list[int] = []
    real_open, real_close = os.open, os.close

    def open_as_zero(*args: object) -> int:
        real_close(real_open(*args))  # type: ignore[arg-type]
        return 0

    monkeypatch.setattr(os, "open", open_as_zero)
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat(path))
    monkeypatch.setattr(os, "close", closed.append)
    FileStorage(path).close()
    assert closed == [0]


@pytest.mark.parametrize(("offset", "size"), [(-1, 0), (0, -1), (-5, -5)])
def test_a_window_needs_a_non_negative_offset_and_size(
        memory_storage: Callable[[int], Storage], offset: int, size: int) -> None:
    with pytest.raises(UsageError) as refused:
        StorageWindow(memory_storage(64), offset, size)
    assert str(refused.value) == "a storage window needs a non-negative offset and size"


def test_a_window_may_start_at_zero_and_be_empty(memory_storage: Callable[[int], Any]) -> None:
    inner = memory_storage(8)
    window = StorageWindow(inner, 0, 0)
    assert window.size() == 0 and window.read(0, 0) == b""
    whole = StorageWindow(inner, 0, 8)
    whole.write(0, b"12345678")
    assert inner.data == b"12345678"


def test_a_window_reads_and_writes_inside_itself_only(
        memory_storage: Callable[[int], Any]) -> None:
    inner = memory_storage(64)
    window = StorageWindow(inner, 16, 32)
    assert (window.size(), window.offset) == (32, 16)
    window.write(0, b"first")
    window.write(28, memoryview(b"last"))
    assert inner.data[16:21] == b"first" and inner.data[44:48] == b"last"
    assert window.read(28, 4) == b"last" and window.read(32, 0) == b""
    for offset, size in ((-1, 1), (29, 4), (32, 1)):
        message = f"range {offset}+{size} lies outside the 32-byte partition"
        with pytest.raises(FormatError) as refused:
            window.read(offset, size)
        assert str(refused.value) == message
        with pytest.raises(FormatError) as refused:
            window.write(offset, bytes(size))
        assert str(refused.value) == message
    wide = memoryview(bytes(8)).cast("I")  # two 4-byte items are eight bytes
    with pytest.raises(FormatError, match=r"^range 26\+8 lies outside"):
        window.write(26, wide)
    assert inner.data[:16] == bytes(16) and inner.data[48:] == bytes(16)
    window.flush()
    assert inner.flushes == 1
