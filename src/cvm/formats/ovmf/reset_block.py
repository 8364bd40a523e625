"""The SEV-ES reset block: where application processors start in an SEV-ES/SNP guest.

edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`` (``SEV_ES_AP_RESET_IP``), footer-table
entry ``00f771de-1a7e-4fcb-890e-68c77e2fb44e``: one u32 (little-endian), the AP reset EIP.
QEMU splits it into CS base (``eip & 0xffff0000``) and RIP (``eip & 0xffff``) for every AP's
initial VMSA (``target/i386/sev.c``, ``sev_es_find_reset_vector``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError

RESET_BLOCK_SIZE = 4


def published_reset_block(entry: bytes | None) -> SevEsResetBlock | None:
    """The reset block a footer entry publishes, or None without the entry."""
    return None if entry is None else SevEsResetBlock.from_bytes(entry)


@dataclass(frozen=True)
class SevEsResetBlock:
    """The AP reset EIP published by the firmware."""

    eip: int

    def __post_init__(self) -> None:
        if not 0 <= self.eip < 1 << 32:
            raise UsageError(f"AP reset EIP {self.eip:#x} is not a u32")

    @property
    def cs_base(self) -> int:
        return self.eip & 0xFFFF0000

    @property
    def ip(self) -> int:
        return self.eip & 0xFFFF

    @classmethod
    def from_bytes(cls, data: bytes) -> SevEsResetBlock:
        if len(data) != RESET_BLOCK_SIZE:
            raise FormatError(f"SEV-ES reset block: expected 4 bytes, got {len(data)}")
        return cls(int.from_bytes(data, "little"))

    def to_bytes(self) -> bytes:
        return self.eip.to_bytes(RESET_BLOCK_SIZE, "little")
