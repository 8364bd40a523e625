"""The guest kernel's SEV code (:mod:`cvm.guest.kernel.sev_guest`), decision by decision: what
it hands the hardware and the host (addresses aligned to their page, the CPUID subleaf, the AP
creation request), and each refusal with its error class, message and code."""

from __future__ import annotations

import re

import pytest

from cvm.errors import InternalError, PolicyError, StateError, StatusError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.ghcb_msr import (
    MsrFunction,
    PscOperation,
    register_ghcb_request,
    sev_info_request,
    sev_info_response,
)
from cvm.formats.snp.psc_buffer import PscBuffer, PscEntry
from cvm.formats.snp.vmsa import VMSA_LAYOUT, SevFeatures, Vmsa
from cvm.guest.kernel.sev_guest import SevGuest, vmsa_registers
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import Perm, RmpStatus
from cvm.hardware.vcpu import EXIT_CPUID, EXIT_VMGEXIT, Vcpu, VmExit, reset_registers
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20
PAGES = 8
GHCB_GPA = 7 * PAGE_SIZE
VMSA_GPA = 6 * PAGE_SIZE
UNMAPPED = 0x40_0000  # beyond the guest's memory: no nested mapping


def _guest(mode: Mode = Mode.SEV_SNP, vcpus: int = 1, ghcb: bool = True
           ) -> tuple[Hypervisor, Guest, SevGuest]:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(mode, PAGES * PAGE_SIZE, vcpus=vcpus)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, (PAGES - 2) * PAGE_SIZE)
    if ghcb and mode.encrypts_registers:
        kernel.setup_ghcb(GHCB_GPA)
    return host, guest, kernel


def _perms(host: Hypervisor, guest: Guest, gpa: int) -> list[Perm]:
    spa = guest.vm.translate(gpa)
    assert spa is not None
    return list(host.machine.rmp.entry(spa).perms)


def _vmsa(vmpl: int = 1) -> Vmsa:
    registers = reset_registers()
    features = int(SevFeatures.SNP_ACTIVE) | 0x4  # one more feature bit: the value travels
    registers.update(vmpl=vmpl, sev_features=features)
    return Vmsa(registers)


# -- RMPADJUST ---------------------------------------------------------------------------------
def test_rmpadjust_of_an_unmapped_page_is_refused_by_name() -> None:
    _, _, kernel = _guest()
    with pytest.raises(StateError, match=rf"^RMPADJUST of {UNMAPPED:#x}: page is not mapped$"):
        kernel.rmpadjust(UNMAPPED, 1, Perm.READ)


def test_rmpadjust_inside_a_page_adjusts_that_page() -> None:
    """An address in the upper half of a page names that page (not the next one, nor a GPA
    the RMP entry does not hold)."""
    host, guest, kernel = _guest()
    kernel.rmpadjust(3 * PAGE_SIZE + 0x800, 1, Perm.READ | Perm.WRITE)
    assert _perms(host, guest, 3 * PAGE_SIZE)[1] == Perm.READ | Perm.WRITE
    assert _perms(host, guest, 4 * PAGE_SIZE)[1] == Perm(0)


def test_a_refused_rmpadjust_carries_the_rmp_status() -> None:
    _, _, kernel = _guest()
    with pytest.raises(StatusError, match=r"^RMPADJUST of 0x3000 failed: FAIL_PERMISSION$"
                       ) as refused:
        kernel.rmpadjust(3 * PAGE_SIZE, 0, Perm.READ)  # VMPL0 cannot adjust its own level
    assert refused.value.code == int(RmpStatus.FAIL_PERMISSION) == 2


# -- page conversion ---------------------------------------------------------------------------
def test_make_private_inside_a_page_converts_exactly_that_page() -> None:
    host, guest, kernel = _guest()
    kernel.make_shared(2 * PAGE_SIZE)
    assert 2 not in kernel.validated
    kernel.cpu.write(2 * PAGE_SIZE, b"\x77" * PAGE_SIZE)
    kernel.make_private(2 * PAGE_SIZE + 0x10)
    assert kernel.validated == set(range(PAGES - 2))
    assert kernel.cpu.read(2 * PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
    spa = guest.vm.translate(2 * PAGE_SIZE)
    assert spa is not None
    entry = host.machine.rmp.entry(spa)
    assert entry.assigned and entry.validated and entry.gpa == 2 * PAGE_SIZE


# -- CPUID -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV])
def test_an_intercepted_cpuid_hands_the_host_leaf_and_subleaf(mode: Mode) -> None:
    host, _, kernel = _guest(mode)
    seen: list[tuple[int, int]] = []

    def spy(g: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.exit_code == EXIT_CPUID and info.vmcb is not None:
            seen.append((info.vmcb.save["rax"], info.vmcb.save["rcx"]))

    host.exit_hooks.append(spy)
    kernel.cpuid(7, 3)
    kernel.cpuid(0xD)
    assert seen == [(7, 3), (0xD, 0)]  # the subleaf defaults to 0


def test_the_msr_protocol_cpuid_returns_each_register_in_its_place() -> None:
    host, _, kernel = _guest(Mode.SEV_ES, ghcb=False)
    host.cpuid[0x4000_0000] = (0x1111, 0x2222, 0x3333, 0x4444)
    assert kernel.cpuid(0x4000_0000) == (0x1111, 0x2222, 0x3333, 0x4444)


def test_a_ghcb_cpuid_answer_without_a_valid_register_is_refused() -> None:
    host, _, kernel = _guest(Mode.SEV_ES)

    def answer_without_rdx(g: Guest, vcpu: Vcpu) -> None:
        spa = host.spa_of(g, vcpu.ghcb_page())
        host.machine.host_write(spa, Ghcb.build(rax=1, rbx=2, rcx=3).to_bytes())

    host._on_ghcb_exit = answer_without_rdx  # type: ignore[method-assign]
    with pytest.raises(StatusError, match=r"^host answered CPUID without rdx marked valid$"
                       ) as refused:
        kernel.cpuid(1)
    assert refused.value.code == 0


# -- VMSAs -------------------------------------------------------------------------------------
def test_creating_a_vmsa_needs_a_ghcb() -> None:
    _, _, kernel = _guest(ghcb=False)
    with pytest.raises(StateError, match=r"^creating a VMSA needs a registered GHCB$"):
        kernel.create_vmsa(VMSA_GPA, _vmsa())


def test_create_vmsa_grants_the_level_nothing_and_asks_for_this_vcpu_and_level() -> None:
    """The VMSA page is marked with RMPADJUST granting its level no access; the AP creation
    request carries the VMSA's SEV features in RAX and APIC id << 32 | VMPL << 16 | CREATE."""
    host, guest, _ = _guest(vcpus=2)
    second = guest.vcpus[1]
    kernel = SevGuest(second)
    kernel.setup_ghcb(5 * PAGE_SIZE)
    requests: list[Ghcb] = []

    def spy(g: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.exit_code == EXIT_VMGEXIT and vcpu.ghcb_msr == 5 * PAGE_SIZE:
            spa = host.spa_of(g, 5 * PAGE_SIZE)
            requests.append(Ghcb.from_bytes(host.machine.host_read(spa, PAGE_SIZE)))

    host.exit_hooks.append(spy)
    vmsa = _vmsa(vmpl=2)
    kernel.create_vmsa(VMSA_GPA, vmsa)
    assert _perms(host, guest, VMSA_GPA)[2] == Perm(0)
    spa = guest.vm.translate(VMSA_GPA)
    assert spa is not None and host.machine.rmp.entry(spa).vmsa
    request = requests[-1]
    assert request.get("rax") == vmsa.registers["sev_features"]
    assert request.get("sw_exitinfo1") == (1 << 32) | (2 << 16) | 1
    assert request.get("sw_exitinfo2") == VMSA_GPA
    assert 2 in second.vmsa_pages()


def test_edit_vmsa_refuses_a_register_the_save_area_does_not_have() -> None:
    _, _, kernel = _guest()
    kernel.create_vmsa(VMSA_GPA, _vmsa())
    with pytest.raises(StateError, match=r"^VMSA has no register 'rzz'$"):
        kernel.edit_vmsa(VMSA_GPA, 1, {"rzz": 1})


def test_vmsa_registers_refuses_a_name_the_layout_does_not_have() -> None:
    page = bytes(PAGE_SIZE)
    assert vmsa_registers(page, ("rbx",)) == {"rbx": 0}
    with pytest.raises(InternalError, match=re.escape(f"layout {VMSA_LAYOUT.name} has no "
                                                      "field 'rzz'")):
        vmsa_registers(page, ("rzz",))


@pytest.mark.parametrize("answer", [2, 0x1_0000_0002])
def test_a_host_that_refuses_the_vmsa_is_reported_with_its_code(answer: int) -> None:
    """The AP creation answer's SW_EXITINFO1 bits 31:0 are the host's error code."""
    host, _, kernel = _guest()
    host._ap_creation = (  # type: ignore[method-assign]
        lambda guest, request: Ghcb.build(sw_exitinfo1=answer))
    with pytest.raises(StatusError, match=rf"^the host refused the VMSA at {VMSA_GPA:#x} for "
                                          "VMPL1$") as refused:
        kernel.create_vmsa(VMSA_GPA, _vmsa())
    assert refused.value.code == 2


def test_an_ap_creation_answer_with_only_upper_bits_set_is_success() -> None:
    host, _, kernel = _guest()
    host._ap_creation = (  # type: ignore[method-assign]
        lambda guest, request: Ghcb.build(sw_exitinfo1=0x1_0000_0000))
    kernel.create_vmsa(VMSA_GPA, _vmsa())  # no refusal: bits 31:0 are zero


def test_run_vmpl_of_a_level_without_a_vmsa_is_refused_with_the_hosts_code() -> None:
    _, _, kernel = _guest()
    with pytest.raises(StatusError, match=r"^the host refused to run VMPL2$") as refused:
        kernel.run_vmpl(2)
    assert refused.value.code == 1


@pytest.mark.parametrize(("answer", "code"), [
    ((0x30 << 32) | int(MsrFunction.RUN_VMPL_RESPONSE), 0x30),
    ((0x5 << 12) | int(MsrFunction.REGISTER_GHCB_RESPONSE), 0),
])
def test_run_vmpl_refuses_an_error_or_another_function(answer: int, code: int) -> None:
    host, _, kernel = _guest()
    host._on_vmgexit = (  # type: ignore[method-assign]
        lambda guest, vcpu: setattr(vcpu, "ghcb_msr", answer))
    with pytest.raises(StatusError, match=r"^the host refused to run VMPL1$") as refused:
        kernel.run_vmpl(1)
    assert refused.value.code == code


def test_run_vmpl_reads_the_error_from_bits_63_to_32_only() -> None:
    """Bits 31:12 of the "run VMPL" response are reserved: set, with error 0, it is success."""
    host, _, kernel = _guest()
    answer = (0x5 << 12) | int(MsrFunction.RUN_VMPL_RESPONSE)
    host._on_vmgexit = (  # type: ignore[method-assign]
        lambda guest, vcpu: setattr(vcpu, "ghcb_msr", answer))
    kernel.run_vmpl(1)


# -- PVALIDATE and accepting memory ------------------------------------------------------------
def test_accept_of_an_unaligned_range_validates_every_page_it_touches() -> None:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(Mode.SEV_SNP, PAGES * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(3 * PAGE_SIZE + 0x10, PAGE_SIZE)  # 0x3010..0x4010: pages 3 and 4
    assert kernel.validated == {3, 4}


def test_pvalidate_inside_a_page_validates_that_page() -> None:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(Mode.SEV_SNP, PAGES * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.pvalidate(3 * PAGE_SIZE + 0x800, validate=True)
    assert kernel.validated == {3}
    spa = guest.vm.translate(3 * PAGE_SIZE)
    assert spa is not None
    assert host.machine.rmp.entry(spa).validated
    assert not host.machine.rmp.entry(spa + PAGE_SIZE).validated


def test_a_second_validation_is_refused_as_a_remap() -> None:
    _, _, kernel = _guest()
    with pytest.raises(PolicyError) as refused:
        kernel.pvalidate(3 * PAGE_SIZE, validate=True)
    assert str(refused.value) == ("page 0x3000 is already validated: refusing a second "
                                  "validation (the host remapped it)")


def test_a_page_the_rmp_holds_valid_already_is_refused() -> None:
    """Another kernel instance (no record of the page) finds PVALIDATE changed nothing."""
    _, guest, _ = _guest()
    fresh = SevGuest(guest.vcpus[0])
    with pytest.raises(PolicyError, match=r"^PVALIDATE of 0x3000 changed nothing: page was "
                                          r"already valid$"):
        fresh.pvalidate(3 * PAGE_SIZE, validate=True)


def test_pvalidate_of_an_unmapped_page_is_refused_by_name() -> None:
    _, _, kernel = _guest()
    with pytest.raises(StateError, match=rf"^PVALIDATE of {UNMAPPED:#x}: page is not mapped$"):
        kernel.pvalidate(UNMAPPED, validate=True)


def test_a_refused_pvalidate_carries_the_rmp_status() -> None:
    _, _, kernel = _guest()
    kernel.make_shared(3 * PAGE_SIZE)  # no longer assigned to the guest
    with pytest.raises(StatusError, match=r"^PVALIDATE of 0x3000 failed: FAIL_INPUT$"
                       ) as refused:
        kernel.pvalidate(3 * PAGE_SIZE, validate=True)
    assert refused.value.code == int(RmpStatus.FAIL_INPUT) == 1


# -- page-state changes ------------------------------------------------------------------------
def test_an_msr_page_state_change_the_host_refuses_carries_its_code() -> None:
    _, _, kernel = _guest(ghcb=False)
    with pytest.raises(StatusError, match=rf"^page-state change of {UNMAPPED:#x} refused$"
                       ) as refused:
        kernel.page_state_change([UNMAPPED], PscOperation.SHARED)
    assert refused.value.code == 1  # the host's "invalid" error in bits 63:32


@pytest.mark.parametrize(("answer", "refused"), [
    ((0x5 << 12) | int(MsrFunction.PSC_RESPONSE), False),  # reserved bits 31:12: success
    ((0x2 << 32) | int(MsrFunction.PSC_RESPONSE), True),
    (int(MsrFunction.REGISTER_GHCB_RESPONSE), True),
])
def test_an_msr_page_state_change_reads_function_and_error(answer: int, refused: bool) -> None:
    host, _, kernel = _guest(ghcb=False)
    host._on_vmgexit = (  # type: ignore[method-assign]
        lambda guest, vcpu: setattr(vcpu, "ghcb_msr", answer))
    if not refused:
        kernel.page_state_change([3 * PAGE_SIZE], PscOperation.SHARED)
        return
    with pytest.raises(StatusError) as error:
        kernel.page_state_change([3 * PAGE_SIZE], PscOperation.SHARED)
    assert error.value.code == answer >> 32


def test_a_ghcb_page_state_change_the_host_refuses_carries_its_code() -> None:
    _, _, kernel = _guest()
    with pytest.raises(StatusError, match=r"^page-state change refused after 1 pages$"
                       ) as refused:
        kernel.page_state_change([3 * PAGE_SIZE, UNMAPPED], PscOperation.SHARED)
    assert refused.value.code == 1  # SW_EXITINFO2 bits 63:32


# -- GHCB registration -------------------------------------------------------------------------
def _answer_sev_info(host: Hypervisor, answer: int, ignore_terminate: bool = False) -> None:
    """The host answers the SEV-information request with ``answer`` (and handles the rest)."""
    original = host._on_vmgexit

    def handler(guest: Guest, vcpu: Vcpu) -> None:
        if vcpu.ghcb_msr == sev_info_request():
            vcpu.ghcb_msr = answer
        elif ignore_terminate and vcpu.ghcb_msr & 0xFFF == MsrFunction.TERMINATE:
            vcpu.ghcb_msr = 0
        else:
            original(guest, vcpu)

    host._on_vmgexit = handler  # type: ignore[method-assign]


def test_a_guest_without_register_encryption_has_no_ghcb() -> None:
    _, _, kernel = _guest(Mode.SEV)
    with pytest.raises(StateError, match=r"^a sev guest has no GHCB$"):
        kernel.setup_ghcb(GHCB_GPA)


@pytest.mark.parametrize(("lowest", "highest"), [(2, 2), (1, 2), (2, 7)])
def test_a_host_offering_version_2_is_accepted(lowest: int, highest: int) -> None:
    host, _, kernel = _guest(ghcb=False)
    _answer_sev_info(host, sev_info_response(highest, lowest, 51))
    kernel.setup_ghcb(GHCB_GPA)
    assert kernel.ghcb_gpa == GHCB_GPA
    assert kernel.cpu.ghcb_msr == GHCB_GPA  # the MSR holds the GHCB's address afterwards


@pytest.mark.parametrize("answer", [
    sev_info_response(1, 1, 51),  # versions below this guest's
    sev_info_response(4, 3, 51),  # versions above it
    (sev_info_response(2, 1, 51) & ~0xFFF) | int(MsrFunction.CPUID_RESPONSE),  # not SEV info
])
def test_a_host_offering_no_usable_protocol_is_asked_to_terminate(answer: int) -> None:
    """GHCB termination request, reason set 0, reason code 1: MSR 0x10100."""
    host, _, kernel = _guest(ghcb=False)
    _answer_sev_info(host, answer)
    with pytest.raises(StateError, match=r"^guest requested termination \(0x10100\)$"):
        kernel.setup_ghcb(GHCB_GPA)
    assert kernel.ghcb_gpa is None


def test_a_host_that_ignores_the_termination_request_does_not_get_a_ghcb() -> None:
    host, _, kernel = _guest(ghcb=False)
    _answer_sev_info(host, sev_info_response(4, 3, 51), ignore_terminate=True)
    with pytest.raises(PolicyError, match=r"^the host offers GHCB protocol versions 3\.\.4, this "
                                          r"guest speaks 2: the host ignored the termination "
                                          r"request$"):
        kernel.setup_ghcb(GHCB_GPA)
    assert kernel.ghcb_gpa is None


@pytest.mark.parametrize("answer", [
    ((GHCB_GPA + PAGE_SIZE) >> 12 << 12) | int(MsrFunction.REGISTER_GHCB_RESPONSE),  # other page
    (GHCB_GPA >> 12 << 12) | int(MsrFunction.PSC_RESPONSE),  # another function
])
def test_a_ghcb_registration_the_host_does_not_confirm_is_refused(answer: int) -> None:
    host, _, kernel = _guest(ghcb=False)
    original = host._on_vmgexit

    def handler(guest: Guest, vcpu: Vcpu) -> None:
        if vcpu.ghcb_msr == register_ghcb_request(GHCB_GPA):
            vcpu.ghcb_msr = answer
        else:
            original(guest, vcpu)

    host._on_vmgexit = handler  # type: ignore[method-assign]
    with pytest.raises(StatusError, match=rf"^host refused GHCB registration of "
                                          rf"{GHCB_GPA:#x}$") as refused:
        kernel.setup_ghcb(GHCB_GPA)
    assert refused.value.code == answer >> 12
    assert kernel.ghcb_gpa is None


def test_make_shared_inside_a_page_shares_that_page() -> None:
    host, guest, kernel = _guest()
    kernel.make_shared(3 * PAGE_SIZE + 0x800)
    assert 3 not in kernel.validated and 4 in kernel.validated
    assert not guest.vm.is_private(3 * PAGE_SIZE) and guest.vm.is_private(4 * PAGE_SIZE)
    spa = guest.vm.translate(3 * PAGE_SIZE)
    assert spa is not None
    assert not host.machine.rmp.entry(spa).assigned
    assert host.machine.rmp.entry(spa + PAGE_SIZE).assigned


@pytest.mark.parametrize("status", [1, 0x8000_0000, 3 << 32])
def test_a_ghcb_page_state_answer_with_any_status_bit_is_refused(status: int) -> None:
    """Every entry done, but SW_EXITINFO2 not zero: the change failed (the low bits too)."""
    host, _, kernel = _guest()
    original = host._on_ghcb_exit

    def answer(g: Guest, vcpu: Vcpu) -> None:
        original(g, vcpu)
        spa = host.spa_of(g, vcpu.ghcb_page())
        done = Ghcb.from_bytes(host.machine.host_read(spa, PAGE_SIZE))
        reply = Ghcb.build(done.shared_buffer, sw_exitinfo2=status)
        host.machine.host_write(spa, reply.to_bytes())

    host._on_ghcb_exit = answer  # type: ignore[method-assign]
    with pytest.raises(StatusError, match=r"^page-state change refused after 2 pages$"
                       ) as refused:
        kernel.page_state_change([3 * PAGE_SIZE, 4 * PAGE_SIZE], PscOperation.SHARED)
    assert refused.value.code == (status >> 32 or status)


@pytest.mark.parametrize(("done", "rewrite"), [(1, False), (2, True)])
def test_a_ghcb_page_state_answer_that_does_not_cover_the_request_is_refused(
        done: int, rewrite: bool) -> None:
    """No error code, but fewer entries done than asked, or the entries changed."""
    host, _, kernel = _guest()

    def answer(g: Guest, vcpu: Vcpu) -> None:
        spa = host.spa_of(g, vcpu.ghcb_page())
        request = PscBuffer.from_bytes(Ghcb.from_bytes(
            host.machine.host_read(spa, PAGE_SIZE)).shared_buffer)
        entries = request.entries
        if rewrite:
            entries = (PscEntry(entries[0].gfn + 1, entries[0].operation), *entries[1:])
        reply = Ghcb.build(PscBuffer(entries, done).to_bytes(), sw_exitinfo2=0)
        host.machine.host_write(spa, reply.to_bytes())

    host._on_ghcb_exit = answer  # type: ignore[method-assign]
    with pytest.raises(StatusError, match=rf"^page-state change refused after {done} pages$"
                       ) as refused:
        kernel.page_state_change([3 * PAGE_SIZE, 4 * PAGE_SIZE], PscOperation.SHARED)
    assert refused.value.code == 0
