"""The SVSM reads a lower level's call arguments and writes its answer at the registers' offsets
in the VMSA page: the other registers and the save area's other contents stay as they were."""

from __future__ import annotations

import pytest

from cvm.errors import StateError
from cvm.formats.snp.vmsa import SevFeatures, Vmsa
from cvm.guest.kernel.sev_guest import SevGuest, vmsa_registers
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import reset_registers
from cvm.hardware.vm import Mode
from cvm.host.vmm import Hypervisor

VMSA1_GPA = 0x6000


def _svsm_and_level1() -> SevGuest:
    host = Hypervisor(Machine(32 << 20))
    guest = host.create_vm(Mode.SEV_SNP, 8 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.setup_ghcb(0x7000)
    registers = reset_registers()
    registers.update(vmpl=1, sev_features=int(SevFeatures.SNP_ACTIVE), rbx=0x1111, rcx=7)
    kernel.create_vmsa(VMSA1_GPA, Vmsa(registers))
    return kernel


def test_fields_are_read_and_written_in_place() -> None:
    kernel = _svsm_and_level1()
    page = kernel.cpu.read(VMSA1_GPA, PAGE_SIZE)
    assert vmsa_registers(page, ("rbx", "rcx", "vmpl")) == {"rbx": 0x1111, "rcx": 7, "vmpl": 1}
    kernel.edit_vmsa(VMSA1_GPA, 1, {"rax": 0xDEAD, "rcx": 0}, page)
    after = Vmsa.from_bytes(kernel.cpu.read(VMSA1_GPA, PAGE_SIZE))
    before = Vmsa.from_bytes(page)
    changed = {name for name in before.registers
               if before.registers[name] != after.registers[name]}
    assert changed == {"rax", "rcx"} and after.registers["rax"] == 0xDEAD
    assert after.blobs == before.blobs
    kernel.leave_to(1)
    assert kernel.cpu.vmpl == 1 and kernel.cpu.register("rax") == 0xDEAD


def test_a_save_area_that_is_not_a_register_is_refused() -> None:
    kernel = _svsm_and_level1()
    with pytest.raises(StateError):
        kernel.edit_vmsa(VMSA1_GPA, 1, {"es": 0})
    with pytest.raises(StateError):
        kernel.edit_vmsa(VMSA1_GPA, 1, {"no such register": 0})
