"""RMP enforcement: validation, VMPL permissions, firmware pages, page-state changes."""

from __future__ import annotations

import pytest

from cvm.errors import PolicyError, StateError, StatusError, UsageError
from cvm.formats.snp.vmsa import SevFeatures, Vmsa
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import (
    PFERR_ENC,
    PFERR_RMP,
    PFERR_VMPL,
    PFERR_WRITE,
    VC_PAGE_NOT_VALIDATED,
    Fault,
    FaultKind,
    FaultRaised,
    Who,
)
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import Perm, Rmp, RmpStatus
from cvm.hardware.vcpu import EXIT_HLT, reset_registers
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20


def _snp(pages: int = 8) -> tuple[Hypervisor, Guest, SevGuest]:
    host = Hypervisor(Machine(32 * MIB))
    guest = host.create_vm(Mode.SEV_SNP, pages * PAGE_SIZE)
    return host, guest, SevGuest(guest.vcpus[0])


def test_unvalidated_private_access_raises_vc_0x404() -> None:
    host, guest, kernel = _snp()
    guest.vm.set_private(0x1000, True)
    with pytest.raises(FaultRaised) as raised:
        kernel.cpu.read(0x1000, 16)
    assert raised.value.fault.kind is FaultKind.VC
    assert raised.value.fault.error_code == VC_PAGE_NOT_VALIDATED
    assert host.machine.faults[-1] == raised.value.fault


def test_validated_page_round_trips() -> None:
    _, _, kernel = _snp()
    kernel.accept(0x1000)
    kernel.cpu.write(0x1010, b"secret")
    assert kernel.cpu.read(0x1010, 6) == b"secret"


def test_double_validation_is_detected_and_refused() -> None:
    host, guest, kernel = _snp()
    kernel.accept(0x1000)
    # The host assigns a fresh page for the same guest address and remaps it: the trick needs
    # the guest to validate 0x1000 a second time.
    fresh = host.allocate_page()
    host.machine.rmp.rmpupdate(fresh, assigned=True, asid=guest.vm.asid, gpa=0x1000)
    guest.vm.map(0x1000, fresh)
    with pytest.raises(PolicyError, match="already validated"):
        kernel.pvalidate(0x1000, validate=True)


def test_pvalidate_reports_no_change_with_carry() -> None:
    rmp = Rmp()
    assert rmp.rmpupdate(0x5000, assigned=True, asid=3, gpa=0x2000) is RmpStatus.SUCCESS
    assert rmp.pvalidate(3, 0x2000, 0x5000, True) == (RmpStatus.SUCCESS, False)
    assert rmp.pvalidate(3, 0x2000, 0x5000, True) == (RmpStatus.SUCCESS, True)
    assert rmp.pvalidate(4, 0x2000, 0x5000, True)[0] is RmpStatus.FAIL_INPUT
    assert rmp.pvalidate(3, 0x3000, 0x5000, True)[0] is RmpStatus.FAIL_INPUT


def test_rmpupdate_clears_validation_and_refuses_immutable_pages() -> None:
    rmp = Rmp()
    rmp.rmpupdate(0x5000, assigned=True, asid=3, gpa=0x2000)
    rmp.pvalidate(3, 0x2000, 0x5000, True)
    rmp.rmpupdate(0x5000, assigned=True, asid=3, gpa=0x2000)
    assert not rmp.entry(0x5000).validated
    rmp.firmware_own(0x6000)
    assert rmp.rmpupdate(0x6000, assigned=False) is RmpStatus.FAIL_PERMISSION
    assert rmp.rmpupdate(0x6001, assigned=False) is RmpStatus.FAIL_INPUT


def _vmpl1(kernel: SevGuest) -> None:
    """VMPL0 creates a VMPL1 VMSA for its vCPU and switches to it (the hardware's switch)."""
    registers = reset_registers()
    registers.update(vmpl=1, sev_features=int(SevFeatures.SNP_ACTIVE))
    kernel.setup_ghcb(0x7000)
    kernel.create_vmsa(0x6000, Vmsa(registers))
    kernel.leave_to(1)
    assert kernel.cpu.vmpl == 1


def test_rmpadjust_grants_lower_vmpls_no_more_than_vmpl0_has() -> None:
    host, guest, kernel = _snp()
    kernel.accept(0x1000)
    kernel.cpu.write(0x1000, b"vmpl0 only")
    _vmpl1(kernel)
    with pytest.raises(FaultRaised) as raised:
        kernel.cpu.read(0x1000, 4)
    assert raised.value.fault.kind is FaultKind.NPF and raised.value.fault.vmpl == 1
    assert raised.value.fault.error_code & (1 << 36)  # the VMPL bit
    # VMPL1 cannot grant itself anything, nor VMPL0 anything.
    with pytest.raises(StatusError, match="FAIL_PERMISSION"):
        kernel.rmpadjust(0x1000, 1, Perm.READ)
    kernel.run_vmpl(0)
    assert kernel.cpu.vmpl == 0
    kernel.rmpadjust(0x1000, 1, Perm.READ)
    kernel.leave_to(1)
    assert kernel.cpu.read(0x1000, 5) == b"vmpl0"
    with pytest.raises(FaultRaised):
        kernel.cpu.write(0x1000, b"x")
    rmp = host.machine.rmp
    spa = host.spa_of(guest, 0x1000)
    assert rmp.rmpadjust(guest.vm.asid, 0x1000, spa, 1, 2, Perm.WRITE) is RmpStatus.FAIL_PERMISSION
    assert rmp.rmpadjust(guest.vm.asid, 0x1000, spa, 0, 0, Perm.READ) is RmpStatus.FAIL_PERMISSION


def test_host_cannot_write_firmware_pages_at_all() -> None:
    host, guest, _ = _snp()
    vmsa = guest.vcpus[0].vmsa_spa
    assert vmsa is not None
    with pytest.raises(FaultRaised) as raised:
        host.machine.host_write(vmsa, b"\0")
    assert raised.value.fault.kind is FaultKind.HOST_PF
    page = host.allocate_page()
    host.machine.rmp.firmware_own(page)
    with pytest.raises(FaultRaised, match="firmware"):
        host.machine.host_write(page, b"\0")


def test_page_state_change_to_shared_and_back() -> None:
    host, guest, kernel = _snp()
    kernel.accept(0, 8 * PAGE_SIZE)
    kernel.make_shared(0x3000)
    kernel.cpu.write(0x3000, b"shared with host")
    assert host.machine.host_read(host.spa_of(guest, 0x3000), 16) == b"shared with host"
    kernel.make_private(0x3000)
    kernel.cpu.write(0x3000, b"private again")
    assert b"private again" not in host.machine.host_read(host.spa_of(guest, 0x3000), PAGE_SIZE)
    assert kernel.cpu.read(0x3000, 13) == b"private again"


def test_shared_access_to_an_assigned_page_faults() -> None:
    _, _, kernel = _snp()
    with pytest.raises(FaultRaised) as raised:
        kernel.cpu.read(0x2000, 4)  # C-bit clear, page still assigned to the guest
    assert raised.value.fault.kind is FaultKind.NPF


def test_unmapped_guest_page_faults_with_npf() -> None:
    _, guest, kernel = _snp()
    del guest.vm.nested[2]
    with pytest.raises(FaultRaised) as raised:
        kernel.cpu.read(0x2000, 4)
    assert raised.value.fault.kind is FaultKind.NPF


def test_bad_input_is_a_clear_error() -> None:
    host, guest, kernel = _snp()
    with pytest.raises(UsageError, match="0x8000"):
        kernel.cpu.read(0x8000, 1)
    with pytest.raises(UsageError, match="not page-aligned"):
        guest.vm.map(0x1000, 0x1234)
    with pytest.raises(UsageError, match="unknown mode 'tdx'"):
        Mode.parse("tdx")
    with pytest.raises(StateError, match=f"ASID {guest.vm.asid}"):
        host.create_vm(Mode.SEV, PAGE_SIZE, asid=guest.vm.asid)
    with pytest.raises(UsageError, match="0x1001"):
        host.create_vm(Mode.SEV, 0x1001)
    with pytest.raises(UsageError, match="page-aligned"):
        host.machine.engine.write_pages(guest.vm.asid, 0x1100, bytes(PAGE_SIZE))


def test_page_state_change_through_the_ghcb_batches_pages() -> None:
    host, guest, kernel = _snp()
    kernel.accept(0, 8 * PAGE_SIZE)
    kernel.setup_ghcb(7 * PAGE_SIZE)
    kernel.make_shared(0x2000, pages=3)
    for gpa in (0x2000, 0x3000, 0x4000):
        assert not host.machine.rmp.entry(host.spa_of(guest, gpa)).assigned
    kernel.make_private(0x2000, pages=3)
    assert all(host.machine.rmp.entry(host.spa_of(guest, g)).validated for g in (0x2000, 0x4000))


def test_a_vmsa_page_refuses_guest_writes_at_every_vmpl() -> None:
    """APM vol. 2 §15.36.10: a page whose RMP entry has the VMSA bit is written only by the
    world switch; a guest write to it is an RMP violation (#NPF), whatever its VMPL holds."""
    rmp = Rmp()
    rmp.firmware_assign(0x7000, 5, 0x3000, vmsa=True)
    assert rmp.check_guest_access(5, 0x3000, 0x7000, write=False, private=True, vmpl=0) is None
    for vmpl in range(4):
        rmp.entry(0x7000).perms[vmpl] = Perm.all()
        fault = rmp.check_guest_access(5, 0x3010, 0x7010, write=True, private=True, vmpl=vmpl)
        assert fault is not None and fault.kind is FaultKind.NPF
        assert fault.error_code == PFERR_RMP | PFERR_ENC | PFERR_WRITE
        assert fault.reason == "write to a VMSA page" and fault.vmpl == vmpl
    rmp.firmware_assign(0x8000, 5, 0x4000)
    assert rmp.check_guest_access(5, 0x4000, 0x8000, write=True, private=True, vmpl=0) is None
    assert rmp.rmpupdate(0x7000, assigned=False) is RmpStatus.FAIL_PERMISSION


def test_a_guest_cannot_write_a_vmsa_page_mapped_into_it() -> None:
    host, guest, kernel = _snp()
    kernel.accept(0, 8 * PAGE_SIZE)
    vmsa = guest.vcpus[0].vmsa_spa
    assert vmsa is not None
    before = host.machine.host_read(vmsa, PAGE_SIZE)
    # the VMSA page, as the RMP sees it, placed at a guest address (as an SVSM keeps the VMSA
    # of a lower VMPL in its own memory)
    host.machine.rmp.firmware_assign(vmsa, guest.vm.asid, 0x5000, vmsa=True)
    guest.vm.map(0x5000, vmsa)
    assert len(kernel.cpu.read(0x5000, 16)) == 16
    with pytest.raises(FaultRaised) as raised:
        kernel.cpu.write(0x5000, b"rip := attacker")
    assert raised.value.fault.kind is FaultKind.NPF
    assert raised.value.fault.reason == "write to a VMSA page"
    assert host.machine.faults[-1] == raised.value.fault
    assert host.machine.host_read(vmsa, PAGE_SIZE) == before


def test_firmware_owned_pages_are_immutable_and_nobody_elses() -> None:
    rmp = Rmp()
    rmp.rmpupdate(0x9000, assigned=True, asid=5, gpa=0x2000)
    rmp.firmware_own(0x9000)
    entry = rmp.entry(0x9000)
    assert (entry.assigned, entry.asid, entry.gpa, entry.immutable, entry.validated,
            entry.vmsa) == (True, 0, 0, True, False, False)
    assert rmp.rmpupdate(0x9000, assigned=False) is RmpStatus.FAIL_PERMISSION
    assert rmp.rmpupdate(0x9000, assigned=True, asid=5, gpa=0x2000) is RmpStatus.FAIL_PERMISSION
    fault = rmp.check_guest_access(5, 0x2000, 0x9000, write=False, private=True, vmpl=0)
    assert fault is not None and fault.kind is FaultKind.NPF
    host = rmp.check_host_write(0x9000)
    assert host is not None and "the firmware" in host.reason


def test_rmpadjust_refuses_vmpl4_and_another_guests_page() -> None:
    rmp = Rmp()
    rmp.firmware_assign(0x7000, 5, 0x3000)
    assert rmp.rmpadjust(5, 0x3000, 0x7000, 0, 4, Perm.READ) is RmpStatus.FAIL_PERMISSION
    assert rmp.rmpadjust(6, 0x3000, 0x7000, 0, 1, Perm.READ) is RmpStatus.FAIL_INPUT
    assert rmp.rmpadjust(5, 0x3000, 0x7000, 0, 3, Perm.READ) is RmpStatus.SUCCESS


def test_vmpl0_holds_every_permission_and_may_grant_all_of_it() -> None:
    """A fresh page gives VMPL0 the five permission bits of RMPADJUST RDX[15:8] and the lower
    VMPLs none; VMPL0 may pass all five on, shadow-stack included."""
    assert int(Perm.all()) == 0b1_1111
    rmp = Rmp()
    rmp.firmware_assign(0x7000, 5, 0x3000)
    assert rmp.entry(0x7000).perms == [Perm.all(), Perm(0), Perm(0), Perm(0)]
    assert rmp.rmpadjust(5, 0x3000, 0x7000, 0, 1, Perm.all()) is RmpStatus.SUCCESS
    assert rmp.rmpadjust(5, 0x3000, 0x7000, 1, 2, Perm.SHADOW_STACK) is RmpStatus.SUCCESS
    assert rmp.entry(0x7000).perms[2] == Perm.SHADOW_STACK


def test_rmpupdate_assigns_to_asid_0_by_default_and_keeps_the_immutable_bit() -> None:
    rmp = Rmp()
    assert rmp.rmpupdate(0x4000, assigned=True) is RmpStatus.SUCCESS
    assert (rmp.entry(0x4000).assigned, rmp.entry(0x4000).asid) == (True, 0)
    host = rmp.check_host_write(0x4000)
    assert host is not None and host.reason == "RMP violation: page is assigned to the firmware"
    assert rmp.rmpupdate(0x5000, assigned=True, asid=3, gpa=0x2000, immutable=True) is (
        RmpStatus.SUCCESS
    )
    assert rmp.entry(0x5000).immutable
    assert rmp.rmpupdate(0x5000, assigned=False) is RmpStatus.FAIL_PERMISSION
    # returning a page the host already owns is not an error
    assert rmp.rmpupdate(0x6000, assigned=False) is RmpStatus.SUCCESS
    assert rmp.rmpupdate(0x4000, assigned=False) is RmpStatus.SUCCESS
    assert not rmp.entry(0x4000).assigned


def test_pvalidate_failures_never_set_the_carry() -> None:
    """PVALIDATE sets rFLAGS.CF only on success without a change (APM vol. 3, PVALIDATE)."""
    rmp = Rmp()
    assert rmp.pvalidate(3, 0x2000, 0x5000, True) == (RmpStatus.FAIL_INPUT, False)  # unassigned
    rmp.rmpupdate(0x5000, assigned=True, asid=3, gpa=0x2000)
    assert rmp.pvalidate(4, 0x2000, 0x5000, True) == (RmpStatus.FAIL_INPUT, False)
    rmp.entry(0x5000).page_size_2m = True
    assert rmp.pvalidate(3, 0x2000, 0x5000, True) == (RmpStatus.FAIL_SIZEMISMATCH, False)
    assert not rmp.entry(0x5000).validated


def test_rmpadjust_needs_an_assigned_page_and_leaves_the_vmsa_bit_clear() -> None:
    rmp = Rmp()
    assert rmp.rmpadjust(5, 0x3000, 0x7000, 0, 1, Perm.READ) is RmpStatus.FAIL_INPUT
    rmp.firmware_assign(0x7000, 5, 0x3000)
    assert rmp.rmpadjust(5, 0x3000, 0x7000, 0, 1, Perm.READ) is RmpStatus.SUCCESS
    assert not rmp.entry(0x7000).vmsa
    assert rmp.check_guest_access(5, 0x3000, 0x7000, write=True, private=True, vmpl=0) is None


def test_host_write_faults_name_the_owner_and_carry_the_rmp_write_bits() -> None:
    rmp = Rmp()
    assert rmp.check_host_write(0x9000) is None
    rmp.rmpupdate(0x9000, assigned=True, asid=5, gpa=0x2000)
    assert rmp.check_host_write(0x9123) == Fault(
        FaultKind.HOST_PF, 0x9123, Who.HOST, PFERR_RMP | PFERR_WRITE,
        "RMP violation: page is assigned to ASID 5",
    )


def test_every_guest_access_fault_is_the_architectural_record() -> None:
    """Each refusal of :meth:`Rmp.check_guest_access`, field by field: kind, address, error
    code (the write bit only for writes), reason, VMPL and ASID."""
    rmp = Rmp()
    rmp.firmware_assign(0x7000, 5, 0x3000)  # validated, guest 5 at GPA 0x3000
    rmp.rmpupdate(0x8000, assigned=True, asid=5, gpa=0x4000)  # not validated

    def access(asid: int, gpa: int, spa: int, write: bool, private: bool, vmpl: int) -> object:
        return rmp.check_guest_access(asid, gpa, spa, write=write, private=private, vmpl=vmpl)

    def npf(gpa: int, bits: int, reason: str, vmpl: int, asid: int) -> Fault:
        return Fault(FaultKind.NPF, gpa, Who.GUEST, bits, reason, vmpl, asid)

    assert access(5, 0x3008, 0x7008, False, True, 0) is None
    assert access(5, 0x3008, 0x7008, False, False, 0) == npf(
        0x3008, PFERR_RMP, "shared access to a page assigned to a guest", 0, 5
    )
    assert access(5, 0xA000, 0xA000, True, False, 0) is None  # a host page, shared
    # another guest, at the very GPA the page belongs to
    assert access(6, 0x3008, 0x7008, False, True, 1) == npf(
        0x3008, PFERR_RMP | PFERR_ENC, "private access to a page not assigned to this guest", 1, 6
    )
    assert access(5, 0xA000, 0xA000, True, True, 0) == npf(
        0xA000, PFERR_RMP | PFERR_ENC | PFERR_WRITE,
        "private access to a page not assigned to this guest", 0, 5,
    )
    # the host mapped the guest's page at another GPA
    assert access(5, 0x5010, 0x7010, False, True, 2) == npf(
        0x5010, PFERR_RMP | PFERR_ENC,
        "nested mapping does not match the RMP: page belongs to GPA 0x3000", 2, 5,
    )
    assert access(5, 0x4010, 0x8010, True, True, 1) == Fault(
        FaultKind.VC, 0x4010, Who.GUEST, VC_PAGE_NOT_VALIDATED, "page not validated", 1, 5
    )
    assert access(5, 0x3010, 0x7010, True, True, 3) == npf(
        0x3010, PFERR_RMP | PFERR_ENC | PFERR_VMPL | PFERR_WRITE,
        "VMPL3 lacks WRITE permission", 3, 5,
    )
    assert access(5, 0x3010, 0x7010, False, True, 1) == npf(
        0x3010, PFERR_RMP | PFERR_ENC | PFERR_VMPL, "VMPL1 lacks READ permission", 1, 5
    )


def test_each_refusal_of_a_write_carries_the_write_bit_and_the_writers_asid() -> None:
    """The write twin of every NPF above: each refusal sets PFERR_WRITE for a write, and
    names the VMPL and ASID of the access."""
    rmp = Rmp()
    rmp.firmware_assign(0x7000, 5, 0x3000)
    rmp.firmware_assign(0x9000, 5, 0x6000, vmsa=True)

    def write(asid: int, gpa: int, spa: int, private: bool, vmpl: int) -> object:
        return rmp.check_guest_access(asid, gpa, spa, write=True, private=private, vmpl=vmpl)

    def npf(gpa: int, bits: int, reason: str, vmpl: int, asid: int) -> Fault:
        return Fault(FaultKind.NPF, gpa, Who.GUEST, bits | PFERR_WRITE, reason, vmpl, asid)

    assert write(5, 0x3008, 0x7008, False, 2) == npf(
        0x3008, PFERR_RMP, "shared access to a page assigned to a guest", 2, 5)
    assert write(5, 0x5010, 0x7010, True, 0) == npf(
        0x5010, PFERR_RMP | PFERR_ENC,
        "nested mapping does not match the RMP: page belongs to GPA 0x3000", 0, 5)
    assert write(5, 0x6020, 0x9020, True, 1) == npf(
        0x6020, PFERR_RMP | PFERR_ENC, "write to a VMSA page", 1, 5)


def test_a_vmsa_page_in_use_refuses_every_rmp_change_until_the_exit() -> None:
    """APM vol. 2 §15.36.12: from VMRUN until #VMEXIT a VMSA page is in use; RMPUPDATE,
    RMPADJUST and PVALIDATE of it fail with FAIL_INUSE, and work again once it is released."""
    rmp = Rmp()
    rmp.rmpupdate(0x9000, assigned=True, asid=5, gpa=0x3000)
    assert rmp.pvalidate(5, 0x3000, 0x9000, True) == (RmpStatus.SUCCESS, False)
    assert rmp.rmpadjust(5, 0x3000, 0x9000, 0, 1, Perm.READ, vmsa=True) is RmpStatus.SUCCESS
    rmp.enter_vmsa(0x9000)
    assert rmp.in_use(0x9abc) and not rmp.in_use(0xa000) and not rmp.in_use(0x8fff)
    before = (rmp.entry(0x9000).assigned, rmp.entry(0x9000).vmsa, rmp.entry(0x9000).validated)
    assert rmp.rmpupdate(0x9000, assigned=False) is RmpStatus.FAIL_INUSE
    assert rmp.rmpupdate(0x9000, assigned=True, asid=6, gpa=0x3000) is RmpStatus.FAIL_INUSE
    assert rmp.rmpupdate_pages([0x9000], [0x3000], 6) == (RmpStatus.FAIL_INUSE, 0)
    assert rmp.rmpadjust(5, 0x3000, 0x9000, 0, 1, Perm.READ) is RmpStatus.FAIL_INUSE
    assert rmp.pvalidate(5, 0x3000, 0x9000, False) == (RmpStatus.FAIL_INUSE, False)
    after = rmp.entry(0x9000)
    assert (after.assigned, after.vmsa, after.validated) == before == (True, True, True)
    assert after.asid == 5 and after.perms[1] == Perm.READ
    # Another page of the same guest is not in use.
    rmp.rmpupdate(0xa000, assigned=True, asid=5, gpa=0x4000)
    assert rmp.pvalidate(5, 0x4000, 0xa000, True) == (RmpStatus.SUCCESS, False)
    rmp.leave_vmsa(0x9000)
    assert not rmp.in_use(0x9000)
    assert rmp.rmpadjust(5, 0x3000, 0x9000, 0, 1, Perm.READ) is RmpStatus.SUCCESS
    assert not rmp.entry(0x9000).vmsa
    assert rmp.pvalidate(5, 0x3000, 0x9000, False) == (RmpStatus.SUCCESS, False)
    assert rmp.rmpupdate(0x9000, assigned=False) is RmpStatus.SUCCESS


def test_the_vmsa_a_vcpu_runs_on_is_in_use_only_while_it_runs() -> None:
    """VMRUN marks the page in use, #VMEXIT releases it: the host, in its exit handler, may
    reclaim a guest-made VMSA page, but not one a vCPU is running on."""
    host, guest, kernel = _snp()
    vcpu = guest.vcpus[0]
    if vcpu.registers is None:
        vcpu.vmrun()
    spa = vcpu.vmsa_spa
    assert spa is not None and host.machine.rmp.in_use(spa)
    seen: list[bool] = []

    def look(guest: object, cpu: object, info: object) -> None:
        seen.append(host.machine.rmp.in_use(spa))
    host.exit_hooks.append(look)
    vcpu.vmexit(EXIT_HLT)
    assert seen == [False] and host.machine.rmp.in_use(spa)  # out during the exit, in again
    # A new save area installed under the running vCPU takes the old one's place.
    fresh = host.allocate_page()
    vcpu.install_vmsa(fresh)
    assert host.machine.rmp.in_use(fresh) and not host.machine.rmp.in_use(spa)
    vcpu.vmexit(EXIT_HLT)
    assert seen == [False, False] and host.machine.rmp.in_use(fresh)
    # A page the guest made a VMSA (not immutable, unlike a launch VMSA): the host's
    # RMPUPDATE is refused while a vCPU runs on it.
    kernel.accept(0, 8 * PAGE_SIZE)
    page = host.spa_of(guest, 0x2000)
    rmp = host.machine.rmp
    assert rmp.rmpadjust(guest.vm.asid, 0x2000, page, 0, 1, Perm(0), vmsa=True) is RmpStatus.SUCCESS
    rmp.enter_vmsa(page)
    assert rmp.rmpupdate(page, assigned=False) is RmpStatus.FAIL_INUSE
    assert rmp.entry(page).assigned and rmp.entry(page).vmsa
    rmp.leave_vmsa(page)
    assert rmp.rmpupdate(page, assigned=False) is RmpStatus.SUCCESS
