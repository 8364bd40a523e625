"""SIGNER_INFO (KEY_INFO): which key signed an attestation report, at offset 0x48.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), Table 22
"ATTESTATION_REPORT Structure", field at 0x48:

=====  ===============  =========================================================
bits   field            meaning
=====  ===============  =========================================================
0      AUTHOR_KEY_EN    the ID block was signed by an author key (digest at 0x110)
1      MASK_CHIP_KEY    the report is not signed (SIGNATURE is zero)
4:2    SIGNING_KEY      0 VCEK, 1 VLEK, 7 none; 2..6 reserved
31:5   reserved, must be zero
=====  ===============  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cvm.errors import FormatError, UsageError


class SigningKey(IntEnum):
    """SIGNING_KEY values (56860 Table 22)."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True)
class SignerInfo:
    """The report's signer information field."""

    author_key_en: bool = False
    mask_chip_key: bool = False
    signing_key: SigningKey = SigningKey.VCEK

    def __post_init__(self) -> None:
        if not isinstance(self.signing_key, SigningKey):
            raise UsageError(f"signer info: {self.signing_key!r} is not a SigningKey")

    @classmethod
    def from_int(cls, value: int) -> SignerInfo:
        if not 0 <= value < 1 << 32:
            raise FormatError(f"signer info: {value} is not a u32")
        if value >> 5:
            raise FormatError(f"signer info {value:#x}: reserved bits 31:5 are set")
        key = value >> 2 & 0x7
        try:
            signing_key = SigningKey(key)
        except ValueError:
            raise FormatError(f"signer info {value:#x}: reserved SIGNING_KEY {key}") from None
        return cls(bool(value & 1), bool(value & 2), signing_key)

    def to_int(self) -> int:
        return int(self.author_key_en) | int(self.mask_chip_key) << 1 | self.signing_key << 2

    def __str__(self) -> str:
        flags = [name for name in ("author_key_en", "mask_chip_key") if getattr(self, name)]
        extra = f", {','.join(flags)}" if flags else ""
        return f"{self.to_int():#x} (signed by {self.signing_key.name}{extra})"
