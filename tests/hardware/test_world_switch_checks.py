"""Every check of the world switch (`Vcpu.vmexit` / `Vcpu.vmrun`), pinned one by one: where the
registers go in each mode and what the host is told, the VMSA page the RMP must call this
guest's, EFER.SVME, the VMPL taken from the VMSA (SNP only), the save-area memo that skips work
only while the page holds the same ciphertext, event injection and Restricted Injection, and a
stopped vCPU that neither exits, accesses memory nor has registers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from sevsnpmeasure import vmsa as sev_snp_measure

from cvm.errors import StateError, UsageError
from cvm.formats.snp.page_info import VMSA_GPA
from cvm.formats.snp.vmsa import VMSA_SIZE, SevFeatures, Vmsa, unpack_registers
from cvm.hardware.fault import Fault, FaultKind, FaultRaised, Who
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EFER_SVME, EXIT_HLT, Vcpu, Vmcb, VmExit, reset_registers
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20


def _guest(mode: Mode, vcpus: int = 1) -> tuple[Hypervisor, Guest]:
    host = Hypervisor(Machine(32 * MIB))
    guest = host.create_vm(mode, 8 * PAGE_SIZE, vcpus=vcpus)
    for vcpu in guest.vcpus:
        if vcpu.registers is None:
            vcpu.vmrun()
    return host, guest


def _on_exit(host: Hypervisor, action: Callable[[Vcpu, VmExit], None]) -> None:
    host.exit_hooks.append(lambda guest, vcpu, info: action(vcpu, info))


def _engine_calls(machine: Machine) -> list[str]:
    """Spy on the engine's page operations: "write" or "read" per call, in order."""
    calls: list[str] = []
    real = machine.engine.access_page

    def spy(asid: int, frame: int, offset: int, size: int, data: bytes | None) -> bytes:
        calls.append("read" if data is None else "write")
        return real(asid, frame, offset, size, data)

    machine.engine.access_page = spy  # type: ignore[method-assign]
    return calls


# -- the reset state -------------------------------------------------------------------------------
def test_the_reset_register_file_is_qemus_initial_vmsa() -> None:
    """Every integer field of sev-snp-measure's QEMU boot-processor save area (CPU signature
    and SEV features 0), read at cvm's offsets, is the reset register file."""
    qemu = sev_snp_measure.VMSA.build_save_area(sev_snp_measure.VMSA.BSP_EIP, 0, 0)
    page = bytes(qemu).ljust(VMSA_SIZE, b"\0")
    assert unpack_registers(page) == reset_registers()
    assert reset_registers()["efer"] == EFER_SVME == 1 << 12


# -- a stopped vCPU --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(Mode))
def test_a_stopped_vcpu_neither_exits_nor_touches_memory_nor_has_registers(mode: Mode) -> None:
    host, guest = _guest(mode)
    seen: list[str] = []

    def while_the_host_runs(vcpu: Vcpu, info: VmExit) -> None:
        for attempt in (
            lambda: vcpu.vmexit(EXIT_HLT),
            lambda: vcpu.read(0, 1),
            lambda: vcpu.write(0, b"\1"),
            lambda: vcpu.register("rax"),
            lambda: vcpu.set_register("rax", 1),
            vcpu.live,
        ):
            with pytest.raises(StateError) as refused:
                attempt()
            seen.append(str(refused.value))

    _on_exit(host, while_the_host_runs)
    guest.vcpus[0].vmexit(EXIT_HLT)
    assert seen == ["vCPU 0 is not running: its registers are saved"] * 6
    assert host.machine.faults == []
    with pytest.raises(StateError) as refused:
        guest.vcpus[0].vmrun()
    assert str(refused.value) == "vCPU 0 is already running"


def test_registers_are_named_and_an_unknown_name_is_refused() -> None:
    _, guest = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    for call in (lambda: vcpu.register("r99"), lambda: vcpu.set_register("r99", 1)):
        with pytest.raises(UsageError) as refused:
            call()
        assert str(refused.value) == "no register 'r99'"
    vcpu.set_register("r15", 0xF15)
    assert vcpu.register("r15") == 0xF15


def test_a_vcpu_without_an_exit_handler_goes_straight_back_in() -> None:
    machine = Machine(4 * MIB)
    vm = VirtualMachine(machine, 0, Mode.PLAIN, PAGE_SIZE)
    vcpu = Vcpu(vm, 0)
    vcpu.set_register("rbx", 7)
    vcpu.vmexit(EXIT_HLT)
    assert vcpu.register("rbx") == 7 and vcpu.vmcb.exit_code == EXIT_HLT


# -- what the host sees at an exit -----------------------------------------------------------------
@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV])
def test_a_vmcb_guest_exposes_every_register_and_the_exit_to_the_host(mode: Mode) -> None:
    host, guest = _guest(mode, vcpus=2)
    vcpu = guest.vcpus[1]
    vcpu.set_register("rcx", 0xC)
    seen: list[VmExit] = []

    def look(cpu: Vcpu, info: VmExit) -> None:
        seen.append(info)
        if len(seen) == 1:
            assert cpu.vmcb.save["rcx"] == 0xC
            cpu.vmcb.save["rcx"] = 0xD  # the host may change them: they take effect at VMRUN

    _on_exit(host, look)
    vcpu.inject_event(0x30)
    vcpu.vmexit(0x7B, 0x11, 0x22)
    assert seen[0] == VmExit(1, 0x7B, 0x11, 0x22, seen[0].vmcb)
    assert seen[0].vmcb is vcpu.vmcb
    assert (vcpu.vmcb.exit_code, vcpu.vmcb.exit_info1, vcpu.vmcb.exit_info2) == (0x7B, 0x11, 0x22)
    assert vcpu.register("rcx") == 0xD
    assert vcpu.delivered_events == [0x30] and vcpu.vmcb.event_inj is None  # kept to VMRUN
    vcpu.vmexit(EXIT_HLT)
    assert seen[1] == VmExit(1, EXIT_HLT, 0, 0, seen[1].vmcb)


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP])
def test_an_encrypted_register_guest_shows_the_host_the_exit_and_no_register(mode: Mode) -> None:
    host, guest = _guest(mode, vcpus=2)
    vcpu = guest.vcpus[1]
    seen: list[tuple[VmExit, Vmcb]] = []
    _on_exit(host, lambda cpu, info: seen.append((info, dataclasses.replace(cpu.vmcb))))
    vcpu.inject_event(0x31)
    vcpu.vmexit(0x7B, 0x11, 0x22)
    vcpu.vmexit(EXIT_HLT)
    assert seen == [
        (VmExit(1, 0x7B, 0x11, 0x22, None), Vmcb(0x7B, 0x11, 0x22, {}, 0x31)),
        (VmExit(1, EXIT_HLT, 0, 0, None), Vmcb(EXIT_HLT, 0, 0, {}, None)),
    ]
    assert vcpu.delivered_events == [0x31]


def test_an_encrypted_register_vcpu_needs_a_vmsa_page_to_exit() -> None:
    _, guest = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    vcpu.vmsa_spa = None
    assert vcpu.vmsa_spa is None and vcpu.vmsa_pages() == {}
    vcpu.vmsa_spa = None  # forgetting a page it does not have is no error
    with pytest.raises(StateError) as refused:
        vcpu.vmexit(EXIT_HLT)
    assert str(refused.value) == "vCPU 0 has no VMSA page"


# -- VMRUN's checks --------------------------------------------------------------------------------
def _vmrun_fault(host: Hypervisor, vcpu: Vcpu, tamper: Callable[[Vcpu], None]) -> Fault:
    _on_exit(host, lambda cpu, info: tamper(cpu))
    with pytest.raises(FaultRaised) as refused:
        vcpu.vmexit(EXIT_HLT)
    assert host.machine.faults[-1] is refused.value.fault
    return refused.value.fault


def test_vmrun_refuses_a_page_of_this_guest_that_is_not_a_vmsa() -> None:
    host, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    ram = guest.frames[2]  # assigned to this ASID, not a VMSA
    fault = _vmrun_fault(host, vcpu, lambda cpu: setattr(cpu, "vmsa_spa", ram))
    assert fault == Fault(FaultKind.VMEXIT_INVALID, ram, Who.HOST, 0,
                          "VMRUN: page is not this guest's VMSA in the RMP")


@pytest.mark.parametrize("whose", ["another guest's VMSA", "a page the RMP does not assign"])
def test_vmrun_refuses_another_guests_vmsa_and_a_page_the_rmp_does_not_assign(whose: str) -> None:
    host, guest = _guest(Mode.SEV_SNP)
    other = host.create_vm(Mode.SEV_SNP, 2 * PAGE_SIZE)
    page = other.vcpus[0].vmsa_spa or 0 if whose.startswith("another") else host.allocate_page()
    fault = _vmrun_fault(host, guest.vcpus[0], lambda cpu: setattr(cpu, "vmsa_spa", page))
    assert fault == Fault(FaultKind.VMEXIT_INVALID, page, Who.HOST, 0,
                          "VMRUN: page is not this guest's VMSA in the RMP")


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP])
def test_vmrun_refuses_a_save_area_with_efer_svme_clear(mode: Mode) -> None:
    host, guest = _guest(mode)
    vcpu = guest.vcpus[0]
    spa = vcpu.vmsa_spa or 0
    registers = reset_registers()
    registers.update(efer=0x500, vmpl=0)  # LME|LMA, no SVME

    def rewrite(cpu: Vcpu) -> None:  # as the firmware or a guest debugger could
        host.machine.engine.write(guest.vm.asid, spa, Vmsa(registers).to_bytes())

    fault = _vmrun_fault(host, vcpu, rewrite)
    assert fault == Fault(FaultKind.VMEXIT_INVALID, spa, Who.HOST, 0,
                          "VMRUN: VMSA state is invalid (EFER.SVME clear): it was corrupted")
    assert vcpu.registers is None


def test_only_an_snp_guest_takes_its_vmpl_from_the_vmsa() -> None:
    registers = reset_registers()
    registers.update(vmpl=2, rbx=0xB)
    host = Hypervisor(Machine(32 * MIB))
    guest = host.create_vm(Mode.SEV_ES, 4 * PAGE_SIZE)
    vcpu = guest.vcpus[0]
    if vcpu.registers is None:
        vcpu.vmrun()
    vcpu.install_vmsa(host.allocate_page(), Vmsa(registers))
    vcpu.registers = None
    entered: list[int] = []
    vcpu.entry_code[2] = lambda: entered.append(2)
    vcpu.vmrun()
    assert vcpu.register("rbx") == 0xB  # the given save area, not the running registers
    assert vcpu.vmpl == 0 and entered == []


def test_entry_code_runs_only_when_the_level_changes() -> None:
    _, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    entered: list[int] = []
    vcpu.entry_code[0] = lambda: entered.append(0)
    vcpu.vmexit(EXIT_HLT)
    vcpu.vmexit(EXIT_HLT)
    assert entered == [] and vcpu.vmpl == 0


# -- the VMSA page at launch and the host's choice of level ----------------------------------------
@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV])
def test_a_vmcb_vcpu_has_no_vmsa_to_install(mode: Mode) -> None:
    host, guest = _guest(mode)
    with pytest.raises(StateError) as refused:
        guest.vcpus[0].install_vmsa(host.allocate_page())
    assert str(refused.value) == f"a {mode.value} vCPU keeps its registers in the VMCB"


def test_an_installed_vmsa_holds_the_running_registers_and_is_the_firmwares_in_the_rmp() -> None:
    host, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    vcpu.set_register("r9", 0x99)
    spa = host.allocate_page()
    host.machine.rmp.rmpupdate(spa, assigned=False)
    vcpu.install_vmsa(spa)
    assert vcpu.vmsa_spa == spa
    entry = host.machine.rmp.entry(spa)
    assert (entry.assigned, entry.asid, entry.gpa, entry.validated, entry.vmsa,
            entry.immutable) == (True, guest.vm.asid, VMSA_GPA, True, True, True)
    saved = Vmsa.from_bytes(host.machine.engine.read(guest.vm.asid, spa, PAGE_SIZE))
    assert saved.registers["r9"] == 0x99


@pytest.mark.parametrize("vmpl", [0, 3])
def test_a_vmsa_is_registered_for_vmpl_0_to_3(vmpl: int) -> None:
    _, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    page = vcpu.vmsa_spa or 0
    vcpu.register_vmsa(vmpl, page)
    assert vcpu.vmsa_pages()[vmpl] == page


@pytest.mark.parametrize("vmpl", [-1, 4])
def test_a_vmsa_for_a_vmpl_beyond_3_is_refused(vmpl: int) -> None:
    _, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    with pytest.raises(UsageError) as refused:
        vcpu.register_vmsa(vmpl, vcpu.vmsa_spa or 0)
    assert str(refused.value) == f"VMPL {vmpl} is not 0..3"


def test_register_vmsa_wants_an_assigned_vmsa_page_of_this_asid() -> None:
    host, guest = _guest(Mode.SEV_SNP)
    other = host.create_vm(Mode.SEV_SNP, 2 * PAGE_SIZE)
    vcpu = guest.vcpus[0]
    asid = guest.vm.asid
    for page in (other.vcpus[0].vmsa_spa or 0, guest.frames[1], host.allocate_page()):
        with pytest.raises(StateError) as refused:
            vcpu.register_vmsa(1, page)
        assert str(refused.value) == f"page {page:#x} is not a VMSA page of ASID {asid}"
    assert set(vcpu.vmsa_pages()) == {0}


def test_a_level_is_chosen_between_runs_and_only_one_with_a_vmsa() -> None:
    host, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    with pytest.raises(StateError) as refused:
        vcpu.select_vmpl(0)
    assert str(refused.value) == "vCPU 0 is running: a VMPL is chosen between runs"
    errors: list[str] = []

    def choose(cpu: Vcpu, info: VmExit) -> None:
        with pytest.raises(StateError) as no_vmsa:
            cpu.select_vmpl(2)
        errors.append(str(no_vmsa.value))

    _on_exit(host, choose)
    vcpu.vmexit(EXIT_HLT)
    assert errors == ["vCPU 0 has no VMSA for VMPL2"]


# -- event injection -------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", [0, 255])
def test_vectors_0_to_255_are_injected(vector: int) -> None:
    _, guest = _guest(Mode.SEV)
    vcpu = guest.vcpus[0]
    vcpu.inject_event(vector)
    vcpu.vmexit(EXIT_HLT)
    assert vcpu.delivered_events == [vector]


@pytest.mark.parametrize("vector", [-1, 256])
def test_a_vector_beyond_255_is_refused(vector: int) -> None:
    _, guest = _guest(Mode.SEV)
    with pytest.raises(UsageError) as refused:
        guest.vcpus[0].inject_event(vector)
    assert str(refused.value) == f"interrupt vector {vector} is not 0..255"
    assert guest.vcpus[0].vmcb.event_inj is None


def test_restricted_injection_refuses_the_event_and_logs_the_level_and_asid() -> None:
    host, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    features = int(SevFeatures.SNP_ACTIVE | SevFeatures.RESTRICTED_INJECTION)
    vcpu.set_register("sev_features", features)
    vcpu.inject_event(0x20)
    vcpu.vmexit(EXIT_HLT)
    assert vcpu.delivered_events == [] and vcpu.vmcb.event_inj is None
    assert host.machine.faults == [
        Fault(FaultKind.VMEXIT_INVALID, 0x20, Who.HOST, 0,
              "VMRUN: Restricted Injection refuses a host-injected event", 0, guest.vm.asid)
    ]


def test_restricted_injection_is_an_snp_feature_only() -> None:
    host, guest = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    vcpu.set_register("sev_features", int(SevFeatures.RESTRICTED_INJECTION))
    vcpu.inject_event(0x21)
    vcpu.vmexit(EXIT_HLT)
    assert vcpu.delivered_events == [0x21] and host.machine.faults == []


# -- the GHCB MSR ----------------------------------------------------------------------------------
def test_the_ghcb_msr_resets_to_zero_and_a_protocol_value_is_no_ghcb() -> None:
    _, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    assert vcpu.ghcb_msr == 0  # the MSR's reset value
    with pytest.raises(StateError) as unset:  # 0 is "not set", not a GHCB at GPA 0
        vcpu.ghcb_page()
    assert str(unset.value) == "vCPU 0 has no GHCB registered"
    vcpu.ghcb_msr = 0x5000
    assert vcpu.ghcb_page() == 0x5000
    vcpu.ghcb_msr = 0x5004  # a GHCB MSR protocol request, not a page
    with pytest.raises(StateError) as refused:
        vcpu.ghcb_page()
    assert str(refused.value) == "vCPU 0 has no GHCB registered"


# -- the save-area memo ----------------------------------------------------------------------------
def test_an_unchanged_save_area_is_neither_encrypted_nor_decrypted_again() -> None:
    host, guest = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    calls = _engine_calls(host.machine)
    vcpu.set_register("r8", 8)
    vcpu.vmexit(EXIT_HLT)
    assert calls == ["write"]  # saved; VMRUN finds the bytes it wrote
    vcpu.vmexit(EXIT_HLT)
    assert calls == ["write"]  # nothing changed: nothing to do
    vcpu.set_register("r8", 9)
    vcpu.vmexit(EXIT_HLT)
    assert calls == ["write", "write"]
    old = host.machine.host_read(vcpu.vmsa_spa or 0, PAGE_SIZE)
    vcpu.set_register("r8", 10)
    _on_exit(host, lambda cpu, info: host.machine.host_write(cpu.vmsa_spa or 0, old))
    vcpu.vmexit(EXIT_HLT)
    assert calls == ["write", "write", "write", "read"]  # other bytes: decrypted
    assert vcpu.register("r8") == 9
    host.exit_hooks.clear()
    vcpu.vmexit(EXIT_HLT)
    assert calls == ["write", "write", "write", "read"]  # what it read is known too


def test_a_page_changed_while_the_guest_ran_is_saved_again_even_with_the_same_registers() -> None:
    host, guest = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    spa = vcpu.vmsa_spa or 0
    vcpu.set_register("r12", 1)
    vcpu.vmexit(EXIT_HLT)
    old = host.machine.host_read(spa, PAGE_SIZE)
    vcpu.set_register("r12", 2)
    vcpu.vmexit(EXIT_HLT)
    host.machine.host_write(spa, old)  # while the guest runs
    vcpu.vmexit(EXIT_HLT)  # the same registers, other bytes in the page: saved again
    assert vcpu.register("r12") == 2
    assert host.machine.host_read(spa, PAGE_SIZE) != old


def test_a_register_value_of_an_int_subclass_is_saved_as_a_plain_int() -> None:
    _, guest = _guest(Mode.SEV_SNP)
    vcpu = guest.vcpus[0]
    vcpu.set_register("sev_features", SevFeatures.SNP_ACTIVE)  # not exactly int: the full path
    vcpu.vmexit(EXIT_HLT)
    value = vcpu.register("sev_features")
    assert value == 1 and type(value) is int
    vcpu.vmexit(EXIT_HLT)
    assert vcpu.register("sev_features") == 1


def test_a_register_value_beyond_64_bits_is_refused_at_the_exit() -> None:
    _, guest = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    vcpu.set_register("rax", 1 << 64)
    with pytest.raises(UsageError) as refused:
        vcpu.vmexit(EXIT_HLT)
    assert str(refused.value) == "VMSA.rax: 18446744073709551616 does not fit in 8 bytes"
