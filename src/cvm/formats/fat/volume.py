"""The directory tree and file contents of a FAT volume, read-only and strict.

Microsoft FAT specification 1.03, sections 4 (the FAT: cluster chains, end-of-chain and bad
cluster marks), 6 (32-byte directory entries, attributes, the 8.3 name and the NT case bits at
offset 12) and 7 (long names: entries with attribute 0x0F stored before the short entry, in
reverse order, each carrying 13 UTF-16 characters and the checksum of the short name). A chain
that loops, leaves the volume or is shorter than the file's size, a cluster in two chains (two
files or directories sharing it: a directory reachable twice would make the walk repeat a
subtree, once per path, so a few crafted directories could make it run for ever), a name given
twice in one directory (names compared without regard to case), a long name whose checksum or
sequence does not match, and a directory that nests too deep are format errors — a hostile
image cannot make the reader loop, read a cluster twice or read outside the volume.
"""

from __future__ import annotations

from collections.abc import Callable

from cvm.errors import FormatError
from cvm.formats.fat.boot_sector import DIR_ENTRY_SIZE, BootSector, FatType

ATTR_READ_ONLY, ATTR_HIDDEN, ATTR_SYSTEM = 0x01, 0x02, 0x04
ATTR_VOLUME_ID, ATTR_DIRECTORY, ATTR_ARCHIVE = 0x08, 0x10, 0x20
ATTR_LONG_NAME = 0x0F
DELETED, END_OF_DIRECTORY = 0xE5, 0x00
LAST_LONG_ENTRY = 0x40
LOWER_BASE, LOWER_EXT = 0x08, 0x10
MAX_DEPTH = 16
END_OF_CHAIN = {FatType.FAT12: 0xFF8, FatType.FAT16: 0xFFF8, FatType.FAT32: 0x0FFFFFF8}
LFN_SLICES = ((1, 11), (14, 26), (28, 32))

Read = Callable[[int, int], bytes]


def short_name_checksum(name: bytes) -> int:
    """The checksum a long-name entry carries of its 11-byte short name (spec section 7.2)."""
    total = 0
    for byte in name:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _short_name(entry: bytes) -> str:
    base = entry[0:8].rstrip(b" ")
    ext = entry[8:11].rstrip(b" ")
    if base[:1] == b"\x05":
        base = b"\xe5" + base[1:]
    flags = entry[12]
    text = base.decode("latin-1")
    if flags & LOWER_BASE:
        text = text.lower()
    if ext:
        extension = ext.decode("latin-1")
        text += "." + (extension.lower() if flags & LOWER_EXT else extension)
    return text


class FatVolume:
    """A FAT volume read through ``read(offset, size)`` relative to its first byte.

    ``size`` is the partition's size, when known: a boot sector claiming more is refused.
    Only the FAT and the clusters of what is read are fetched through ``read``.
    """

    def __init__(self, read: Read, size: int | None = None) -> None:
        self._read = read
        self.boot = BootSector.from_bytes(read(0, 512))
        if size is not None and self.boot.total_sectors * self.boot.bytes_per_sector > size:
            raise FormatError(f"FAT volume: the boot sector claims "
                              f"{self.boot.total_sectors} sectors, the partition holds "
                              f"{size // self.boot.bytes_per_sector}")
        fat_offset = self.boot.reserved_sectors * self.boot.bytes_per_sector
        self._fat = read(fat_offset, self.boot.fat_size * self.boot.bytes_per_sector)

    @classmethod
    def from_bytes(cls, data: bytes) -> FatVolume:
        def read(offset: int, length: int) -> bytes:
            if offset < 0 or offset + length > len(data):
                raise FormatError(f"FAT volume: read of {length} bytes at {offset} is past "
                                  f"the end ({len(data)} bytes)")
            return data[offset : offset + length]

        return cls(read, len(data))

    # --- clusters ------------------------------------------------------------------------

    def _next(self, cluster: int) -> int:
        kind = self.boot.fat_type
        if kind is FatType.FAT12:
            offset = cluster + cluster // 2
            pair = int.from_bytes(self._fat[offset : offset + 2], "little")
            return pair >> 4 if cluster & 1 else pair & 0xFFF
        if kind is FatType.FAT16:
            return int.from_bytes(self._fat[cluster * 2 : cluster * 2 + 2], "little")
        return int.from_bytes(self._fat[cluster * 4 : cluster * 4 + 4], "little") & 0x0FFFFFFF

    def chain(self, first: int, claimed: set[int] | None = None) -> list[int]:
        """The clusters of the chain starting at ``first``; strict. With ``claimed`` (the
        clusters of the chains read before), a cluster already claimed is refused and the
        chain's clusters are added to it."""
        last = self.boot.cluster_count + 1
        clusters: list[int] = []
        seen: set[int] = set()
        cluster = first
        while True:
            if not 2 <= cluster <= last:
                raise FormatError(f"FAT volume: cluster {cluster} in the chain from {first} is "
                                  f"outside the data region (2..{last})")
            if cluster in seen:
                raise FormatError(f"FAT volume: the chain from cluster {first} loops")
            if claimed is not None and cluster in claimed:
                raise FormatError(f"FAT volume: cluster {cluster} of the chain from {first} "
                                  "belongs to another file or directory too")
            seen.add(cluster)
            clusters.append(cluster)
            nxt = self._next(cluster)
            if nxt >= END_OF_CHAIN[self.boot.fat_type]:
                if claimed is not None:
                    claimed |= seen
                return clusters
            cluster = nxt

    def _cluster_offset(self, cluster: int) -> int:
        sector = self.boot.first_data_sector + (cluster - 2) * self.boot.sectors_per_cluster
        return sector * self.boot.bytes_per_sector

    def _read_chain(self, first: int, size: int | None, claimed: set[int]) -> bytes:
        clusters = self.chain(first, claimed)
        unit = self.boot.cluster_size
        if size is not None and len(clusters) * unit < size:
            raise FormatError(f"FAT volume: a file of {size} bytes has a chain of only "
                              f"{len(clusters)} clusters")
        if size is not None:
            clusters = clusters[: (size + unit - 1) // unit]
        runs: list[list[int]] = []  # [first cluster, count] of each run of adjacent clusters
        for cluster in clusters:
            if runs and runs[-1][0] + runs[-1][1] == cluster:
                runs[-1][1] += 1
            else:
                runs.append([cluster, 1])
        data = b"".join(self._read(self._cluster_offset(first), count * unit)
                        for first, count in runs)  # one read per run: a file is mostly one
        return data if size is None else data[:size]

    # --- directories ---------------------------------------------------------------------

    def _root(self, claimed: set[int]) -> bytes:
        if self.boot.fat_type is FatType.FAT32:
            return self._read_chain(self.boot.root_cluster, None, claimed)
        start = (self.boot.reserved_sectors + self.boot.num_fats * self.boot.fat_size)
        return self._read(start * self.boot.bytes_per_sector,
                          self.boot.root_entry_count * DIR_ENTRY_SIZE)

    def _entries(self, directory: bytes, where: str) -> list[tuple[str, int, int, int]]:
        """(name, attributes, first cluster, size) of each live entry; long names resolved."""
        found: list[tuple[str, int, int, int]] = []
        pieces: list[str] = []
        expected, checksum = 0, -1
        for offset in range(0, len(directory) - DIR_ENTRY_SIZE + 1, DIR_ENTRY_SIZE):
            entry = directory[offset : offset + DIR_ENTRY_SIZE]
            first = entry[0]
            if first == END_OF_DIRECTORY:
                break
            if first == DELETED:
                pieces, expected = [], 0
                continue
            attributes = entry[11]
            if attributes & 0x3F == ATTR_LONG_NAME:
                sequence = first & 0x1F
                if first & LAST_LONG_ENTRY:
                    pieces, expected, checksum = [], sequence, entry[13]
                if sequence == 0 or sequence != expected or entry[13] != checksum:
                    raise FormatError(f"FAT volume: {where}: long-name entry at {offset:#x} is "
                                      "out of sequence")
                text = b"".join(entry[a:b] for a, b in LFN_SLICES).decode("utf-16-le", "replace")
                pieces.insert(0, text)
                expected -= 1
                continue
            name = _short_name(entry)
            if pieces:
                if expected != 0 or short_name_checksum(entry[0:11]) != checksum:
                    raise FormatError(f"FAT volume: {where}: the long name before {name!r} "
                                      "does not belong to it (checksum or sequence)")
                name = "".join(pieces).split("\0", 1)[0]
            pieces, expected = [], 0
            if attributes & ATTR_VOLUME_ID or name in (".", ".."):
                continue
            if not name or "/" in name or "\\" in name:
                raise FormatError(f"FAT volume: {where}: entry at {offset:#x} has an invalid "
                                  f"name {name!r}")
            cluster = int.from_bytes(entry[20:22], "little") << 16
            cluster |= int.from_bytes(entry[26:28], "little")
            if self.boot.fat_type is not FatType.FAT32:
                cluster &= 0xFFFF
            found.append((name, attributes, cluster, int.from_bytes(entry[28:32], "little")))
        return found

    def files(self) -> dict[str, bytes]:
        """Every regular file as ``{"/DIR/NAME": bytes}``."""
        out: dict[str, bytes] = {}
        claimed: set[int] = set()  # every cluster read so far: none may be read twice
        pending = [("", self._root(claimed), 0)]
        while pending:
            prefix, directory, depth = pending.pop()
            names: set[str] = set()
            for name, attributes, cluster, size in self._entries(directory, prefix or "/"):
                path = f"{prefix}/{name}"
                if name.upper() in names:
                    raise FormatError(f"FAT volume: {path} is named twice in its directory")
                names.add(name.upper())
                if attributes & ATTR_DIRECTORY:
                    if depth >= MAX_DEPTH:
                        raise FormatError(f"FAT volume: {path} nests deeper than {MAX_DEPTH}")
                    pending.append((path, self._read_chain(cluster, None, claimed), depth + 1))
                elif size == 0:
                    out[path] = b""
                else:
                    out[path] = self._read_chain(cluster, size, claimed)
        return out
