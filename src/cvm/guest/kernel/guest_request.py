"""The guest's side of SNP_GUEST_REQUEST: what a guest kernel's ``sev-guest`` driver does.

SEV-SNP Firmware ABI (AMD 56860) §7 "Guest Messages", Table 98 (message header) and Tables
101-104 (MSG_REPORT_REQ/RSP, MSG_KEY_REQ/RSP); GHCB specification (AMD 56421) §4.1.7, NAE
event SNP Guest Request (0x8000_0011); Linux ``drivers/virt/coco/sev-guest``.

* The key: VMPCKn stays where the firmware wrote it, in the secrets page (56860 Table 71) —
  private, encrypted guest memory. The driver reads it through the vCPU each time it seals or
  opens a message and keeps no copy; a wiped (all-zero) VMPCK disables the channel.
* The sequence numbers: per VMPCK, a u32 count in the secrets page's guest-OS area (Linux
  ``struct secrets_os_area``, ``msg_seqno_0..3`` at 0xA0), also in guest memory. A request
  carries count + 1, the firmware's response count + 2; after a good exchange the count grows
  by 2. The 12-byte AES-256-GCM IV is the sequence number, so a sequence number is never
  reused with a key: after any failed exchange the request may have reached the firmware, so
  the driver wipes the VMPCK (as Linux ``snp_disable_vmpck`` does) rather than risk an IV
  reuse.
* The transport: the request and response pages are shared with the host, which relays them
  to the firmware. Only ciphertext and the clear header ever reach them.
"""

from __future__ import annotations

import dataclasses

from cvm.crypto import aead
from cvm.errors import IntegrityError, StateError, StatusError, UsageError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.guest_message import PAGE_SIZE, GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.key_request import KeyRequest, KeyResponse
from cvm.formats.snp.report_request import ReportRequest, ReportResponse
from cvm.formats.snp.secrets_page import SECRETS_PAGE_LAYOUT, VMPCK_COUNT, VMPCK_SIZE
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu

NAE_SNP_GUEST_REQUEST = 0x8000_0011
OS_AREA_OFFSET = SECRETS_PAGE_LAYOUT.field("guest_os_area").offset
SEQNO_SIZE = 4  # Linux keeps u32 counts in the OS area
MAX_SEQNO = (1 << 32) - 1
DEFAULT_GHCB_GPA, DEFAULT_REQUEST_GPA, DEFAULT_RESPONSE_GPA = 0x1000, 0x2000, 0x3000


def vmpck_gpa(secrets_gpa: int, vmpck: int) -> int:
    """Where VMPCK ``vmpck`` lies in the secrets page at ``secrets_gpa``."""
    return secrets_gpa + SECRETS_PAGE_LAYOUT.field(f"vmpck{vmpck}").offset


def seqno_gpa(secrets_gpa: int, vmpck: int) -> int:
    """Where VMPCK ``vmpck``'s u32 sequence count lies in the secrets page's guest-OS area."""
    return secrets_gpa + OS_AREA_OFFSET + SEQNO_SIZE * vmpck


def check_vmpck_size(value: bytes) -> None:
    """Refuse a VMPCK of any size but :data:`VMPCK_SIZE`."""
    if len(value) != VMPCK_SIZE:
        raise UsageError(f"a VMPCK is {VMPCK_SIZE} bytes")


def is_wiped(key: bytes) -> bool:
    """A VMPCK of all zero bytes: wiped, so the channel is disabled."""
    return not any(key)


class GuestRequester:
    """One vCPU's driver of the encrypted message channel with the firmware, for one VMPCK."""

    def __init__(
        self,
        vcpu: Vcpu,
        secrets_gpa: int,
        vmpck: int = 0,
        *,
        ghcb_gpa: int = DEFAULT_GHCB_GPA,
        request_gpa: int = DEFAULT_REQUEST_GPA,
        response_gpa: int = DEFAULT_RESPONSE_GPA,
    ) -> None:
        if not 0 <= vmpck < VMPCK_COUNT:
            raise UsageError(f"VMPCK index {vmpck} is not 0..3")
        if secrets_gpa % PAGE_SIZE:
            raise UsageError(f"secrets page address {secrets_gpa:#x} is not page-aligned")
        self.vcpu = vcpu
        self.vmpck = vmpck
        self.secrets_gpa = secrets_gpa
        self.ghcb_gpa = ghcb_gpa
        self.request_gpa = request_gpa
        self.response_gpa = response_gpa

    @classmethod
    def start(
        cls,
        vcpu: Vcpu,
        secrets_gpa: int,
        vmpck: int = 0,
        *,
        ghcb_gpa: int = DEFAULT_GHCB_GPA,
        request_gpa: int = DEFAULT_REQUEST_GPA,
        response_gpa: int = DEFAULT_RESPONSE_GPA,
    ) -> GuestRequester:
        """Map the secrets page private, register a GHCB and share the two message pages."""
        vcpu.vm.set_private(secrets_gpa, True)
        kernel = SevGuest(vcpu)
        kernel.setup_ghcb(ghcb_gpa)
        kernel.make_shared(request_gpa)
        kernel.make_shared(response_gpa)
        return cls(
            vcpu,
            secrets_gpa,
            vmpck,
            ghcb_gpa=ghcb_gpa,
            request_gpa=request_gpa,
            response_gpa=response_gpa,
        )

    # -- state in guest memory ------------------------------------------------------------------
    # (the properties delegate to the module's plain functions, which mutation testing reaches)
    @property
    def _key_gpa(self) -> int:
        return vmpck_gpa(self.secrets_gpa, self.vmpck)

    @property
    def _seqno_gpa(self) -> int:
        return seqno_gpa(self.secrets_gpa, self.vmpck)

    @property
    def key(self) -> bytes:
        """VMPCKn, read from the secrets page through the vCPU (all zero once disabled)."""
        return self.vcpu.read(self._key_gpa, VMPCK_SIZE)

    @key.setter
    def key(self, value: bytes) -> None:
        check_vmpck_size(value)
        self.vcpu.write(self._key_gpa, value)

    @property
    def seqno(self) -> int:
        """The sequence number of the last response accepted on this VMPCK (0 at launch)."""
        return int.from_bytes(self.vcpu.read(self._seqno_gpa, SEQNO_SIZE), "little")

    def _set_seqno(self, value: int) -> None:
        self.vcpu.write(self._seqno_gpa, value.to_bytes(SEQNO_SIZE, "little"))

    @property
    def disabled(self) -> bool:
        return is_wiped(self.key)

    def disable(self) -> None:
        """Wipe VMPCKn from guest memory: no message can be sealed with it again."""
        self.key = bytes(VMPCK_SIZE)

    # -- messages -------------------------------------------------------------------------------
    def seal(self, kind: MessageType, payload: bytes, seqno: int, version: int = 1) -> bytes:
        """A request page: the clear header (MSG_VERSION ``version``), the payload under
        AES-256-GCM with VMPCKn."""
        header = MessageHeader(seqno, kind, len(payload), self.vmpck, msg_version=version)
        ciphertext, tag = aead.encrypt(self.key, header.iv(), payload, header.aad())
        return GuestMessage(dataclasses.replace(header, authtag=tag), ciphertext).to_page()

    def exchange(self, page: bytes) -> tuple[int, bytes]:
        """Send a request page through the GHCB; (status the host reports, response page)."""
        self.vcpu.write(self.request_gpa, page)
        ghcb = Ghcb.build(
            sw_exitcode=NAE_SNP_GUEST_REQUEST,
            sw_exitinfo1=self.request_gpa,
            sw_exitinfo2=self.response_gpa,
        )
        self.vcpu.write(self.ghcb_gpa, ghcb.to_bytes())
        self.vcpu.ghcb_msr = self.ghcb_gpa
        self.vcpu.vmexit(EXIT_VMGEXIT)
        answer = Ghcb.from_bytes(self.vcpu.read(self.ghcb_gpa, PAGE_SIZE))
        return answer.get("sw_exitinfo2") or 0, self.vcpu.read(self.response_gpa, PAGE_SIZE)

    def _open(self, kind: MessageType, response: bytes, expected_seqno: int,
              version: int) -> bytes:
        message = GuestMessage.from_page(response)
        header = message.header
        if (header.msg_seqno, header.msg_type, header.msg_vmpck, header.msg_version) != (
            expected_seqno,
            kind.response,
            self.vmpck,
            version,
        ):
            raise IntegrityError(
                f"response header is seqno {header.msg_seqno} {header.msg_type.name} "
                f"VMPCK{header.msg_vmpck} version {header.msg_version}, expected seqno "
                f"{expected_seqno} {kind.response.name} VMPCK{self.vmpck} version {version}"
            )
        return aead.decrypt(self.key, header.iv(), message.payload, header.authtag, header.aad())

    def request(self, kind: MessageType, payload: bytes, version: int = 1) -> bytes:
        """One request/response exchange; the decrypted response payload.

        Any failure after the request left the guest wipes VMPCKn (see the module docstring).
        """
        if self.disabled:
            raise StateError(f"VMPCK{self.vmpck} is disabled: the guest wiped it")
        count = self.seqno
        if count + 2 > MAX_SEQNO:
            self.disable()
            raise StateError(f"VMPCK{self.vmpck} has used up its sequence numbers")
        page = self.seal(kind, payload, count + 1, version)
        status, response = self.exchange(page)
        if status:
            self.disable()
            raise StatusError(f"guest request failed with firmware status {status:#x}", status)
        try:
            plain = self._open(kind, response, count + 2, version)
        except (IntegrityError, ValueError):
            self.disable()
            raise
        self._set_seqno(count + 2)
        return plain

    def report(self, report_data: bytes, vmpl: int = 0) -> ReportResponse:
        """MSG_REPORT_REQ: an attestation report carrying ``report_data`` at ``vmpl``."""
        raw = self.request(MessageType.REPORT_REQ, ReportRequest(report_data, vmpl).to_bytes())
        return ReportResponse.from_bytes(raw)

    def derived_key(self, request: KeyRequest) -> KeyResponse:
        """MSG_KEY_REQ: a key derived by the firmware from the fields ``request`` selects."""
        return KeyResponse.from_bytes(self.request(MessageType.KEY_REQ, request.to_bytes(),
                                                   request.msg_version))
