"""Result codes of the SVSM call protocol, and a call's answer.

AMD "Secure VM Service Module for SEV-SNP Guests" (58019, revision 1.00), section 4, Table 4
("SVSM Result Codes"): RAX holds 0 on success or an ``SVSM_ERR_*`` code. The codes below are
what a *guest* can cause (a bad address, format, parameter, an unknown protocol or call): the
SVSM answers them in RAX and keeps serving. A fault of the SVSM itself (a bug, corrupt state
pages, a refused firmware request) is not a result code: it raises, and the VM stops — the SVSM
never turns its own failure into an answer the guest might take for a valid one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SvsmResult(enum.IntEnum):
    """58019 Table 4: the SVSM's answer in RAX."""

    SUCCESS = 0x0000_0000
    ERR_INCOMPLETE = 0x8000_0000
    ERR_UNSUPPORTED_PROTOCOL = 0x8000_0001
    ERR_UNSUPPORTED_CALL = 0x8000_0002
    ERR_INVALID_ADDRESS = 0x8000_0003
    ERR_INVALID_FORMAT = 0x8000_0004
    ERR_INVALID_PARAMETER = 0x8000_0005
    ERR_INVALID_REQUEST = 0x8000_0006
    ERR_BUSY = 0x8000_0007
    ERR_PVALIDATE_FAIL_INPUT = 0x8000_1001
    ERR_PVALIDATE_FAIL_SIZEMISMATCH = 0x8000_1006
    ERR_PVALIDATE_FAIL_UNCHANGED = 0x8000_1010


@dataclass(frozen=True)
class CallReply:
    """What one call answers: RAX, and the output registers (RCX, RDX, R8) it sets."""

    result: SvsmResult
    outputs: dict[str, int] = field(default_factory=dict)


def refuse(result: SvsmResult, **outputs: int) -> CallReply:
    """A guest-caused error: the code, with any outputs the spec asks for even on failure."""
    return CallReply(result, dict(outputs))


def success(**outputs: int) -> CallReply:
    return CallReply(SvsmResult.SUCCESS, dict(outputs))
