"""Register state at exits: the VMCB in the clear, or the encrypted VMSA and the GHCB."""

from __future__ import annotations

import pytest

from cvm.errors import StateError, UsageError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.vmsa import Vmsa
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import FaultKind, FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu, VmExit
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20


def _guest(mode: Mode) -> tuple[Hypervisor, Guest, SevGuest]:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(mode, 8 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 8 * PAGE_SIZE)
    if mode.encrypts_registers:
        kernel.setup_ghcb(7 * PAGE_SIZE)
    return host, guest, kernel


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP])
def test_cpuid_round_trip_in_every_mode(mode: Mode) -> None:
    host, _, kernel = _guest(mode)
    eax, ebx, ecx, _ = kernel.cpuid(0x8000_001F)
    assert (eax, ebx & 0x3F) == (host.cpuid[0x8000_001F][0], 51)
    assert ecx == host.cpuid[0x8000_001F][2]


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP])
def test_ghcb_carries_only_what_the_exit_needs(mode: Mode) -> None:
    host, _, kernel = _guest(mode)
    shared: list[Ghcb] = []

    def spy(g: Guest, vcpu: Vcpu, info: VmExit) -> None:
        assert info.vmcb is None
        if info.exit_code == EXIT_VMGEXIT:
            spa = host.spa_of(g, kernel.ghcb_gpa or 0)
            shared.append(Ghcb.from_bytes(host.machine.host_read(spa, PAGE_SIZE)))

    host.exit_hooks.append(spy)
    kernel.cpu.set_register("rbx", 0x5EC2E7)
    kernel.cpuid(1)
    request_names = {name for name, _ in shared[0].registers}
    assert request_names == {"rax", "rcx", "sw_exitcode"}
    assert all(value != 0x5EC2E7 for _, value in shared[0].registers)


def test_msr_protocol_cpuid_without_a_ghcb() -> None:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(Mode.SEV_ES, 4 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    assert kernel.cpuid(0)[1:] == host.cpuid[0][1:]


def test_sev_es_vmsa_is_ciphertext_and_a_blind_write_breaks_vmrun() -> None:
    host, guest, kernel = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    kernel.cpu.set_register("r12", 0x1122334455667788)
    kernel.halt()
    assert vcpu.vmsa_spa is not None
    page = host.machine.host_read(vcpu.vmsa_spa, PAGE_SIZE)
    assert (0x1122334455667788).to_bytes(8, "little") not in page
    forged = Vmsa({"rip": 0xBAD, "efer": 1 << 12}).to_bytes()

    def corrupt(g: Guest, cpu: Vcpu, info: VmExit) -> None:
        host.machine.host_write(vcpu.vmsa_spa or 0, forged)

    host.exit_hooks.append(corrupt)
    try:
        kernel.halt()
    except FaultRaised as refused:
        assert refused.fault.kind is FaultKind.VMEXIT_INVALID
    else:
        assert kernel.cpu.register("rip") != 0xBAD


def test_registers_exist_only_while_the_guest_runs() -> None:
    host, guest, kernel = _guest(Mode.SEV_SNP)
    seen: list[dict[str, int] | None] = []
    host.exit_hooks.append(lambda g, cpu, info: seen.append(cpu.registers))
    kernel.halt()
    assert seen == [None]
    with pytest.raises(StateError, match="already running"):
        guest.vcpus[0].vmrun()


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP])
def test_a_vmsa_page_off_a_page_boundary_is_refused_at_the_switch(mode: Mode) -> None:
    host, guest, kernel = _guest(mode)
    vcpu = guest.vcpus[0]
    spa = vcpu.vmsa_spa or 0

    def misplace(g: Guest, cpu: Vcpu, info: VmExit) -> None:
        cpu.vmsa_spa = spa + 0x10

    host.exit_hooks.append(misplace)
    with pytest.raises(UsageError, match=f"VMSA page {spa + 0x10:#x} is not page-aligned"):
        kernel.halt()  # VMRUN
    host.exit_hooks.clear()
    vcpu.vmsa_spa = spa
    vcpu.vmrun()
    assert vcpu.register("efer") & 1 << 12
    vcpu.vmsa_spa = spa + 0x10
    with pytest.raises(UsageError, match="not page-aligned"):
        kernel.halt()  # the VMEXIT's save


def test_a_vmsa_the_guest_changed_in_memory_is_read_again_at_vmrun() -> None:
    host, guest, kernel = _guest(Mode.SEV_ES)
    vcpu = guest.vcpus[0]
    kernel.cpu.set_register("r13", 0x1313)
    kernel.halt()  # saved and loaded: the vCPU knows this ciphertext
    spa = vcpu.vmsa_spa or 0
    page = bytearray(host.machine.engine.read(guest.vm.asid, spa, PAGE_SIZE))
    offset = page.index((0x1313).to_bytes(8, "little"))
    page[offset : offset + 8] = (0x3131).to_bytes(8, "little")

    def rewrite(g: Guest, cpu: Vcpu, info: VmExit) -> None:  # as the guest's own write would
        host.machine.engine.write(guest.vm.asid, spa, bytes(page))

    host.exit_hooks.append(rewrite)
    kernel.halt()
    assert kernel.cpu.register("r13") == 0x3131
