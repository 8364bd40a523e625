"""Event data of EV_NO_ACTION records (never extended into a PCR).

PFP 1.05 r23, section 10.4.5: the Spec ID Event03 (Table 21, :mod:`.spec_id_event`); the
"StartupLocality" event (section 10.4.5.3, Table 24: ``"StartupLocality\\0" | u8 locality``);
the "SP800-155 Event" / "SP800-155 Event3" platform-identity events (section 10.4.5.2,
Table 25, and PFP 1.06 Table 11: signature, ``u32 VendorId``, ``GUID ReferenceManifestGuid``,
then variable strings kept verbatim here); the legacy "Spec ID Event00" of SHA-1 logs (TCG EFI
Protocol Specification 1.22, Table 4: signature, ``u32 platformClass``, four ``u8`` version
fields, ``u8 vendorInfoSize``, vendorInfo).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Guid, Reader, Writer

STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\0"
SP800_155_SIGNATURES = (b"SP800-155 Event\0", b"SP800-155 Event3")
LEGACY_SPEC_ID_SIGNATURE = b"Spec ID Event00\0"
SIGNATURE_SIZE = 16


@dataclass(frozen=True)
class StartupLocalityEvent:
    """The locality from which TPM2_Startup was sent (0 or 3 in practice)."""

    locality: int

    def __post_init__(self) -> None:
        if not 0 <= self.locality <= 4:
            raise UsageError(f"StartupLocality {self.locality} is outside 0..4")

    @classmethod
    def probe(cls, data: bytes) -> StartupLocalityEvent | None:
        """The event if ``data`` carries the StartupLocality signature, else None."""
        if not data.startswith(STARTUP_LOCALITY_SIGNATURE):
            return None
        return cls.parse(data)

    @classmethod
    def parse(cls, data: bytes) -> StartupLocalityEvent:
        reader = Reader(data, "StartupLocality event")
        if reader.take(SIGNATURE_SIZE, "signature") != STARTUP_LOCALITY_SIGNATURE:
            raise FormatError("StartupLocality event: wrong signature")
        locality = reader.u8("StartupLocality")
        reader.expect_end()
        if locality > 4:
            raise FormatError(f"StartupLocality event: locality {locality} is outside 0..4")
        return cls(locality)

    def to_bytes(self) -> bytes:
        return STARTUP_LOCALITY_SIGNATURE + bytes([self.locality])

    def describe(self) -> str:
        return f"StartupLocality {self.locality}"

    def to_json(self) -> dict[str, object]:
        return {"kind": "StartupLocality", "locality": self.locality}


@dataclass(frozen=True)
class Sp800155Event:
    """An SP800-155 platform-identity event; the strings after the GUID are kept verbatim."""

    signature: bytes
    vendor_id: int
    reference_manifest_guid: Guid
    rest: bytes

    @classmethod
    def parse(cls, data: bytes) -> Sp800155Event:
        reader = Reader(data, "SP800-155 event")
        signature = reader.take(SIGNATURE_SIZE, "signature")
        if signature not in SP800_155_SIGNATURES:
            raise FormatError("SP800-155 event: wrong signature")
        vendor_id = reader.u32("VendorId")
        guid = Guid.from_bytes(reader.take(16, "ReferenceManifestGuid"))
        return cls(signature, vendor_id, guid, reader.rest())

    def to_bytes(self) -> bytes:
        writer = Writer().put(self.signature).u32(self.vendor_id)
        return writer.put(self.reference_manifest_guid.to_bytes()).put(self.rest).to_bytes()

    def describe(self) -> str:
        name = self.signature.rstrip(b"\0").decode("ascii")
        return f"{name} vendor {self.vendor_id:#x} manifest {self.reference_manifest_guid}"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.signature.rstrip(b"\0").decode("ascii"),
            "vendor_id": self.vendor_id,
            "reference_manifest_guid": str(self.reference_manifest_guid),
            "rest": self.rest.hex(),
        }


@dataclass(frozen=True)
class LegacySpecIdEvent:
    """The "Spec ID Event00" header some SHA-1 logs carry."""

    platform_class: int
    spec_version_minor: int
    spec_version_major: int
    spec_errata: int
    uintn_size: int
    vendor_info: bytes

    @classmethod
    def parse(cls, data: bytes) -> LegacySpecIdEvent:
        reader = Reader(data, "TCG_EfiSpecIdEventStruct")
        if reader.take(SIGNATURE_SIZE, "signature") != LEGACY_SPEC_ID_SIGNATURE:
            raise FormatError("TCG_EfiSpecIdEventStruct: wrong signature")
        values = (reader.u32("platformClass"), reader.u8("specVersionMinor"),
                  reader.u8("specVersionMajor"), reader.u8("specErrata"), reader.u8("uintnSize"))
        vendor_info = reader.take(reader.u8("vendorInfoSize"), "vendorInfo")
        reader.expect_end()
        return cls(*values, vendor_info)

    def to_bytes(self) -> bytes:
        writer = Writer().put(LEGACY_SPEC_ID_SIGNATURE).u32(self.platform_class)
        writer.u8(self.spec_version_minor).u8(self.spec_version_major).u8(self.spec_errata)
        writer.u8(self.uintn_size).u8(len(self.vendor_info)).put(self.vendor_info)
        return writer.to_bytes()

    def describe(self) -> str:
        return f"Spec ID Event00 (TCG EFI {self.spec_version_major}.{self.spec_version_minor})"

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "Spec ID Event00",
            "platform_class": self.platform_class,
            "spec_version": f"{self.spec_version_major}.{self.spec_version_minor}",
            "spec_errata": self.spec_errata,
            "uintn_size": self.uintn_size,
            "vendor_info": self.vendor_info.hex(),
        }
