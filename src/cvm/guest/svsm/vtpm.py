"""The SVSM vTPM protocol (protocol 2): TPM commands from the guest OS to the vTPM at VMPL0.

AMD 58019 revision 1.00, section 8: SVSM_VTPM_QUERY (call 0) answers RCX = the bitmap of
supported platform commands (bit 8: TPM_SEND_COMMAND) and RDX = the supported features (0);
SVSM_VTPM_COMMAND (call 1) takes RCX = the guest-physical address of a page-aligned request
buffer (:mod:`cvm.formats.svsm.vtpm_command`), runs the TPM command and writes the response
into the same buffer. Locality 0 only. A request the TPM cannot parse gets a TPM_RC_FAILURE
response, as a TPM answers a malformed command — the call itself succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.svsm.vtpm_command import (
    BUFFER_SIZE,
    TPM_SEND_COMMAND,
    VtpmCommandRequest,
    VtpmCommandResponse,
)
from cvm.formats.tpm2.command import Response
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.svsm.result import CallReply, SvsmResult, refuse, success

PROTOCOL_VTPM = 2
VTPM_QUERY, VTPM_COMMAND = 0, 1
PAGE_SIZE = 0x1000


@dataclass(frozen=True)
class VtpmProtocol:
    """Protocol 2. ``execute(command, locality)`` runs one command on the loaded vTPM."""

    read: Callable[[int, int], bytes | None]
    write: Callable[[int, bytes], bool]
    execute: Callable[[bytes, int], bytes]

    def handle(self, call: int, rcx: int) -> CallReply:
        if call == VTPM_QUERY:
            return success(rcx=1 << TPM_SEND_COMMAND, rdx=0)
        if call != VTPM_COMMAND:
            return refuse(SvsmResult.ERR_UNSUPPORTED_CALL)
        if rcx % PAGE_SIZE:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        page = self.read(rcx, BUFFER_SIZE)
        if page is None:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        try:
            request = VtpmCommandRequest.from_bytes(page)
        except FormatError:
            return refuse(SvsmResult.ERR_INVALID_FORMAT)
        if request.platform_command != TPM_SEND_COMMAND or request.locality != 0:
            return refuse(SvsmResult.ERR_INVALID_PARAMETER)
        try:
            response = self.execute(request.command, request.locality)
        except FormatError:
            response = Response(TpmRc.FAILURE).to_bytes(False)
        # the whole buffer page, zero after the response: one page write (no read-modify-write
        # of the page), and no byte of the command stays behind the response
        if not self.write(rcx, VtpmCommandResponse(response).to_bytes().ljust(BUFFER_SIZE,
                                                                             b"\x00")):
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        return success()
