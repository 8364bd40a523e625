"""A FAT volume written byte by byte for the checks: a boot sector with any geometry, FAT entries
packed per FAT type, directory entries placed where the test says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cvm.formats.fat.boot_sector import COMMON, FatType

GEOMETRY = {  # (clusters, FAT sectors, root entries): the smallest volume of each type
    FatType.FAT12: (100, 1, 16),
    FatType.FAT16: (4100, 17, 16),
    FatType.FAT32: (65600, 513, 0),
}


def boot_sector(**fields: int | bytes) -> bytes:
    """A FAT16-shaped boot sector (512-byte sectors, one sector per cluster) with ``fields``
    replacing its values."""
    values: dict[str, int | bytes] = {
        "jump": b"\xeb\x3c\x90", "oem_name": b"MSWIN4.1", "bytes_per_sector": 512,
        "sectors_per_cluster": 1, "reserved_sectors": 1, "num_fats": 2,
        "root_entry_count": 16, "total_sectors_16": 1 + 2 * 17 + 1 + 4100,
        "media": 0xF8, "fat_size_16": 17, "sectors_per_track": 0, "num_heads": 0,
        "hidden_sectors": 0, "total_sectors_32": 0, "fat_size_32": 0, "ext_flags": 0,
        "fs_version": 0, "root_cluster": 0, "rest": bytes(0x1CE), "signature": b"\x55\xaa",
    }
    values.update(fields)
    return COMMON.pack(values)


def geometry(kind: FatType, clusters: int, fat_sectors: int, root_entries: int,
             per_cluster: int = 1, reserved: int = 1, fats: int = 2) -> bytes:
    """The boot sector of a volume of ``clusters`` data clusters (512-byte sectors)."""
    root_sectors = (root_entries * 32 + 511) // 512
    total = reserved + fats * fat_sectors + root_sectors + clusters * per_cluster
    small = kind is not FatType.FAT32
    return boot_sector(
        sectors_per_cluster=per_cluster, reserved_sectors=reserved, num_fats=fats,
        root_entry_count=root_entries,
        total_sectors_16=total if small and total < 0x10000 else 0,
        total_sectors_32=0 if small and total < 0x10000 else total,
        fat_size_16=fat_sectors if small else 0, fat_size_32=0 if small else fat_sectors,
        root_cluster=2 if not small else 0,
    )


def entry(name: bytes, attributes: int = 0x20, cluster: int = 0, size: int = 0,
          case: int = 0) -> bytes:
    """A 32-byte short directory entry; ``name`` is the 11-byte 8.3 name."""
    assert len(name) == 11
    return (name + bytes([attributes, case]) + bytes(7)
            + (cluster >> 16).to_bytes(2, "little") + bytes(4)
            + (cluster & 0xFFFF).to_bytes(2, "little") + size.to_bytes(4, "little"))


def checksum(short: bytes) -> int:
    """The short name's checksum as the FAT specification (section 7.2) writes it: rotate the
    sum right by one bit, then add the next byte."""
    value = 0
    for byte in short:
        value = (((value >> 1) | (value << 7)) + byte) & 0xFF
    return value


def long_entries(text: str, short: bytes) -> list[bytes]:
    """The long-name entries of ``text`` for the short name ``short``, in disk order."""
    units = text.encode("utf-16-le")
    if len(units) % 26:
        units += b"\0\0"
    units = units.ljust(-(-len(units) // 26) * 26, b"\xff")
    pieces = [units[i : i + 26] for i in range(0, len(units), 26)]
    check = checksum(short)
    out = []
    for number, piece in enumerate(pieces, 1):
        order = number | (0x40 if number == len(pieces) else 0)
        raw = (bytes([order]) + piece[0:10] + bytes([0x0F, 0, check]) + piece[10:22]
               + bytes(2) + piece[22:26])
        out.append(raw)
    return out[::-1]


@dataclass
class FatImage:
    """A whole volume in memory: ``data`` is its bytes, the helpers write into it."""

    kind: FatType
    data: bytearray
    reserved: int
    fats: int
    fat_sectors: int
    root_entries: int
    per_cluster: int = 1

    @property
    def first_data_sector(self) -> int:
        return (self.reserved + self.fats * self.fat_sectors
                + (self.root_entries * 32 + 511) // 512)

    def cluster_offset(self, cluster: int) -> int:
        return (self.first_data_sector + (cluster - 2) * self.per_cluster) * 512

    def root_offset(self) -> int:
        if self.kind is FatType.FAT32:
            return self.cluster_offset(2)
        return (self.reserved + self.fats * self.fat_sectors) * 512

    def set_fat(self, cluster: int, value: int) -> None:
        """``cluster``'s FAT entry in every copy of the FAT."""
        for copy in range(self.fats):
            base = (self.reserved + copy * self.fat_sectors) * 512
            if self.kind is FatType.FAT12:
                at = base + cluster + cluster // 2
                pair = int.from_bytes(self.data[at : at + 2], "little")
                pair = ((pair & 0x000F) | (value << 4) if cluster & 1
                        else (pair & 0xF000) | value)
                self.data[at : at + 2] = pair.to_bytes(2, "little")
            else:
                width = 2 if self.kind is FatType.FAT16 else 4
                at = base + cluster * width
                self.data[at : at + width] = value.to_bytes(width, "little")

    def chain(self, *clusters: int) -> None:
        """Link ``clusters`` in order, the last one marked end of chain."""
        end = {FatType.FAT12: 0xFFF, FatType.FAT16: 0xFFFF, FatType.FAT32: 0x0FFFFFFF}
        for here, there in zip(clusters, [*clusters[1:], end[self.kind]], strict=True):
            self.set_fat(here, there)

    def put(self, offset: int, *entries: bytes) -> None:
        """Directory entries from byte ``offset`` on."""
        for index, raw in enumerate(entries):
            self.data[offset + 32 * index : offset + 32 * (index + 1)] = raw

    def write(self, cluster: int, content: bytes) -> None:
        """``content`` from the start of ``cluster`` on (over adjacent clusters)."""
        at = self.cluster_offset(cluster)
        self.data[at : at + len(content)] = content

    def to_bytes(self) -> bytes:
        return bytes(self.data)


def make_fat(kind: FatType, clusters: int | None = None) -> FatImage:
    """An empty volume of ``kind`` (its root directory empty; for FAT32 cluster 2 is the root)."""
    count, fat_sectors, root_entries = GEOMETRY[kind]
    count = count if clusters is None else clusters
    reserved = 32 if kind is FatType.FAT32 else 1
    boot = geometry(kind, count, fat_sectors, root_entries, reserved=reserved)
    image = FatImage(kind, bytearray(), reserved, 2, fat_sectors, root_entries)
    image.data = bytearray(image.cluster_offset(count + 2))
    image.data[0:512] = boot
    media = {FatType.FAT12: 0xFF8, FatType.FAT16: 0xFFF8, FatType.FAT32: 0x0FFFFFF8}[kind]
    image.set_fat(0, media)
    image.set_fat(1, media | 0x7)
    if kind is FatType.FAT32:
        image.chain(2)
    return image


@pytest.fixture
def fat() -> Callable[..., FatImage]:
    """``fat(FatType.FAT16)``: a fresh empty volume of that type."""
    return make_fat
