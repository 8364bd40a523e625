"""SNP_LAUNCH_UPDATE over a run of pages: the per-page checks and the measure-and-encrypt step.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860) §8.17: each command takes one
pre-guest page — assigned to the guest's ASID in the RMP, neither validated nor a VMSA — folds
its PAGE_INFO (Table 67) into the launch digest, writes its final contents encrypted with the
guest's key and leaves it validated. KVM's ``KVM_SEV_SNP_LAUNCH_UPDATE`` takes a range and
issues the command once per page, in order; :func:`pre_guest_pages` checks the pages of such a
range one after the other exactly as each command would (a page met twice is validated the
second time), up to the first it refuses, and :func:`launch_pages` does the work of the
commands for the pages before it: every page is still hashed and measured on its own, and each
run of consecutive pages is encrypted in one call to the memory encryption engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from cvm.errors import StatusError, UsageError
from cvm.formats.snp.page_info import (
    PAGE_SIZE,
    PageType,
    contents_digest,
    measure_record,
)
from cvm.hardware.machine import Machine
from cvm.hardware.psp.guest_context import GuestContext
from cvm.hardware.psp.status import SevStatus, refuse

COMMAND = "SNP_LAUNCH_UPDATE"
# The page types whose final contents are the host's plaintext or zeros: no firmware check.
PLAIN_TYPES = frozenset({PageType.NORMAL, PageType.ZERO, PageType.UNMEASURED})


def pre_guest_pages(
    machine: Machine, ctx: GuestContext, spas: Sequence[int]
) -> tuple[list[tuple[int, int]], StatusError | None]:
    """(SPA, GPA from the RMP) of each page of ``spas`` the command accepts, in order, up to the
    first it refuses; and that refusal (None when every page is accepted)."""
    accepted: list[tuple[int, int]] = []
    seen: set[int] = set()
    entry_of = machine.rmp.entry
    for spa in spas:
        try:
            machine.check_page(spa)
        except UsageError as error:
            return accepted, refuse(SevStatus.INVALID_PARAM, COMMAND, str(error))
        entry = entry_of(spa)
        if not entry.assigned or entry.validated or entry.vmsa or spa in seen:
            return accepted, refuse(
                SevStatus.INVALID_PAGE_STATE, COMMAND, f"{spa:#x} is not pre-guest"
            )
        if entry.asid != ctx.asid:
            return accepted, refuse(
                SevStatus.INVALID_PAGE_OWNER, COMMAND, f"{spa:#x} is not this guest's"
            )
        seen.add(spa)
        accepted.append((spa, entry.gpa))
    return accepted, None


def page_runs(pages: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``pages`` cut into runs of consecutive system pages, in order."""
    runs: list[list[tuple[int, int]]] = []
    for page in pages:
        if runs and runs[-1][-1][0] + PAGE_SIZE == page[0]:
            runs[-1].append(page)
        else:
            runs.append([page])
    return runs


def launch_pages(
    machine: Machine,
    ctx: GuestContext,
    pages: list[tuple[int, int]],
    kind: PageType,
    imi_page: bool,
) -> None:
    """The commands' work for checked pages of a plain type (:data:`PLAIN_TYPES`): measure each
    page, encrypt it in place with the guest's key (zeros for ZERO pages), validate it."""
    if kind not in PLAIN_TYPES:
        raise UsageError(f"{kind.name} pages are launched one at a time")
    for run in page_runs(pages):
        first, size = run[0][0], len(run) * PAGE_SIZE
        contents = bytes(size) if kind is PageType.ZERO else machine.dram.read(first, size)
        digest = ctx.ld
        for index, (_, gpa) in enumerate(run):
            offset = index * PAGE_SIZE
            page = contents_digest(kind, contents[offset : offset + PAGE_SIZE])
            digest = measure_record(digest, page, kind, gpa, imi_page)
        machine.engine.write_pages(ctx.asid, first, contents)
        for spa, gpa in run:
            machine.rmp.firmware_assign(spa, ctx.asid, gpa)
        ctx.ld = digest
        ctx.pages += len(run)
