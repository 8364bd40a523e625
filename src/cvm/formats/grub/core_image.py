"""What a GRUB core image carries: its embedded modules, config, prefix and memdisk.

GRUB 2.06 ``include/grub/kernel.h``: the ``mods`` section of an EFI core image starts with
``struct grub_module_info64 {u32 magic = "mimg" (0x676d696d); u32 padding; u64 offset;
u64 size}``, then modules ``{u32 type; u32 size (with this header)}`` of type OBJ_TYPE_ELF (0),
MEMDISK (1), CONFIG (2), PREFIX (3), PUBKEY (4), DTB (5), DISABLE_SHIM_LOCK (6). Debian's signed
GRUB embeds ``normal (memdisk)/grub.cfg`` as config, ``/EFI/debian`` as prefix and a FAT12
memdisk whose ``grub.cfg`` finds the real configuration; :meth:`GrubCoreImage.memdisk_file`
reads a file from that memdisk (with :mod:`cvm.formats.fat`, as GRUB's own FAT driver: names
compared without regard to case).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.fat import FatVolume
from cvm.formats.pe.image import PeImage
from cvm.wire import Reader

GRUB_MODULE_MAGIC = 0x676D696D
OBJ_TYPE_MEMDISK, OBJ_TYPE_CONFIG, OBJ_TYPE_PREFIX = 1, 2, 3


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
        wanted = "/" + path.replace("\\", "/").strip("/").upper()
        files = FatVolume.from_bytes(self.memdisk).files()
        return next((data for name, data in files.items() if name.upper() == wanted), None)
