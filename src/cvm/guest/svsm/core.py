"""The SVSM core protocol (protocol 0): what the SVSM offers, and PVALIDATE for the guest OS.

AMD 58019 revision 1.00, section 5 ("Core Protocol"):

* SVSM_CORE_PVALIDATE (call 1): RCX = the guest-physical address of a PVALIDATE request
  (:mod:`cvm.formats.svsm.pvalidate_request`) in the guest OS's memory. Only VMPL0 may
  PVALIDATE, so the guest OS asks the SVSM: for each entry from ``next`` on, the SVSM validates
  (and grants the guest OS's VMPL every permission with RMPADJUST) or rescinds the page, and
  writes ``next`` back; the first failure stops with SVSM_ERR_PVALIDATE_FAIL_INPUT,
  _FAIL_SIZEMISMATCH or _FAIL_UNCHANGED (unless the entry says to ignore "unchanged"). A page
  of the SVSM's own is never touched for the guest OS (SVSM_ERR_INVALID_PARAMETER): rescinding
  it would hand the host a way to replace it.
* SVSM_CORE_QUERY_PROTOCOL (call 6): RCX = protocol << 32 | version; the answer RCX = highest
  << 32 | lowest supported version of that protocol, or 0 when it is not offered.

The other core calls (remapping the calling area, vCPU creation, memory deposit) are answered
SVSM_ERR_UNSUPPORTED_CALL: this SVSM runs one VMPL1 VMSA per vCPU it started.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.svsm.pvalidate_request import (
    ENTRY_SIZE,
    HEADER_LAYOUT,
    HEADER_SIZE,
    PAGE_SIZE,
    SIZE_4K,
    PvalidateRequest,
)
from cvm.guest.svsm.result import CallReply, SvsmResult, refuse, success

PROTOCOL_CORE = 0
CORE_PVALIDATE = 1
CORE_QUERY_PROTOCOL = 6

# (gpa, validate, ignore "unchanged") -> the result of PVALIDATE (and RMPADJUST) on that page
PvalidatePage = Callable[[int, bool, bool], SvsmResult]


@dataclass(frozen=True)
class CoreProtocol:
    """Protocol 0, over the table of protocols (number -> (lowest, highest) version), the
    guest OS's memory and the SVSM's own pages."""

    versions: Mapping[int, tuple[int, int]]
    read: Callable[[int, int], bytes | None]
    write: Callable[[int, bytes], bool]
    pvalidate: PvalidatePage
    own_page: Callable[[int], bool]

    def handle(self, call: int, rcx: int) -> CallReply:
        if call == CORE_QUERY_PROTOCOL:
            protocol, version = rcx >> 32, rcx & 0xFFFF_FFFF
            lowest, highest = self.versions.get(protocol, (1, 0))
            if not lowest <= version <= highest:
                return CallReply(SvsmResult.SUCCESS, {"rcx": 0})
            return success(rcx=highest << 32 | lowest)
        if call == CORE_PVALIDATE:
            return self._pvalidate(rcx)
        return refuse(SvsmResult.ERR_UNSUPPORTED_CALL)

    def _pvalidate(self, gpa: int) -> CallReply:
        if gpa % ENTRY_SIZE:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        header = self.read(gpa, HEADER_SIZE)
        if header is None:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        try:
            count, _ = PvalidateRequest.count(header)
        except FormatError:
            return refuse(SvsmResult.ERR_INVALID_PARAMETER)
        size = HEADER_SIZE + count * ENTRY_SIZE
        if gpa % PAGE_SIZE + size > PAGE_SIZE:
            return refuse(SvsmResult.ERR_INVALID_PARAMETER)  # it may not cross its page
        raw = self.read(gpa, size)
        if raw is None:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        try:
            request = PvalidateRequest.from_bytes(raw)
        except FormatError:
            return refuse(SvsmResult.ERR_INVALID_PARAMETER)
        result = SvsmResult.SUCCESS
        done = request.next
        for entry in request.entries[request.next:]:
            if entry.page_size != SIZE_4K or self.own_page(entry.gpa):
                result = SvsmResult.ERR_INVALID_PARAMETER
                break
            result = self.pvalidate(entry.gpa, entry.validate, entry.ignore_cf)
            if result is not SvsmResult.SUCCESS:
                break
            done += 1
        if not self.write(gpa, HEADER_LAYOUT.pack({"entries": count, "next": done})):
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        return CallReply(result)
