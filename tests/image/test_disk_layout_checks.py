"""The image's disk plan and the disk written from it (`cvm.image.disk_layout`), checked
without building a bundle: identifiers drawn in order, the GPT the firmware measures, the ESP as
`write_esp` makes it, the root encrypted from its first byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.disk.disk_image import MIB, plan_layout
from cvm.disk.esp import write_esp
from cvm.disk.file_store import FileStore, MemoryDevice
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import DEFAULT_DATA_OFFSET
from cvm.errors import ExternalToolError, UsageError
from cvm.formats.luks2.metadata import Pbkdf2Kdf
from cvm.guest.boot.firmware import GptDisk
from cvm.image.disk_layout import (
    ESP_SIZE,
    ROOT_DATA_SIZE,
    ROOT_LABEL,
    SECTOR_SIZE,
    DiskPlan,
    make_plan,
    open_root,
    random_uuid,
    read_esp_file,
    replace_esp_file,
    root_store,
    write_disk,
)
from cvm.wire import Guid

KDF = KdfSpec("pbkdf2", iterations=1000)
VOLUME_KEY = bytes(range(64))
RECOVERY = b"recovery passphrase"
EPOCH = 1_700_000_000


class Draws:
    """A deterministic source that records how many bytes each call asked for."""

    def __init__(self, start: int = 0) -> None:
        self.counter = itertools.count(start)
        self.sizes: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.sizes.append(size)
        return bytes(next(self.counter) & 0xFF for _ in range(size))


def test_a_random_uuid_is_a_version_4_uuid_of_16_drawn_bytes() -> None:
    draws = Draws()
    assert random_uuid(draws) == "00010203-0405-4607-8809-0a0b0c0d0e0f"
    assert draws.sizes == [16]


def test_the_plan_draws_the_disk_the_partitions_the_volume_then_the_serial() -> None:
    draws = Draws()
    plan = make_plan(draws)
    assert draws.sizes == [16, 16, 16, 16, 4]
    assert plan.disk_guid == Guid.parse("00010203-0405-4607-8809-0a0b0c0d0e0f")
    assert plan.esp_guid == Guid.parse("10111213-1415-4617-9819-1a1b1c1d1e1f")
    assert plan.root_guid == Guid.parse("20212223-2425-4627-a829-2a2b2c2d2e2f")
    assert plan.luks_uuid == "30313233-3435-4637-b839-3a3b3c3d3e3f"
    assert plan.esp_serial == 0x43424140  # little-endian
    assert plan.layout == plan_layout(ROOT_DATA_SIZE, ESP_SIZE)
    assert (ROOT_DATA_SIZE, ESP_SIZE) == (1 * MIB, 34 * MIB)
    table = plan.layout.table(plan.disk_guid, plan.esp_guid, plan.root_guid)
    assert list(plan.table.blocks()) == list(table.blocks())
    assert DiskPlan.make(Draws()) == plan


def test_the_plan_takes_the_sizes_it_is_given() -> None:
    plan = make_plan(Draws(), root_data_size=3 * MIB, esp_size=40 * MIB)
    assert plan.layout == plan_layout(3 * MIB, 40 * MIB)
    assert DiskPlan.make(Draws(), 3 * MIB, 40 * MIB) == plan


def _disk_head(plan: DiskPlan) -> bytes:
    disk = bytearray(plan.layout.disk_size)
    for offset, block in plan.table.blocks():
        disk[offset : offset + len(block)] = block
    return bytes(disk)


def test_the_gpt_is_what_the_firmware_reads_from_the_whole_disk() -> None:
    plan = make_plan(Draws())
    gpt = plan.gpt_disk()
    assert gpt == GptDisk.from_disk(_disk_head(plan), 1)
    assert gpt.partition_number == 1
    assert gpt.entry[16:32] == plan.esp_guid.to_bytes()


def test_the_root_store_holds_the_files_in_a_store_of_the_given_size() -> None:
    plain = root_store({"/a": b"one", "/b/c": b"two" * 100})
    assert len(plain) == ROOT_DATA_SIZE
    store = FileStore.open(_device(plain))
    assert sorted(store.names()) == ["/a", "/b/c"]
    assert store.read("/a") == b"one" and store.read("/b/c") == b"two" * 100
    assert len(root_store({}, 2 * MIB)) == 2 * MIB


def _device(data: bytes) -> MemoryDevice:
    device = MemoryDevice(len(data))
    device.data[:] = data
    return device


ESP_FILES = {"/EFI/BOOT/BOOTX64.EFI": b"loader", "EFI/BOOT/grubx64.efi": b"grub",
             "EFI/cvm/policy.bin": b"\x01\x02", "/Xen.cfg": b"x"}


@pytest.fixture
def written(tmp_path: Path, require_tool: Callable[[str], str]) -> tuple[Path, DiskPlan, bytes]:
    """A disk written over an older file (each test writes its own: a mutation run credits a
    function to the tests that call it)."""
    require_tool("mformat")
    plan = make_plan(Draws(7))
    plain = root_store({"/workload": b"the owner's data"})[: 300 * 1024 + 5]
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xff" * (plan.layout.disk_size + 4096))
    write_disk(disk, plan, ESP_FILES, plain, VOLUME_KEY, RECOVERY, KDF, Draws(99), epoch=EPOCH)
    return disk, plan, plain


def test_the_disk_has_the_plans_size_and_gpt(written: tuple[Path, DiskPlan, bytes]) -> None:
    disk, plan, _ = written
    data = disk.read_bytes()
    assert len(data) == plan.layout.disk_size
    assert data.count(b"\xff" * 16) == 0  # nothing of the older file is left
    for offset, block in plan.table.blocks():  # the primary and the backup GPT
        assert data[offset : offset + len(block)] == block
    assert GptDisk.from_disk(data[: 34 * 512], 1) == plan.gpt_disk()


def test_the_esp_is_what_write_esp_makes_with_the_plans_serial_and_the_epoch(
    written: tuple[Path, DiskPlan, bytes], tmp_path: Path,
) -> None:
    disk, plan, _ = written
    layout = plan.layout
    tree = tmp_path / "tree"
    for path, data in ESP_FILES.items():
        (tree / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tree / path.lstrip("/")).write_bytes(data)
    reference = tmp_path / "reference.img"
    with reference.open("wb") as handle:
        handle.truncate(layout.disk_size)
    write_esp(reference, layout.esp_offset, layout.esp_size, tree, serial=plan.esp_serial,
              epoch=EPOCH)
    esp = slice(layout.esp_offset, layout.esp_offset + layout.esp_size)
    assert disk.read_bytes()[esp] == reference.read_bytes()[esp]
    assert read_esp_file(disk, layout.esp_offset, "/EFI/BOOT/BOOTX64.EFI") == b"loader"
    assert read_esp_file(disk, layout.esp_offset, "EFI/cvm/policy.bin") == b"\x01\x02"
    assert read_esp_file(disk, layout.esp_offset, "Xen.cfg") == b"x"


def test_the_root_is_the_plans_volume_and_decrypts_to_the_plain_store_zero_padded(
    written: tuple[Path, DiskPlan, bytes],
) -> None:
    disk, plan, plain = written
    layout = plan.layout
    with FileStorage(disk, read_only=True) as storage:
        volume = open_root(storage, layout)
        assert volume.uuid == plan.luks_uuid and volume.label == ROOT_LABEL == "cvm-root"
        assert volume.segment.sector_size == SECTOR_SIZE == 4096
        assert volume.segment.offset == DEFAULT_DATA_OFFSET
        key = volume.unlock(RECOVERY)
        assert key == VOLUME_KEY
        kdf = volume.metadata.keyslots[0].kdf
        assert isinstance(kdf, Pbkdf2Kdf) and kdf.iterations == 1000  # the KDF given
        device = volume.data_device(key)
        size = layout.root_size - DEFAULT_DATA_OFFSET
        assert device.size() == size
        data = bytes(device.read(0, size))
        raw = bytes(storage.read(layout.root_offset + DEFAULT_DATA_OFFSET, size))
    assert data == plain + bytes(size - len(plain))
    assert raw.count(bytes(SECTOR_SIZE)) == 0  # even the zero padding is encrypted
    assert b"the owner's data" not in raw


def test_open_root_draws_from_the_random_it_is_given(
    written: tuple[Path, DiskPlan, bytes], tmp_path: Path,
) -> None:
    disk, plan, _ = written
    copy = tmp_path / "copy.img"
    copy.write_bytes(disk.read_bytes())
    draws = Draws(200)
    with FileStorage(copy) as storage:
        volume = open_root(storage, plan.layout, random=draws)
        volume.add_keyslot(VOLUME_KEY, b"second", KDF)
    assert draws.sizes  # the new keyslot's salt and area came from ``draws``


def test_a_root_store_larger_than_the_data_segment_is_refused_before_writing(
    tmp_path: Path,
) -> None:
    plan = make_plan(Draws())
    room = plan.layout.root_size - DEFAULT_DATA_OFFSET
    out = tmp_path / "disk.img"
    with pytest.raises(UsageError) as caught:
        write_disk(out, plan, {}, bytes(room + 1), VOLUME_KEY, RECOVERY, KDF, Draws())
    assert str(caught.value) == (f"the root file store ({room + 1} bytes) does not fit the "
                                 f"root partition's data segment ({room} bytes)")
    assert not out.exists()


def test_a_root_store_that_fills_the_data_segment_is_written(
    tmp_path: Path, require_tool: Callable[[str], str],
) -> None:
    require_tool("mformat")
    plan = make_plan(Draws())
    room = plan.layout.root_size - DEFAULT_DATA_OFFSET
    out = tmp_path / "disk.img"
    write_disk(out, plan, {"EFI/BOOT/BOOTX64.EFI": b"x"}, b"\x5a" * room, VOLUME_KEY, RECOVERY,
               KDF, Draws())
    with FileStorage(out, read_only=True) as storage:
        volume = open_root(storage, plan.layout)
        tail = volume.data_device(volume.unlock(RECOVERY)).read(room - 4096, 4096)
    assert bytes(tail) == b"\x5a" * 4096


def test_an_esp_file_is_replaced_in_place_and_read_back(
    written: tuple[Path, DiskPlan, bytes], tmp_path: Path,
) -> None:
    disk, plan, _ = written
    copy = tmp_path / "copy.img"
    copy.write_bytes(disk.read_bytes())
    offset = plan.layout.esp_offset
    replace_esp_file(copy, offset, "/EFI/BOOT/BOOTX64.EFI", b"another loader")
    replace_esp_file(copy, offset, "EFI/cvm/new.bin", b"new")
    replace_esp_file(copy, offset, "/Xen.cfg", b"y")
    assert read_esp_file(copy, offset, "/Xen.cfg") == b"y"
    assert read_esp_file(copy, offset, "EFI/BOOT/BOOTX64.EFI") == b"another loader"
    assert read_esp_file(copy, offset, "/EFI/cvm/new.bin") == b"new"
    assert read_esp_file(copy, offset, "EFI/cvm/policy.bin") == b"\x01\x02"
    with pytest.raises(ExternalToolError, match=r"^mcopy failed: "):
        read_esp_file(copy, offset, "EFI/cvm/missing.bin")


def test_the_same_plan_and_draws_write_the_same_disk(
    written: tuple[Path, DiskPlan, bytes], tmp_path: Path,
) -> None:
    disk, plan, plain = written
    again = tmp_path / "again.img"
    write_disk(again, plan, ESP_FILES, plain, VOLUME_KEY, RECOVERY, KDF, Draws(99), epoch=EPOCH)
    assert again.read_bytes() == disk.read_bytes()  # the header's salts came from the draws
