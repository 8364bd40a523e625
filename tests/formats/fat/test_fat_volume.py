"""The FAT reader against volumes mtools writes (FAT12, FAT16, FAT32, long names), and hostile
volumes: loops, chains off the volume, long names that do not belong, random damage."""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.fat import FatVolume
from cvm.formats.fat.boot_sector import FatType

FILES = {
    "EFI/BOOT/BOOTX64.EFI": random.Random(1).randbytes(70_000),
    "EFI/debian/grub.cfg": b"set timeout=0\nlinux /vmlinuz quiet\nboot\n",
    "a long file name with spaces.txt": b"long name",
    "vmlinuz": random.Random(2).randbytes(5000),
    "empty": b"",
}


def _volume(tmp_path: Path, find: Callable[[str], str], kilobytes: int, *fat: str) -> bytes:
    image = tmp_path / "fat.img"
    image.write_bytes(bytes(kilobytes * 1024))
    subprocess.run([find("mformat"), "-i", str(image), *fat, "-v", "TEST", "::"], check=True)
    made: set[str] = set()
    for name, data in FILES.items():
        local = tmp_path / "src" / name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in made:
                subprocess.run([find("mmd"), "-i", str(image), f"::/{folder}"], check=True)
                made.add(folder)
        subprocess.run([find("mcopy"), "-i", str(image), str(local), f"::/{name}"], check=True)
    return image.read_bytes()


@pytest.mark.parametrize("kilobytes, options, kind", [
    (1440, ["-f", "1440"], FatType.FAT12),
    (16 * 1024, ["-h", "2", "-s", "32", "-t", "512"], FatType.FAT16),
    (40 * 1024, ["-F"], FatType.FAT32),
])
def test_reads_what_mtools_writes(tmp_path: Path, require_tool: Callable[[str], str],
                                  kilobytes: int, options: list[str], kind: FatType) -> None:
    volume = FatVolume.from_bytes(_volume(tmp_path, require_tool, kilobytes, *options))
    assert volume.boot.fat_type is kind
    assert volume.files() == {f"/{name}": data for name, data in FILES.items()}


@pytest.fixture
def fat32(tmp_path: Path, require_tool: Callable[[str], str]) -> bytes:
    return _volume(tmp_path, require_tool, 40 * 1024, "-F")


def _file_cluster(volume: FatVolume, data: bytes, name: bytes) -> int:
    """The first cluster of the root-directory file whose short name is ``name``."""
    root = volume.chain(volume.boot.root_cluster)[0]
    offset = volume._cluster_offset(root)
    for entry in range(0, volume.boot.cluster_size, 32):
        raw = data[offset + entry : offset + entry + 32]
        if raw[:11] == name:
            high = int.from_bytes(raw[20:22], "little") << 16
            return high | int.from_bytes(raw[26:28], "little")
    raise AssertionError(f"{name!r} not in the root directory")


def _set_fat(volume: FatVolume, data: bytearray, cluster: int, value: int) -> None:
    for copy in range(volume.boot.num_fats):
        start = (volume.boot.reserved_sectors + copy * volume.boot.fat_size)
        offset = start * volume.boot.bytes_per_sector + cluster * 4
        data[offset : offset + 4] = value.to_bytes(4, "little")


def test_a_chain_that_loops_is_refused(fat32: bytes) -> None:
    volume = FatVolume.from_bytes(fat32)
    data = bytearray(fat32)
    cluster = _file_cluster(volume, fat32, b"VMLINUZ    ")
    _set_fat(volume, data, cluster, cluster)
    with pytest.raises(FormatError, match="loops"):
        FatVolume.from_bytes(bytes(data)).files()


def test_a_chain_off_the_volume_is_refused(fat32: bytes) -> None:
    volume = FatVolume.from_bytes(fat32)
    data = bytearray(fat32)
    cluster = _file_cluster(volume, fat32, b"VMLINUZ    ")
    _set_fat(volume, data, cluster, 0x0FFFFFF0)
    with pytest.raises(FormatError, match="outside the data region"):
        FatVolume.from_bytes(bytes(data)).files()


def test_a_file_longer_than_its_chain_is_refused(fat32: bytes) -> None:
    volume = FatVolume.from_bytes(fat32)
    data = bytearray(fat32)
    cluster = _file_cluster(volume, fat32, b"VMLINUZ    ")
    _set_fat(volume, data, cluster, 0x0FFFFFFF)
    with pytest.raises(FormatError, match="chain of only"):
        FatVolume.from_bytes(bytes(data)).files()


def test_a_long_name_that_is_not_its_entrys_is_refused(fat32: bytes) -> None:
    volume = FatVolume.from_bytes(fat32)
    root = volume._cluster_offset(volume.boot.root_cluster)
    data = bytearray(fat32)
    for entry in range(root, root + volume.boot.cluster_size, 32):
        if data[entry + 11] == 0x0F:
            data[entry + 13] ^= 0xFF  # the checksum of the short name it claims
            break
    with pytest.raises(FormatError, match=r"long-name|does not belong"):
        FatVolume.from_bytes(bytes(data)).files()


def test_a_volume_larger_than_its_partition_is_refused(fat32: bytes) -> None:
    with pytest.raises(FormatError, match="claims"):
        FatVolume.from_bytes(fat32[: len(fat32) // 2])


@pytest.fixture(scope="module")
def fat32_seed(tmp_path_factory: pytest.TempPathFactory,
               require_tool: Callable[[str], str]) -> bytes:
    return _volume(tmp_path_factory.mktemp("fat"), require_tool, 40 * 1024, "-F")


@given(data=st.data())
def test_damage_raises_only_format_errors(fat32_seed: bytes, data: st.DataObject) -> None:
    damaged = bytearray(fat32_seed)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, 0x40000))
        damaged[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FormatError):
        FatVolume.from_bytes(bytes(damaged)).files()


def test_a_fragmented_file_reads_right_one_read_per_run_of_adjacent_clusters(
        fat32: bytes) -> None:
    volume = FatVolume.from_bytes(fat32)
    first = _file_cluster(volume, fat32, b"VMLINUZ    ")
    unit = volume.boot.cluster_size
    count = -(-len(FILES["vmlinuz"]) // unit)
    assert volume.chain(first) == list(range(first, first + count))  # mtools wrote it in one run
    cut = count // 2
    order = [first, *range(first + cut, first + count), *range(first + 1, first + cut)]
    data = bytearray(fat32)
    for logical, physical in enumerate(order):  # move the data, then relink the chain
        source = volume._cluster_offset(first + logical)
        data[volume._cluster_offset(physical) : volume._cluster_offset(physical) + unit] = (
            fat32[source : source + unit])
    for here, there in zip(order, [*order[1:], 0x0FFFFFFF], strict=True):
        _set_fat(volume, data, here, there)
    reads: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return bytes(data[offset : offset + length])

    fragmented = FatVolume(read, len(data))
    assert fragmented.chain(first) == order
    assert fragmented.files() == {f"/{name}": content for name, content in FILES.items()}
    runs = [(volume._cluster_offset(first), unit),
            (volume._cluster_offset(first + cut), (count - cut) * unit),
            (volume._cluster_offset(first + 1), (cut - 1) * unit)]
    start = reads.index(runs[0])
    assert reads[start : start + 3] == runs
