"""The TCG event log in guest memory: the firmware keeps it there and hands it to the OS.

As EDK2's Tcg2Dxe does (TCG EFI Protocol Specification 1.22, section 6.5, the log area the
firmware allocates and publishes through EFI_TCG2_PROTOCOL.GetEventLog and the ACPI TPM2 table's
LAML/LASA), the crypto-agile log (PFP 1.05 r23, section 10) lives in guest pages the firmware
reserved. Here it is written through the vCPU after each measurement — private memory, so the
host sees it only as ciphertext in the encrypted modes — and the OS reads it back from those
pages: the event log of a trace is what the guest's memory holds, parsed again. The area starts
with the log's size (u32, little-endian). The log only grows, so each store writes the new
size and the records not yet in the area: in one write from the size through the new records
(the records already there written again as they are, from the firmware's own copy) when no
whole page lies between the two, else as two writes.
"""

from __future__ import annotations

import operator

from cvm.errors import StateError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.memory.dram import PAGE_SIZE

SIZE_FIELD = 4


class EventLogArea:
    """``pages`` guest pages at ``gpa`` holding the firmware's event log."""

    def __init__(self, kernel: SevGuest, gpa: int, pages: int) -> None:
        self.kernel, self.gpa, self.pages = kernel, gpa, pages
        self.stored = 0
        self._held = b""  # the log's bytes the area holds after its size
        self._written: tuple[PcrEvent, ...] = ()  # the records the area holds, in order
        self._spec: object = None  # the Spec ID they were written under
        self._parsed: tuple[bytes, EventLog] | None = None  # the OS's last bytes read, parsed

    def reserve(self) -> None:
        """Firmware: start an empty log in the pages (private pages it already accepted)."""
        self.kernel.cpu.write(self.gpa, bytes(SIZE_FIELD))
        self.stored, self._held, self._written, self._spec = 0, b"", (), None

    def store(self, log: EventLog) -> None:
        """Firmware: write the log so far into the area — only the records added since the
        last store when the log extends what the area holds, else the whole log."""
        count = len(self._written)
        appended = (log.spec_id is not None and log.spec_id is self._spec and count > 0
                    and len(log.events) >= count
                    and all(map(operator.is_, log.events[:count], self._written)))
        if appended:
            assert log.spec_id is not None
            start = self.stored  # where the new records begin
            held = self._held + b"".join(
                event.to_event2(log.spec_id) for event in log.events[count:])
        else:
            start, held = 0, log.to_bytes()
        size = len(held)
        if SIZE_FIELD + size > self.pages * PAGE_SIZE:
            raise StateError(f"event log of {size} bytes exceeds its "
                             f"{self.pages * PAGE_SIZE}-byte area")
        head = size.to_bytes(SIZE_FIELD, "little")
        first = self.gpa + SIZE_FIELD + start
        if start == size:  # nothing new: the size only
            self.kernel.cpu.write(self.gpa, head)
        elif first // PAGE_SIZE - self.gpa // PAGE_SIZE <= 1:  # no whole page in between
            self.kernel.cpu.write(self.gpa, head + held)
        else:
            self.kernel.cpu.write(first, held[start:])
            self.kernel.cpu.write(self.gpa, head)
        self.stored, self._held, self._written, self._spec = size, held, log.events, log.spec_id

    def read(self) -> bytes:
        """OS: the bytes of the log the firmware left in the area."""
        size = int.from_bytes(self.kernel.cpu.read(self.gpa, SIZE_FIELD), "little")
        if SIZE_FIELD + size > self.pages * PAGE_SIZE:
            raise StateError("the event log area is corrupt: its size exceeds the area")
        return self.kernel.cpu.read(self.gpa + SIZE_FIELD, size)

    def load(self) -> EventLog:
        """OS: read the log the firmware left in the area, and parse it (bytes the last load
        read and parsed give the log it parsed)."""
        return self.parse(self.read())

    def parse(self, data: bytes) -> EventLog:
        """The log of ``data`` (read from the area): parsed, unless they are the last bytes
        parsed, whose log this returns again."""
        if self._parsed is not None and self._parsed[0] == data:
            return self._parsed[1]
        log = EventLog.parse(data)
        self._parsed = (data, log)
        return log
