"""The hypervisor's two ways to a VM: ``create_vm`` (through the host's PSP when it has one, else
the pre-launched shortcut) and ``adopt`` of a VM the launch path built through the PSP."""

from __future__ import annotations

import pytest

from cvm.amd.kds import ChipFuses
from cvm.errors import StateError, StatusError, UsageError
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.page_info import VMSA_GPA, ZERO_DIGEST, PageType, extend
from cvm.formats.snp.vmsa import Vmsa
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware
from cvm.hardware.psp.status import SevStatus
from cvm.hardware.vcpu import EXIT_HLT, Vcpu, VmExit, reset_registers
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.launch import SnpLaunchConfig, launch_sev, launch_snp
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20
SECTIONS = (
    MetadataSection(0x800000, 0x2000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x802000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x803000, 0x1000, SectionType.CPUID),
)


def _host(with_psp: bool = True) -> tuple[Hypervisor, SecureProcessor]:
    machine = Machine(64 * MIB)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x11" * 64))
    return Hypervisor(machine, psp if with_psp else None), psp


def _firmware() -> bytes:
    return build_image(0x10000, sections=SECTIONS, seed=b"adopt")


def test_launched_guest_is_adopted_and_its_exits_reach_the_host() -> None:
    hv, psp = _host()
    seen: list[tuple[Guest, int]] = []
    hv.exit_hooks.append(lambda g, cpu, info: seen.append((g, info.exit_code)))
    launched = launch_snp(hv, psp, _firmware(), SnpLaunchConfig(vcpus=2))
    guest = launched.guest
    assert hv.guests[guest.vm.asid] is guest and guest.handle == launched.handle
    assert [vcpu.index for vcpu in guest.vcpus] == [0, 1]
    vcpu = guest.vcpus[1]
    vcpu.vmrun()
    vcpu.vmexit(EXIT_HLT)
    assert seen == [(guest, EXIT_HLT)] and guest.exits[-1].exit_code == EXIT_HLT
    hv.destroy_vm(guest)
    assert guest.vm.asid not in hv.guests
    with pytest.raises(StatusError) as gone:
        psp.guest_measurement(launched.handle)
    assert gone.value.code == SevStatus.INVALID_GUEST


def test_guest_launched_by_another_psp_is_adopted_without_its_handle() -> None:
    hv, _ = _host(with_psp=False)
    psp = SecureProcessor(hv.machine, ChipFuses("Milan", bytes(64), bytes(64)))
    launched = launch_snp(hv, psp, _firmware())
    assert launched.guest.handle is None
    hv.destroy_vm(launched.guest)
    assert psp.guest_measurement(launched.handle) == launched.measurement


def test_sev_es_launch_is_adopted() -> None:
    hv, psp = _host()
    launched = launch_sev(hv, LegacyFirmware(psp), _firmware(), es=True, vcpus=2)
    assert hv.guests[launched.guest.vm.asid] is launched.guest
    kernel = SevGuest(launched.guest.vcpus[0])
    kernel.cpu.vmrun()
    kernel.halt()
    assert launched.guest.exits[-1].exit_code == EXIT_HLT


def test_adopt_refuses_foreign_or_duplicate_vms() -> None:
    hv, _ = _host()
    other = VirtualMachine(Machine(8 * MIB), 3, Mode.SEV, PAGE_SIZE)
    with pytest.raises(UsageError):
        hv.adopt(other, [], [])
    hv.machine.engine.activate(5)
    vm = VirtualMachine(hv.machine, 5, Mode.SEV, PAGE_SIZE)
    with pytest.raises(UsageError):
        hv.adopt(vm, [Vcpu(other, 0)], [])
    guest = hv.adopt(vm, [Vcpu(vm, 0)], [])
    assert hv.guests[5] is guest
    with pytest.raises(StateError):
        hv.adopt(vm, [], [])
    plain = VirtualMachine(hv.machine, 0, Mode.PLAIN, PAGE_SIZE)
    assert hv.adopt(plain, [], []) is not hv.adopt(plain, [], [])


def test_create_vm_launches_snp_vmsas_through_the_psp() -> None:
    hv, psp = _host()
    guest = hv.create_vm(Mode.SEV_SNP, 8 * PAGE_SIZE, vcpus=3)
    assert guest.handle is not None
    registers = reset_registers()
    registers["sev_features"] = 0x1
    expected = ZERO_DIGEST
    for _ in range(3):
        expected = extend(expected, PageType.VMSA, VMSA_GPA, Vmsa(registers).to_bytes())
    assert psp.guest_measurement(guest.handle) == expected
    plain = Vmsa(registers).to_bytes()
    for vcpu in guest.vcpus:
        assert vcpu.vmsa_spa is not None and vcpu.registers is not None  # running after VMRUN
        entry = hv.machine.rmp.entry(vcpu.vmsa_spa)
        assert entry.assigned and entry.vmsa and entry.asid == guest.vm.asid
        assert hv.machine.host_read(vcpu.vmsa_spa, PAGE_SIZE) != plain
        with pytest.raises(FaultRaised):
            hv.machine.host_write(vcpu.vmsa_spa, bytes(PAGE_SIZE))
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 8 * PAGE_SIZE)
    kernel.setup_ghcb(7 * PAGE_SIZE)
    assert kernel.cpuid(0x8000_001F)[0] == hv.cpuid[0x8000_001F][0]
    hv.destroy_vm(guest)
    with pytest.raises(StatusError):
        psp.guest_measurement(guest.handle)


def test_create_vm_launches_sev_es_vmsas_through_the_psp() -> None:
    hv, _ = _host()
    guest = hv.create_vm(Mode.SEV_ES, 4 * PAGE_SIZE, vcpus=2)
    assert guest.handle is not None and hv.legacy is not None
    kernel = SevGuest(guest.vcpus[1])
    kernel.accept(0, 4 * PAGE_SIZE)
    kernel.setup_ghcb(3 * PAGE_SIZE)
    kernel.cpu.set_register("r12", 0x5EC2E7)
    kernel.halt()
    vcpu = guest.vcpus[1]
    assert vcpu.vmsa_spa is not None
    assert (0x5EC2E7).to_bytes(8, "little") not in hv.machine.host_read(vcpu.vmsa_spa, PAGE_SIZE)
    assert vcpu.register("r12") == 0x5EC2E7
    hv.destroy_vm(guest)
    with pytest.raises(StatusError):
        hv.legacy.decommission(guest.handle)


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP])
def test_without_a_psp_create_vm_is_the_pre_launched_shortcut(mode: Mode) -> None:
    hv, _ = _host(with_psp=False)
    guest = hv.create_vm(mode, 4 * PAGE_SIZE)
    assert guest.handle is None and guest.vcpus[0].registers is not None
    assert (guest.vcpus[0].vmsa_spa is not None) == mode.encrypts_registers
    hv.destroy_vm(guest)


def test_psp_of_another_machine_is_refused() -> None:
    _, psp = _host()
    with pytest.raises(UsageError):
        Hypervisor(Machine(8 * MIB), psp)


def test_exit_reaches_the_right_guest() -> None:
    hv, _ = _host()
    one = hv.create_vm(Mode.SEV_SNP, 2 * PAGE_SIZE)
    two = hv.create_vm(Mode.SEV_ES, 2 * PAGE_SIZE)
    seen: list[tuple[int, VmExit]] = []
    hv.exit_hooks.append(lambda g, cpu, info: seen.append((g.vm.asid, info)))
    two.vcpus[0].vmexit(EXIT_HLT)
    one.vcpus[0].vmexit(EXIT_HLT)
    assert [asid for asid, _ in seen] == [two.vm.asid, one.vm.asid]


@pytest.mark.parametrize("with_psp", [False, True])
def test_destroyed_snp_vmsa_pages_are_never_reused(with_psp: bool) -> None:
    hv, _ = _host(with_psp)
    first = hv.create_vm(Mode.SEV_SNP, 4 * PAGE_SIZE, vcpus=2)
    vmsas = [v.vmsa_spa for v in first.vcpus]
    hv.destroy_vm(first)
    assert hv.leaked == vmsas  # immutable in the RMP: the host cannot take them back
    second = hv.create_vm(Mode.SEV_SNP, 4 * PAGE_SIZE, vcpus=2)
    used = set(second.frames) | {v.vmsa_spa for v in second.vcpus}
    assert used.isdisjoint(vmsas)
    assert set(second.frames) <= set(first.frames)  # the ordinary pages were reclaimed


def test_allocated_pages_are_zeroed_freed_ones_first_then_a_fresh_run() -> None:
    host, _ = _host()
    first = host.allocate_pages(3)
    assert first == [first[0] + i * PAGE_SIZE for i in range(3)]
    for spa in first:
        host.machine.host_write(spa, b"\x5a" * PAGE_SIZE)  # what a VM left there
    host._free.extend(first[:2])
    again = host.allocate_pages(4)
    assert again[:2] == [first[1], first[0]]  # the last freed first
    assert again[2:] == [first[2] + PAGE_SIZE, first[2] + 2 * PAGE_SIZE]
    for spa in again:
        assert host.machine.host_read(spa, PAGE_SIZE) == bytes(PAGE_SIZE)
    assert host.allocate_pages(0) == []
    assert host.allocate_page() == again[-1] + PAGE_SIZE


def test_fresh_pages_beyond_dram_are_refused_and_nothing_is_taken() -> None:
    host, _ = _host()
    freed = host.allocate_page()
    host._free.append(freed)
    fresh = (64 * MIB - host._next_spa) // PAGE_SIZE  # never-used pages left
    asked = fresh + 2
    with pytest.raises(UsageError, match=(
            rf"^the host's DRAM is full: {asked} pages \({asked * PAGE_SIZE >> 20} MiB\) asked, "
            rf"{fresh + 1} \({(fresh + 1) * PAGE_SIZE >> 20} MiB\) free$")):
        host.allocate_pages(asked)
    assert host._free == [freed]
    assert len(host.allocate_pages(fresh + 1)) == fresh + 1  # exactly what is free: taken
    assert host._free == []
