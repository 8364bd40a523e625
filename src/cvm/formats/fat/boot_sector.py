"""The FAT boot sector and its BIOS Parameter Block.

Microsoft "FAT: General Overview of On-Disk Format" 1.03 (the FAT32 File System Specification),
section 3: the BPB common to all FAT types (offsets 0x00-0x23), then either the FAT12/16
extension or the FAT32 one (0x24-0x59); the signature 0x55 0xAA at 510. The FAT type is decided
by the count of data clusters alone (section 3.5): fewer than 4085 is FAT12, fewer than 65525
FAT16, else FAT32 — never by the type string.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cvm.errors import FormatError
from cvm.wire import Layout, raw, u8, u16, u32

BOOT_SECTOR_SIZE = 0x200
SIGNATURE = b"\x55\xaa"
FAT12_MAX_CLUSTERS = 4085
FAT16_MAX_CLUSTERS = 65525
DIR_ENTRY_SIZE = 32

COMMON = Layout(
    "FAT boot sector",
    BOOT_SECTOR_SIZE,
    [
        raw("jump", 0x00, 3),
        raw("oem_name", 0x03, 8),
        u16("bytes_per_sector", 0x0B),
        u8("sectors_per_cluster", 0x0D),
        u16("reserved_sectors", 0x0E),
        u8("num_fats", 0x10),
        u16("root_entry_count", 0x11),
        u16("total_sectors_16", 0x13),
        u8("media", 0x15),
        u16("fat_size_16", 0x16),
        u16("sectors_per_track", 0x18),
        u16("num_heads", 0x1A),
        u32("hidden_sectors", 0x1C),
        u32("total_sectors_32", 0x20),
        u32("fat_size_32", 0x24),
        u16("ext_flags", 0x28),
        u16("fs_version", 0x2A),
        u32("root_cluster", 0x2C),
        raw("rest", 0x30, 0x1CE),
        raw("signature", 0x1FE, 2),
    ],
)


def count_root_dir_sectors(root_entry_count: int, bytes_per_sector: int) -> int:
    """The sectors of the FAT12/16 root directory (section 3.5), rounded up."""
    size = root_entry_count * DIR_ENTRY_SIZE
    return (size + bytes_per_sector - 1) // bytes_per_sector


def data_region_start(reserved: int, fats: int, fat_size: int, root_sectors: int) -> int:
    """The sector of cluster 2: after the reserved sectors, the FATs and the root directory."""
    return reserved + fats * fat_size + root_sectors


def count_clusters(total_sectors: int, data_start: int, sectors_per_cluster: int) -> int:
    """The whole clusters of the data region (section 3.5), which decide the FAT type."""
    return (total_sectors - data_start) // sectors_per_cluster


class FatType(Enum):
    FAT12 = 12
    FAT16 = 16
    FAT32 = 32


@dataclass(frozen=True)
class BootSector:
    """The geometry a reader needs, checked for consistency."""

    bytes_per_sector: int
    sectors_per_cluster: int
    reserved_sectors: int
    num_fats: int
    root_entry_count: int
    total_sectors: int
    fat_size: int
    root_cluster: int
    fat_type: FatType

    @classmethod
    def from_bytes(cls, data: bytes) -> BootSector:
        if len(data) < BOOT_SECTOR_SIZE:
            raise FormatError(f"FAT boot sector: {len(data)} bytes, need {BOOT_SECTOR_SIZE}")
        v = COMMON.unpack(data[:BOOT_SECTOR_SIZE])
        if v["signature"] != SIGNATURE:
            raise FormatError("FAT boot sector: no 0x55AA signature at offset 510")
        per_sector = int(v["bytes_per_sector"])
        per_cluster = int(v["sectors_per_cluster"])
        if per_sector not in (512, 1024, 2048, 4096):
            raise FormatError(f"FAT boot sector: bytes per sector {per_sector} (0x0B) is invalid")
        if per_cluster not in (1, 2, 4, 8, 16, 32, 64, 128):
            raise FormatError(f"FAT boot sector: sectors per cluster {per_cluster} (0x0D) is "
                              "not a power of two up to 128")
        reserved = int(v["reserved_sectors"])
        fats = int(v["num_fats"])
        if reserved == 0 or fats == 0:
            raise FormatError("FAT boot sector: no reserved sectors or no FAT (0x0E, 0x10)")
        root_entries = int(v["root_entry_count"])
        total = int(v["total_sectors_16"]) or int(v["total_sectors_32"])
        fat_size = int(v["fat_size_16"]) or int(v["fat_size_32"])
        if total == 0 or fat_size == 0:
            raise FormatError("FAT boot sector: total sectors or FAT size is zero")
        root_sectors = count_root_dir_sectors(root_entries, per_sector)
        data_start = data_region_start(reserved, fats, fat_size, root_sectors)
        if data_start >= total:
            raise FormatError(f"FAT boot sector: the data region starts at sector {data_start}, "
                              f"past the {total} sectors of the volume")
        clusters = count_clusters(total, data_start, per_cluster)
        if clusters < FAT12_MAX_CLUSTERS:
            fat_type = FatType.FAT12
        elif clusters < FAT16_MAX_CLUSTERS:
            fat_type = FatType.FAT16
        else:
            fat_type = FatType.FAT32
        if fat_type is FatType.FAT32:
            if root_entries != 0 or int(v["fat_size_16"]) != 0:
                raise FormatError("FAT32 boot sector: root entry count and 16-bit FAT size "
                                  "must be zero")
            root_cluster = int(v["root_cluster"])
            if not 2 <= root_cluster < clusters + 2:
                raise FormatError(f"FAT32 boot sector: root cluster {root_cluster} (0x2C) is "
                                  "outside the data region")
        else:
            if root_entries == 0:
                raise FormatError("FAT12/16 boot sector: root entry count (0x11) is zero")
            root_cluster = 0
        needed = {FatType.FAT12: ((clusters + 2) * 3 + 1) // 2, FatType.FAT16: (clusters + 2) * 2,
                  FatType.FAT32: (clusters + 2) * 4}[fat_type]
        if fat_size * per_sector < needed:
            raise FormatError(f"FAT boot sector: a FAT of {fat_size} sectors cannot map "
                              f"{clusters} clusters")
        return cls(per_sector, per_cluster, reserved, fats, root_entries, total, fat_size,
                   root_cluster, fat_type)

    @property
    def cluster_size(self) -> int:
        return self.bytes_per_sector * self.sectors_per_cluster

    @property
    def root_dir_sectors(self) -> int:
        return count_root_dir_sectors(self.root_entry_count, self.bytes_per_sector)

    @property
    def first_data_sector(self) -> int:
        return data_region_start(self.reserved_sectors, self.num_fats, self.fat_size,
                                 self.root_dir_sectors)

    @property
    def cluster_count(self) -> int:
        return count_clusters(self.total_sectors, self.first_data_sector,
                              self.sectors_per_cluster)
