"""The firmware's FAT driver reads what mtools wrote: every file, long names, nested folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cvm.disk.esp import write_esp
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.errors import FormatError
from cvm.guest.boot.fat import FatVolume

MIB = 1 << 20
pytestmark = pytest.mark.skipif(shutil.which("mformat") is None, reason="mtools not installed")


def test_every_file_is_read_back_exactly(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    files = {
        "EFI/BOOT/BOOTX64.EFI": bytes(range(256)) * 300,  # several clusters
        "EFI/BOOT/grub.cfg": b"set timeout=0\n",
        "EFI/cvm/a rather long file name.json": b"{}",
        "vmlinuz": b"\x90" * 4097,
        "empty": b"",
    }
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    image = tmp_path / "esp.img"
    offset = MIB
    with FileStorage(image, create=True) as disk:
        disk.truncate(offset + 34 * MIB)
    write_esp(image, offset, 34 * MIB, tree)
    with FileStorage(image, read_only=True) as disk:
        found = FatVolume(StorageWindow(disk, offset, 34 * MIB).read).files()
    assert found == {f"/{name}": data for name, data in files.items()}


def test_what_is_not_fat32_is_refused() -> None:
    with pytest.raises(FormatError, match="0x55AA"):
        FatVolume(lambda offset, size: bytes(size))
    sector = bytearray(512)
    sector[510:512] = b"\x55\xaa"
    with pytest.raises(FormatError, match="not a FAT32"):
        FatVolume(lambda offset, size: bytes(sector[:size]) if offset == 0 else bytes(size))
