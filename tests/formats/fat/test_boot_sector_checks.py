"""The FAT boot sector's checks at their edges: the sizes it allows, the geometry that must
fit, the FAT type decided by the cluster count alone, and a FAT big enough to map every
cluster (a FAT12 entry is a byte and a half, so its FAT needs the half byte rounded up)."""

from __future__ import annotations

import pytest
from tests.formats.fat.conftest import boot_sector, geometry

from cvm.errors import FormatError
from cvm.formats.fat.boot_sector import (
    BootSector,
    FatType,
    count_clusters,
    count_root_dir_sectors,
    data_region_start,
)


def _refusal(data: bytes) -> str:
    with pytest.raises(FormatError) as refused:
        BootSector.from_bytes(data)
    return str(refused.value)


def test_the_default_test_sector_reads_as_fat16() -> None:
    boot = BootSector.from_bytes(boot_sector())
    assert boot == BootSector(512, 1, 1, 2, 16, 1 + 2 * 17 + 1 + 4100, 17, 0, FatType.FAT16)
    assert (boot.cluster_size, boot.root_dir_sectors, boot.first_data_sector,
            boot.cluster_count) == (512, 1, 36, 4100)


def test_a_short_or_unsigned_sector_is_refused() -> None:
    assert _refusal(boot_sector()[:511]) == "FAT boot sector: 511 bytes, need 512"
    assert BootSector.from_bytes(boot_sector() + b"more").fat_type is FatType.FAT16
    assert _refusal(boot_sector(signature=b"\xaa\x55")) == (
        "FAT boot sector: no 0x55AA signature at offset 510")


@pytest.mark.parametrize("size", [512, 1024, 2048, 4096])
def test_the_sector_sizes_allowed(size: int) -> None:
    data = boot_sector(bytes_per_sector=size, total_sectors_16=(36 + 4100) * 512 // size + 40,
                       fat_size_16=17)
    assert BootSector.from_bytes(data).bytes_per_sector == size


@pytest.mark.parametrize("size", [0, 256, 511, 513, 8192])
def test_other_sector_sizes_are_refused(size: int) -> None:
    assert _refusal(boot_sector(bytes_per_sector=size)) == (
        f"FAT boot sector: bytes per sector {size} (0x0B) is invalid")


@pytest.mark.parametrize("count", [1, 2, 4, 8, 16, 32, 64, 128])
def test_the_cluster_sizes_allowed(count: int) -> None:
    data = geometry(FatType.FAT12, 100, 1, 16, per_cluster=count)
    boot = BootSector.from_bytes(data)
    assert (boot.sectors_per_cluster, boot.cluster_size, boot.cluster_count) == (
        count, 512 * count, 100)


@pytest.mark.parametrize("count", [0, 3, 5, 127, 129, 255])
def test_other_cluster_sizes_are_refused(count: int) -> None:
    assert _refusal(boot_sector(sectors_per_cluster=count)) == (
        f"FAT boot sector: sectors per cluster {count} (0x0D) is not a power of two up to 128")


def test_a_volume_needs_reserved_sectors_a_fat_a_size_and_a_data_region() -> None:
    for fields in ({"reserved_sectors": 0}, {"num_fats": 0}):
        assert _refusal(boot_sector(**fields)) == (
            "FAT boot sector: no reserved sectors or no FAT (0x0E, 0x10)")
    for fields in ({"total_sectors_16": 0}, {"fat_size_16": 0}):
        assert _refusal(boot_sector(**fields)) == (
            "FAT boot sector: total sectors or FAT size is zero")
    assert _refusal(boot_sector(total_sectors_16=36)) == (
        "FAT boot sector: the data region starts at sector 36, past the 36 sectors of the volume")
    assert BootSector.from_bytes(geometry(FatType.FAT12, 1, 1, 16)).cluster_count == 1


def test_the_32_bit_fields_are_read_when_the_16_bit_ones_are_zero() -> None:
    boot = BootSector.from_bytes(boot_sector(total_sectors_16=0, total_sectors_32=4136))
    assert boot.total_sectors == 4136
    boot = BootSector.from_bytes(boot_sector(total_sectors_16=4136, total_sectors_32=9999))
    assert boot.total_sectors == 4136
    boot = BootSector.from_bytes(boot_sector(fat_size_16=0, fat_size_32=17,
                                             total_sectors_16=4136))
    assert boot.fat_size == 17


def test_the_root_directory_is_rounded_up_to_whole_sectors() -> None:
    assert [count_root_dir_sectors(n, 512) for n in (0, 1, 16, 17, 32, 33)] == [0, 1, 1, 2, 2, 3]
    assert count_root_dir_sectors(64, 2048) == 1 and count_root_dir_sectors(65, 2048) == 2
    assert data_region_start(4, 2, 9, 14) == 36
    assert count_clusters(1000, 36, 8) == 120
    boot = BootSector.from_bytes(boot_sector(root_entry_count=17, total_sectors_16=4137))
    assert (boot.root_dir_sectors, boot.first_data_sector, boot.cluster_count) == (2, 37, 4100)


@pytest.mark.parametrize(("clusters", "fat_sectors", "kind"), [
    (4084, 12, FatType.FAT12), (4085, 17, FatType.FAT16), (65524, 256, FatType.FAT16),
    (65525, 513, FatType.FAT32)])
def test_the_type_is_decided_by_the_cluster_count(clusters: int, fat_sectors: int,
                                                  kind: FatType) -> None:
    root = 0 if kind is FatType.FAT32 else 16
    boot = BootSector.from_bytes(geometry(kind, clusters, fat_sectors, root))
    assert (boot.fat_type, boot.cluster_count) == (kind, clusters)
    assert boot.root_cluster == (2 if kind is FatType.FAT32 else 0)


def test_fat32_has_no_fixed_root_and_a_root_cluster_in_the_data_region() -> None:
    good = dict(root_entry_count=0, total_sectors_16=0, total_sectors_32=1 + 2 * 513 + 65600,
                fat_size_16=0, fat_size_32=513)
    assert BootSector.from_bytes(boot_sector(**good, root_cluster=2)).root_cluster == 2
    assert BootSector.from_bytes(boot_sector(**good, root_cluster=65601)).root_cluster == 65601
    for cluster in (0, 1, 65602):
        assert _refusal(boot_sector(**good, root_cluster=cluster)) == (
            f"FAT32 boot sector: root cluster {cluster} (0x2C) is outside the data region")
    message = "FAT32 boot sector: root entry count and 16-bit FAT size must be zero"
    assert _refusal(boot_sector(**{**good, "root_entry_count": 16, "total_sectors_32": 66628},
                                root_cluster=2)) == message
    assert _refusal(boot_sector(**{**good, "fat_size_16": 513}, root_cluster=2)) == message


def test_fat12_and_fat16_need_a_root_directory() -> None:
    assert _refusal(boot_sector(root_entry_count=0, total_sectors_16=4135)) == (
        "FAT12/16 boot sector: root entry count (0x11) is zero")


@pytest.mark.parametrize(("kind", "fits", "too_many", "fat_sectors"), [
    (FatType.FAT12, 339, 340, 1),      # 341 entries of 1.5 bytes: 511.5 -> 512
    (FatType.FAT12, 680, 681, 2),      # 683 entries: 1024.5 bytes need 1025, not 1024
    (FatType.FAT12, 1022, 1023, 3),    # 1024 entries: 1536 bytes exactly
    (FatType.FAT16, 4350, 4351, 17),   # 4352 entries of 2 bytes: 8704
    (FatType.FAT32, 65534, 65535, 512),  # 65536 entries of 4 bytes: 262144
])
def test_the_fat_must_map_every_cluster(kind: FatType, fits: int, too_many: int,
                                        fat_sectors: int) -> None:
    root = 0 if kind is FatType.FAT32 else 16
    assert BootSector.from_bytes(geometry(kind, fits, fat_sectors, root)).cluster_count == fits
    assert _refusal(geometry(kind, too_many, fat_sectors, root)) == (
        f"FAT boot sector: a FAT of {fat_sectors} sectors cannot map {too_many} clusters")
