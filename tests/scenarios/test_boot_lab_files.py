"""The host's copy of a bundle keeps a sparse disk image sparse, and the scan reads what it
holds: every byte that is not in a hole, at its offset."""

from __future__ import annotations

import os
from pathlib import Path

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
