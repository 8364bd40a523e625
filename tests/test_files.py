"""Files written for users (:mod:`cvm.files`): whole or not at all, secrets private."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from cvm import files
from cvm.files import staged, write_atomically, write_new, write_output


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_write_that_fails_leaves_the_previous_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"previous")

    def full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as caught:
        write_output(path, b"new and longer")
    assert caught.value.filename == str(path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary left


@pytest.mark.parametrize(("secret", "mode"), [(True, 0o600), (False, 0o644)])
def test_a_secret_is_private_whatever_the_file_was(tmp_path: Path, umask: None, secret: bool,
                                                   mode: int) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"earlier")
    path.chmod(0o666 if secret else 0o600)
    write_output(path, b"data", secret=secret)
    assert path.read_bytes() == b"data" and _mode(path) == mode


def test_an_output_is_public_unless_said_secret(tmp_path: Path, umask: None) -> None:
    write_output(tmp_path / "report.json", b"{}")
    assert _mode(tmp_path / "report.json") == 0o644


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_disk_that_fills_during_the_write_leaves_the_previous_file(
        tmp_path: Path, full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"previous")
    with full_disk(100), pytest.raises(OSError) as caught:
        write_output(path, bytes(1000))
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(path)
    assert path.read_bytes() == b"previous"
    assert _left(tmp_path) == ["out.bin"]


def test_a_rename_that_fails_leaves_the_previous_file_and_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"previous")

    def refused(source: Path, target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(source), str(target))
    monkeypatch.setattr(files.os, "replace", refused)
    with pytest.raises(OSError) as caught:
        write_atomically(path, b"new")
    assert (caught.value.errno, caught.value.strerror) == (errno.EXDEV,
                                                          "Invalid cross-device link")
    assert caught.value.filename == str(path)  # the file asked for, never the temporary
    assert path.read_bytes() == b"previous" and _left(tmp_path) == ["out.bin"]


def test_the_temporary_is_a_new_hidden_name_beside_the_file(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "out.bin"
    with staged(path, 0o640) as temporary:
        assert temporary.parent == tmp_path  # the same file system: the rename is atomic
        assert re.fullmatch(r"\.out\.bin\.[0-9a-f]{8}\.tmp", temporary.name), temporary.name
        assert temporary.read_bytes() == b"" and _mode(temporary) == 0o640
        temporary.write_bytes(b"streamed")
        assert not path.exists()
    assert path.read_bytes() == b"streamed" and _mode(path) == 0o640
    assert _left(tmp_path) == ["out.bin"]
    with staged(path) as temporary:
        temporary.write_bytes(b"again")
    assert path.read_bytes() == b"again" and _mode(path) == 0o600  # private unless asked


def test_a_taken_temporary_name_is_someone_elses_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files.secrets, "token_hex", lambda size: "0badc0de")
    taken = tmp_path / ".out.bin.0badc0de.tmp"
    taken.write_bytes(b"theirs")
    with pytest.raises(FileExistsError) as caught:
        write_output(tmp_path / "out.bin", b"new")
    assert caught.value.filename == str(tmp_path / "out.bin")
    assert taken.read_bytes() == b"theirs" and _left(tmp_path) == [taken.name]


def test_the_data_then_the_rename_reach_the_disk(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.bin"
    done: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        found = os.fstat(descriptor)
        done.append(("fsync", "folder" if stat.S_ISDIR(found.st_mode) else found.st_size))
        assert found.st_ino in (tmp_path.stat().st_ino, *(p.stat().st_ino
                                                         for p in tmp_path.iterdir()))
        real_fsync(descriptor)

    def replace(source: Path, target: Path) -> None:
        done.append(("replace", Path(target).name))
        real_replace(source, target)
    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    write_output(path, b"12345")
    assert done == [("fsync", 5), ("replace", "out.bin"), ("fsync", "folder")]


def test_a_block_that_raises_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match=r"^half way$"), staged(path) as temporary:
        temporary.write_bytes(b"half")
        raise ValueError("half way")
    assert path.read_bytes() == b"previous" and _left(tmp_path) == ["disk.img"]


def test_an_os_error_of_the_block_names_the_output_unless_it_named_another_file(
        tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    with pytest.raises(OSError) as caught, staged(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert caught.value.strerror == "No space left on device"
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(OSError) as caught, staged(path) as temporary:
        raise PermissionError(errno.EACCES, "Permission denied", str(temporary))
    assert type(caught.value) is PermissionError and caught.value.filename == str(path)
    original = FileNotFoundError(errno.ENOENT, "No such file or directory", "/the/input")
    with pytest.raises(OSError) as caught, staged(path):
        raise original
    assert caught.value is original and caught.value.__cause__ is None
    assert _left(tmp_path) == []


def test_an_error_without_a_code_still_names_the_output(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    with pytest.raises(OSError) as caught, staged(path):
        raise OSError("the device went away")
    assert caught.value.filename == str(path) and caught.value.strerror == "the device went away"


def test_a_pipe_or_a_device_is_never_replaced(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(OSError) as caught:
        write_output(pipe, b"data")
    assert (caught.value.errno, caught.value.filename) == (errno.EINVAL, str(pipe))
    assert caught.value.strerror == "Not a regular file (cvm writes its outputs as files)"
    assert stat.S_ISFIFO(pipe.stat().st_mode) and _left(tmp_path) == ["pipe"]


def test_a_folder_is_the_os_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_output(folder, b"data")
    assert caught.value.filename == str(folder)
    assert _left(tmp_path) == ["out"] and _left(folder) == []


def test_a_new_file_is_created_whole_and_private(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "kek.hex"
    write_new(path, b"secret\n")
    assert path.read_bytes() == b"secret\n" and _mode(path) == 0o600
    write_new(tmp_path / "public", b"p", 0o644)
    assert _mode(tmp_path / "public") == 0o644
    assert _left(tmp_path) == ["kek.hex", "public"]


def test_a_new_file_never_replaces_one_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "kek.hex"
    path.write_bytes(b"theirs")
    with pytest.raises(FileExistsError) as caught:
        write_new(path, b"mine")
    assert caught.value.filename == str(path)
    assert path.read_bytes() == b"theirs" and _left(tmp_path) == ["kek.hex"]


def test_a_new_file_that_cannot_be_written_is_not_created(
        tmp_path: Path, full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    path = tmp_path / "kek.hex"
    with full_disk(10), pytest.raises(OSError) as caught:
        write_new(path, bytes(100))
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(path)
    assert _left(tmp_path) == []
