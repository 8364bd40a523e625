"""SNP_GUEST_REQUEST through the emulated PSP: reports, derived keys, sequence numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.crypto import amd_ecdsa
from cvm.errors import StatusError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_message import MessageType
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest
from cvm.formats.snp.report_request import ReportRequest
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.hardware.psp.firmware import SecureProcessor
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
