"""The host's copy of a bundle keeps a sparse disk image sparse, and the scan reads what it
holds: every byte that is not in a hole, at its offset."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from cvm.scenarios.lab_files import file_extents, host_copy, sparse_copy

MIB = 1 << 20


def _sparse(path: Path) -> dict[int, bytes]:
    written = {0: b"header" * 100, 5 * MIB + 123: b"middle", 16 * MIB - 6: b"footer"}
    with path.open("wb") as file:
        file.truncate(16 * MIB)
        for offset, data in written.items():
            file.seek(offset)
            file.write(data)
    return written


def test_a_sparse_copy_is_equal_and_stays_sparse(tmp_path: Path) -> None:
    source, target = tmp_path / "disk.img", tmp_path / "copy.img"
    _sparse(source)
    sparse_copy(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_blocks * 512 < 2 * MIB  # the holes were not written


def test_extents_hold_every_byte_written_at_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    written = _sparse(path)
    extents = file_extents(path)
    image = bytearray(path.stat().st_size)
    for start, data in extents:
        image[start : start + len(data)] = data
    assert bytes(image) == path.read_bytes()
    for offset, data in written.items():
        assert any(start <= offset and offset + len(data) <= start + len(chunk)
                   for start, chunk in extents)
    assert sum(len(chunk) for _, chunk in extents) < 16 * MIB


def test_the_host_copy_has_no_owner_folder(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "owner").mkdir(parents=True)
    (bundle / "owner" / "provisioning.key").write_bytes(b"k" * 32)
    (bundle / "firmware").mkdir()
    (bundle / "firmware" / "OVMF.fd").write_bytes(b"f" * 4096)
    _sparse(bundle / "disk.img")
    copy = host_copy(bundle, tmp_path / "host")
    assert not (copy / "owner").exists()
    assert (copy / "firmware" / "OVMF.fd").read_bytes() == b"f" * 4096
    assert (copy / "disk.img").read_bytes() == (bundle / "disk.img").read_bytes()


def test_the_host_copy_takes_only_the_host_files_and_skips_the_missing(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "firmware" / "svsm").mkdir(parents=True)
    (bundle / "firmware" / "svsm" / "svsm.bin").write_bytes(b"s" * 100)
    for name in ("image.json", "reference-values.json", "vtpm-state.bin"):
        (bundle / name).write_bytes(name.encode())
    (bundle / "notes.txt").write_bytes(b"not the host's")
    copy = host_copy(bundle, tmp_path / "a" / "b" / "host")  # its parents made too
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == [
        "firmware", "firmware/svsm", "firmware/svsm/svsm.bin", "image.json",
        "reference-values.json", "vtpm-state.bin"]
    assert (copy / "firmware" / "svsm" / "svsm.bin").read_bytes() == b"s" * 100
    (bundle / "host-vtpm-state.key").write_bytes(b"k" * 32)
    (bundle / "disk.img").write_bytes(b"d" * 10)
    again = host_copy(bundle, tmp_path / "again")
    assert (again / "host-vtpm-state.key").read_bytes() == b"k" * 32
    assert (again / "disk.img").read_bytes() == b"d" * 10


def test_a_host_copy_never_writes_into_a_folder_that_exists(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "host").mkdir()
    with pytest.raises(FileExistsError):
        host_copy(tmp_path / "bundle", tmp_path / "host")


@pytest.mark.parametrize("seek_data", [True, False])
def test_a_sparse_copy_keeps_every_byte_and_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seek_data: bool
) -> None:
    """Zero blocks inside data, data across block edges, a hole at the end, an empty file; with
    and without SEEK_DATA (a file system or platform that cannot say reads every block)."""
    if not seek_data:
        monkeypatch.delattr(os, "SEEK_DATA")
    source, target = tmp_path / "source", tmp_path / "target"
    data = (b"a" * 100 + bytes(3 * (1 << 16)) + b"b" * ((1 << 16) + 7) + bytes(5000)
            + b"c" * 3)
    with source.open("wb") as file:
        file.write(data)
        file.truncate(len(data) + 3 * MIB)  # ends with a hole
    sparse_copy(source, target)
    assert target.stat().st_size == source.stat().st_size
    assert target.read_bytes() == source.read_bytes()
    assert os.stat(target).st_blocks * 512 < 1 * MIB  # neither the hole nor the zeros written
    (tmp_path / "empty").write_bytes(b"")
    sparse_copy(tmp_path / "empty", tmp_path / "empty-copy")
    assert (tmp_path / "empty-copy").read_bytes() == b""


def test_without_seek_data_the_whole_file_is_one_extent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "disk.img"
    _sparse(path)
    monkeypatch.delattr(os, "SEEK_DATA")
    assert file_extents(path) == [(0, path.read_bytes())]


def test_a_file_of_only_a_hole_has_no_extent(tmp_path: Path) -> None:
    path = tmp_path / "hole.img"
    with path.open("wb") as file:
        file.truncate(4 * MIB)
    assert file_extents(path) == []
    sparse_copy(path, tmp_path / "copy.img")
    assert (tmp_path / "copy.img").stat().st_size == 4 * MIB


def test_a_sparse_file_in_a_folder_stays_sparse(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "firmware").mkdir(parents=True)
    _sparse(bundle / "firmware" / "OVMF.fd")
    copy = host_copy(bundle, tmp_path / "host")
    assert (copy / "firmware" / "OVMF.fd").read_bytes() == (
        bundle / "firmware" / "OVMF.fd").read_bytes()
    assert os.stat(copy / "firmware" / "OVMF.fd").st_blocks * 512 < 2 * MIB


def test_only_the_data_extents_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy reads each data extent once and nothing of the holes."""
    from cvm.scenarios import lab_files

    source = tmp_path / "disk.img"
    _sparse(source)
    extents = file_extents(source)
    read: list[int] = []

    class Counting:
        def __init__(self, path: Path | str, mode: str) -> None:
            self.file = open(path, mode)  # noqa: SIM115

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *_: object) -> None:
            self.file.close()

        def __getattr__(self, name: str) -> object:
            return getattr(self.file, name)

        def read(self, size: int) -> bytes:
            block: bytes = self.file.read(size)
            read.append(len(block))
            return block

    monkeypatch.setattr(lab_files, "open", Counting, raising=False)
    sparse_copy(source, tmp_path / "copy.img")
    assert sum(read) == sum(len(chunk) for _, chunk in extents)
    assert (tmp_path / "copy.img").read_bytes() == source.read_bytes()


def test_extents_do_not_overlap(tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    _sparse(path)
    extents = file_extents(path)
    assert len(extents) == 3
    for (start, chunk), (after, _) in itertools.pairwise(extents):
        assert start + len(chunk) <= after
    data = path.read_bytes()
    for start, chunk in extents:
        assert chunk == data[start : start + len(chunk)]
