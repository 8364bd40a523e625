"""The host's VMM, checked from the guest's side of each exit (the registers and the GHCB the
guest reads back), the RMP, and the guests the host tracks.

Each test fails when one of ``cvm.host.vmm``'s checks or answers is removed or changed: CPUID
in each protocol, page-state changes, AP creation, the keys guests are tracked under, ASIDs,
the tear-down.
"""

from __future__ import annotations

import pytest

from cvm.amd.kds import ChipFuses
from cvm.errors import StateError, StatusError, UsageError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.ghcb_msr import (
    MsrFunction,
    MsrMessage,
    PscOperation,
    psc_request,
    terminate,
)
from cvm.formats.snp.psc_buffer import NAE_PSC, PscBuffer, PscEntry
from cvm.formats.snp.vmsa import Vmsa
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.engine import MAX_ASID
from cvm.hardware.memory.rmp import Perm, RmpStatus
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vcpu import EXIT_CPUID, EXIT_VMGEXIT, Vcpu, reset_registers
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.vmm import (
    AP_CREATE,
    EXIT_NAE_CPUID,
    GHCB_ERR_INVALID_EVENT,
    GHCB_ERR_INVALID_INPUT,
    GHCB_ERR_MISSING_INPUT,
    HV_RESP_MALFORMED_INPUT,
    NAE_AP_CREATION,
    Guest,
    Hypervisor,
)

MIB = 1 << 20
PAGES = 16
GHCB_GPA = 15 * PAGE_SIZE
VMSA_GPA = 0x5000
UNKNOWN_LEAF = 0x4000_0100


def _host(with_psp: bool = False) -> Hypervisor:
    machine = Machine(32 * MIB)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x31" * 64))
    return Hypervisor(machine, psp if with_psp else None)


def _guest(mode: Mode, ghcb: bool = True) -> tuple[Hypervisor, Guest, SevGuest]:
    host = _host()
    guest = host.create_vm(mode, PAGES * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, VMSA_GPA)  # every page but the one a VMSA goes in and the GHCB
    kernel.accept(VMSA_GPA + PAGE_SIZE, GHCB_GPA - VMSA_GPA - PAGE_SIZE)
    if ghcb:
        kernel.setup_ghcb(GHCB_GPA)
    return host, guest, kernel


def _ghcb_exit(kernel: SevGuest, request: Ghcb) -> Ghcb:
    """One VMGEXIT with ``request`` in the GHCB; the GHCB as the guest reads it back."""
    assert kernel.ghcb_gpa is not None
    kernel.cpu.write(kernel.ghcb_gpa, request.to_bytes())
    kernel.cpu.ghcb_msr = kernel.ghcb_gpa
    kernel.cpu.vmexit(EXIT_VMGEXIT)
    return Ghcb.from_bytes(kernel.cpu.read(kernel.ghcb_gpa, PAGE_SIZE))


# -- CPUID in each protocol ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV])
def test_an_intercepted_cpuid_answers_four_registers_and_steps_over_it(mode: Mode) -> None:
    host, guest, kernel = _guest(mode, ghcb=False)
    rip = kernel.cpu.register("rip")
    assert kernel.cpuid(0) == host.cpuid[0]
    assert kernel.cpu.register("rip") == rip + 2  # CPUID is two bytes, 0F A2
    host.cpuid[UNKNOWN_LEAF] = (1, 2, 3, 4)
    assert kernel.cpuid(UNKNOWN_LEAF) == (1, 2, 3, 4)
    del host.cpuid[UNKNOWN_LEAF]
    assert kernel.cpuid(UNKNOWN_LEAF) == (0, 0, 0, 0)
    assert kernel.cpu.register("rip") == rip + 6
    assert [e.exit_code for e in guest.exits] == [EXIT_CPUID] * 3


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP])
def test_a_cpuid_the_host_does_not_know_is_zero_in_both_ghcb_protocols(mode: Mode) -> None:
    host, _, kernel = _guest(mode, ghcb=False)
    assert kernel.cpuid(0x8000_001F) == host.cpuid[0x8000_001F]  # the MSR protocol
    assert kernel.cpuid(UNKNOWN_LEAF) == (0, 0, 0, 0)
    kernel.setup_ghcb(GHCB_GPA)
    assert kernel.cpuid(0) == host.cpuid[0]  # the GHCB
    assert kernel.cpuid(UNKNOWN_LEAF) == (0, 0, 0, 0)


def test_a_ghcb_cpuid_without_rax_is_malformed_input() -> None:
    _, _, kernel = _guest(Mode.SEV_SNP)
    answer = _ghcb_exit(kernel, Ghcb.build(sw_exitcode=EXIT_NAE_CPUID, rcx=0))
    assert answer.get("sw_exitinfo1") == HV_RESP_MALFORMED_INPUT
    assert answer.get("sw_exitinfo2") == GHCB_ERR_MISSING_INPUT
    assert answer.get("rax") is None and answer.get("rbx") is None


def test_an_unknown_msr_request_and_a_termination_stop_the_guest() -> None:
    _, _, kernel = _guest(Mode.SEV_ES, ghcb=False)
    with pytest.raises(StateError, match=r"^unsupported GHCB MSR request 0x7$"):
        kernel.msr_call(0x007)  # function 7 is no request this host serves
    kernel.cpu.vmrun()  # the exit's handler raised before VMRUN
    with pytest.raises(StateError, match=r"^guest requested termination \(0x1100\)$"):
        kernel.msr_call(terminate(1, 0))


# -- page-state changes --------------------------------------------------------------------------
def test_an_sev_es_guests_page_state_change_leaves_the_rmp_alone() -> None:
    host, guest, kernel = _guest(Mode.SEV_ES, ghcb=False)
    spa = guest.vm.translate(0x3000)
    assert spa is not None and not host.machine.rmp.entry(spa).assigned
    reply = MsrMessage.parse(kernel.msr_call(psc_request(0x3000, PscOperation.PRIVATE)))
    assert (reply.function, reply.data) == (MsrFunction.PSC_RESPONSE, 0)
    assert not host.machine.rmp.entry(spa).assigned


def test_a_page_state_change_the_rmp_refuses_is_reported_to_the_guest() -> None:
    host, guest, kernel = _guest(Mode.SEV_SNP, ghcb=False)
    spa = guest.vm.translate(0x4000)
    assert spa is not None
    host.machine.rmp.firmware_own(spa)  # immutable: the RMP refuses RMPUPDATE
    reply = MsrMessage.parse(kernel.msr_call(psc_request(0x4000, PscOperation.SHARED)))
    assert reply.function is MsrFunction.PSC_RESPONSE
    assert reply.data >> 20 == RmpStatus.FAIL_PERMISSION
    assert reply.data & 0xFFFFF == 0
    assert host.machine.rmp.entry(spa).immutable


def test_a_ghcb_page_state_change_runs_every_entry_and_answers_zero() -> None:
    host, guest, kernel = _guest(Mode.SEV_SNP)
    pages = [0x3000, 0x4000, 0x6000]
    request = PscBuffer(tuple(PscEntry(p >> 12, int(PscOperation.SHARED)) for p in pages))
    for page in pages:
        kernel.pvalidate(page, validate=False)
    answer = _ghcb_exit(kernel, Ghcb.build(request.to_bytes(), sw_exitcode=NAE_PSC))
    assert answer.get("sw_exitinfo2") == 0
    assert PscBuffer.from_bytes(answer.shared_buffer) == PscBuffer(request.entries, 3)
    rmp = host.machine.rmp
    for page in pages:
        entry = rmp.entry(guest.vm.translate(page) or 0)
        assert (entry.assigned, entry.asid, entry.gpa) == (False, 0, 0)
    kernel.make_private(0x3000, 2)  # and back, through the GHCB
    for page in (0x3000, 0x4000):
        entry = rmp.entry(guest.vm.translate(page) or 0)
        assert (entry.assigned, entry.asid, entry.gpa, entry.validated) == (
            True, guest.vm.asid, page, True)


def test_a_ghcb_page_state_change_stops_at_the_entry_that_fails() -> None:
    host, guest, kernel = _guest(Mode.SEV_SNP)
    host.machine.rmp.firmware_own(guest.vm.translate(0x4000) or 0)  # RMPUPDATE refused
    kernel.pvalidate(0x3000, validate=False)
    entries = (PscEntry(3, int(PscOperation.SHARED)), PscEntry(4, int(PscOperation.SHARED)),
               PscEntry(6, int(PscOperation.SHARED)))
    answer = _ghcb_exit(kernel, Ghcb.build(PscBuffer(entries).to_bytes(), sw_exitcode=NAE_PSC))
    assert answer.get("sw_exitinfo2") == int(RmpStatus.FAIL_PERMISSION) << 32
    assert PscBuffer.from_bytes(answer.shared_buffer).cur_entry == 1
    assert host.machine.rmp.entry(guest.vm.translate(0x6000) or 0).assigned  # never reached


# -- AP creation ---------------------------------------------------------------------------------
def _vmsa_page(kernel: SevGuest, gpa: int) -> None:
    kernel.accept(gpa)  # the page _guest left unvalidated
    kernel.cpu.write(gpa, Vmsa({**reset_registers(), "sev_features": 1, "vmpl": 1}).to_bytes())
    kernel.rmpadjust(gpa, 1, Perm(0), vmsa=True)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"sw_exitinfo2": 0x5000}, GHCB_ERR_MISSING_INPUT),
    ({"sw_exitinfo1": 1 << 16 | AP_CREATE}, GHCB_ERR_MISSING_INPUT),
    ({"sw_exitinfo1": 1 << 16 | 2, "sw_exitinfo2": 0x5000}, GHCB_ERR_INVALID_EVENT),
    ({"sw_exitinfo1": 1 << 16 | AP_CREATE, "sw_exitinfo2": 0x7F_0000}, GHCB_ERR_INVALID_INPUT),
    ({"sw_exitinfo1": 1 << 16 | AP_CREATE, "sw_exitinfo2": 0x5008}, GHCB_ERR_INVALID_INPUT),
    ({"sw_exitinfo1": 9 << 32 | 1 << 16 | AP_CREATE, "sw_exitinfo2": 0x5000},
     GHCB_ERR_INVALID_INPUT),
    ({"sw_exitinfo1": 1 << 16 | AP_CREATE, "sw_exitinfo2": 0x6000}, GHCB_ERR_INVALID_INPUT),
    ({"sw_exitinfo1": 7 << 16 | AP_CREATE, "sw_exitinfo2": 0x5000}, GHCB_ERR_INVALID_INPUT),
])
def test_an_ap_creation_the_host_cannot_honour_is_malformed_input(
    fields: dict[str, int], reason: int
) -> None:
    """Missing fields, another event, a page not mapped, not aligned or not a VMSA, an APIC ID
    without a vCPU, a VMPL beyond 3: refused, and nothing registered."""
    _, guest, kernel = _guest(Mode.SEV_SNP)
    _vmsa_page(kernel, 0x5000)
    answer = _ghcb_exit(kernel, Ghcb.build(sw_exitcode=NAE_AP_CREATION, **fields))
    assert (answer.get("sw_exitinfo1"), answer.get("sw_exitinfo2")) == (
        HV_RESP_MALFORMED_INPUT, reason)
    assert list(guest.vcpus[0].vmsa_pages()) == [0]


def test_an_ap_creation_registers_the_vmsa_at_its_level() -> None:
    _, guest, kernel = _guest(Mode.SEV_SNP)
    _vmsa_page(kernel, 0x5000)
    answer = _ghcb_exit(kernel, Ghcb.build(sw_exitcode=NAE_AP_CREATION,
                                           sw_exitinfo1=1 << 16 | AP_CREATE,
                                           sw_exitinfo2=0x5000))
    assert answer.get("sw_exitinfo1") == 0
    assert guest.vcpus[0].vmsa_pages()[1] == guest.vm.translate(0x5000)


# -- the guests the host tracks ------------------------------------------------------------------
def test_plain_vms_are_tracked_apart_from_each_other_and_from_asid_one() -> None:
    host = _host()
    first = host.create_vm("plain", 2 * PAGE_SIZE)
    second = host.create_vm(Mode.PLAIN, 2 * PAGE_SIZE)
    snp = host.create_vm("snp", 2 * PAGE_SIZE)
    plain = VirtualMachine(host.machine, 0, Mode.PLAIN, PAGE_SIZE)
    adopted = [host.adopt(plain, [], []), host.adopt(plain, [], [])]
    assert (first.vm.asid, second.vm.asid, snp.vm.asid) == (0, 0, 1)
    assert snp.mode is Mode.SEV_SNP and len(first.vcpus) == 1
    tracked = list(host.guests.values())
    assert len(tracked) == 5 and all(any(g is t for t in tracked)
                                     for g in (first, second, snp, *adopted))
    assert host.guests[1] is snp and all(key < 0 for key in host.guests if key != 1)
    for guest in (first, second, snp, *adopted):
        host.destroy_vm(guest)
    assert host.guests == {}


def test_a_vm_is_destroyed_once() -> None:
    host = _host()
    guest = host.create_vm(Mode.SEV, 2 * PAGE_SIZE)
    host.destroy_vm(guest)
    with pytest.raises(StateError, match=r"^that VM is not running on this host$"):
        host.destroy_vm(guest)


def test_a_host_without_a_psp_has_no_legacy_firmware() -> None:
    assert _host().legacy is None and _host(with_psp=True).legacy is not None


def test_a_guest_without_a_handle_is_torn_down_without_the_psp() -> None:
    host = _host(with_psp=True)
    assert host.psp is not None
    host.machine.engine.activate(4)
    vm = VirtualMachine(host.machine, 4, Mode.SEV_ES, PAGE_SIZE)
    guest = host.adopt(vm, [], [])
    host.destroy_vm(guest)  # no handle: nothing to decommission
    assert not host.machine.engine.is_active(4)


def test_create_vm_takes_the_lowest_asid_no_key_holds() -> None:
    host = _host()
    host.machine.engine.activate(1)  # a key the host keeps for something else
    assert host.create_vm(Mode.SEV, PAGE_SIZE).vm.asid == 2
    for asid in range(3, MAX_ASID):
        host.machine.engine.activate(asid)
    assert host.free_asid() == MAX_ASID
    host.create_vm(Mode.SEV_ES, PAGE_SIZE)
    with pytest.raises(StateError, match=r"^no free ASID$"):
        host.free_asid()


def test_create_vm_refuses_what_it_cannot_build() -> None:
    host = _host()
    with pytest.raises(UsageError, match=r"^a VM needs at least one vCPU, got 0$"):
        host.create_vm(Mode.SEV, PAGE_SIZE, vcpus=0)
    with pytest.raises(StateError, match=r"^SNP is not enabled on this machine$"):
        Hypervisor(Machine(8 * MIB, snp_enabled=False)).create_vm(Mode.SEV_SNP, PAGE_SIZE)
    with pytest.raises(UsageError, match=r"^the PSP belongs to another machine$"):
        Hypervisor(Machine(8 * MIB), _host(with_psp=True).psp)
    guest = host.create_vm(Mode.SEV, PAGE_SIZE)
    with pytest.raises(StateError, match=rf"^ASID {guest.vm.asid} is already in use by a live "
                                         r"guest$"):
        host.create_vm(Mode.SEV, PAGE_SIZE, asid=guest.vm.asid)
    with pytest.raises(UsageError, match=r"^guest page 0x5000 is not mapped$"):
        host.spa_of(guest, 0x5000)


def test_adopt_names_what_it_refuses() -> None:
    host = _host()
    other = VirtualMachine(Machine(8 * MIB), 3, Mode.SEV, PAGE_SIZE)
    with pytest.raises(UsageError, match=r"^that VM runs on another machine$"):
        host.adopt(other, [], [])
    host.machine.engine.activate(5)
    vm = VirtualMachine(host.machine, 5, Mode.SEV, PAGE_SIZE)
    with pytest.raises(UsageError, match=r"^a vCPU belongs to another VM$"):
        host.adopt(vm, [Vcpu(other, 0)], [])
    host.adopt(vm, [], [])
    with pytest.raises(StateError, match=r"^ASID 5 is already in use by a live guest$"):
        host.adopt(vm, [], [])


def test_a_refused_rmpupdate_of_a_vm_page_is_named() -> None:
    host = _host()
    page = host.allocate_page()
    host.machine.rmp.firmware_own(page)  # immutable: the RMP refuses to reassign it
    host.machine.rmp.entry(page).assigned = False
    host._free.append(page)
    with pytest.raises(StatusError, match=rf"^RMPUPDATE of {page:#x} failed: "
                                          r"FAIL_PERMISSION$") as refused:
        host.create_vm(Mode.SEV_SNP, PAGE_SIZE)
    assert refused.value.code == RmpStatus.FAIL_PERMISSION
