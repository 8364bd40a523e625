"""``cvm disk build``: a raw GPT disk with a clear ESP and a root pre-encrypted as LUKS2.

The owner builds the disk before it ever reaches a host (ARCHITECTURE.md, flow 1):

1. partition table (UEFI 2.10 chapter 5): partition 1 the ESP (type C12A7328-...), partition 2
   the root (Discoverable Partitions type 4F68BCE3-... "Linux root x86-64", which may hold
   LUKS2); both start and end on 1 MiB boundaries (so 4 KiB-aligned);
2. the ESP: FAT32 made by mtools in place, holding the boot-chain tree (:mod:`cvm.disk.esp`);
3. the root partition: a LUKS2 header, then the root file-system image encrypted sector by
   sector through the dm-crypt layer. The plaintext is read from the input (or from a
   temporary ext4 image made with ``mkfs.ext4 -d`` from a tree, outside the output's
   directory) and only ciphertext is written to the output file.

The disk is built in a new file beside the output (created 0600), which replaces the output only
once whole (:func:`cvm.files.staged`): a failure at any step leaves the previous output as it was.

Public API: :func:`plan_layout` -> :class:`DiskLayout`, :func:`build_disk` ->
:class:`BuildResult`; progress goes to a ``(stage, done, total)`` callback.
"""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cvm.disk.conversion import copy_into
from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.esp import MIN_ESP_SIZE, boot_files, run_tool, write_esp
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import DEFAULT_DATA_OFFSET, Luks2Volume
from cvm.errors import UsageError
from cvm.files import staged
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.wire import Guid

MIB = 1 << 20
LBA_SIZE = 512
Progress = Callable[[str, int, int], None]


def _ignore(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class DiskLayout:
    """Byte offsets and sizes of the two partitions and of the whole disk."""

    esp_offset: int
    esp_size: int
    root_offset: int
    root_size: int
    disk_size: int

    def table(self, disk_guid: Guid, esp_guid: Guid, root_guid: Guid) -> PartitionTable:
        esp = PartitionEntry(partition_types.ESP, esp_guid, self.esp_offset // LBA_SIZE,
                             (self.esp_offset + self.esp_size) // LBA_SIZE - 1,
                             name="EFI System Partition")
        root = PartitionEntry(partition_types.ROOT_X86_64, root_guid,
                              self.root_offset // LBA_SIZE,
                              (self.root_offset + self.root_size) // LBA_SIZE - 1, name="root")
        return PartitionTable.create(self.disk_size // LBA_SIZE, [esp, root], disk_guid)


def _mib_up(value: int) -> int:
    return -(-value // MIB) * MIB


def plan_layout(root_data_size: int, esp_size: int = 64 * MIB) -> DiskLayout:
    """ESP from 1 MiB, root after it with a 16 MiB LUKS2 header, 1 MiB for the backup GPT."""
    if esp_size < MIN_ESP_SIZE or esp_size % MIB:
        raise UsageError(f"ESP size must be a whole number of MiB, at least {MIN_ESP_SIZE >> 20}")
    root_offset = MIB + esp_size
    root_size = _mib_up(DEFAULT_DATA_OFFSET + root_data_size)
    return DiskLayout(MIB, esp_size, root_offset, root_size, root_offset + root_size + MIB)


@dataclass(frozen=True)
class BuildResult:
    """What was written: the layout, the volume's UUID and the ESP files."""

    layout: DiskLayout
    luks_uuid: str
    disk_guid: Guid
    esp_files: tuple[str, ...]


def _tree_size(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())


def _make_ext4(tree: Path, scratch: Path) -> Path:
    image = scratch / "root.ext4"
    size_mib = max(16, _tree_size(tree) * 3 // 2 // MIB + 16)
    run_tool("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(image), f"{size_mib}M")
    return image


def build_disk(out: Path, root: Path, boot_dir: Path, passphrase: bytes, kdf: KdfSpec,
               esp_size: int = 64 * MIB, sector_size: int = 4096, label: str = "cvm-root",
               volume_key: bytes | None = None, progress: Progress = _ignore,
               threads: int = 2) -> BuildResult:
    """Write the disk image ``out``; see the module docstring."""
    boot_files(boot_dir)
    if not root.exists():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory (the root)", str(root))
    if out.exists() and out.resolve() == root.resolve():
        raise UsageError("the output must not be the root input")
    with tempfile.TemporaryDirectory(prefix="cvm-root-") as scratch:
        plain = _make_ext4(root, Path(scratch)) if root.is_dir() else root
        size = plain.stat().st_size
        data_size = -(-size // sector_size) * sector_size
        layout = plan_layout(data_size, esp_size)
        ids = [Guid(uuid.uuid4()) for _ in range(3)]
        table = layout.table(*ids)
        with staged(out) as new, FileStorage(new) as disk:
            disk.truncate(layout.disk_size)
            for offset, block in table.blocks():
                disk.write(offset, block)
            disk.flush()
            files = write_esp(new, layout.esp_offset, layout.esp_size, boot_dir,
                              progress=lambda name: progress(f"ESP {name}", 0, 0))
            window = StorageWindow(disk, layout.root_offset, layout.root_size)
            key = volume_key if volume_key is not None else os.urandom(64)
            volume = Luks2Volume.format(window, passphrase, kdf, volume_key=key,
                                        sector_size=sector_size, label=label,
                                        announce=lambda text: progress(f"LUKS2 {text}", 0, 0))
            device = CryptDevice(window, volume.segment, key, threads=threads)
            done = 0

            def advance(count: int) -> None:
                nonlocal done
                done += count
                progress("root", done, data_size)

            progress("root", 0, data_size)
            with plain.open("rb") as source:
                copy_into(source, device, size, advance)
    return BuildResult(layout, volume.uuid, ids[0], tuple(f.as_posix() for f in files))
