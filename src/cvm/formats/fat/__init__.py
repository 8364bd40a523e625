"""FAT12/16/32 file systems, read-only: the boot sector and the directory tree of an ESP."""

from cvm.formats.fat.boot_sector import BootSector
from cvm.formats.fat.volume import FatVolume

__all__ = ["BootSector", "FatVolume"]
