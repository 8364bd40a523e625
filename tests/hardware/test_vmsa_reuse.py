"""A vCPU does not pack, encrypt, decrypt and parse a save area whose page still holds the bytes
it last wrote or read — and that shortcut never hides what the host did to the page."""

from __future__ import annotations

from cvm.hardware.fault import FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_HLT
from cvm.hardware.vm import Mode
from cvm.host.vmm import Hypervisor


def _es_vcpu():  # type: ignore[no-untyped-def]
    host = Hypervisor(Machine(64 << 20))
    guest = host.create_vm(Mode.SEV_ES, 4 * PAGE_SIZE)
    vcpu = guest.vcpus[0]
    if vcpu.registers is None:
        vcpu.vmrun()
    assert vcpu.vmsa_spa is not None
    return host, vcpu, vcpu.vmsa_spa


def test_an_old_ciphertext_written_back_by_the_host_is_what_the_vcpu_resumes_with() -> None:
    host, vcpu, spa = _es_vcpu()
    vcpu.set_register("r12", 1)
    vcpu.vmexit(EXIT_HLT)
    old = host.machine.host_read(spa, PAGE_SIZE)
    vcpu.set_register("r12", 2)
    vcpu.vmexit(EXIT_HLT)
    assert host.machine.host_read(spa, PAGE_SIZE) != old
    assert vcpu.register("r12") == 2
    # The host puts the old ciphertext back while the guest is out; the next VMRUN loads it.
    def replay(guest: object, cpu: object, info: object) -> None:
        host.machine.host_write(spa, old)
    host.exit_hooks.append(replay)
    vcpu.vmexit(EXIT_HLT)
    assert vcpu.register("r12") == 1


def test_an_unchanged_register_file_leaves_the_page_as_it_was_and_junk_is_loaded() -> None:
    host, vcpu, spa = _es_vcpu()
    vcpu.set_register("rbx", 0x1234)
    vcpu.vmexit(EXIT_HLT)
    page = host.machine.host_read(spa, PAGE_SIZE)
    vcpu.vmexit(EXIT_HLT)  # nothing changed: the same ciphertext
    assert host.machine.host_read(spa, PAGE_SIZE) == page and vcpu.register("rbx") == 0x1234

    def garbage(guest: object, cpu: object, info: object) -> None:
        host.machine.host_write(spa, bytes(PAGE_SIZE))
    host.exit_hooks.append(garbage)
    try:
        vcpu.vmexit(EXIT_HLT)  # the page decrypts to junk
    except FaultRaised:
        return  # EFER.SVME came out clear: VMRUN refused it
    assert vcpu.register("rbx") != 0x1234  # or the guest runs on with junk, never the cache
