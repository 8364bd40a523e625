"""The TCG event log in guest memory: the firmware keeps it there and hands it to the OS.

As EDK2's Tcg2Dxe does (TCG EFI Protocol Specification 1.22, section 6.5, the log area the
firmware allocates and publishes through EFI_TCG2_PROTOCOL.GetEventLog and the ACPI TPM2 table's
LAML/LASA), the crypto-agile log (PFP 1.05 r23, section 10) lives in guest pages the firmware
reserved. Here it is written through the vCPU after each measurement — private memory, so the
host sees it only as ciphertext in the encrypted modes — and the OS reads it back from those
pages: the event log of a trace is what the guest's memory holds, parsed again. The area starts
with the log's size (u32, little-endian).
"""

from __future__ import annotations

from cvm.errors import StateError
from cvm.formats.tcg.event_log import EventLog
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.memory.dram import PAGE_SIZE

SIZE_FIELD = 4


class EventLogArea:
    """``pages`` guest pages at ``gpa`` holding the firmware's event log."""

    def __init__(self, kernel: SevGuest, gpa: int, pages: int) -> None:
        self.kernel, self.gpa, self.pages = kernel, gpa, pages
        self.stored = 0

    def reserve(self) -> None:
        """Firmware: start an empty log in the pages (private pages it already accepted)."""
        self.kernel.cpu.write(self.gpa, bytes(SIZE_FIELD))

    def store(self, log: EventLog) -> None:
        """Firmware: write the log so far into the area."""
        data = log.to_bytes()
        if SIZE_FIELD + len(data) > self.pages * PAGE_SIZE:
            raise StateError(f"event log of {len(data)} bytes exceeds its "
                             f"{self.pages * PAGE_SIZE}-byte area")
        self.kernel.cpu.write(self.gpa, len(data).to_bytes(SIZE_FIELD, "little") + data)
        self.stored = len(data)

    def load(self) -> EventLog:
        """OS: read the log the firmware left in the area, and parse it."""
        size = int.from_bytes(self.kernel.cpu.read(self.gpa, SIZE_FIELD), "little")
        if SIZE_FIELD + size > self.pages * PAGE_SIZE:
            raise StateError("the event log area is corrupt: its size exceeds the area")
        return EventLog.parse(self.kernel.cpu.read(self.gpa + SIZE_FIELD, size))
