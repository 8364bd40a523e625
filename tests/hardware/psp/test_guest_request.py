"""SNP_GUEST_REQUEST through the emulated PSP: reports, derived keys, sequence numbers."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from hashlib import sha384
from typing import Any

import pytest

from cvm.amd.kds import ChipFuses
from cvm.crypto import amd_ecdsa
from cvm.errors import StatusError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_message import MessageType
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest
from cvm.formats.snp.report_request import ReportRequest
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor
from cvm.hardware.psp.guest_request import KEY_ROOT_LABEL
from cvm.hardware.psp.status import SevStatus
from cvm.host.vmm import Hypervisor

Launch = Callable[..., Any]


def test_report_carries_the_launch(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch(host_data=b"\x42" * 32)
    guest = requester(launched)
    response = guest.report(b"\x07" * 64)
    assert response.status == 0
    report = AttestationReport.from_bytes(response.report)
    assert report.version >= 3 and report.cpuid_fam_id == 0x19
    assert report.measurement == launched.measurement
    assert report.report_data == b"\x07" * 64
    assert report.host_data == b"\x42" * 32
    assert report.chip_id == psp.chip_id
    assert report.reported_tcb == psp.reported_tcb == report.launch_tcb
    assert report.policy.to_int() == 0x30000 and report.vmpl == 0
    public = psp.vcek_public_key(report.reported_tcb)
    amd_ecdsa.verify(public, report.signed_bytes(), report.signature_r, report.signature_s)


def test_report_vmpl_and_key_selection(launch: Launch, requester: Launch) -> None:
    launched, _ = launch()
    guest = requester(launched)
    assert AttestationReport.from_bytes(guest.report(bytes(64), vmpl=2).report).vmpl == 2
    bad_vmpl = guest.request(MessageType.REPORT_REQ, ReportRequest(bytes(64), 4).to_bytes())
    assert int.from_bytes(bad_vmpl[:4], "little") == 0x16
    vlek = ReportRequest(bytes(64), 0).to_bytes()
    vlek = vlek[:0x44] + b"\x02" + vlek[0x45:]
    assert int.from_bytes(guest.request(MessageType.REPORT_REQ, vlek)[:4], "little") == 0x27


def test_replayed_and_reordered_messages_are_refused(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, relay = launch()
    guest = requester(launched)
    guest.report(bytes(64))
    old_request, _ = relay.log[-1]
    with pytest.raises(StatusError) as replay:
        psp.snp_guest_request(launched.handle, old_request)
    assert replay.value.code == SevStatus.INVALID_PARAM
    skipped = guest.seal(MessageType.REPORT_REQ, ReportRequest(bytes(64)).to_bytes(), 5)
    status, _ = guest.exchange(skipped)
    assert status == SevStatus.INVALID_PARAM
    guest.report(bytes(64))  # the channel still works in order


def test_tampered_message_is_refused(launch: Launch, requester: Launch) -> None:
    launched, _ = launch()
    guest = requester(launched)
    page = bytearray(guest.seal(MessageType.REPORT_REQ, ReportRequest(bytes(64)).to_bytes(), 1))
    page[0x60] ^= 1
    status, _ = guest.exchange(bytes(page))
    assert status == SevStatus.INVALID_PARAM
    assert guest.report(bytes(64)).status == 0


def test_other_vmpck_and_wrong_key(launch: Launch, requester: Launch) -> None:
    launched, _ = launch()
    guest = requester(launched, vmpck=2)
    response = guest.report(bytes(64), vmpl=2)
    assert AttestationReport.from_bytes(response.report).vmpl == 2
    too_privileged = guest.request(MessageType.REPORT_REQ, ReportRequest(bytes(64), 1).to_bytes())
    assert int.from_bytes(too_privileged[:4], "little") == 0x16
    guest.key = bytes(32)
    status, _ = guest.exchange(guest.seal(MessageType.REPORT_REQ, bytes(0x60), guest.seqno + 1))
    assert status == SevStatus.INVALID_PARAM


def test_derived_keys(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    select = GuestFieldSelect.MEASUREMENT | GuestFieldSelect.GUEST_POLICY
    first = guest.derived_key(KeyRequest(select))
    assert first.status == 0 and len(first.derived_key) == 32
    assert guest.derived_key(KeyRequest(select)).derived_key == first.derived_key
    assert guest.derived_key(KeyRequest(GuestFieldSelect(0))).derived_key != first.derived_key
    assert guest.derived_key(KeyRequest(select, vmpl=1)).derived_key != first.derived_key
    tcb = psp.committed_tcb
    with_tcb = KeyRequest(GuestFieldSelect.TCB_VERSION, tcb_version=tcb.to_int())
    assert guest.derived_key(with_tcb).status == 0
    future = TcbVersion(tcb.boot_loader, tcb.tee, tcb.snp + 1, tcb.microcode)
    above = KeyRequest(GuestFieldSelect.TCB_VERSION, tcb_version=future.to_int())
    assert guest.derived_key(above).status == 0x16
    assert guest.derived_key(KeyRequest(guest_svn=1)).status == 0x16


def test_derived_key_depends_on_the_measurement(launch: Launch, requester: Launch) -> None:
    bound, unbound = KeyRequest(GuestFieldSelect.MEASUREMENT), KeyRequest(GuestFieldSelect(0))
    one, _ = launch(vcpus=1)
    guest_one = requester(one)
    two, _ = launch(vcpus=2)
    guest_two = requester(two)
    assert one.measurement != two.measurement
    assert guest_one.derived_key(bound).derived_key != guest_two.derived_key(bound).derived_key
    assert guest_one.derived_key(unbound).derived_key == guest_two.derived_key(unbound).derived_key


def _refused(psp: SecureProcessor, handle: int, page: bytes) -> StatusError:
    with pytest.raises(StatusError) as refused:
        psp.snp_guest_request(handle, page)
    return refused.value


def test_every_refusal_names_its_status_and_reason(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    handle = launched.handle
    request = ReportRequest(bytes(64)).to_bytes()
    prefix = "SNP_GUEST_REQUEST failed with INVALID_PARAM (0x16): "
    not_a_message = _refused(psp, handle, b"\xff" * 4096)
    assert not_a_message.code == SevStatus.INVALID_PARAM
    assert str(not_a_message).startswith(prefix) and len(str(not_a_message)) > len(prefix) + 4
    forged = bytearray(guest.seal(MessageType.REPORT_REQ, request, 1))
    forged[0x60] ^= 1
    assert str(_refused(psp, handle, bytes(forged))) == prefix + "message authentication failed"
    replayed = _refused(psp, handle, guest.seal(MessageType.REPORT_REQ, request, 3))
    assert str(replayed) == (
        prefix + "MSG_SEQNO 3 for VMPCK0, expected 1 (replayed or reordered message)"
    )
    unsupported = _refused(psp, handle, guest.seal(MessageType.CPUID_REQ, request, 1))
    assert (unsupported.code, str(unsupported)) == (
        SevStatus.INVALID_PARAM, prefix + "CPUID_REQ unsupported"
    )
    ctx = psp._guests[handle]
    ctx.vmpcks = (bytes(32), *ctx.vmpcks[1:])  # VMPCK0 wiped
    no_key = _refused(psp, handle, guest.seal(MessageType.REPORT_REQ, request, 1))
    assert (no_key.code, str(no_key)) == (
        SevStatus.INVALID_KEY,
        "SNP_GUEST_REQUEST failed with INVALID_KEY (0x27): VMPCK0 is not available",
    )


def test_sequence_numbers_run_out_at_the_last_pair(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    """A request needs its number and the response's (request + 1), both below 2**64."""
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    ctx = psp._guests[launched.handle]
    last = (1 << 64) - 1
    request = ReportRequest(bytes(64)).to_bytes()
    ctx.seqnos[0] = last - 2  # one more exchange fits: request last - 1, response last
    status, _ = guest.exchange(guest.seal(MessageType.REPORT_REQ, request, last - 1))
    assert status == 0 and ctx.seqnos[0] == last
    ctx.seqnos[0] = last - 1
    exhausted = _refused(psp, launched.handle, guest.seal(MessageType.REPORT_REQ, request, last))
    assert (exhausted.code, str(exhausted)) == (
        SevStatus.AEAD_OFLOW,
        "SNP_GUEST_REQUEST failed with AEAD_OFLOW (0x1d): VMPCK0 sequence numbers exhausted",
    )


def test_the_report_carries_every_platform_field(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    committed = psp.committed_tcb
    newer = TcbVersion(committed.boot_loader, committed.tee, committed.snp + 1,
                       committed.microcode + 1)
    psp.download_firmware(newer, FirmwareVersion(1, 57, 3))  # running, not yet committed
    launched, _ = launch()
    ctx = psp._guests[launched.handle]
    report = AttestationReport.from_bytes(requester(launched).report(bytes(64)).report)
    assert report.version == 3
    assert report.platform_info == psp.platform_info
    assert report.report_id == ctx.report_id and any(report.report_id)
    assert report.report_id_ma == ctx.report_id_ma == b"\xff" * 32
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (0x19, 0x01, 0x0)
    assert (report.current_major, report.current_minor, report.current_build) == (1, 57, 3)
    version = psp.committed_version
    assert (report.committed_major, report.committed_minor, report.committed_build) == (
        version.major, version.minor, version.build
    ) != (1, 57, 3)
    assert report.current_tcb == newer and report.committed_tcb == committed
    assert report.launch_tcb == ctx.launch_tcb


def _expected_key(
    psp: SecureProcessor, ctx: Any, request: KeyRequest, tcb: TcbVersion
) -> bytes:
    """The emulated MSG_KEY_REQ derivation as the module documents it, written out again."""
    select = request.guest_field_select
    encoding = int(select).to_bytes(8, "little") + request.vmpl.to_bytes(4, "little")
    for flag, value in (
        (GuestFieldSelect.GUEST_POLICY, ctx.policy.to_bytes()),
        (GuestFieldSelect.IMAGE_ID, ctx.image_id),
        (GuestFieldSelect.FAMILY_ID, ctx.family_id),
        (GuestFieldSelect.MEASUREMENT, ctx.ld),
        (GuestFieldSelect.GUEST_SVN, request.guest_svn.to_bytes(4, "little")),
        (GuestFieldSelect.TCB_VERSION, tcb.to_bytes()),
    ):
        if flag in select:
            encoding += value
    if GuestFieldSelect.LAUNCH_MIT_VECTOR in select and request.launch_mit_vector is not None:
        encoding += request.launch_mit_vector.to_bytes(8, "little")
    root = hmac.new(psp.chip_secret_for_derivation(), KEY_ROOT_LABEL, sha384).digest()
    return hmac.new(root, encoding, sha384).digest()[:32]


def test_derived_keys_follow_the_documented_derivation(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    ctx = psp._guests[launched.handle]
    tcb = psp.committed_tcb
    for select in [GuestFieldSelect(0), *GuestFieldSelect,
                   GuestFieldSelect(sum(int(flag) for flag in GuestFieldSelect))]:
        mit = 5 if GuestFieldSelect.LAUNCH_MIT_VECTOR in select else None
        request = KeyRequest(select, vmpl=1, tcb_version=tcb.to_int(), launch_mit_vector=mit)
        response = guest.derived_key(request)
        assert response.status == 0, select
        assert response.derived_key == _expected_key(psp, ctx, request, tcb), select


def test_vmpl_3_is_the_last_one(launch: Launch, requester: Launch) -> None:
    launched, _ = launch()
    guest = requester(launched)
    assert AttestationReport.from_bytes(guest.report(bytes(64), vmpl=3).report).vmpl == 3
    assert guest.derived_key(KeyRequest(vmpl=3)).status == 0
    assert guest.derived_key(KeyRequest(vmpl=4)).status == 0x16
    malformed = guest.request(MessageType.REPORT_REQ, b"\xff" * 0x60)  # reserved bytes set
    assert int.from_bytes(malformed[:4], "little") == 0x16


def test_the_derivation_binds_guest_svn_and_ignores_an_unselected_vector(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    ctx = psp._guests[launched.handle]
    ctx.guest_svn = 3  # as an ID block would set it
    tcb = psp.committed_tcb
    for request in (
        KeyRequest(GuestFieldSelect.GUEST_SVN, guest_svn=2),
        KeyRequest(GuestFieldSelect.MEASUREMENT, launch_mit_vector=7),
    ):
        response = guest.derived_key(request)
        assert response.status == 0
        assert response.derived_key == _expected_key(psp, ctx, request, tcb)


@pytest.mark.parametrize("chip", [ChipFuses("Turin", bytes(range(8)) + bytes(56), b"\x5b" * 64)])
def test_a_turin_key_request_reads_its_tcb_in_turins_layout(
    platform: tuple[Hypervisor, SecureProcessor], launch: Launch, requester: Launch
) -> None:
    _, psp = platform
    launched, _ = launch()
    guest = requester(launched)
    tcb = psp.committed_tcb
    assert "fmc" in tcb.components()
    request = KeyRequest(GuestFieldSelect.TCB_VERSION, tcb_version=tcb.to_int())
    response = guest.derived_key(request)
    assert response.status == 0
    assert response.derived_key == _expected_key(psp, psp._guests[launched.handle], request, tcb)
