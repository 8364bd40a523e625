"""The firmware's FAT driver, read-only: the files of an EFI System Partition.

UEFI 2.10 section 13.3 requires FAT12/16/32 on an ESP; ``mformat -F`` (what
:func:`cvm.disk.esp.write_esp` runs) makes FAT32. Microsoft "FAT: General Overview of On-Disk
Format" 1.03: the boot sector's BPB (bytes per sector at 0x0B, sectors per cluster 0x0D,
reserved sectors 0x0E, FAT count 0x10, FAT32 sectors per FAT 0x24, root cluster 0x2C, the
0x55AA signature at 510), the FAT of 28-bit cluster links (end of chain >= 0x0FFFFFF8), and
32-byte directory entries (name 8.3 at 0x00, attributes 0x0B, the NT lower-case flags of an
8.3 name 0x0C, first cluster high 0x14 and low 0x1A, size 0x1C) preceded by long-name entries
(attribute 0x0F, 13 UTF-16 characters each at 0x01, 0x0E and 0x1C). Only the sectors a file
needs are read from the partition.
"""

from __future__ import annotations

from collections.abc import Callable

from cvm.errors import FormatError

Read = Callable[[int, int], bytes]
ENTRY_SIZE = 32
ATTR_LONG_NAME = 0x0F
ATTR_DIRECTORY = 0x10
ATTR_VOLUME_ID = 0x08
END_OF_CHAIN = 0x0FFF_FFF8
CLUSTER_MASK = 0x0FFF_FFFF
MAX_FILES = 4096
CASE_LOWER_BASE, CASE_LOWER_EXTENSION = 0x08, 0x10  # byte 0x0C, as Windows NT writes 8.3 names


class FatVolume:
    """A FAT32 file system read through ``read(offset, size)`` of its partition."""

    def __init__(self, read: Read) -> None:
        boot = read(0, 512)
        if boot[510:512] != b"\x55\xaa":
            raise FormatError("ESP: no FAT boot sector (signature 0x55AA missing)")
        self.read = read
        self.sector = int.from_bytes(boot[0x0B:0x0D], "little")
        per_cluster = boot[0x0D]
        reserved = int.from_bytes(boot[0x0E:0x10], "little")
        fats = boot[0x10]
        fat_sectors = int.from_bytes(boot[0x24:0x28], "little")
        self.root_cluster = int.from_bytes(boot[0x2C:0x30], "little")
        if (self.sector not in (512, 1024, 2048, 4096) or per_cluster == 0
                or int.from_bytes(boot[0x16:0x18], "little") or not fat_sectors or not fats):
            raise FormatError("ESP: not a FAT32 file system this driver reads")
        self.cluster_bytes = self.sector * per_cluster
        self.fat_offset = reserved * self.sector
        self.fat = read(self.fat_offset, fat_sectors * self.sector)
        self.data_offset = (reserved + fats * fat_sectors) * self.sector

    def _chain(self, first: int) -> list[int]:
        clusters: list[int] = []
        cluster = first
        while 2 <= cluster < END_OF_CHAIN:
            if len(clusters) * 4 > len(self.fat) or cluster * 4 + 4 > len(self.fat):
                raise FormatError("ESP: a FAT cluster chain loops or leaves the FAT")
            clusters.append(cluster)
            cluster = int.from_bytes(self.fat[cluster * 4:cluster * 4 + 4], "little") & (
                CLUSTER_MASK)
        return clusters

    def _data(self, first: int, size: int | None) -> bytes:
        out = bytearray()
        for cluster in self._chain(first):
            out += self.read(self.data_offset + (cluster - 2) * self.cluster_bytes,
                             self.cluster_bytes)
            if size is not None and len(out) >= size:
                break
        if size is not None and len(out) < size:
            raise FormatError("ESP: a file is longer than its cluster chain")
        return bytes(out if size is None else out[:size])

    def _entries(self, cluster: int) -> list[tuple[str, int, int, int]]:
        """(name, attributes, first cluster, size) of the entries of one directory."""
        data = self._data(cluster, None)
        found, long_name = [], ""
        for offset in range(0, len(data), ENTRY_SIZE):
            entry = data[offset:offset + ENTRY_SIZE]
            if entry[0] == 0:
                break
            if entry[0] == 0xE5:
                long_name = ""
                continue
            attributes = entry[0x0B]
            if attributes == ATTR_LONG_NAME:
                part = (entry[0x01:0x0B] + entry[0x0E:0x1A] + entry[0x1C:0x20]).decode(
                    "utf-16-le", "replace")
                long_name = part.split("\0", 1)[0] + long_name
                continue
            if attributes & ATTR_VOLUME_ID:
                long_name = ""
                continue
            short = entry[0:8].decode("ascii", "replace").rstrip()
            extension = entry[8:11].decode("ascii", "replace").rstrip()
            if entry[0x0C] & CASE_LOWER_BASE:
                short = short.lower()
            if entry[0x0C] & CASE_LOWER_EXTENSION:
                extension = extension.lower()
            name = long_name or (f"{short}.{extension}" if extension else short)
            long_name = ""
            if name in (".", ".."):
                continue
            first = int.from_bytes(entry[0x14:0x16], "little") << 16 | int.from_bytes(
                entry[0x1A:0x1C], "little")
            found.append((name, attributes, first, int.from_bytes(entry[0x1C:0x20], "little")))
        return found

    def files(self) -> dict[str, bytes]:
        """Every regular file, by its path from the root (``/EFI/BOOT/BOOTX64.EFI``)."""
        out: dict[str, bytes] = {}
        pending = [("", self.root_cluster)]
        while pending:
            prefix, cluster = pending.pop()
            for name, attributes, first, size in self._entries(cluster):
                path = f"{prefix}/{name}"
                if attributes & ATTR_DIRECTORY:
                    pending.append((path, first))
                else:
                    out[path] = self._data(first, size) if size else b""
                if len(out) + len(pending) > MAX_FILES:
                    raise FormatError("ESP: more files than a boot partition holds")
        return out
