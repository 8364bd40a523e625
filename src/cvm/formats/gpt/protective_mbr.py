"""The protective MBR in LBA 0 of a GPT disk.

UEFI Specification 2.10, section 5.2.3, tables 5-3 (legacy MBR) and 5-4 (protective MBR
partition record): one record of type ``0xEE`` starting at LBA 1 and covering the disk (or
0xFFFFFFFF sectors when larger), the other three records zero, signature ``0xAA55``. The boot
code and disk signature are kept as found; cvm writes them as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.wire import Layout, raw, reserved, u8, u16, u32

MBR_SIZE = 0x200
PROTECTIVE_TYPE = 0xEE
MBR_SIGNATURE = 0xAA55
MAX_SIZE_LBA = 0xFFFFFFFF

LAYOUT = Layout(
    "protective MBR",
    MBR_SIZE,
    [
        raw("boot_code", 0x000, 440),
        u32("disk_signature", 0x1B8),
        u16("unknown", 0x1BC),
        u8("boot_indicator", 0x1BE),
        raw("starting_chs", 0x1BF, 3),
        u8("os_type", 0x1C2),
        raw("ending_chs", 0x1C3, 3),
        u32("starting_lba", 0x1C6),
        u32("size_in_lba", 0x1CA),
        reserved(0x1CE, 48),
        u16("signature", 0x1FE),
    ],
)


@dataclass(frozen=True)
class ProtectiveMbr:
    """LBA 0: ``size_in_lba`` is ``min(disk sectors - 1, 0xFFFFFFFF)``."""

    size_in_lba: int
    starting_chs: bytes = b"\x00\x02\x00"
    ending_chs: bytes = b"\xff\xff\xff"
    boot_code: bytes = bytes(440)
    disk_signature: int = 0

    @classmethod
    def for_disk(cls, total_sectors: int) -> ProtectiveMbr:
        return cls(size_in_lba=min(total_sectors - 1, MAX_SIZE_LBA))

    @classmethod
    def from_bytes(cls, data: bytes) -> ProtectiveMbr:
        values = LAYOUT.unpack(data)
        if values["signature"] != MBR_SIGNATURE:
            raise FormatError("protective MBR: no 0xAA55 signature at offset 0x1FE")
        if values["os_type"] != PROTECTIVE_TYPE:
            raise FormatError(
                f"protective MBR: first record has type {int(values['os_type']):#04x}, not 0xEE "
                "(a hybrid or legacy MBR)"
            )
        if values["boot_indicator"] != 0 or values["starting_lba"] != 1 or values["unknown"]:
            raise FormatError("protective MBR: record must be non-bootable and start at LBA 1")
        return cls(
            size_in_lba=int(values["size_in_lba"]),
            starting_chs=bytes(values["starting_chs"]),
            ending_chs=bytes(values["ending_chs"]),
            boot_code=bytes(values["boot_code"]),
            disk_signature=int(values["disk_signature"]),
        )

    def to_bytes(self) -> bytes:
        return LAYOUT.pack(
            {
                "boot_code": self.boot_code,
                "disk_signature": self.disk_signature,
                "unknown": 0,
                "boot_indicator": 0,
                "starting_chs": self.starting_chs,
                "os_type": PROTECTIVE_TYPE,
                "ending_chs": self.ending_chs,
                "starting_lba": 1,
                "size_in_lba": self.size_in_lba,
                "signature": MBR_SIGNATURE,
            }
        )
