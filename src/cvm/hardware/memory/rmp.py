"""The SEV-SNP reverse map table: who owns each system physical page, and the checks it enforces.

One entry per 4 KiB page of system memory (AMD APM vol. 2 §15.36.3; SNP firmware ABI 56860 §8;
notes/snp.md §5.4). The instructions keep their real return codes: RMPUPDATE (host),
PVALIDATE and RMPADJUST (guest). The access checks return a :class:`~cvm.hardware.fault.Fault`
record, or None when the access may proceed.

A VMSA page is *in use* from a successful VMRUN on it until the #VMEXIT that leaves it (APM
vol. 2 §15.36.12): RMPUPDATE, RMPADJUST and PVALIDATE of that page fail with FAIL_INUSE
meanwhile, so neither the host nor the guest can change the entry of a save area a vCPU runs on.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce

from cvm.errors import UsageError
from cvm.hardware.fault import (
    PFERR_ENC,
    PFERR_RMP,
    PFERR_VMPL,
    PFERR_WRITE,
    VC_PAGE_NOT_VALIDATED,
    Fault,
    FaultKind,
    Who,
)

PAGE_SHIFT = 12
_PAGE_MASK = (1 << PAGE_SHIFT) - 1
VMPL_COUNT = 4


class RmpStatus(enum.IntEnum):
    """Return codes of RMPUPDATE, PVALIDATE and RMPADJUST (APM vol. 3)."""

    SUCCESS = 0
    FAIL_INPUT = 1
    FAIL_PERMISSION = 2
    FAIL_INUSE = 3
    FAIL_OVERLAP = 4
    FAIL_SIZEMISMATCH = 6


class Perm(enum.IntFlag):
    """VMPL permission mask bits (RMPADJUST RDX[15:8])."""

    READ = 1 << 0
    WRITE = 1 << 1
    EXEC_USER = 1 << 2
    EXEC_SUPERVISOR = 1 << 3
    SHADOW_STACK = 1 << 4

    @classmethod
    def all(cls) -> Perm:
        return cls.READ | cls.WRITE | cls.EXEC_USER | cls.EXEC_SUPERVISOR | cls.SHADOW_STACK


# What RMPUPDATE leaves: VMPL0 may do everything, the other levels nothing (made once: the
# flag arithmetic is not free, and a launch assigns hundreds of pages).
_DEFAULT_PERMS = (Perm.all(), Perm(0), Perm(0), Perm(0))
_READ_BIT, _WRITE_BIT = int(Perm.READ), int(Perm.WRITE)


@dataclass(slots=True)
class RmpEntry:
    """The state of one system page. ``asid`` 0 with ``assigned`` set means firmware-owned."""

    assigned: bool = False
    asid: int = 0
    gpa: int = 0
    page_size_2m: bool = False
    immutable: bool = False
    validated: bool = False
    vmsa: bool = False
    perms: list[Perm] = field(default_factory=lambda: list(_DEFAULT_PERMS))


_UNASSIGNED = RmpEntry()  # what a page without a stored entry reads as (never written)


def _npf(gpa: int, bits: int, write: bool, reason: str, vmpl: int, asid: int) -> Fault:
    """The #NPF of a refused guest access (the write bit set for a write)."""
    return Fault(FaultKind.NPF, gpa, Who.GUEST, bits | (PFERR_WRITE if write else 0), reason,
                 vmpl, asid)


class Rmp:
    """The reverse map table of one machine (sparse: unassigned pages have no stored entry)."""

    def __init__(self) -> None:
        self._entries: dict[int, RmpEntry] = {}
        self._in_use: set[int] = set()  # frames of the VMSA pages vCPUs are running on

    def enter_vmsa(self, spa: int) -> None:
        """Hardware, VMRUN: the VMSA page at ``spa`` is in use until :meth:`leave_vmsa`."""
        self._in_use.add(spa >> PAGE_SHIFT)

    def leave_vmsa(self, spa: int) -> None:
        """Hardware, #VMEXIT: the VMSA page at ``spa`` is no longer in use."""
        self._in_use.discard(spa >> PAGE_SHIFT)

    def in_use(self, spa: int) -> bool:
        """Whether a running vCPU's VMSA is the page holding ``spa``."""
        return spa >> PAGE_SHIFT in self._in_use

    def entry(self, spa: int) -> RmpEntry:
        """A copy-free view of the entry of the page holding ``spa`` (a fresh one if unassigned)."""
        return self._entries.get(spa >> PAGE_SHIFT) or RmpEntry()

    def rmpupdate(
        self, spa: int, *, assigned: bool, asid: int = 0, gpa: int = 0, immutable: bool = False
    ) -> RmpStatus:
        """Host: assign the page at ``spa`` to ``asid`` at ``gpa``, or return it to the host.

        Always clears Validated and the VMPL permissions; fails on an immutable page.
        """
        if spa % (1 << PAGE_SHIFT) or gpa % (1 << PAGE_SHIFT):
            return RmpStatus.FAIL_INPUT
        frame = spa >> PAGE_SHIFT
        if frame in self._in_use:
            return RmpStatus.FAIL_INUSE
        current = self._entries.get(frame)
        if current is not None and current.immutable:
            return RmpStatus.FAIL_PERMISSION
        if assigned:
            self._entries[frame] = RmpEntry(True, asid, gpa, immutable=immutable)
        else:
            self._entries.pop(frame, None)
        return RmpStatus.SUCCESS

    def rmpupdate_pages(
        self, spas: Sequence[int], gpas: Sequence[int], asid: int
    ) -> tuple[RmpStatus, int]:
        """Host: RMPUPDATE of each page ``spas[i]`` to ``asid`` at ``gpas[i]`` (assigned, not
        immutable), in order, stopping at the first failure: (its status or SUCCESS, how many
        pages were updated). The same checks and results as one :meth:`rmpupdate` per page; a
        run of aligned pages none of which has an entry yet is assigned in one step."""
        if len(spas) != len(gpas):
            raise UsageError(f"RMPUPDATE of {len(spas)} system pages at {len(gpas)} guest pages")
        if not spas:
            return RmpStatus.SUCCESS, 0
        frames = [spa >> PAGE_SHIFT for spa in spas]
        entries = self._entries
        if (
            not (reduce(operator.or_, spas) | reduce(operator.or_, gpas)) & _PAGE_MASK
            and entries.keys().isdisjoint(frames)  # an in-use VMSA page has an entry
        ):
            entries.update({frame: RmpEntry(True, asid, gpas[i]) for i, frame in enumerate(frames)})
            return RmpStatus.SUCCESS, len(frames)
        for done, spa in enumerate(spas):
            status = self.rmpupdate(spa, assigned=True, asid=asid, gpa=gpas[done])
            if status is not RmpStatus.SUCCESS:
                return status, done
        return RmpStatus.SUCCESS, len(frames)

    def firmware_assign(self, spa: int, asid: int, gpa: int, *, vmsa: bool = False) -> None:
        """Firmware (PSP): assign a launch page validated, as SNP_LAUNCH_UPDATE leaves it."""
        entry = RmpEntry(True, asid, gpa, validated=True, vmsa=vmsa, immutable=vmsa)
        self._entries[spa >> PAGE_SHIFT] = entry

    def firmware_own(self, spa: int) -> None:
        """Firmware: take a page into the firmware state (assigned, ASID 0, immutable)."""
        self._entries[spa >> PAGE_SHIFT] = RmpEntry(True, 0, 0, immutable=True)

    def pvalidate(self, asid: int, gpa: int, spa: int, validate: bool) -> tuple[RmpStatus, bool]:
        """Guest: set or clear Validated; returns (status, carry) — carry means "no change"."""
        entry = self._entries.get(spa >> PAGE_SHIFT)
        if entry is None or not entry.assigned or entry.asid != asid or entry.gpa != gpa:
            return RmpStatus.FAIL_INPUT, False
        if spa >> PAGE_SHIFT in self._in_use:
            return RmpStatus.FAIL_INUSE, False
        if entry.page_size_2m:
            return RmpStatus.FAIL_SIZEMISMATCH, False
        if entry.validated == validate:
            return RmpStatus.SUCCESS, True
        entry.validated = validate
        return RmpStatus.SUCCESS, False

    def rmpadjust(
        self, asid: int, gpa: int, spa: int, caller_vmpl: int, target_vmpl: int, perms: Perm,
        *, vmsa: bool = False,
    ) -> RmpStatus:
        """Guest: grant ``target_vmpl`` at most what ``caller_vmpl`` holds on the page, and set
        the page's VMSA bit to ``vmsa`` (RDX bit 16: the page holds a VMSA of ``target_vmpl``)."""
        if not 0 <= caller_vmpl < target_vmpl < VMPL_COUNT or (vmsa and caller_vmpl):
            return RmpStatus.FAIL_PERMISSION  # only VMPL0 makes VMSA pages
        entry = self._entries.get(spa >> PAGE_SHIFT)
        if entry is None or not entry.assigned or entry.asid != asid or entry.gpa != gpa:
            return RmpStatus.FAIL_INPUT
        if not entry.validated:
            return RmpStatus.FAIL_INPUT
        if spa >> PAGE_SHIFT in self._in_use:
            return RmpStatus.FAIL_INUSE
        if int(perms) & ~int(entry.perms[caller_vmpl]):
            return RmpStatus.FAIL_PERMISSION
        entry.perms[target_vmpl] = perms
        entry.vmsa = vmsa
        return RmpStatus.SUCCESS

    def check_host_write(self, spa: int) -> Fault | None:
        """The host (or a non-SNP guest) may not write a page assigned to a guest or firmware."""
        entry = self._entries.get(spa >> PAGE_SHIFT)
        if entry is None or not entry.assigned:
            return None
        owner = "the firmware" if entry.asid == 0 else f"ASID {entry.asid}"
        return Fault(
            FaultKind.HOST_PF,
            spa,
            Who.HOST,
            PFERR_RMP | PFERR_WRITE,
            f"RMP violation: page is assigned to {owner}",
        )

    def check_host_writes(self, spa: int, size: int) -> Fault | None:
        """:meth:`check_host_write` of every page a host write of ``size`` bytes at ``spa``
        touches, in address order: the first refusal, or None."""
        entries = self._entries
        for frame in range(spa >> PAGE_SHIFT, (spa + size + _PAGE_MASK) >> PAGE_SHIFT):
            if frame in entries:
                fault = self.check_host_write(frame << PAGE_SHIFT)
                if fault is not None:
                    return fault
        return None

    def check_guest_access(
        self, asid: int, gpa: int, spa: int, *, write: bool, private: bool, vmpl: int
    ) -> Fault | None:
        """The RMP checks of an SNP guest's access to ``gpa`` translated to ``spa``."""
        entry = self._entries.get(spa >> PAGE_SHIFT) or _UNASSIGNED
        if not private:
            if entry.assigned:
                return _npf(gpa, PFERR_RMP, write, "shared access to a page assigned to a guest",
                            vmpl, asid)
            return None
        if not entry.assigned or entry.asid != asid:
            return _npf(gpa, PFERR_RMP | PFERR_ENC, write,
                        "private access to a page not assigned to this guest", vmpl, asid)
        if entry.gpa != gpa - gpa % (1 << PAGE_SHIFT):
            return _npf(
                gpa, PFERR_RMP | PFERR_ENC, write,
                f"nested mapping does not match the RMP: page belongs to GPA {entry.gpa:#x}",
                vmpl, asid,
            )
        if not entry.validated:
            return Fault(
                FaultKind.VC, gpa, Who.GUEST, VC_PAGE_NOT_VALIDATED,
                "page not validated", vmpl, asid,
            )
        if entry.vmsa and write:
            return _npf(gpa, PFERR_RMP | PFERR_ENC, write, "write to a VMSA page", vmpl, asid)
        # the permission bits as a plain integer: IntFlag arithmetic costs microseconds, and
        # every access of a lower VMPL passes here
        if vmpl and not int(entry.perms[vmpl]) & (_WRITE_BIT if write else _READ_BIT):
            need = Perm.WRITE if write else Perm.READ
            return _npf(gpa, PFERR_RMP | PFERR_ENC | PFERR_VMPL, write,
                        f"VMPL{vmpl} lacks {need.name} permission", vmpl, asid)
        return None
