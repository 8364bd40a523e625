"""AMD's X.509 extensions of a VCEK certificate (OID arc 1.3.6.1.4.1.3704.1).

AMD 57230 "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification", "VCEK Certificate Extensions" table. Each extension's extnValue holds:

==============  ================  =============================================
OID suffix      name              encoding in the real certificates
==============  ================  =============================================
.1              structVersion     DER INTEGER (0 Milan/Genoa, 1 Turin)
.2              productName       DER IA5String ("Milan-B0", "Genoa", "Turin")
.3.1/.2/.3      bl/tee/snpSPL     DER INTEGER
.3.4 to .3.7    spl_4..spl_7      DER INTEGER 0 (3.4 absent in structVersion 1)
.3.8            ucodeSPL          DER INTEGER
.3.9            fmcSPL            DER INTEGER (structVersion 1 only)
.4              hwID              the raw bytes, no DER header (64 B, or 8 B for Turin)
.5              cspId             DER IA5String (VLEK only)
==============  ================  =============================================

The order below is the order of AMD's real Milan and Turin VCEKs (vectors in
``snp/virtee-sev/tests/certs_data``), so certificates built from it match them byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

AMD_ARC = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = f"{AMD_ARC}.1"
OID_PRODUCT_NAME = f"{AMD_ARC}.2"
OID_BL_SPL = f"{AMD_ARC}.3.1"
OID_TEE_SPL = f"{AMD_ARC}.3.2"
OID_SNP_SPL = f"{AMD_ARC}.3.3"
OID_UCODE_SPL = f"{AMD_ARC}.3.8"
OID_FMC_SPL = f"{AMD_ARC}.3.9"
OID_HW_ID = f"{AMD_ARC}.4"
OID_CSP_ID = f"{AMD_ARC}.5"
_SPL_RESERVED = {n: f"{AMD_ARC}.3.{n}" for n in (4, 5, 6, 7)}
HW_ID_SIZE = {TcbLayout.MILAN_GENOA: 64, TcbLayout.TURIN: 8}
_ORDER = {
    TcbLayout.MILAN_GENOA: (
        OID_STRUCT_VERSION, OID_PRODUCT_NAME, OID_BL_SPL, OID_TEE_SPL, _SPL_RESERVED[4],
        _SPL_RESERVED[5], _SPL_RESERVED[6], _SPL_RESERVED[7], OID_SNP_SPL, OID_UCODE_SPL,
        OID_HW_ID,
    ),
    TcbLayout.TURIN: (
        OID_STRUCT_VERSION, OID_PRODUCT_NAME, OID_FMC_SPL, OID_BL_SPL, OID_TEE_SPL, OID_SNP_SPL,
        _SPL_RESERVED[5], _SPL_RESERVED[6], _SPL_RESERVED[7], OID_UCODE_SPL, OID_HW_ID,
    ),
}
_TCB_OIDS = {
    OID_BL_SPL: "boot_loader", OID_TEE_SPL: "tee", OID_SNP_SPL: "snp",
    OID_UCODE_SPL: "microcode", OID_FMC_SPL: "fmc",
}


def encode_integer(value: int) -> bytes:
    """DER INTEGER of a small non-negative value (``02 01 xx`` or ``02 02 00 xx``)."""
    if not 0 <= value < 1 << 15:
        raise UsageError(f"SPL value {value} out of range")
    content = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return bytes([0x02, len(content)]) + content


def decode_integer(data: bytes, name: str) -> int:
    if len(data) < 3 or data[0] != 0x02 or data[1] != len(data) - 2 or data[1] > 2:
        raise FormatError(f"VCEK extension {name}: not a small DER INTEGER ({data.hex()})")
    content = data[2:]
    if content[0] & 0x80 or (len(content) == 2 and content[0] == 0 and not content[1] & 0x80):
        raise FormatError(f"VCEK extension {name}: INTEGER is negative or not minimal")
    return int.from_bytes(content, "big")


def encode_ia5(text: str) -> bytes:
    data = text.encode("ascii")
    if len(data) >= 0x80:
        raise UsageError("product name too long")
    return bytes([0x16, len(data)]) + data


def decode_ia5(data: bytes, name: str) -> str:
    if len(data) < 2 or data[0] != 0x16 or data[1] != len(data) - 2:
        raise FormatError(f"VCEK extension {name}: not a short DER IA5String")
    try:
        return data[2:].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"VCEK extension {name}: not ASCII") from None


@dataclass(frozen=True)
class VcekExtensions:
    """The AMD claims a VCEK certificate makes about the chip and firmware it belongs to."""

    product_name: str
    tcb: TcbVersion
    hw_id: bytes

    @property
    def struct_version(self) -> int:
        return int(self.tcb.layout)

    def to_extensions(self) -> list[tuple[str, bytes]]:
        """(OID, extnValue) pairs in AMD's order for this structVersion."""
        if len(self.hw_id) != HW_ID_SIZE[self.tcb.layout]:
            raise UsageError(f"hwID must be {HW_ID_SIZE[self.tcb.layout]} bytes")
        values: dict[str, bytes] = {
            OID_STRUCT_VERSION: encode_integer(self.struct_version),
            OID_PRODUCT_NAME: encode_ia5(self.product_name),
            OID_HW_ID: self.hw_id,
            **{oid: encode_integer(0) for oid in _SPL_RESERVED.values()},
        }
        for oid, component in _TCB_OIDS.items():
            values[oid] = encode_integer(getattr(self.tcb, component))
        return [(oid, values[oid]) for oid in _ORDER[self.tcb.layout]]

    @classmethod
    def from_extensions(cls, extensions: Mapping[str, bytes]) -> VcekExtensions:
        """Decode from a mapping OID -> extnValue; unknown AMD OIDs are refused."""
        if OID_STRUCT_VERSION not in extensions:
            raise FormatError("VCEK: no structVersion extension")
        version = decode_integer(extensions[OID_STRUCT_VERSION], "structVersion")
        try:
            layout = TcbLayout(version)
        except ValueError:
            raise FormatError(f"VCEK: unknown structVersion {version}") from None
        expected = set(_ORDER[layout])
        present = {oid for oid in extensions if oid.startswith(AMD_ARC + ".")}
        if present - expected - {OID_CSP_ID}:
            raise FormatError(f"VCEK: unexpected AMD extensions {sorted(present - expected)}")
        missing = expected - present
        if missing:
            raise FormatError(f"VCEK: missing AMD extensions {sorted(missing)}")
        for oid in _SPL_RESERVED.values():
            if oid in expected and decode_integer(extensions[oid], oid) != 0:
                raise FormatError(f"VCEK: reserved SPL {oid} is not zero")
        components = {
            name: decode_integer(extensions[oid], name)
            for oid, name in _TCB_OIDS.items()
            if oid in expected
        }
        try:
            tcb = TcbVersion(layout=layout, **components)
        except UsageError as error:
            raise FormatError(f"VCEK: {error}") from None
        hw_id = extensions[OID_HW_ID]
        if len(hw_id) != HW_ID_SIZE[layout]:
            raise FormatError(f"VCEK: hwID is {len(hw_id)} bytes, expected {HW_ID_SIZE[layout]}")
        product = decode_ia5(extensions[OID_PRODUCT_NAME], "productName")
        return cls(product_name=product, tcb=tcb, hw_id=hw_id)
