"""The SVSM core protocol (protocol 0): what the SVSM offers.

AMD 58019 revision 1.00, section 5 ("Core Protocol"): SVSM_CORE_QUERY_PROTOCOL (call 6) takes
RCX = protocol << 32 | version and answers RCX = highest << 32 | lowest supported version of
that protocol, or 0 when the protocol or that version is not offered. The other core calls
(remapping the calling area, PVALIDATE on the guest's behalf, vCPU creation, memory deposit)
are answered SVSM_ERR_UNSUPPORTED_CALL: this SVSM validates the guest OS's pages itself at
boot (:meth:`cvm.guest.svsm.svsm.Svsm.grant`) and runs one VMPL1 VMSA per vCPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cvm.guest.svsm.result import CallReply, SvsmResult, refuse, success

PROTOCOL_CORE = 0
CORE_QUERY_PROTOCOL = 6


@dataclass(frozen=True)
class CoreProtocol:
    """Protocol 0, over the table of protocols (number -> (lowest, highest) version)."""

    versions: Mapping[int, tuple[int, int]]

    def handle(self, call: int, rcx: int) -> CallReply:
        if call != CORE_QUERY_PROTOCOL:
            return refuse(SvsmResult.ERR_UNSUPPORTED_CALL)
        protocol, version = rcx >> 32, rcx & 0xFFFF_FFFF
        lowest, highest = self.versions.get(protocol, (1, 0))
        if not lowest <= version <= highest:
            return success(rcx=0)
        return success(rcx=highest << 32 | lowest)
