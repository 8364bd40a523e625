"""The VMPL switch as the hardware does it: one VMSA per level, entered by the host on the
guest's "run VMPL" request; event injection and Restricted Injection."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, StateError, StatusError
from cvm.formats.snp.vmsa import SevFeatures, Vmsa
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import FaultKind, FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import Perm
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu, VmExit, reset_registers
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20
VMSA1_GPA = 0x6000


def _snp(mode: Mode = Mode.SEV_SNP) -> tuple[Hypervisor, Guest, SevGuest]:
    host = Hypervisor(Machine(32 * MIB))
    guest = host.create_vm(mode, 8 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    if mode.encrypts_registers:
        kernel.setup_ghcb(0x7000)
    return host, guest, kernel


def _vmsa1(features: int = int(SevFeatures.SNP_ACTIVE)) -> Vmsa:
    registers = reset_registers()
    registers.update(vmpl=1, sev_features=features, rbx=0x1111)
    return Vmsa(registers)


def test_each_level_has_its_own_registers_and_the_level_comes_from_the_vmsa() -> None:
    _, _, kernel = _snp()
    cpu = kernel.cpu
    cpu.set_register("rbx", 0xAAAA)
    kernel.create_vmsa(VMSA1_GPA, _vmsa1())
    assert set(cpu.vmsa_pages()) == {0, 1}
    kernel.leave_to(1)
    assert cpu.vmpl == 1 and cpu.register("rbx") == 0x1111
    cpu.set_register("rbx", 0x2222)
    kernel.run_vmpl(0)
    assert cpu.vmpl == 0 and cpu.register("rbx") == 0xAAAA
    kernel.leave_to(1)
    assert cpu.vmpl == 1 and cpu.register("rbx") == 0x2222


def test_entry_code_runs_on_a_switch_and_sees_the_callers_vmsa() -> None:
    _, _, kernel = _snp()
    cpu = kernel.cpu
    kernel.create_vmsa(VMSA1_GPA, _vmsa1())
    seen: list[int] = []

    def svsm() -> None:
        assert cpu.vmpl == 0
        caller = Vmsa.from_bytes(cpu.read(VMSA1_GPA, PAGE_SIZE))
        seen.append(caller.registers["rax"])
        kernel.edit_vmsa(VMSA1_GPA, 1, {"rax": 0})
        kernel.leave_to(1)

    cpu.entry_code[0] = svsm
    kernel.leave_to(1)
    cpu.set_register("rax", 2 << 32 | 1)
    kernel.run_vmpl(0)
    assert seen == [2 << 32 | 1]
    assert cpu.vmpl == 1 and cpu.register("rax") == 0


def test_the_host_sees_no_register_at_a_switch() -> None:
    host, _, kernel = _snp()
    exits: list[VmExit] = []
    host.exit_hooks.append(lambda g, v, info: exits.append(info))
    kernel.create_vmsa(VMSA1_GPA, _vmsa1())
    kernel.leave_to(1)
    kernel.cpu.set_register("rcx", 0x5EC2E7)
    kernel.run_vmpl(0)
    assert exits and all(info.vmcb is None for info in exits)


def test_a_lower_level_cannot_create_a_vmsa_and_the_host_cannot_run_a_normal_page() -> None:
    host, guest, kernel = _snp()
    kernel.accept(0x3000)
    kernel.create_vmsa(VMSA1_GPA, _vmsa1())
    kernel.leave_to(1)
    with pytest.raises(StatusError, match="FAIL_PERMISSION"):  # only VMPL0 makes VMSAs
        kernel.rmpadjust(0x3000, 2, Perm(0), vmsa=True)
    kernel.run_vmpl(0)
    cpu: Vcpu = kernel.cpu
    kernel.accept(0x5000)
    with pytest.raises(StateError, match="not a VMSA page"):
        cpu.register_vmsa(2, host.spa_of(guest, 0x5000))
    with pytest.raises(FaultRaised) as refused:  # the RMP refuses writes to a VMSA page
        cpu.write(VMSA1_GPA, b"\0")
    assert refused.value.fault.kind is FaultKind.NPF


def test_switch_requests_the_host_cannot_honour_are_refused() -> None:
    _, _, kernel = _snp()
    with pytest.raises(StatusError, match="refused to run VMPL2"):
        kernel.run_vmpl(2)
    assert kernel.cpu.vmpl == 0
    _, guest, _ = _snp(Mode.SEV_ES)
    with pytest.raises(StateError, match="no VMPLs"):
        guest.vcpus[0].register_vmsa(1, 0x10_0000)


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP])
def test_an_injected_event_is_delivered_even_with_interrupts_masked(mode: Mode) -> None:
    _, _, kernel = _snp(mode)
    cpu = kernel.cpu
    cpu.set_register("rflags", 0x2)  # IF clear
    cpu.inject_event(0x20)
    kernel.halt()
    assert cpu.delivered_events == [0x20]


def test_restricted_injection_refuses_a_host_injected_event() -> None:
    host, _, kernel = _snp()
    features = int(SevFeatures.SNP_ACTIVE | SevFeatures.RESTRICTED_INJECTION)
    kernel.create_vmsa(VMSA1_GPA, _vmsa1(features))
    kernel.leave_to(1)
    kernel.cpu.inject_event(0x20)
    kernel.halt()
    assert kernel.cpu.delivered_events == []
    assert "Restricted Injection" in host.machine.faults[-1].reason


@pytest.mark.parametrize("value", [(1 << 64) | 0x016, -(1 << 64) + 0x016])
def test_a_run_vmpl_request_beyond_64_bits_is_refused_as_the_msr_decoder_refuses(
    value: int,
) -> None:
    _, _, kernel = _snp()
    kernel.cpu.ghcb_msr = value
    with pytest.raises(FormatError, match="not 64 bits"):
        kernel.cpu.vmexit(EXIT_VMGEXIT)


@pytest.mark.parametrize(("answer", "error"), [
    (0x005, StatusError), (0x017 | 1 << 32, StatusError), (0x017 | 1 << 64, FormatError)])
def test_a_run_vmpl_answer_other_than_success_is_refused(
    answer: int, error: type[Exception]
) -> None:
    _, _, kernel = _snp()
    host_handler = kernel.cpu.exit_handler
    assert host_handler is not None

    def answer_otherwise(vcpu: Vcpu, info: VmExit) -> None:
        host_handler(vcpu, info)
        vcpu.ghcb_msr = answer  # a CPUID response / error code 1 / beyond 64 bits

    kernel.cpu.exit_handler = answer_otherwise
    with pytest.raises(error):
        kernel.run_vmpl(0)
