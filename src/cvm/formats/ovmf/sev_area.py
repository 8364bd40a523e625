"""A ``{u32 gpa; u32 size}`` area published in the OVMF footer table.

edk2 ``OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm``: the SEV hash table entry
(``7255371f-3a3b-4b04-927b-1da6efa8d454``, where QEMU writes the kernel/initrd/cmdline hashes
for measured direct boot) and the SEV secret area entry
(``4c2eb361-7d9b-4cc3-8081-127c90d3d294``, the target of LAUNCH_SECRET) share this layout;
a zero GPA means the build does not provide the area. Little-endian.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.wire import Layout, u32

SEV_AREA_LAYOUT = Layout("SEV area", 0x8, [u32("gpa", 0x0), u32("size", 0x4)])


def published_area(entry: bytes | None) -> SevArea | None:
    """The area a footer entry publishes: None when there is no entry or its GPA is zero."""
    if entry is None:
        return None
    area = SevArea.from_bytes(entry)
    return area if area.gpa != 0 else None


@dataclass(frozen=True)
class SevArea:
    """A guest-physical area the firmware reserves."""

    gpa: int
    size: int

    def __post_init__(self) -> None:
        if not 0 <= self.gpa < 1 << 32 or not 0 <= self.size < 1 << 32:
            raise UsageError("SEV area GPA and size are u32 values")

    @property
    def present(self) -> bool:
        return self.gpa != 0

    @classmethod
    def from_bytes(cls, data: bytes) -> SevArea:
        values = SEV_AREA_LAYOUT.unpack(data)
        return cls(int(values["gpa"]), int(values["size"]))

    def to_bytes(self) -> bytes:
        return SEV_AREA_LAYOUT.pack({"gpa": self.gpa, "size": self.size})
