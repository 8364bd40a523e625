"""SNP_GUEST_REQUEST inside the firmware: the message channel, MSG_REPORT_REQ, MSG_KEY_REQ.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860):

* §7 "Guest Messages", Table 98: a request is decrypted and authenticated with AES-256-GCM
  under the VMPCK its header names (IV = MSG_SEQNO, AAD = header 0x30..0x5F). Its sequence
  number must be exactly one more than the last number used with that VMPCK, so a replayed,
  reordered or skipped message is refused; the response carries request + 1. A message that
  fails authentication changes nothing.
* §7.3 MSG_REPORT_REQ (Tables 20-23): the report of the caller, at a VMPL no more privileged
  than the caller's (VMPCKn is VMPLn's key), signed with the VCEK of the reported TCB.
* §7.2 MSG_KEY_REQ (Tables 18-19): a 32-byte key derived from the chip secret, the VMPL and
  the launch fields the guest selects; the requested GUEST_SVN and TCB_VERSION may not exceed
  the guest's SVN and the committed TCB. The KDF is AMD-internal; cvm uses HMAC-SHA-384 over a
  canonical encoding of the selected fields (so a different measurement gives a different
  key when MEASUREMENT is selected).
"""

from __future__ import annotations

import dataclasses
import hmac
from hashlib import sha384
from typing import TYPE_CHECKING

from cvm.crypto import aead, amd_ecdsa
from cvm.errors import FormatError, IntegrityError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_message import (
    GuestMessage,
    MessageHeader,
    MessageType,
)
from cvm.formats.snp.key_request import (
    DERIVED_KEY_SIZE,
    KEY_REQ_SIZES,
    GuestFieldSelect,
    KeyRequest,
    KeyResponse,
    KeyStatus,
    RootKey,
)
from cvm.formats.snp.report_request import (
    REPORT_REQ_VERSION,
    KeySelect,
    ReportRequest,
    ReportResponse,
    ReportStatus,
)
from cvm.formats.snp.signer_info import SignerInfo, SigningKey
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.hardware.psp.guest_context import GuestContext
from cvm.hardware.psp.status import SevStatus, refuse

if TYPE_CHECKING:
    from cvm.hardware.psp.firmware import SecureProcessor

COMMAND = "SNP_GUEST_REQUEST"
MAX_SEQNO = (1 << 64) - 1
REPORT_VERSION = 3
KEY_ROOT_LABEL = b"cvm emulated SNP VCEK-root guest key v1"


def handle_guest_request(psp: SecureProcessor, ctx: GuestContext, page: bytes) -> bytes:
    """Decrypt, check and answer one request page; returns the encrypted response page."""
    try:
        message = GuestMessage.from_page(page)
    except FormatError as error:
        raise refuse(SevStatus.INVALID_PARAM, COMMAND, str(error)) from None
    header = message.header
    index = header.msg_vmpck
    key = ctx.vmpcks[index]
    if not any(key):
        raise refuse(SevStatus.INVALID_KEY, COMMAND, f"VMPCK{index} is not available")
    if ctx.seqnos[index] >= MAX_SEQNO - 1:
        raise refuse(SevStatus.AEAD_OFLOW, COMMAND, f"VMPCK{index} sequence numbers exhausted")
    expected = ctx.seqnos[index] + 1
    if header.msg_seqno != expected:
        raise refuse(
            SevStatus.INVALID_PARAM,
            COMMAND,
            f"MSG_SEQNO {header.msg_seqno} for VMPCK{index}, expected {expected} "
            "(replayed or reordered message)",
        )
    try:
        payload = aead.decrypt(key, header.iv(), message.payload, header.authtag, header.aad())
    except IntegrityError:
        raise refuse(SevStatus.INVALID_PARAM, COMMAND, "message authentication failed") from None
    if header.msg_type is MessageType.REPORT_REQ:
        answer = _report(psp, ctx, index, payload, header.msg_version)
    elif header.msg_type is MessageType.KEY_REQ:
        answer = _derived_key(psp, ctx, index, payload, header.msg_version)
    else:
        raise refuse(SevStatus.INVALID_PARAM, COMMAND, f"{header.msg_type.name} unsupported")
    response_header = MessageHeader(
        msg_seqno=header.msg_seqno + 1,
        msg_type=header.msg_type.response,
        msg_sz=len(answer),
        msg_vmpck=index,
        msg_version=header.msg_version,
    )
    ciphertext, tag = aead.encrypt(key, response_header.iv(), answer, response_header.aad())
    ctx.seqnos[index] = header.msg_seqno + 1
    sealed = dataclasses.replace(response_header, authtag=tag)
    return GuestMessage(sealed, ciphertext).to_page()


def build_report(
    psp: SecureProcessor, ctx: GuestContext, report_data: bytes, vmpl: int
) -> AttestationReport:
    """The unsigned report of ``ctx`` for ``report_data`` at ``vmpl`` (56860 Table 22)."""
    return AttestationReport(
        version=REPORT_VERSION,
        guest_svn=ctx.guest_svn,
        policy=ctx.policy,
        family_id=ctx.family_id,
        image_id=ctx.image_id,
        vmpl=vmpl,
        current_tcb=psp.current_tcb,
        platform_info=psp.platform_info,
        signer_info=SignerInfo(author_key_en=ctx.author_key_en, signing_key=SigningKey.VCEK),
        report_data=report_data,
        measurement=ctx.ld,
        host_data=ctx.host_data,
        id_key_digest=ctx.id_key_digest,
        author_key_digest=ctx.author_key_digest,
        report_id=ctx.report_id,
        report_id_ma=ctx.report_id_ma,
        reported_tcb=psp.reported_tcb,
        cpuid_fam_id=psp.product.cpuid_fam_id,
        cpuid_mod_id=psp.product.cpuid_mod_id,
        cpuid_step=psp.product.cpuid_step,
        chip_id=psp.chip_id,
        committed_tcb=psp.committed_tcb,
        current_build=psp.version.build,
        current_minor=psp.version.minor,
        current_major=psp.version.major,
        committed_build=psp.committed_version.build,
        committed_minor=psp.committed_version.minor,
        committed_major=psp.committed_version.major,
        launch_tcb=ctx.launch_tcb,
    )


def _report(psp: SecureProcessor, ctx: GuestContext, caller_vmpl: int, payload: bytes,
            version: int) -> bytes:
    if version != REPORT_REQ_VERSION:  # the one version of MSG_REPORT_REQ
        return ReportResponse(ReportStatus.INVALID_PARAMETERS).to_bytes()
    try:
        request = ReportRequest.from_bytes(payload)
    except FormatError:
        return ReportResponse(ReportStatus.INVALID_PARAMETERS).to_bytes()
    if not caller_vmpl <= request.vmpl <= 3:
        return ReportResponse(ReportStatus.INVALID_PARAMETERS).to_bytes()
    if request.key_sel is KeySelect.VLEK:  # no VLEK is ever loaded on this platform
        return ReportResponse(ReportStatus.INVALID_KEY_SELECTION).to_bytes()
    report = build_report(psp, ctx, request.report_data, request.vmpl)
    r, s = amd_ecdsa.sign(psp.vcek_private_key(psp.reported_tcb), report.signed_bytes())
    return ReportResponse(ReportStatus.SUCCESS, report.with_signature(r, s).to_bytes()).to_bytes()


def _field_encoding(ctx: GuestContext, request: KeyRequest, tcb: TcbVersion) -> bytes:
    select = request.guest_field_select
    parts = [
        int(select).to_bytes(8, "little"),
        request.vmpl.to_bytes(4, "little"),
    ]
    if GuestFieldSelect.GUEST_POLICY in select:
        parts.append(ctx.policy.to_bytes())
    if GuestFieldSelect.IMAGE_ID in select:
        parts.append(ctx.image_id)
    if GuestFieldSelect.FAMILY_ID in select:
        parts.append(ctx.family_id)
    if GuestFieldSelect.MEASUREMENT in select:
        parts.append(ctx.ld)
    if GuestFieldSelect.GUEST_SVN in select:
        parts.append(request.guest_svn.to_bytes(4, "little"))
    if GuestFieldSelect.TCB_VERSION in select:
        parts.append(tcb.to_bytes())
    if GuestFieldSelect.LAUNCH_MIT_VECTOR in select and request.launch_mit_vector is not None:
        parts.append(request.launch_mit_vector.to_bytes(8, "little"))
    return b"".join(parts)


def _derived_key(
    psp: SecureProcessor, ctx: GuestContext, caller_vmpl: int, payload: bytes, version: int
) -> bytes:
    invalid = KeyResponse(KeyStatus.INVALID_PARAMETERS).to_bytes()
    if KEY_REQ_SIZES.get(version) != len(payload):  # MSG_VERSION decides the layout
        return invalid
    try:
        request = KeyRequest.from_bytes(payload)
        tcb = TcbVersion.from_int(request.tcb_version, psp.product.tcb_layout)
    except FormatError:
        return invalid
    if request.root_key_select is RootKey.VMRK:  # no migration agent, so no VMRK
        return invalid
    if not caller_vmpl <= request.vmpl <= 3 or request.guest_svn > ctx.guest_svn:
        return invalid
    if GuestFieldSelect.TCB_VERSION in request.guest_field_select and not tcb.at_most(
        psp.committed_tcb
    ):
        return invalid
    root = hmac.new(psp.chip_secret_for_derivation(), KEY_ROOT_LABEL, sha384).digest()
    derived = hmac.new(root, _field_encoding(ctx, request, tcb), sha384).digest()
    return KeyResponse(KeyStatus.SUCCESS, derived[:DERIVED_KEY_SIZE]).to_bytes()
