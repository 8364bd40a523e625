"""TCG_EfiSpecIDEvent: the "Spec ID Event03" header that makes a log crypto-agile.

PFP 1.05 r23, section 10.4.5.1, Table 21 (TCG_EfiSpecIDEvent) and Table 22
(TCG_EfiSpecIdEventAlgorithmSize). Little-endian. It is the event data of the first record,
which is always in the SHA-1 format (TCG_PCClientPCREvent, Table 19) with PCR 0, EV_NO_ACTION
and a zero digest. ``uintnSize`` is 1 for 32-bit and 2 for 64-bit UEFI.

Some logs in the wild declare an ``eventSize`` that ends at ``vendorInfoSize``, with the
vendorInfo bytes following the record (tpm2-tools ``specid-vendordata.bin``); ``tpm2_eventlog``
reads them as vendorInfo. :class:`~cvm.formats.tcg.event_log.EventLog` accepts that layout the
same way, marks it with ``vendor_info_outside_event`` and writes it back byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.formats.tcg.algorithm import ALGORITHMS_BY_ID
from cvm.wire import Reader, Writer

SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
SPEC_ID_FIXED_SIZE = 0x18  # signature, platformClass, versions, errata, uintnSize


@dataclass(frozen=True)
class AlgorithmSize:
    """One bank the log carries: TPM_ALG_ID and the digest size every record uses for it."""

    alg_id: int
    digest_size: int


@dataclass(frozen=True)
class SpecIdEvent:
    """The Spec ID Event03 structure (Table 21)."""

    algorithms: tuple[AlgorithmSize, ...]
    platform_class: int = 0
    spec_version_minor: int = 0
    spec_version_major: int = 2
    spec_errata: int = 0
    uintn_size: int = 2
    vendor_info: bytes = b""
    vendor_info_outside_event: bool = False

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise UsageError("Spec ID event: at least one algorithm is required")
        ids = [a.alg_id for a in self.algorithms]
        if len(set(ids)) != len(ids):
            raise UsageError(f"Spec ID event: algorithm listed twice in {ids}")
        if len(self.vendor_info) > 0xFF:
            raise UsageError("Spec ID event: vendorInfo is longer than 255 bytes")

    @classmethod
    def parse(cls, data: bytes) -> SpecIdEvent:
        """Parse exactly one TCG_EfiSpecIDEvent; strict about signature, sizes and length."""
        reader = Reader(data, "TCG_EfiSpecIDEvent")
        if reader.take(16, "signature") != SPEC_ID_SIGNATURE:
            raise FormatError("TCG_EfiSpecIDEvent: signature is not 'Spec ID Event03'")
        platform_class = reader.u32("platformClass")
        minor = reader.u8("specVersionMinor")
        major = reader.u8("specVersionMajor")
        errata = reader.u8("specErrata")
        uintn = reader.u8("uintnSize")
        if uintn not in (1, 2):
            raise FormatError(f"TCG_EfiSpecIDEvent: uintnSize {uintn} is neither 1 nor 2")
        count = reader.u32("numberOfAlgorithms")
        if count == 0 or count * 4 > reader.remaining:
            raise FormatError(f"TCG_EfiSpecIDEvent: numberOfAlgorithms {count} does not fit")
        algorithms = []
        for _ in range(count):
            alg_id = reader.u16("algorithmId")
            size = reader.u16("digestSize")
            known = ALGORITHMS_BY_ID.get(alg_id)
            if size == 0 or (known is not None and known.digest_size != size):
                raise FormatError(
                    f"TCG_EfiSpecIDEvent: digestSize {size} is wrong for algorithm {alg_id:#06x}"
                )
            algorithms.append(AlgorithmSize(alg_id, size))
        vendor_size = reader.u8("vendorInfoSize")
        vendor_info = reader.take(vendor_size, "vendorInfo")
        reader.expect_end()
        try:
            return cls(tuple(algorithms), platform_class, minor, major, errata, uintn, vendor_info)
        except UsageError as error:
            raise FormatError(str(error)) from None

    def to_bytes(self) -> bytes:
        writer = Writer().put(SPEC_ID_SIGNATURE).u32(self.platform_class)
        writer.u8(self.spec_version_minor).u8(self.spec_version_major)
        writer.u8(self.spec_errata).u8(self.uintn_size).u32(len(self.algorithms))
        for algorithm in self.algorithms:
            writer.u16(algorithm.alg_id).u16(algorithm.digest_size)
        writer.u8(len(self.vendor_info))
        if not self.vendor_info_outside_event:
            writer.put(self.vendor_info)
        return writer.to_bytes()

    def trailing_bytes(self) -> bytes:
        """The vendorInfo bytes written after the header record (non-conforming logs only)."""
        return self.vendor_info if self.vendor_info_outside_event else b""

    @classmethod
    def vendor_info_overrun(cls, event: bytes) -> int:
        """How many vendorInfo bytes ``event`` announces but does not hold (0 if it holds all).

        Only an event that ends exactly at ``vendorInfoSize`` can overrun."""
        count_at = SPEC_ID_FIXED_SIZE  # numberOfAlgorithms follows the fixed fields
        if len(event) < count_at + 4:
            return 0
        count = int.from_bytes(event[count_at : count_at + 4], "little")
        if len(event) != count_at + 4 + 4 * count + 1:
            return 0
        return event[-1]

    def digest_size(self, alg_id: int) -> int:
        """The digest size of bank ``alg_id`` in this log; FormatError if the log lacks it."""
        for algorithm in self.algorithms:
            if algorithm.alg_id == alg_id:
                return algorithm.digest_size
        raise FormatError(f"event record uses algorithm {alg_id:#06x} the Spec ID event omits")
