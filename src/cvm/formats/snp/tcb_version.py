"""TCB_VERSION: the 64-bit security version of the AMD Secure Processor's firmware stack.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), "TCB_VERSION" structure
(the Milan/Genoa layout, and the Turin layout of later revisions). The VCEK certificate
carries the same components as X.509 extensions (AMD 57230, "Versioned Chip Endorsement Key
(VCEK) Certificate and KDS Interface Specification", VCEK extensions).

The u64 is stored little-endian. Two byte layouts exist and the product decides which one a
report uses (the report itself does not say):

==========  ============================  =====================================
byte        Milan / Genoa (layout 0)      Turin and later (layout 1)
==========  ============================  =====================================
0           BOOT_LOADER                   FMC
1           TEE                           BOOT_LOADER
2           reserved (KDS spl_4)          TEE
3           reserved (KDS spl_5)          SNP
4           reserved (KDS spl_6)          reserved
5           reserved (KDS spl_7)          reserved
6           SNP                           reserved
7           MICROCODE                     MICROCODE
==========  ============================  =====================================

Reserved bytes must be zero. One TCB is at most another when every component is at most the
other's component (the order the VCEK and KDS use; it is a partial order).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cvm.errors import FormatError, UsageError

TCB_VERSION_SIZE = 8


class TcbLayout(IntEnum):
    """Which byte layout a TCB_VERSION uses; the value is the VCEK ``structVersion``."""

    MILAN_GENOA = 0
    TURIN = 1


# Byte positions of each component per layout; every other byte is reserved (zero).
_POSITIONS: dict[TcbLayout, dict[str, int]] = {
    TcbLayout.MILAN_GENOA: {"boot_loader": 0, "tee": 1, "snp": 6, "microcode": 7},
    TcbLayout.TURIN: {"fmc": 0, "boot_loader": 1, "tee": 2, "snp": 3, "microcode": 7},
}
COMPONENTS = ("fmc", "boot_loader", "tee", "snp", "microcode")


@dataclass(frozen=True)
class TcbVersion:
    """One TCB_VERSION value: its components and the layout it is encoded with."""

    boot_loader: int = 0
    tee: int = 0
    snp: int = 0
    microcode: int = 0
    fmc: int = 0
    layout: TcbLayout = TcbLayout.MILAN_GENOA

    def __post_init__(self) -> None:
        for name in COMPONENTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise UsageError(f"TCB_VERSION.{name}: {value!r} is not a byte value")
        if self.layout is TcbLayout.MILAN_GENOA and self.fmc:
            raise UsageError("TCB_VERSION: the Milan/Genoa layout has no FMC component")

    @classmethod
    def from_bytes(cls, data: bytes, layout: TcbLayout = TcbLayout.MILAN_GENOA) -> TcbVersion:
        """Parse 8 little-endian bytes; reserved bytes must be zero."""
        if len(data) != TCB_VERSION_SIZE:
            raise FormatError(f"TCB_VERSION: expected 8 bytes, got {len(data)}")
        positions = _POSITIONS[layout]
        used = set(positions.values())
        for index, byte in enumerate(data):
            if index not in used and byte:
                raise FormatError(
                    f"TCB_VERSION ({layout.name} layout): reserved byte {index} is {byte:#04x}, "
                    "must be zero"
                )
        return cls(layout=layout, **{name: data[pos] for name, pos in positions.items()})

    @classmethod
    def from_int(cls, value: int, layout: TcbLayout = TcbLayout.MILAN_GENOA) -> TcbVersion:
        if not 0 <= value < 1 << 64:
            raise FormatError(f"TCB_VERSION: {value} is not a u64")
        return cls.from_bytes(value.to_bytes(TCB_VERSION_SIZE, "little"), layout)

    def to_bytes(self) -> bytes:
        out = bytearray(TCB_VERSION_SIZE)
        for name, pos in _POSITIONS[self.layout].items():
            out[pos] = getattr(self, name)
        return bytes(out)

    def to_int(self) -> int:
        return int.from_bytes(self.to_bytes(), "little")

    def components(self) -> dict[str, int]:
        """The components this layout has, by name (``fmc`` only for Turin and later)."""
        return {name: getattr(self, name) for name in _POSITIONS[self.layout]}

    def at_least(self, minimum: TcbVersion) -> bool:
        """Whether every component is at least ``minimum``'s (56860 TCB ordering)."""
        return all(getattr(self, name) >= getattr(minimum, name) for name in COMPONENTS)

    def at_most(self, maximum: TcbVersion) -> bool:
        """Whether every component is at most ``maximum``'s."""
        return maximum.at_least(self)

    def __str__(self) -> str:
        parts = " ".join(f"{name}={value}" for name, value in self.components().items())
        return f"{self.to_int():#018x} ({parts})"
