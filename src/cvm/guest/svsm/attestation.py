"""The SVSM attestation protocol (protocol 1): an SNP report that vouches for the services.

AMD 58019 revision 1.00, section 7: SVSM_ATTEST_SERVICES (call 0) and
SVSM_ATTEST_SINGLE_SERVICE (call 1) read the request (:mod:`cvm.formats.svsm.attest_request`)
at the guest-physical address in RCX, and return an SNP report (MSG_REPORT_REQ at VMPL0)
whose REPORT_DATA = SHA-512(nonce ‖ manifest). The manifest is the vTPM's EK public area
(TPMT_PUBLIC, as COCONUT-SVSM's ``protocols/attest.rs`` does) — for SERVICES wrapped in the
services manifest table — so a verifier ties the EK, hence AKs and quotes, to the launch
measurement. On success, and when a buffer is too small (SVSM_ERR_INVALID_PARAMETER), RCX, RDX
and R8 give the sizes the report, the manifest and the certificates need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cvm.errors import FormatError
from cvm.formats.svsm.attest_request import (
    ATTEST_REQUEST_SIZE,
    SINGLE_SERVICE_REQUEST_SIZE,
    AttestRequest,
)
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID, ServicesManifest
from cvm.guest.svsm.result import CallReply, SvsmResult, refuse, success

PROTOCOL_ATTEST = 1
ATTEST_SERVICES, ATTEST_SINGLE_SERVICE = 0, 1
MAX_NONCE = 0x1000


@dataclass(frozen=True)
class AttestationProtocol:
    """Protocol 1. ``read``/``write`` reach the guest OS's memory (None/False: not there);
    ``ek_public`` is the vTPM's manifest; ``report`` asks the PSP for a VMPL0 report."""

    read: Callable[[int, int], bytes | None]
    write: Callable[[int, bytes], bool]
    ek_public: Callable[[], bytes]
    report: Callable[[bytes], bytes]

    def handle(self, call: int, rcx: int) -> CallReply:
        if call not in (ATTEST_SERVICES, ATTEST_SINGLE_SERVICE):
            return refuse(SvsmResult.ERR_UNSUPPORTED_CALL)
        single = call == ATTEST_SINGLE_SERVICE
        raw = self.read(rcx, SINGLE_SERVICE_REQUEST_SIZE if single else ATTEST_REQUEST_SIZE)
        if raw is None:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        try:
            request = AttestRequest.from_bytes(raw, single)
        except FormatError:
            return refuse(SvsmResult.ERR_INVALID_FORMAT)
        if single and request.service != VTPM_SERVICE_GUID:
            return refuse(SvsmResult.ERR_INVALID_PARAMETER)
        if request.nonce_size > MAX_NONCE:
            return refuse(SvsmResult.ERR_INVALID_PARAMETER)
        nonce = self.read(request.nonce_gpa, request.nonce_size)
        if nonce is None:
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        manifest = self.ek_public()
        if not single:
            manifest = ServicesManifest(((VTPM_SERVICE_GUID, manifest),)).to_bytes()
        report = self.report(hashlib.sha512(nonce + manifest).digest())
        sizes = {"rcx": len(report), "rdx": len(manifest), "r8": 0}
        if request.report_size < len(report) or request.manifest_size < len(manifest):
            return refuse(SvsmResult.ERR_INVALID_PARAMETER, **sizes)
        if not (self.write(request.report_gpa, report)
                and self.write(request.manifest_gpa, manifest)):
            return refuse(SvsmResult.ERR_INVALID_ADDRESS)
        return success(**sizes)
