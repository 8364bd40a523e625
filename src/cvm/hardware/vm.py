"""A virtual machine as the silicon sees it: ASID, mode, nested page table, guest memory path.

The nested page table (guest-physical frame -> system-physical frame) belongs to the **host**,
which may change it at any time. The guest's own page tables decide per page whether an access
is private (C-bit set: encrypted with the guest's key) or shared; they live in guest memory, so
the host cannot change them. Every guest access goes through :meth:`VirtualMachine.access`, which
applies the nested translation, the SNP RMP checks and the encryption engine, in that order.
"""

from __future__ import annotations

import enum

from cvm.errors import UsageError
from cvm.hardware.fault import PFERR_NOT_PRESENT, Fault, FaultKind, Who
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE

PAGE_SHIFT = 12


class Mode(enum.Enum):
    """How a VM is protected."""

    PLAIN = "plain"
    SEV = "sev"
    SEV_ES = "sev-es"
    SEV_SNP = "sev-snp"

    @classmethod
    def parse(cls, text: str) -> Mode:
        aliases = {"snp": "sev-snp", "es": "sev-es"}
        try:
            return cls(aliases.get(text, text))
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise UsageError(f"unknown mode {text!r} (choose from {names})") from None

    @property
    def encrypts_memory(self) -> bool:
        return self is not Mode.PLAIN

    @property
    def encrypts_registers(self) -> bool:
        return self in (Mode.SEV_ES, Mode.SEV_SNP)

    @property
    def snp(self) -> bool:
        return self is Mode.SEV_SNP


class VirtualMachine:
    """A guest's address space on a machine; ``asid`` is 0 for a plain VM."""

    def __init__(self, machine: Machine, asid: int, mode: Mode, memory_bytes: int) -> None:
        if memory_bytes <= 0 or memory_bytes % PAGE_SIZE:
            raise UsageError(f"guest memory size {memory_bytes:#x} is not a whole number of pages")
        self.machine = machine
        self.asid = asid
        self.mode = mode
        self.memory_bytes = memory_bytes
        self.nested: dict[int, int] = {}  # guest frame -> system frame; host-controlled
        self._private: set[int] = set()  # guest frames whose guest PTE has the C-bit set

    # -- the host's side -------------------------------------------------------------------
    def map(self, gpa: int, spa: int) -> None:
        """Host: point guest page ``gpa`` at system page ``spa`` in the nested page table."""
        self.check_gpa(gpa, 1)
        self.machine.check_page(spa)
        if gpa % PAGE_SIZE:
            raise UsageError(f"guest-physical address {gpa:#x} is not page-aligned")
        self.nested[gpa >> PAGE_SHIFT] = spa >> PAGE_SHIFT

    def translate(self, gpa: int) -> int | None:
        """The system address ``gpa`` maps to, or None when the nested table has no entry."""
        frame = self.nested.get(gpa >> PAGE_SHIFT)
        return None if frame is None else (frame << PAGE_SHIFT) | (gpa % PAGE_SIZE)

    # -- the guest's side ------------------------------------------------------------------
    def set_private(self, gpa: int, private: bool) -> None:
        """Guest: set or clear the C-bit of the page holding ``gpa`` in its own page tables."""
        self.check_gpa(gpa, 1)
        if private and not self.mode.encrypts_memory:
            raise UsageError(f"a {self.mode.value} guest has no C-bit")
        (self._private.add if private else self._private.discard)(gpa >> PAGE_SHIFT)

    def is_private(self, gpa: int) -> bool:
        return (gpa >> PAGE_SHIFT) in self._private

    def check_gpa(self, gpa: int, size: int) -> None:
        if gpa < 0 or size < 0 or gpa + size > self.memory_bytes:
            raise UsageError(
                f"guest-physical address {gpa:#x}+{size:#x} is outside the guest's memory "
                f"(0..{self.memory_bytes:#x})"
            )

    def access(self, gpa: int, size: int, *, vmpl: int = 0, data: bytes | None = None) -> bytes:
        """A guest read (``data`` None) or write of ``size`` bytes at ``gpa``.

        Raises :class:`~cvm.hardware.fault.FaultRaised` for #NPF and #VC, after logging it.
        """
        self.check_gpa(gpa, size)
        if gpa % PAGE_SIZE + size <= PAGE_SIZE:  # within one page: one access
            return self._access_page(gpa, size, vmpl, data)
        out = bytearray()
        offset = 0
        while offset < size:
            address = gpa + offset
            part = min(size - offset, PAGE_SIZE - address % PAGE_SIZE)
            chunk = None if data is None else data[offset : offset + part]
            out += self._access_page(address, part, vmpl, chunk)
            offset += part
        return bytes(out)

    def _access_page(self, gpa: int, size: int, vmpl: int, data: bytes | None) -> bytes:
        frame = gpa >> PAGE_SHIFT  # the C-bit and the nested translation, looked up inline
        private = frame in self._private
        system = self.nested.get(frame)
        if system is None:
            raise self.machine.raise_fault(
                Fault(
                    FaultKind.NPF, gpa, Who.GUEST, PFERR_NOT_PRESENT,
                    "no nested page table entry", vmpl, self.asid,
                )
            )
        spa = (system << PAGE_SHIFT) | (gpa % PAGE_SIZE)
        write = data is not None
        if self.mode is Mode.SEV_SNP:
            fault = self.machine.rmp.check_guest_access(
                self.asid, gpa, spa, write=write, private=private, vmpl=vmpl
            )
        elif write and self.machine.snp_enabled:
            fault = self.machine.rmp.check_host_write(spa)
        else:
            fault = None
        if fault is not None:
            raise self.machine.raise_fault(fault)
        asid = self.asid if private else None
        if data is not None:
            self.machine.engine.write(asid, spa, data)
            return b""
        return self.machine.engine.read(asid, spa, size)
