"""ID_BLOCK: the owner's statement of the expected launch, checked by SNP_LAUNCH_FINISH.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §8.18 SNP_LAUNCH_FINISH,
Table 75 "ID_BLOCK Structure" (0x60 bytes, little-endian). The firmware refuses the launch
unless LD equals the launch digest it computed and POLICY equals the guest policy given to
SNP_LAUNCH_START; FAMILY_ID, IMAGE_ID and GUEST_SVN are then copied into every report. The
block is signed with the ID key (:mod:`cvm.formats.snp.id_auth`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, u32, u64

ID_BLOCK_SIZE = 0x60
ID_BLOCK_VERSION = 1
LD_SIZE = 48
ID_SIZE = 16

ID_BLOCK_LAYOUT = Layout(
    "ID_BLOCK",
    ID_BLOCK_SIZE,
    [
        raw("ld", 0x00, LD_SIZE),
        raw("family_id", 0x30, ID_SIZE),
        raw("image_id", 0x40, ID_SIZE),
        u32("version", 0x50),
        u32("guest_svn", 0x54),
        u64("policy", 0x58),
    ],
)


@dataclass(frozen=True)
class IdBlock:
    """The expected launch digest, the guest's family/image IDs, its SVN and its policy."""

    ld: bytes
    family_id: bytes = bytes(ID_SIZE)
    image_id: bytes = bytes(ID_SIZE)
    guest_svn: int = 0
    policy: int = 0x30000
    version: int = ID_BLOCK_VERSION

    def __post_init__(self) -> None:
        if len(self.ld) != LD_SIZE:
            raise UsageError("ID block LD must be 48 bytes")
        if len(self.family_id) != ID_SIZE or len(self.image_id) != ID_SIZE:
            raise UsageError("ID block FAMILY_ID and IMAGE_ID must be 16 bytes")
        if not 0 <= self.guest_svn < 1 << 32 or not 0 <= self.policy < 1 << 64:
            raise UsageError("ID block GUEST_SVN is a u32 and POLICY a u64")

    @classmethod
    def from_bytes(cls, data: bytes) -> IdBlock:
        values = ID_BLOCK_LAYOUT.unpack(data)
        ints = {k: v for k, v in values.items() if isinstance(v, int)}
        blobs = {k: v for k, v in values.items() if isinstance(v, bytes)}
        if ints["version"] != ID_BLOCK_VERSION:
            raise FormatError(f"ID_BLOCK: VERSION is {ints['version']}, expected 1")
        return cls(
            ld=blobs["ld"],
            family_id=blobs["family_id"],
            image_id=blobs["image_id"],
            guest_svn=ints["guest_svn"],
            policy=ints["policy"],
        )

    def to_bytes(self) -> bytes:
        return ID_BLOCK_LAYOUT.pack(
            {
                "ld": self.ld,
                "family_id": self.family_id,
                "image_id": self.image_id,
                "version": self.version,
                "guest_svn": self.guest_svn,
                "policy": self.policy,
            }
        )
