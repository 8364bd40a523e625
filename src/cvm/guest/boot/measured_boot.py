"""Measured boot: every measurement extended into the PCRs and appended to the event log.

This is the EFI_TCG2_PROTOCOL of the firmware (TCG EFI Protocol Specification 1.22, section
6.6 ``HashLogExtendEvent``, with ``PE_COFF_IMAGE`` for images) as the boot stages use it: each
``measure*`` call computes one digest per allocated bank, extends the PCR through the
:class:`~cvm.guest.boot.pcr_bank.PcrBank` interface and appends the matching TCG_PCR_EVENT2 to a
crypto-agile log (PFP 1.05 r23, section 10), so that replaying the log gives the PCRs. What
each digest covers follows PFP section 3.3.4 and 10.4: the whole UEFI_VARIABLE_DATA for
EV_EFI_VARIABLE_DRIVER_CONFIG/_AUTHORITY/_BOOT2, only VariableData for EV_EFI_VARIABLE_BOOT,
the Authenticode hash for image loads, the event data itself for actions and separators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cvm.errors import UsageError
from cvm.formats.pe.authenticode import digest_of
from cvm.formats.pe.image import PeImage
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.image_load_event import UefiImageLoadEvent
from cvm.formats.tcg.no_action import StartupLocalityEvent
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.guest.boot.pcr_bank import PcrBank

SEPARATOR_DATA = b"\0\0\0\0"
WHOLE_STRUCTURE_VARIABLE_TYPES = frozenset({
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, EventType.EV_EFI_VARIABLE_AUTHORITY,
    EventType.EV_EFI_VARIABLE_BOOT2,
})


class MeasuredBoot:
    """The measuring half of a boot: one PCR bank, one event log, written together."""

    def __init__(self, pcrs: PcrBank, startup_locality: int = 0,
                 sink: Callable[[EventLog], None] | None = None) -> None:
        self.pcrs = pcrs
        self.sink = sink  # where the firmware keeps the log (its area in guest memory)
        self._algorithms = [algorithm_by_name(bank) for bank in pcrs.banks]
        self.spec_id = SpecIdEvent(
            tuple(AlgorithmSize(a.alg_id, a.digest_size) for a in self._algorithms)
        )
        self._events: list[PcrEvent] = []
        if startup_locality:
            self.log_no_action(0, StartupLocalityEvent(startup_locality).to_bytes())

    @property
    def log(self) -> EventLog:
        """The event log so far (crypto-agile, one digest per allocated bank)."""
        return EventLog(self.spec_id, tuple(self._events))

    @property
    def events(self) -> tuple[PcrEvent, ...]:
        return tuple(self._events)

    def measure_digests(
        self, pcr: int, event_type: int, event_data: bytes, digests_by_bank: Mapping[str, bytes]
    ) -> PcrEvent:
        """Extend ``pcr`` by precomputed digests (one per bank) and log the event."""
        if set(digests_by_bank) != set(self.pcrs.banks):
            raise UsageError(
                f"measurement needs a digest for each bank {self.pcrs.banks}, "
                f"got {sorted(digests_by_bank)}"
            )
        digests = tuple((a.alg_id, digests_by_bank[a.name]) for a in self._algorithms)
        event = PcrEvent(pcr, event_type, digests, event_data)
        event.to_event2(self.spec_id)
        self.pcrs.extend(pcr, digests_by_bank)
        self._append(event)
        return event

    def measure(
        self, pcr: int, event_type: int, event_data: bytes, hashed: bytes | None = None
    ) -> PcrEvent:
        """HashLogExtendEvent: hash ``hashed`` (default: the event data) in every bank."""
        payload = event_data if hashed is None else hashed
        digests = {a.name: a.digest(payload) for a in self._algorithms}
        return self.measure_digests(pcr, event_type, event_data, digests)

    def log_no_action(self, pcr: int, event_data: bytes) -> PcrEvent:
        """Log an EV_NO_ACTION event (zero digests, nothing extended)."""
        digests = tuple((a.alg_id, bytes(a.digest_size)) for a in self._algorithms)
        event = PcrEvent(pcr, EventType.EV_NO_ACTION, digests, event_data)
        self._append(event)
        return event

    def _append(self, event: PcrEvent) -> None:
        self._events.append(event)
        if self.sink is not None:
            self.sink(self.log)

    def measure_variable(
        self, pcr: int, event_type: EventType, variable: UefiVariableData
    ) -> PcrEvent:
        """Measure a UEFI variable with the digest rule of its event type."""
        data = variable.to_bytes()
        if event_type in WHOLE_STRUCTURE_VARIABLE_TYPES:
            return self.measure(pcr, event_type, data)
        if event_type == EventType.EV_EFI_VARIABLE_BOOT:
            return self.measure(pcr, event_type, data, hashed=variable.data)
        raise UsageError(f"{event_type.name} is not a variable event type")

    def measure_separator(self, pcr: int) -> PcrEvent:
        """EV_SEPARATOR with the success value 0 (PFP section 3.3.2.2)."""
        return self.measure(pcr, EventType.EV_SEPARATOR, SEPARATOR_DATA)

    def measure_action(self, pcr: int, action: str) -> PcrEvent:
        """EV_EFI_ACTION: an ASCII string without NUL, hashed as logged."""
        return self.measure(pcr, EventType.EV_EFI_ACTION, action.encode("ascii"))

    def measure_pe_image(
        self, pcr: int, event_type: int, image: bytes | PeImage, load_event: UefiImageLoadEvent
    ) -> PcrEvent:
        """An image load: the digest is the Authenticode hash of ``image`` in each bank."""
        parsed = image if isinstance(image, PeImage) else PeImage.parse(image)
        digests = {a.name: digest_of(parsed, a.name) for a in self._algorithms}
        return self.measure_digests(pcr, event_type, load_event.to_bytes(), digests)
