"""The SNP secrets page the firmware writes into the guest at launch (PAGE_TYPE_SECRETS).

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §8.17.2.5, Table 71
"Secrets Page Format" (version 2/3; 4 KiB, little-endian). It holds the four VM
platform-communication keys (VMPCK0..3) the guest uses for SNP_GUEST_REQUEST messages, and a
guest-OS area the firmware leaves zero. The SVSM fields (SVSM spec 58019, Table 8) are written
by an SVSM for its guest, never by the firmware.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u8, u32, u64

SECRETS_PAGE_SIZE = 0x1000
VMPCK_SIZE = 32
VMPCK_COUNT = 4
SECRETS_PAGE_VERSION = 3

SECRETS_PAGE_LAYOUT = Layout(
    "SNP secrets page",
    SECRETS_PAGE_SIZE,
    [
        u32("version", 0x000),
        u32("imien", 0x004),
        u32("fms", 0x008),
        reserved(0x00C, 4),
        raw("gosvw", 0x010, 16),
        *(raw(f"vmpck{i}", 0x020 + VMPCK_SIZE * i, VMPCK_SIZE) for i in range(VMPCK_COUNT)),
        raw("guest_os_area", 0x0A0, 0x60),
        raw("vmsa_tweak_bitmap", 0x100, 0x40),
        u64("svsm_base", 0x140),
        u64("svsm_size", 0x148),
        u64("svsm_caa", 0x150),
        u32("svsm_max_version", 0x158),
        u8("svsm_guest_vmpl", 0x15C),
        reserved(0x15D, 3),
        u32("tsc_factor", 0x160),
        reserved(0x164, SECRETS_PAGE_SIZE - 0x164),
    ],
)


@dataclass(frozen=True)
class SecretsPage:
    """The secrets page contents."""

    vmpcks: tuple[bytes, bytes, bytes, bytes]
    fms: int = 0
    version: int = SECRETS_PAGE_VERSION
    imien: bool = False
    gosvw: bytes = bytes(16)
    guest_os_area: bytes = bytes(0x60)
    vmsa_tweak_bitmap: bytes = bytes(0x40)
    svsm_base: int = 0
    svsm_size: int = 0
    svsm_caa: int = 0
    svsm_max_version: int = 0
    svsm_guest_vmpl: int = 0
    tsc_factor: int = 0

    def __post_init__(self) -> None:
        if len(self.vmpcks) != VMPCK_COUNT or any(len(k) != VMPCK_SIZE for k in self.vmpcks):
            raise UsageError("a secrets page holds four 32-byte VMPCKs")

    def vmpck(self, index: int) -> bytes:
        if not 0 <= index < VMPCK_COUNT:
            raise UsageError(f"VMPCK index {index} is not 0..3")
        return self.vmpcks[index]

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretsPage:
        values = SECRETS_PAGE_LAYOUT.unpack(data)
        ints = {k: v for k, v in values.items() if isinstance(v, int)}
        blobs = {k: v for k, v in values.items() if isinstance(v, bytes)}
        if ints["version"] not in (2, 3):
            raise FormatError(f"secrets page: unsupported VERSION {ints['version']}")
        if ints["imien"] > 1:
            raise FormatError("secrets page: reserved bits 31:1 at 0x004 are not zero")
        v0, v1, v2, v3 = (blobs[f"vmpck{i}"] for i in range(VMPCK_COUNT))
        return cls(
            vmpcks=(v0, v1, v2, v3),
            fms=ints["fms"],
            version=ints["version"],
            imien=bool(ints["imien"]),
            gosvw=blobs["gosvw"],
            guest_os_area=blobs["guest_os_area"],
            vmsa_tweak_bitmap=blobs["vmsa_tweak_bitmap"],
            svsm_base=ints["svsm_base"],
            svsm_size=ints["svsm_size"],
            svsm_caa=ints["svsm_caa"],
            svsm_max_version=ints["svsm_max_version"],
            svsm_guest_vmpl=ints["svsm_guest_vmpl"],
            tsc_factor=ints["tsc_factor"],
        )

    def to_bytes(self) -> bytes:
        return SECRETS_PAGE_LAYOUT.pack(
            {
                **{f"vmpck{i}": key for i, key in enumerate(self.vmpcks)},
                "version": self.version,
                "imien": int(self.imien),
                "fms": self.fms,
                "gosvw": self.gosvw,
                "guest_os_area": self.guest_os_area,
                "vmsa_tweak_bitmap": self.vmsa_tweak_bitmap,
                "svsm_base": self.svsm_base,
                "svsm_size": self.svsm_size,
                "svsm_caa": self.svsm_caa,
                "svsm_max_version": self.svsm_max_version,
                "svsm_guest_vmpl": self.svsm_guest_vmpl,
                "tsc_factor": self.tsc_factor,
            }
        )
