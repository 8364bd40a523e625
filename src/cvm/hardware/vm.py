"""A virtual machine as the silicon sees it: ASID, mode, nested page table, guest memory path.

The nested page table (guest-physical frame -> system-physical frame) belongs to the **host**,
which may change it at any time. The guest's own page tables decide per page whether an access
is private (C-bit set: encrypted with the guest's key) or shared; they live in guest memory, so
the host cannot change them. Every guest access goes through :meth:`VirtualMachine.access`, which
applies the nested translation, the SNP RMP checks and the encryption engine, in that order.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Sequence
from functools import reduce

from cvm.errors import UsageError
from cvm.hardware.fault import PFERR_NOT_PRESENT, Fault, FaultKind, Who
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE

PAGE_SHIFT = 12
_PAGE_MASK = PAGE_SIZE - 1


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

    # The properties delegate to plain functions, which mutation testing reaches (mutmut 3
    # leaves decorated functions alone).
    @property
    def encrypts_memory(self) -> bool:
        return encrypts_memory(self)

    @property
    def encrypts_registers(self) -> bool:
        return encrypts_registers(self)

    @property
    def snp(self) -> bool:
        return is_snp(self)


def encrypts_memory(mode: Mode) -> bool:
    """Whether a ``mode`` guest has a memory key (a C-bit): every mode but plain."""
    return mode is not Mode.PLAIN


def encrypts_registers(mode: Mode) -> bool:
    """Whether the world switch keeps a ``mode`` guest's registers in an encrypted VMSA."""
    return mode in (Mode.SEV_ES, Mode.SEV_SNP)


def is_snp(mode: Mode) -> bool:
    """Whether a ``mode`` guest is checked against the RMP and has VMPLs."""
    return mode is Mode.SEV_SNP


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

    def map_pages(self, gpas: Sequence[int], spas: Sequence[int]) -> None:
        """Host: :meth:`map` each guest page ``gpas[i]`` at system page ``spas[i]``, in order,
        with the same checks and errors; a run that passes them all is entered in one step."""
        if len(gpas) != len(spas):
            raise UsageError(f"{len(gpas)} guest pages mapped at {len(spas)} system pages")
        if not gpas:
            return
        in_range = (
            min(gpas) >= 0 and max(gpas) + PAGE_SIZE <= self.memory_bytes
            and min(spas) >= 0 and max(spas) + PAGE_SIZE <= self.machine.dram.size_bytes
        )
        if not in_range or (reduce(operator.or_, gpas) | reduce(operator.or_, spas)) & _PAGE_MASK:
            for gpa, spa in zip(gpas, spas, strict=True):
                self.map(gpa, spa)  # raises at the first page that fails, as one by one does
            return
        self.nested.update(
            zip([gpa >> PAGE_SHIFT for gpa in gpas], [spa >> PAGE_SHIFT for spa in spas],
                strict=True)
        )

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
        """A guest read (``data`` None) or write of ``size`` bytes at ``gpa``: within a page,
        the nested translation, the RMP checks (SNP) or the host-write check (another guest on
        an SNP host), then the engine; an access across pages is one such access per page.

        Raises :class:`~cvm.hardware.fault.FaultRaised` for #NPF and #VC, after logging it.
        """
        if data is not None and len(data) != size:
            raise UsageError(f"a write of {len(data):#x} bytes given as {size:#x} bytes")
        if gpa < 0 or size < 0 or gpa + size > self.memory_bytes:
            self.check_gpa(gpa, size)  # raises
        offset = gpa & _PAGE_MASK
        if offset + size > PAGE_SIZE:
            return self._access_pages(gpa, size, vmpl, data)
        frame = gpa >> PAGE_SHIFT  # the C-bit and the nested translation, looked up inline
        system = self.nested.get(frame)
        if system is None:
            raise self.machine.raise_fault(
                Fault(
                    FaultKind.NPF, gpa, Who.GUEST, PFERR_NOT_PRESENT,
                    "no nested page table entry", vmpl, self.asid,
                )
            )
        private = frame in self._private
        machine = self.machine
        if self.mode is Mode.SEV_SNP:
            fault = machine.rmp.check_guest_access(
                self.asid, gpa, system << PAGE_SHIFT, write=data is not None, private=private,
                vmpl=vmpl,
            )
        elif data is not None and machine.snp_enabled:
            fault = machine.rmp.check_host_write(system << PAGE_SHIFT)
        else:
            fault = None
        if fault is not None:
            raise machine.raise_fault(fault)
        if private:
            return machine.engine.access_page(self.asid, system, offset, size, data)
        spa = (system << PAGE_SHIFT) | offset
        if data is not None:
            machine.dram.write(spa, data)
            return b""
        return machine.dram.read(spa, size)

    def _access_pages(self, gpa: int, size: int, vmpl: int, data: bytes | None) -> bytes:
        """An access across pages: one access per page, in address order."""
        out = bytearray()
        offset = 0
        while offset < size:
            address = gpa + offset
            part = min(size - offset, PAGE_SIZE - address % PAGE_SIZE)
            chunk = None if data is None else data[offset : offset + part]
            out += self.access(address, part, vmpl=vmpl, data=chunk)
            offset += part
        return bytes(out)
