"""The vTPM in the SVSM at VMPL0: isolation, the call protocol, attestation binding."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cvm.crypto import amd_ecdsa
from cvm.errors import StateError, StatusError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID, ServicesManifest
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.svsm.result import SvsmResult
from cvm.guest.svsm.svsm import Svsm, SvsmLayout
from cvm.guest.svsm.vtpm import PROTOCOL_VTPM
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.fault import PFERR_VMPL, FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.vtpm.state import STATE_MAGIC, PersistentState
from cvm.vtpm.state_file import MonotonicCounter
from cvm.vtpm.templates import ek_template

BUFFER, SCRATCH = 0x20000, 0x21000


def _boot(snp: Any, counter: MonotonicCounter, stored: bytes | None = None,
          seed: bytes = b"cvm svsm firmware") -> tuple[Svsm, SvsmGuest, Any]:
    launched = snp.launch(seed)
    vcpu = launched.guest.vcpus[0]
    svsm = Svsm.start(vcpu, launched.secrets_gpa, counter, snp.random, stored)
    svsm.grant(BUFFER, 2)
    return svsm, SvsmGuest(vcpu, svsm, BUFFER, SCRATCH), launched


def test_guest_os_uses_the_vtpm_through_the_svsm(snp: Any) -> None:
    svsm, guest, _ = _boot(snp, MonotonicCounter())
    assert guest.vtpm_query() == 1 << 8
    client = TpmClient(guest.tpm_execute)
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"shim").digest()})
    values = client.pcr_read(PcrSelectionList.of("sha256", [7]))[2]
    assert values[0] == hashlib.sha256(bytes(32) + hashlib.sha256(b"shim").digest()).digest()
    assert svsm.read_state().startswith(STATE_MAGIC)


def test_state_pages_fault_for_the_guest_os_and_are_ciphertext_to_the_host(snp: Any) -> None:
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    layout = SvsmLayout()
    vcpu = launched.guest.vcpus[0]
    assert vcpu.vmpl == 1  # the SVSM runs the guest OS at VMPL1
    with pytest.raises(FaultRaised) as fault:
        vcpu.read(layout.state_gpa, 16)
    assert fault.value.fault.error_code & PFERR_VMPL
    with pytest.raises(FaultRaised):
        vcpu.write(layout.state_gpa, b"overwrite the seeds")
    plain = svsm.read_state()
    spa = launched.guest.vm.translate(layout.state_gpa)
    host_view = snp.hv.machine.host_read(spa, PAGE_SIZE)
    assert STATE_MAGIC not in host_view
    assert plain[:64] not in host_view
    with pytest.raises(FaultRaised):
        snp.hv.machine.host_write(spa, bytes(16))
    assert guest.tpm_execute(bytes(10))[6:10] != bytes(4)  # the vTPM still answers


def test_attestation_binds_the_ek_to_the_report(snp: Any) -> None:
    _, guest, launched = _boot(snp, MonotonicCounter())
    nonce = hashlib.sha512(b"verifier nonce").digest()
    report_bytes, manifest = guest.attest(nonce)
    report = AttestationReport.from_bytes(report_bytes)
    assert report.report_data == hashlib.sha512(nonce + manifest).digest()
    assert report.measurement == launched.measurement and report.vmpl == 0
    key = snp.psp.vcek_public_key(report.reported_tcb)
    amd_ecdsa.verify(key, report.signed_bytes(), report.signature_r, report.signature_s)
    client = TpmClient(guest.tpm_execute)
    client.startup()
    _, ek = client.create_primary(TpmRh.ENDORSEMENT, ek_template("rsa"))
    assert Public.from_bytes(manifest) == ek
    report_bytes, table = guest.attest(nonce, single_service=False)
    assert ServicesManifest.from_bytes(table).service(VTPM_SERVICE_GUID) == manifest
    assert AttestationReport.from_bytes(report_bytes).report_data == (
        hashlib.sha512(nonce + table).digest()
    )


def test_call_protocol_errors(snp: Any) -> None:
    _, guest, _ = _boot(snp, MonotonicCounter())
    assert guest.call(7, 0)[0] == SvsmResult.ERR_UNSUPPORTED_PROTOCOL
    assert guest.call(PROTOCOL_VTPM, 9)[0] == SvsmResult.ERR_UNSUPPORTED_CALL
    with pytest.raises(StatusError) as refused:
        guest.tpm_execute(bytes(10), locality=3)
    assert refused.value.code == SvsmResult.ERR_INVALID_PARAMETER


def test_pcrs_and_objects_live_in_the_pages(snp: Any) -> None:
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    client = TpmClient(guest.tpm_execute)
    client.startup()
    measured = hashlib.sha256(b"kernel").digest()
    client.pcr_extend(9, {TpmAlg.SHA256: measured})
    pcr9 = hashlib.sha256(bytes(32) + measured).digest()
    layout = SvsmLayout()
    pages = svsm.at_vmpl0(lambda: launched.guest.vcpus[0].read(layout.state_gpa,
                                                                layout.state_pages * PAGE_SIZE))
    assert pcr9 in pages
    spa = launched.guest.vm.translate(layout.state_gpa)
    host_view = b"".join(snp.hv.machine.host_read(spa + i * PAGE_SIZE, PAGE_SIZE)
                         for i in range(layout.state_pages))
    assert pcr9 not in host_view
    assert svsm.tpm.pcrs.values == {} and svsm.tpm.state.seeds == {}  # the pages hold them
    assert client.pcr_read(PcrSelectionList.of("sha256", [9]))[2] == [pcr9]


def test_the_message_channel_lives_in_the_secrets_page(snp: Any) -> None:
    svsm, guest, _ = _boot(snp, MonotonicCounter())
    assert svsm.at_vmpl0(lambda: svsm.requester.seqno) == 0
    guest.attest(hashlib.sha512(b"nonce").digest())
    svsm.seal_state()
    assert svsm.at_vmpl0(lambda: svsm.requester.seqno) == 4  # two exchanges, two each
    snp.relay.forward = lambda handle, request: (0x16, None)  # the host refuses to relay
    with pytest.raises(StatusError):
        svsm.seal_state()
    assert svsm.at_vmpl0(lambda: svsm.requester.disabled)  # VMPCK0 wiped: no IV reuse
    with pytest.raises(StateError, match="disabled"):
        svsm.seal_state()


def test_core_protocol_answers_what_is_offered(snp: Any) -> None:
    _, guest, _ = _boot(snp, MonotonicCounter())
    assert guest.query_protocol(PROTOCOL_VTPM) == (1, 1)
    assert guest.query_protocol(1) == (1, 1)
    assert guest.query_protocol(PROTOCOL_VTPM, version=2) == (0, 0)
    assert guest.query_protocol(9) == (0, 0)
    assert guest.call(0, 0)[0] == SvsmResult.ERR_UNSUPPORTED_CALL  # REMAP_CA is not offered


def test_a_call_switches_vmpl_through_the_host_which_sees_neither_call_nor_answer(
        snp: Any) -> None:
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    vcpu = launched.guest.vcpus[0]
    exits: list[Any] = []
    snp.hv.exit_hooks.append(lambda g, v, info: exits.append((info, v.ghcb_msr)))
    before = svsm.calls
    assert guest.vtpm_query() == 1 << 8
    assert svsm.calls == before + 1 and vcpu.vmpl == 1
    assert [hex(msr & 0xFFF) for _, msr in exits] == ["0x16", "0x16"]  # to VMPL0 and back
    assert [msr >> 32 for _, msr in exits] == [0, 1]
    assert all(info.vmcb is None for info, _ in exits)


def test_no_call_pending_is_no_call(snp: Any) -> None:
    svsm, _, launched = _boot(snp, MonotonicCounter())
    vcpu = launched.guest.vcpus[0]
    before = svsm.calls
    vcpu.set_register("rax", PROTOCOL_VTPM << 32)
    vcpu.set_register("rcx", 0)
    SevGuest(vcpu).run_vmpl(0)  # a switch without call_pending in the calling area
    assert svsm.calls == before and vcpu.register("rax") == PROTOCOL_VTPM << 32


def test_a_call_clears_call_pending_and_keeps_the_rest_of_the_calling_area(snp: Any) -> None:
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    vcpu = launched.guest.vcpus[0]
    area = SvsmLayout().caa_gpa
    vcpu.write(area + 1, b"\x07kept")  # mem_available and beyond: the guest OS's bytes
    before = svsm.calls
    guest.vtpm_query()
    assert svsm.calls == before + 1
    assert vcpu.read(area, 6) == b"\x00\x07kept"
    SevGuest(vcpu).run_vmpl(0)  # call_pending is clear: the next switch is no call
    assert svsm.calls == before + 1


def test_the_response_fills_the_buffer_page_and_no_command_byte_stays(snp: Any) -> None:
    _, guest, launched = _boot(snp, MonotonicCounter())
    vcpu = launched.guest.vcpus[0]
    client = TpmClient(guest.tpm_execute)
    client.startup()
    client.pcr_event(7, b"A" * 1000)  # a long command, a short response
    page = vcpu.read(BUFFER, PAGE_SIZE)
    size = int.from_bytes(page[:4], "little")
    assert 0 < size < 200 and not any(page[4 + size :])


def test_the_guest_os_validates_its_pages_through_the_svsm(snp: Any) -> None:
    _, guest, launched = _boot(snp, MonotonicCounter())
    vcpu = launched.guest.vcpus[0]
    page = 0x30000
    assert guest.pvalidate([page]) == 1
    vcpu.write(page, b"the guest OS's own page")
    assert vcpu.read(page, 7) == b"the gue"
    with pytest.raises(StatusError) as again:
        guest.pvalidate([page])
    assert again.value.code == SvsmResult.ERR_PVALIDATE_FAIL_UNCHANGED
    assert guest.pvalidate([page], ignore_cf=True) == 1
    assert guest.pvalidate([page], validate=False) == 1
    with pytest.raises(FaultRaised):
        vcpu.read(page, 8)  # rescinded: #VC, page not validated


def test_the_svsm_never_pvalidates_its_own_pages_for_the_guest(snp: Any) -> None:
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    layout = SvsmLayout()
    for own in (layout.state_gpa, layout.key_gpa, layout.guest_vmsa_gpa, layout.caa_gpa):
        with pytest.raises(StatusError) as refused:
            guest.pvalidate([0x31000, own], validate=False)
        assert refused.value.code == SvsmResult.ERR_INVALID_PARAMETER
    assert svsm.read_state().startswith(STATE_MAGIC)  # still validated, still the SVSM's
    vcpu = launched.guest.vcpus[0]
    bad = (1).to_bytes(2, "little") + (3).to_bytes(2, "little") + bytes(12)  # next > entries
    vcpu.write(SCRATCH, bad)
    assert guest.call(0, 1, SCRATCH)[0] == SvsmResult.ERR_INVALID_PARAMETER
    assert guest.call(0, 1, SCRATCH + 3)[0] == SvsmResult.ERR_INVALID_ADDRESS
    vcpu.write(SCRATCH + 0xFF8, (2).to_bytes(2, "little") + bytes(6))  # crosses its page
    assert guest.call(0, 1, SCRATCH + 0xFF8)[0] == SvsmResult.ERR_INVALID_PARAMETER


def test_the_host_cannot_inject_an_event_into_the_guest_os(snp: Any) -> None:
    _, guest, launched = _boot(snp, MonotonicCounter())
    vcpu = launched.guest.vcpus[0]
    assert vcpu.vmpl == 1
    vcpu.set_register("rflags", 0x2)  # interrupts masked
    vcpu.inject_event(0x20)
    SevGuest(vcpu).halt()
    assert vcpu.delivered_events == []
    assert "Restricted Injection" in snp.hv.machine.faults[-1].reason
    assert guest.vtpm_query() == 1 << 8  # and the guest OS runs on


def test_the_svsms_own_fault_stops_the_vm_instead_of_answering(snp: Any) -> None:
    """A guest's bad request is a result code; corrupt state pages are the SVSM's own fault:
    the call does not come back with an answer the guest could take for a valid one."""
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    client = TpmClient(guest.tpm_execute)
    client.startup()
    layout = SvsmLayout()
    vcpu = launched.guest.vcpus[0]
    svsm.at_vmpl0(lambda: vcpu.write(layout.state_gpa, (1 << 31).to_bytes(4, "little")))
    with pytest.raises(StateError, match="state pages are corrupt"):
        client.get_random(8)
    assert vcpu.vmpl == 1  # the SVSM handed the vCPU back before the fault surfaced


def test_the_state_is_read_from_the_pages_its_lengths_reach_and_no_further(snp: Any) -> None:
    """Two parts filling the state pages to the last byte are read whole, across pages; one
    byte more and the lengths point outside the pages: corrupt."""
    svsm, _, launched = _boot(snp, MonotonicCounter())
    layout, vcpu = SvsmLayout(), launched.guest.vcpus[0]
    room = layout.state_pages * PAGE_SIZE
    first = bytes(range(256)) * 20  # 5120 bytes: the first part crosses into the second page
    second = b"\x5a" * (room - 8 - len(first))

    def plant(extra: int) -> None:
        blob = (len(first).to_bytes(4, "little") + first
                + (len(second) + extra).to_bytes(4, "little") + second)
        svsm.at_vmpl0(lambda: vcpu.write(layout.state_gpa, blob))

    plant(0)
    assert svsm.read_state() == first
    plant(1)
    with pytest.raises(StateError, match=r"^vTPM state pages are corrupt$"):
        svsm.read_state()
    svsm.at_vmpl0(lambda: vcpu.write(layout.state_gpa, (room - 4).to_bytes(4, "little")))
    with pytest.raises(StateError, match=r"^vTPM state pages are corrupt$"):
        svsm.read_state()  # the first part fills the pages: no room for the second's length


def test_the_state_pages_are_written_whole(snp: Any) -> None:
    """The state is written as whole pages: what follows it in its last page is zeros."""
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    TpmClient(guest.tpm_execute).startup()
    layout, vcpu = SvsmLayout(), launched.guest.vcpus[0]
    svsm.at_vmpl0(lambda: vcpu.write(layout.state_gpa + PAGE_SIZE - 16, b"\xee" * 16))
    TpmClient(guest.tpm_execute).pcr_extend(7, {TpmAlg.SHA256: bytes(32)})
    page = svsm.at_vmpl0(lambda: vcpu.read(layout.state_gpa, PAGE_SIZE))
    used = 4 + len(svsm.read_state())
    used += 4 + int.from_bytes(page[used : used + 4], "little")
    assert used < PAGE_SIZE - 16
    assert page[used:] == bytes(PAGE_SIZE - used)


def test_a_command_that_changes_no_state_leaves_the_pages_alone(snp: Any) -> None:
    """GetRandom and PCR_Read change neither part of the state: the pages keep what they
    hold (here a marker planted after the state), nothing is serialised or written."""
    svsm, guest, launched = _boot(snp, MonotonicCounter())
    client = TpmClient(guest.tpm_execute)
    client.startup()
    layout, vcpu = SvsmLayout(), launched.guest.vcpus[0]
    before = svsm.at_vmpl0(lambda: vcpu.read(layout.state_gpa, PAGE_SIZE))
    svsm.at_vmpl0(lambda: vcpu.write(layout.state_gpa + PAGE_SIZE - 16, b"\xee" * 16))
    client.get_random(8)
    client.pcr_read(PcrSelectionList.of("sha256", [7]))
    page = svsm.at_vmpl0(lambda: vcpu.read(layout.state_gpa, PAGE_SIZE))
    assert page == before[: PAGE_SIZE - 16] + b"\xee" * 16


def test_only_a_command_that_changes_the_non_volatile_state_rewrites_it(snp: Any) -> None:
    """A PCR_Extend keeps the non-volatile part as the pages held it; HierarchyChangeAuth
    (which sets Tpm.changed) has it serialised again, and the new authValue persists."""
    svsm, guest, _ = _boot(snp, MonotonicCounter())
    client = TpmClient(guest.tpm_execute)
    client.startup()
    nv = svsm.read_state()
    client.pcr_extend(7, {TpmAlg.SHA256: bytes(32)})
    assert svsm.read_state() == nv
    client.hierarchy_change_auth(TpmRh.OWNER, b"owner")
    changed = svsm.read_state()
    assert changed != nv and b"owner" in changed
    client.pcr_extend(7, {TpmAlg.SHA256: bytes(32)}, Auth())
    assert svsm.read_state() == changed


def test_the_sealed_state_carries_the_tpm_clock(snp: Any) -> None:
    """Sealing folds the time the vTPM ran into its non-volatile clock (save_clock says the
    state changed, so the SVSM writes it back before sealing it)."""
    svsm, guest, _ = _boot(snp, MonotonicCounter())
    TpmClient(guest.tpm_execute).startup()
    now = [50.0]
    svsm.tpm.clock, svsm.tpm._boot_time = lambda: now[0], 50.0
    now[0] = 57.25
    svsm.seal_state()
    assert PersistentState.from_bytes(svsm.read_state()).clock_ms == 7250


@pytest.mark.parametrize("end", [PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, PAGE_SIZE + 5])
def test_parts_ending_at_or_just_past_the_first_page_are_read_whole(snp: Any, end: int) -> None:
    """The first page alone serves parts that end in it; one byte further, the next page."""
    svsm, _, launched = _boot(snp, MonotonicCounter())
    layout, vcpu = SvsmLayout(), launched.guest.vcpus[0]
    first = bytes(range(256)) * 4
    second = b"\x5a" * (end - 8 - len(first))
    blob = len(first).to_bytes(4, "little") + first + len(second).to_bytes(4, "little") + second
    svsm.at_vmpl0(lambda: vcpu.write(layout.state_gpa, blob.ljust(2 * PAGE_SIZE, b"\xee")))
    assert svsm._read_parts() == (first, second)
