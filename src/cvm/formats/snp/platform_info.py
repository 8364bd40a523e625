"""PLATFORM_INFO: the platform state the firmware reports at offset 0x40 of a report.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), the
PLATFORM_INFO field (the ATTESTATION_REPORT structure's platform information).

====  ============================  ===============================================
bit   field                         meaning
====  ============================  ===============================================
0     SMT_EN                        SMT is enabled on the platform
1     TSME_EN                       transparent SME is enabled
2     ECC_EN                        the platform uses ECC memory
3     RAPL_DIS                      RAPL is disabled
4     CIPHERTEXT_HIDING_DRAM_EN     DRAM ciphertext hiding is enabled
5     ALIAS_CHECK_COMPLETE          the memory alias (BadRAM) check has completed
6     reserved
7     SEV_TIO_EN                    SEV-TIO is enabled
63:8  reserved, must be zero
====  ============================  ===============================================
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError

PLATFORM_INFO_SIZE = 8
FLAG_BITS: dict[str, int] = {
    "smt_en": 0,
    "tsme_en": 1,
    "ecc_en": 2,
    "rapl_dis": 3,
    "ciphertext_hiding_dram_en": 4,
    "alias_check_complete": 5,
    "sev_tio_en": 7,
}
KNOWN_BITS_MASK = sum(1 << bit for bit in FLAG_BITS.values())


@dataclass(frozen=True)
class PlatformInfo:
    """The platform information flags of a report (56860 PLATFORM_INFO)."""

    smt_en: bool = False
    tsme_en: bool = False
    ecc_en: bool = False
    rapl_dis: bool = False
    ciphertext_hiding_dram_en: bool = False
    alias_check_complete: bool = False
    sev_tio_en: bool = False

    def __post_init__(self) -> None:
        for name in FLAG_BITS:
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"platform info {name}: expected a bool")

    @classmethod
    def from_int(cls, value: int) -> PlatformInfo:
        if not 0 <= value < 1 << 64:
            raise FormatError(f"platform info: {value} is not a u64")
        if value & ~KNOWN_BITS_MASK:
            raise FormatError(
                f"platform info {value:#x}: reserved bits {value & ~KNOWN_BITS_MASK:#x} are set"
            )
        return cls(**{name: bool(value >> bit & 1) for name, bit in FLAG_BITS.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> PlatformInfo:
        if len(data) != PLATFORM_INFO_SIZE:
            raise FormatError(f"platform info: expected 8 bytes, got {len(data)}")
        return cls.from_int(int.from_bytes(data, "little"))

    def to_int(self) -> int:
        return sum(1 << bit for name, bit in FLAG_BITS.items() if getattr(self, name))

    def to_bytes(self) -> bytes:
        return self.to_int().to_bytes(PLATFORM_INFO_SIZE, "little")

    def flags(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in FLAG_BITS}

    def __str__(self) -> str:
        on = ",".join(name for name, value in self.flags().items() if value) or "none"
        return f"{self.to_int():#x} ({on})"
