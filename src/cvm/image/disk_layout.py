"""The image's disk: GPT, a FAT32 ESP in the clear, a LUKS2 root pre-encrypted from its first
byte, holding a ``cvm-filestore/2``.

The layout is :func:`cvm.disk.disk_image.plan_layout` (ESP from 1 MiB, root after it with a
16 MiB LUKS2 header, 1 MiB for the backup GPT); the ESP is written by
:func:`cvm.disk.esp.write_esp` (mtools); the root is formatted by
:meth:`cvm.disk.volume.Luks2Volume.format` with the UUID the initramfs names, and its whole data
segment — the file store built in memory, zero-padded — is encrypted sector by sector through
the dm-crypt layer by :func:`cvm.disk.conversion.copy_into`, so no byte of the segment is left
in plaintext (not even the zeros). The GPT is known before the disk is written, so the
firmware's PCR 5 measurement of it can be predicted.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cvm.disk.conversion import copy_into
from cvm.disk.disk_image import MIB, DiskLayout, plan_layout
from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.esp import run_tool, write_esp
from cvm.disk.file_store import FileStore, MemoryDevice
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import DEFAULT_DATA_OFFSET, Luks2Volume
from cvm.errors import UsageError
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.guest.boot.firmware import GptDisk
from cvm.wire import Guid

ESP_SIZE = 34 * MIB
ROOT_DATA_SIZE = 1 * MIB
SECTOR_SIZE = 4096
ROOT_LABEL = "cvm-root"
ESP_SERIAL_SIZE = 4  # the FAT32 volume serial (BS_VolID)
Random = Callable[[int], bytes]


def random_uuid(random: Random) -> str:
    return str(uuid.UUID(bytes=random(16), version=4))


@dataclass(frozen=True)
class DiskPlan:
    """The disk decided before it is written: layout, identifiers and the partition table."""

    layout: DiskLayout
    disk_guid: Guid
    esp_guid: Guid
    root_guid: Guid
    luks_uuid: str
    table: PartitionTable
    esp_serial: int

    @classmethod
    def make(cls, random: Random, root_data_size: int = ROOT_DATA_SIZE,
             esp_size: int = ESP_SIZE) -> DiskPlan:
        return make_plan(random, root_data_size, esp_size)

    def gpt_disk(self) -> GptDisk:
        """The GPT as the firmware reads (and measures) it from the first LBAs."""
        head = bytearray(34 * 512)
        for offset, block in self.table.blocks():
            if offset < len(head):
                head[offset : offset + len(block)] = block
        return GptDisk.from_disk(bytes(head), 1)


def make_plan(random: Random, root_data_size: int = ROOT_DATA_SIZE,
              esp_size: int = ESP_SIZE) -> DiskPlan:
    """A new plan: the layout for ``root_data_size``, the disk's, the partitions' and the
    volume's identifiers and the ESP's serial, drawn from ``random`` in that order."""
    layout = plan_layout(root_data_size, esp_size)
    disk, esp, root = (Guid.parse(random_uuid(random)) for _ in range(3))
    luks_uuid = random_uuid(random)
    serial = int.from_bytes(random(ESP_SERIAL_SIZE), "little")
    return DiskPlan(layout, disk, esp, root, luks_uuid, layout.table(disk, esp, root), serial)


def root_store(files: Mapping[str, bytes], size: int = ROOT_DATA_SIZE) -> bytes:
    """The plaintext of the root: a file store of ``size`` bytes holding ``files``."""
    device = MemoryDevice(size)
    store = FileStore.format(device)
    for name, data in files.items():
        store.write(name, data)
    return bytes(device.data)


def write_disk(out: Path, plan: DiskPlan, esp_files: Mapping[str, bytes], root_plain: bytes,
               volume_key: bytes, recovery: bytes, kdf: KdfSpec, random: Random,
               epoch: int | None = None) -> None:
    """Write ``out``: the GPT, the ESP (volume serial from the plan, its entries stamped
    ``epoch``, or the clock for ``None``), the LUKS2 header and the encrypted root."""
    layout = plan.layout
    room = layout.root_size - DEFAULT_DATA_OFFSET  # the LUKS2 data segment
    if len(root_plain) > room:
        raise UsageError(f"the root file store ({len(root_plain)} bytes) does not fit the root "
                         f"partition's data segment ({room} bytes)")
    with tempfile.TemporaryDirectory(prefix="cvm-esp-") as scratch:
        tree = Path(scratch)
        for path, data in esp_files.items():
            target = tree / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        with FileStorage(out, create=True) as disk:
            disk.truncate(0)
            disk.truncate(layout.disk_size)
            for offset, block in plan.table.blocks():
                disk.write(offset, block)
            disk.flush()
            write_esp(out, layout.esp_offset, layout.esp_size, tree, serial=plan.esp_serial,
                      epoch=epoch)
            window = StorageWindow(disk, layout.root_offset, layout.root_size)
            volume = Luks2Volume.format(window, recovery, kdf, volume_key=volume_key,
                                        sector_size=SECTOR_SIZE, label=ROOT_LABEL,
                                        volume_uuid=plan.luks_uuid, random=random)
            device = CryptDevice(window, volume.segment, volume_key)
            plain = root_plain.ljust(device.size(), b"\0")
            copy_into(io.BytesIO(plain), device, len(plain))
            disk.flush()


def open_root(disk: FileStorage, layout: DiskLayout, random: Random = os.urandom) -> Luks2Volume:
    """The LUKS2 volume of the root partition of an image's disk; ``random`` draws what a
    change to it needs (keyslot salts and areas, the header's salts)."""
    return Luks2Volume.open(StorageWindow(disk, layout.root_offset, layout.root_size),
                            random=random)


def replace_esp_file(disk_image: Path, esp_offset: int, path: str, data: bytes) -> None:
    """Overwrite (or create) ``path`` on the ESP of ``disk_image`` in place (mtools)."""
    with tempfile.TemporaryDirectory(prefix="cvm-esp-") as scratch:
        source = Path(scratch) / "file"
        source.write_bytes(data)
        target = f"{disk_image}@@{esp_offset}"
        run_tool("mcopy", "-o", "-i", target, str(source), "::/" + path.lstrip("/"))


def read_esp_file(disk_image: Path, esp_offset: int, path: str) -> bytes:
    """The bytes of ``path`` on the ESP of ``disk_image`` (mtools)."""
    with tempfile.TemporaryDirectory(prefix="cvm-esp-") as scratch:
        target = Path(scratch) / "file"
        run_tool("mcopy", "-i", f"{disk_image}@@{esp_offset}", "::/" + path.lstrip("/"),
                 str(target))
        return target.read_bytes()
