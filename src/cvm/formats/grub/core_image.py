"""What a GRUB core image carries: its embedded modules, config, prefix and memdisk.

GRUB 2.06 ``include/grub/kernel.h``: the ``mods`` section of an EFI core image starts with
``struct grub_module_info64 {u32 magic = "mimg" (0x676d696d); u32 padding; u64 offset;
u64 size}``, then modules ``{u32 type; u32 size (with this header)}`` of type OBJ_TYPE_ELF (0),
MEMDISK (1), CONFIG (2), PREFIX (3), PUBKEY (4), DTB (5), DISABLE_SHIM_LOCK (6). Debian's signed
GRUB embeds ``normal (memdisk)/grub.cfg`` as config, ``/EFI/debian`` as prefix and a FAT12
memdisk whose ``grub.cfg`` finds the real configuration; :meth:`GrubCoreImage.memdisk_file`
reads a file from that memdisk (FAT12/16, Microsoft "FAT: General Overview of On-Disk Format"
1.03, BPB at offset 11, 8.3 directory entries of 32 bytes, long-name entries skipped).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.pe.image import PeImage
from cvm.wire import Reader

GRUB_MODULE_MAGIC = 0x676D696D
OBJ_TYPE_MEMDISK, OBJ_TYPE_CONFIG, OBJ_TYPE_PREFIX = 1, 2, 3
DIRECTORY_ENTRY_SIZE = 32
ATTRIBUTE_LONG_NAME = 0x0F
ATTRIBUTE_DIRECTORY = 0x10
FAT12_MAX_CLUSTERS = 4085


@dataclass(frozen=True)
class GrubCoreImage:
    """The embedded config, prefix and memdisk of a GRUB EFI core image."""

    config: str
    prefix: str
    memdisk: bytes

    @classmethod
    def parse(cls, image: bytes | PeImage) -> GrubCoreImage:
        pe = image if isinstance(image, PeImage) else PeImage.parse(image)
        section = pe.section("mods")
        if section is None:
            raise FormatError("GRUB image: no 'mods' section")
        reader = Reader(section.data, "GRUB module info")
        if reader.u32("magic") != GRUB_MODULE_MAGIC:
            raise FormatError("GRUB image: module info magic is not 'mimg'")
        reader.u32("padding")
        offset, size = reader.u64("offset"), reader.u64("size")
        if size > len(section.data):
            raise FormatError("GRUB image: modules run past the 'mods' section")
        found: dict[int, bytes] = {}
        position = offset
        while position + 8 <= size:
            module = Reader(section.data[position:size], "GRUB module header")
            kind, length = module.u32("type"), module.u32("size")
            if length < 8 or position + length > size:
                raise FormatError(f"GRUB image: module at {position:#x} has size {length}")
            found.setdefault(kind, section.data[position + 8 : position + length])
            position += length
        text = {k: found.get(k, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
                for k in (OBJ_TYPE_CONFIG, OBJ_TYPE_PREFIX)}
        return cls(text[OBJ_TYPE_CONFIG], text[OBJ_TYPE_PREFIX], found.get(OBJ_TYPE_MEMDISK, b""))

    def memdisk_file(self, path: str) -> bytes | None:
        """The file at ``path`` in the memdisk (case-insensitive 8.3 names), or None."""
        if not self.memdisk:
            return None
        return _FatVolume(self.memdisk).read(path)


class _FatVolume:
    def __init__(self, data: bytes) -> None:
        bpb = Reader(data[11:36], "FAT BPB")
        self.data = data
        self.sector = bpb.u16("BytsPerSec")
        self.cluster_sectors = bpb.u8("SecPerClus")
        reserved, fats = bpb.u16("RsvdSecCnt"), bpb.u8("NumFATs")
        root_entries = bpb.u16("RootEntCnt")
        total = bpb.u16("TotSec16")
        bpb.u8("Media")
        fat_sectors = bpb.u16("FATSz16")
        if not self.sector or not self.cluster_sectors or not fat_sectors:
            raise FormatError("memdisk: not a FAT12/16 volume")
        total = total or int.from_bytes(data[32:36], "little")
        self.fat = data[reserved * self.sector : (reserved + fat_sectors) * self.sector]
        self.root = (reserved + fats * fat_sectors) * self.sector
        root_bytes = root_entries * DIRECTORY_ENTRY_SIZE
        self.data_start = self.root + (root_bytes + self.sector - 1) // self.sector * self.sector
        self.root_bytes = root_bytes
        clusters = (total * self.sector - self.data_start) // (self.sector * self.cluster_sectors)
        self.fat12 = clusters < FAT12_MAX_CLUSTERS

    def _next(self, cluster: int) -> int:
        if self.fat12:
            pair = int.from_bytes(self.fat[cluster * 3 // 2 : cluster * 3 // 2 + 2], "little")
            value = pair >> 4 if cluster & 1 else pair & 0xFFF
            return value if value < 0xFF8 else -1
        value = int.from_bytes(self.fat[cluster * 2 : cluster * 2 + 2], "little")
        return value if value < 0xFFF8 else -1

    def _chain(self, first: int, size: int | None) -> bytes:
        out = bytearray()
        cluster_bytes = self.sector * self.cluster_sectors
        seen: set[int] = set()
        cluster = first
        while cluster >= 2 and cluster not in seen:
            seen.add(cluster)
            start = self.data_start + (cluster - 2) * cluster_bytes
            out += self.data[start : start + cluster_bytes]
            cluster = self._next(cluster)
        return bytes(out if size is None else out[:size])

    def read(self, path: str) -> bytes | None:
        directory = self.data[self.root : self.root + self.root_bytes]
        parts = [p for p in path.replace("\\", "/").split("/") if p]
        for depth, part in enumerate(parts):
            entry = _find(directory, part)
            if entry is None:
                return None
            first = int.from_bytes(entry[26:28], "little")
            if depth == len(parts) - 1:
                if entry[11] & ATTRIBUTE_DIRECTORY:
                    return None
                return self._chain(first, int.from_bytes(entry[28:32], "little"))
            directory = self._chain(first, None)
        return None


def _find(directory: bytes, name: str) -> bytes | None:
    base, _, ext = name.upper().partition(".")
    wanted = base.ljust(8)[:8].encode("ascii", "replace") + ext.ljust(3)[:3].encode(
        "ascii", "replace")
    for start in range(0, len(directory) - DIRECTORY_ENTRY_SIZE + 1, DIRECTORY_ENTRY_SIZE):
        entry = directory[start : start + DIRECTORY_ENTRY_SIZE]
        if entry[0] == 0:
            return None
        if entry[0] == 0xE5 or entry[11] == ATTRIBUTE_LONG_NAME:
            continue
        if entry[:11] == wanted:
            return entry
    return None
