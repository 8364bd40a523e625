"""A whole PC Client event log: parse, write, and tell the two formats apart.

PFP 1.05 r23, section 10.1-10.4: a crypto-agile log starts with a SHA-1 format record
(PCR 0, EV_NO_ACTION, zero digest) whose event is the Spec ID Event03 (Table 21), followed by
TCG_PCR_EVENT2 records; a log whose first record is anything else is a legacy SHA-1 log
(TCG EFI Protocol Specification 1.22, section 5.3) made only of TCG_PCClientPCREvent records.
The list of records is the log; the bytes ``/sys/kernel/security/tpm0/binary_bios_measurements``
shows are exactly :meth:`EventLog.to_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cvm.errors import FormatError
from cvm.formats.tcg.algorithm import TPM_ALG_SHA1
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.pcr_event import SHA1_DIGEST_SIZE, PcrEvent
from cvm.formats.tcg.spec_id_event import SPEC_ID_SIGNATURE, SpecIdEvent
from cvm.wire import Reader

HEADER_PCR = 0
MAX_FIRST_PCR = 23  # PC Client TPMs have 24 PCRs; the first record of any log names one


@dataclass(frozen=True)
class EventLog:
    """The records of a log; ``spec_id`` is None for a legacy SHA-1 log.

    ``events`` excludes the Spec ID header record of a crypto-agile log (it is rebuilt from
    ``spec_id`` when writing).
    """

    spec_id: SpecIdEvent | None
    events: tuple[PcrEvent, ...]

    @property
    def is_crypto_agile(self) -> bool:
        return self.spec_id is not None

    @property
    def bank_ids(self) -> tuple[int, ...]:
        """The TPM_ALG_IDs of the banks the log carries, in header order."""
        return banks_of(self.spec_id)

    def header_event(self) -> PcrEvent | None:
        """The SHA-1 format record that carries the Spec ID event (crypto-agile logs)."""
        if self.spec_id is None:
            return None
        return PcrEvent(
            HEADER_PCR,
            EventType.EV_NO_ACTION,
            ((TPM_ALG_SHA1, bytes(SHA1_DIGEST_SIZE)),),
            self.spec_id.to_bytes(),
        )

    @classmethod
    def parse(cls, data: bytes) -> EventLog:
        """Parse a whole log; every byte must belong to a record."""
        if not data:
            raise FormatError("not an event log: empty input")
        reader = Reader(data, "TCG event log")
        try:
            first = PcrEvent.read_sha1_format(reader)
        except FormatError as error:
            raise FormatError(f"not an event log: {error}") from None
        if first.pcr_index > MAX_FIRST_PCR:
            raise FormatError(f"not an event log: its first record names PCR {first.pcr_index} "
                              f"(a TPM has PCRs 0 to {MAX_FIRST_PCR})")
        if not first.event.startswith(SPEC_ID_SIGNATURE):
            events = [first]
            while reader.remaining:
                events.append(PcrEvent.read_sha1_format(reader))
            return cls(None, tuple(events))
        if (
            first.pcr_index != HEADER_PCR
            or first.event_type != EventType.EV_NO_ACTION
            or any(first.digests[0][1])
        ):
            raise FormatError(
                "TCG event log: the Spec ID record must be PCR 0, EV_NO_ACTION, zero digest"
            )
        overrun = SpecIdEvent.vendor_info_overrun(first.event)
        if overrun:
            extra = reader.take(overrun, "vendorInfo after the Spec ID record")
            spec = replace(SpecIdEvent.parse(first.event + extra), vendor_info_outside_event=True)
        else:
            spec = SpecIdEvent.parse(first.event)
        blob = bytes(data)
        start = len(blob) - reader.remaining
        return cls(spec, tuple(PcrEvent.read_event2_records(blob, start, spec)))

    def to_bytes(self) -> bytes:
        """The log in its wire form (the same format it was parsed from)."""
        header = self.header_event()
        if header is None or self.spec_id is None:
            return b"".join(e.to_sha1_format() for e in self.events)
        parts = [header.to_sha1_format(), self.spec_id.trailing_bytes()]
        parts.extend(e.to_event2(self.spec_id) for e in self.events)
        return b"".join(parts)


def banks_of(spec_id: SpecIdEvent | None) -> tuple[int, ...]:
    """The TPM_ALG_IDs of the banks a log with header ``spec_id`` carries, in header order
    (SHA-1 alone for a legacy log, which has no header)."""
    if spec_id is None:
        return (TPM_ALG_SHA1,)
    return tuple(a.alg_id for a in spec_id.algorithms)
