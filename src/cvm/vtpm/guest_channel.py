"""The SVSM's SNP guest-request driver: reports and derived keys from the PSP at VMPL0.

SEV-SNP Firmware ABI (AMD 56860) §7 "Guest Messages" (Table 98): a request is sealed with
AES-256-GCM under VMPCK0 taken from the secrets page (notes/snp.md §4.4), IV = the 64-bit
sequence number padded to 12 bytes, AAD = header bytes 0x30..0x5F; the response carries the
request's number + 1, after which the driver's number advances by two. The request and
response pages are shared with the host, which relays them with the GHCB
``SNP_GUEST_REQUEST`` exit (GHCB spec 56421 §4.1.7). MSG_REPORT_REQ §7.3 (Tables 20–23),
MSG_KEY_REQ §7.2 (Tables 18–19).
"""

from __future__ import annotations

import dataclasses

from cvm.crypto import aead
from cvm.errors import IntegrityError, StatusError
from cvm.firmware.sev_guest import SevGuest
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.guest_message import PAGE_SIZE, GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.key_request import KeyRequest, KeyResponse
from cvm.formats.snp.report_request import ReportRequest, ReportResponse
from cvm.formats.snp.secrets_page import SecretsPage
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu

NAE_SNP_GUEST_REQUEST = 0x8000_0011
VMPCK_INDEX = 0


class GuestChannel:
    """MSG_REPORT_REQ / MSG_KEY_REQ over VMPCK0, issued by the SVSM's vCPU at VMPL0."""

    def __init__(self, vcpu: Vcpu, secrets_gpa: int, ghcb_gpa: int, request_gpa: int,
                 response_gpa: int) -> None:
        self.vcpu = vcpu
        self.request_gpa, self.response_gpa, self.ghcb_gpa = request_gpa, response_gpa, ghcb_gpa
        vcpu.vm.set_private(secrets_gpa, True)
        self._key = SecretsPage.from_bytes(vcpu.read(secrets_gpa, PAGE_SIZE)).vmpck(VMPCK_INDEX)
        self._seqno = 0
        guest = SevGuest(vcpu)
        guest.setup_ghcb(ghcb_gpa)
        guest.make_shared(request_gpa)
        guest.make_shared(response_gpa)

    def _request(self, kind: MessageType, payload: bytes) -> bytes:
        header = MessageHeader(self._seqno + 1, kind, len(payload), VMPCK_INDEX)
        ciphertext, tag = aead.encrypt(self._key, header.iv(), payload, header.aad())
        page = GuestMessage(dataclasses.replace(header, authtag=tag), ciphertext).to_page()
        self.vcpu.write(self.request_gpa, page)
        ghcb = Ghcb.build(sw_exitcode=NAE_SNP_GUEST_REQUEST, sw_exitinfo1=self.request_gpa,
                          sw_exitinfo2=self.response_gpa)
        self.vcpu.write(self.ghcb_gpa, ghcb.to_bytes())
        self.vcpu.ghcb_msr = self.ghcb_gpa
        self.vcpu.vmexit(EXIT_VMGEXIT)
        answer = Ghcb.from_bytes(self.vcpu.read(self.ghcb_gpa, PAGE_SIZE))
        status = answer.get("sw_exitinfo2") or 0
        if status:
            raise StatusError(f"SNP guest request refused: firmware status {status:#x}", status)
        message = GuestMessage.from_page(self.vcpu.read(self.response_gpa, PAGE_SIZE))
        reply = message.header
        if reply.msg_seqno != self._seqno + 2 or reply.msg_type is not kind.response:
            raise IntegrityError("SNP guest response is out of sequence or of the wrong type")
        plain = aead.decrypt(self._key, reply.iv(), message.payload, reply.authtag, reply.aad())
        self._seqno += 2
        return plain

    def report(self, report_data: bytes) -> bytes:
        """An attestation report at VMPL0 with ``report_data`` (64 bytes)."""
        raw = self._request(MessageType.REPORT_REQ, ReportRequest(report_data, 0).to_bytes())
        response = ReportResponse.from_bytes(raw)
        if response.status:
            raise StatusError(f"MSG_REPORT_REQ failed with status {response.status:#x}",
                              response.status)
        return response.report

    def derived_key(self, request: KeyRequest) -> bytes:
        """MSG_KEY_REQ: the 32-byte key the PSP derives for ``request``."""
        response = KeyResponse.from_bytes(self._request(MessageType.KEY_REQ, request.to_bytes()))
        if response.status:
            raise StatusError(f"MSG_KEY_REQ failed with status {response.status:#x}",
                              response.status)
        return response.derived_key
