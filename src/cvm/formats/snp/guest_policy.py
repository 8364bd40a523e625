"""The SNP guest policy: the u64 the owner fixes at SNP_LAUNCH_START.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), "Guest Policy"
structure. The firmware refuses to launch (or to keep running) a guest whose policy the
platform cannot honour, and copies the policy into every attestation report (offset 0x08).

======  =========================  ==============================================
bits    field                      meaning
======  =========================  ==============================================
7:0     ABI_MINOR                  minimum firmware ABI minor version
15:8    ABI_MAJOR                  minimum firmware ABI major version
16      SMT                        SMT may be enabled on the host
17      reserved, must be one      the firmware rejects a policy with this bit clear
18      MIGRATE_MA                 a migration agent may be associated
19      DEBUG                      SNP_DBG_DECRYPT / ENCRYPT allowed (no confidentiality)
20      SINGLE_SOCKET              guest may run on one socket only
21      CXL_ALLOW                  CXL memory may back the guest
22      MEM_AES_256_XTS            require AES-256-XTS memory encryption
23      RAPL_DIS                   require RAPL to be disabled
24      CIPHERTEXT_HIDING_DRAM     require DRAM ciphertext hiding
25      PAGE_SWAP_DISABLE          disallow SNP_PAGE_SWAP_OUT/IN
63:26   reserved, must be zero
======  =========================  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from cvm.errors import FormatError, UsageError

GUEST_POLICY_SIZE = 8
RESERVED_ONE_BIT = 1 << 17
# Single-bit flags: dataclass field name -> bit number.
FLAG_BITS: dict[str, int] = {
    "smt": 16,
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding_dram": 24,
    "page_swap_disable": 25,
}
KNOWN_BITS_MASK = 0xFFFF | RESERVED_ONE_BIT | sum(1 << bit for bit in FLAG_BITS.values())


@dataclass(frozen=True)
class GuestPolicy:
    """An SNP guest policy (56860 Guest Policy); QEMU's default is ``GuestPolicy(smt=True)``."""

    abi_minor: int = 0
    abi_major: int = 0
    smt: bool = False
    migrate_ma: bool = False
    debug: bool = False
    single_socket: bool = False
    cxl_allow: bool = False
    mem_aes_256_xts: bool = False
    rapl_dis: bool = False
    ciphertext_hiding_dram: bool = False
    page_swap_disable: bool = False

    def __post_init__(self) -> None:
        for name in ("abi_minor", "abi_major"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise UsageError(f"guest policy {name}: {value!r} is not a byte value")
        for name in FLAG_BITS:
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"guest policy {name}: expected a bool")

    @classmethod
    def from_int(cls, value: int) -> GuestPolicy:
        """Parse the u64; bit 17 must be one and bits 63:26 zero."""
        if not 0 <= value < 1 << 64:
            raise FormatError(f"guest policy: {value} is not a u64")
        if not value & RESERVED_ONE_BIT:
            raise FormatError(f"guest policy {value:#x}: reserved bit 17 must be one")
        if value & ~KNOWN_BITS_MASK:
            raise FormatError(
                f"guest policy {value:#x}: reserved bits {value & ~KNOWN_BITS_MASK:#x} are set"
            )
        flags = {name: bool(value >> bit & 1) for name, bit in FLAG_BITS.items()}
        return cls(abi_minor=value & 0xFF, abi_major=value >> 8 & 0xFF, **flags)

    @classmethod
    def from_bytes(cls, data: bytes) -> GuestPolicy:
        if len(data) != GUEST_POLICY_SIZE:
            raise FormatError(f"guest policy: expected 8 bytes, got {len(data)}")
        return cls.from_int(int.from_bytes(data, "little"))

    def to_int(self) -> int:
        value = self.abi_minor | self.abi_major << 8 | RESERVED_ONE_BIT
        for name, bit in FLAG_BITS.items():
            if getattr(self, name):
                value |= 1 << bit
        return value

    def to_bytes(self) -> bytes:
        return self.to_int().to_bytes(GUEST_POLICY_SIZE, "little")

    def flags(self) -> dict[str, bool]:
        """Every single-bit flag by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in FLAG_BITS}

    def __str__(self) -> str:
        on = ",".join(name for name, value in self.flags().items() if value) or "none"
        return f"{self.to_int():#x} (abi>={self.abi_major}.{self.abi_minor}, flags {on})"
