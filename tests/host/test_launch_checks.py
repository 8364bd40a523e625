"""The host's launch path, checked against what does not come from it: the launch digest the
owner predicts, the pages the guest reads through its own vCPU, the RMP, and the PSP's refusals.

Each test fails when one of ``cvm.host.launch``'s checks or choices is removed: the relay's
answer and what it forwards, the ASID it takes, the pages it stages and where, the RAM around
the launched pages, the SEV and SEV-ES launches' RAM and their decommission with the VM.
"""

from __future__ import annotations

import pytest

from cvm.amd.kds import ChipFuses
from cvm.errors import StateError, StatusError, UsageError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.page_info import VMSA_GPA
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.engine import MAX_ASID
from cvm.hardware.memory.rmp import RmpStatus
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware, measure_mac
from cvm.hardware.psp.status import SevStatus
from cvm.hardware.vcpu import EXIT_HLT, EXIT_VMGEXIT
from cvm.hardware.vm import Mode
from cvm.host.launch import (
    NAE_SNP_GUEST_REQUEST,
    GuestRequestRelay,
    SnpLaunch,
    SnpLaunchConfig,
    host_cpuid_page,
    launch_sev,
    launch_snp,
    launch_snp_svsm,
)
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig, sev_es_launch_digest, snp_launch_digest
from cvm.image.svsm_measurement import build_svsm_image

MIB = 1 << 20
MILAN = 0x00A00F11
SECTIONS = (
    MetadataSection(0x800000, 0x2000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x802000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x803000, 0x1000, SectionType.CPUID),
    MetadataSection(0x804000, 0x1000, SectionType.SNP_KERNEL_HASHES),
)
HASH_AREA = SevArea(0x804C00, 0x400)
TIK = bytes(range(16))


def _host(dram: int = 64 * MIB) -> tuple[Hypervisor, SecureProcessor]:
    machine = Machine(dram)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x21" * 64))
    return Hypervisor(machine, psp), psp


def _firmware(**options: object) -> bytes:
    return build_image(0x10000, **{"sections": SECTIONS, "sev_hash_table": HASH_AREA,
                                   "seed": b"launch checks", **options})  # type: ignore[arg-type]


def _guest_reads(launched: SnpLaunch, gpa: int, size: int = PAGE_SIZE) -> bytes:
    """``size`` bytes at ``gpa`` as vCPU 0 of the launched guest reads them (C-bit set)."""
    vcpu = launched.guest.vcpus[0]
    if vcpu.registers is None:
        vcpu.vmrun()
    launched.guest.vm.set_private(gpa, True)
    return vcpu.read(gpa, size)


# -- the guest-request relay --------------------------------------------------------------------
def _relayed() -> tuple[SnpLaunch, GuestRequestRelay, GuestRequester]:
    hv, psp = _host()
    relay = GuestRequestRelay(psp)
    launched = launch_snp(hv, psp, _firmware(), SnpLaunchConfig(), relay)
    launched.guest.vcpus[0].vmrun()
    assert launched.secrets_gpa is not None
    return launched, relay, GuestRequester.start(launched.guest.vcpus[0], launched.secrets_gpa)


def _exchange(requester: GuestRequester, **fields: int) -> Ghcb:
    """One SNP_GUEST_REQUEST exit with the GHCB fields given; the GHCB the guest reads back."""
    vcpu = requester.vcpu
    vcpu.write(requester.ghcb_gpa, Ghcb.build(sw_exitcode=NAE_SNP_GUEST_REQUEST,
                                              **fields).to_bytes())
    vcpu.ghcb_msr = requester.ghcb_gpa
    vcpu.vmexit(EXIT_VMGEXIT)
    return Ghcb.from_bytes(vcpu.read(requester.ghcb_gpa, PAGE_SIZE))


def test_a_relayed_request_is_answered_as_kvm_answers_it() -> None:
    launched, relay, requester = _relayed()
    requester.report(b"\x01" * 64)
    answer = Ghcb.from_bytes(requester.vcpu.read(requester.ghcb_gpa, PAGE_SIZE))
    assert (answer.get("sw_exitinfo1"), answer.get("sw_exitinfo2")) == (0, 0)
    assert len(relay.log) == 1 and relay.log[0][1] is not None
    vm = launched.guest.vm
    response = vm.machine.host_read(vm.translate(requester.response_gpa) or 0, PAGE_SIZE)
    assert response == relay.log[0][1]  # the PSP's response page, as the host wrote it


def test_only_a_vmgexit_is_relayed() -> None:
    _, relay, requester = _relayed()
    requester.report(b"\x02" * 64)
    vcpu = requester.vcpu
    vcpu.write(requester.ghcb_gpa, Ghcb.build(
        sw_exitcode=NAE_SNP_GUEST_REQUEST, sw_exitinfo1=requester.request_gpa,
        sw_exitinfo2=requester.response_gpa).to_bytes())
    vcpu.vmexit(EXIT_HLT)  # the GHCB holds a request, the MSR its address: not a VMGEXIT
    assert len(relay.log) == 1


@pytest.mark.parametrize("fields", [
    {"sw_exitinfo2": 0x3000},  # no request page named
    {"sw_exitinfo1": 0x2000},  # no response page named
    {"sw_exitinfo1": 0x2000, "sw_exitinfo2": 0x7FFF_0000},  # the response page is not mapped
    {"sw_exitinfo1": 0x7FFF_0000, "sw_exitinfo2": 0x3000},  # the request page is not mapped
])
def test_a_request_without_both_pages_reaches_no_firmware(fields: dict[str, int]) -> None:
    _, relay, requester = _relayed()
    answer = _exchange(requester, **fields)
    assert answer.get("sw_exitinfo1") == 0
    assert answer.get("sw_exitinfo2") == SevStatus.INVALID_ADDRESS
    assert relay.log == []


def test_a_refused_request_reports_the_firmwares_status() -> None:
    _, relay, requester = _relayed()
    answer = _exchange(requester, sw_exitinfo1=0x2000, sw_exitinfo2=0x3000)  # a page of zeros
    assert answer.get("sw_exitinfo1") == 0
    assert answer.get("sw_exitinfo2") == SevStatus.INVALID_PARAM
    assert [response for _, response in relay.log] == [None]


# -- the CPUID page -----------------------------------------------------------------------------
def test_the_guest_reads_the_cpuid_page_the_host_proposed() -> None:
    hv, psp = _host()
    launched = launch_snp(hv, psp, _firmware())
    assert launched.cpuid_corrections == () and launched.cpuid_gpa == 0x803000
    proposed = CpuidPage(tuple(CpuidFunction(leaf, 0, 0, 0, *values)
                               for leaf, values in sorted(hv.cpuid.items())))
    assert host_cpuid_page(hv) == proposed
    assert _guest_reads(launched, 0x803000) == proposed.to_bytes()


def test_a_corrected_cpuid_page_is_launched_at_its_address_and_measured() -> None:
    hv, psp = _host()
    eax, ebx, ecx, edx = hv.cpuid[0x8000_001F]
    hv.cpuid[0x8000_001F] = (eax, (ebx & ~0x3F) | 47, ecx, edx)  # claim C-bit 47
    firmware = _firmware()
    launched = launch_snp(hv, psp, firmware)
    assert len(launched.cpuid_corrections) == 1
    assert launched.measurement == snp_launch_digest(OvmfImage.parse(firmware),
                                                     VcpuConfig(1, MILAN))
    page = CpuidPage.from_bytes(_guest_reads(launched, 0x803000))
    leaf = next(f for f in page.functions if f.eax_in == 0x8000_001F)
    assert leaf.ebx & 0x3F == 51  # the firmware's correction, at the page's own address
    entry = hv.machine.rmp.entry(launched.guest.vm.translate(0x803000) or 0)
    assert (entry.assigned, entry.validated, entry.gpa) == (True, True, 0x803000)


def test_a_cpuid_page_the_firmware_cannot_correct_is_refused() -> None:
    hv, psp = _host()
    hv.cpuid[0x8000_001F] = (0x3B, (4 << 12) | (1 << 6) | 47, MAX_ASID, 1)
    with pytest.raises(StatusError) as refused:
        launch_snp(hv, psp, _firmware(), SnpLaunchConfig(retry_cpuid=False))
    assert refused.value.code == SevStatus.INVALID_PARAM


# -- ASIDs --------------------------------------------------------------------------------------
def test_each_launch_takes_the_lowest_free_asid() -> None:
    hv, psp = _host()
    firmware = _firmware()
    assert launch_snp(hv, psp, firmware).guest.vm.asid == 1
    assert launch_sev(hv, LegacyFirmware(psp), firmware, es=True).guest.vm.asid == 2
    hv.machine.engine.activate(3)  # a key the host keeps for something else
    assert launch_snp(hv, psp, firmware).guest.vm.asid == 4


def test_the_last_asid_is_taken_then_none_is_left() -> None:
    hv, psp = _host()
    for asid in range(1, MAX_ASID):
        hv.machine.engine.activate(asid)
    firmware = _firmware()
    assert launch_snp(hv, psp, firmware).guest.vm.asid == MAX_ASID
    with pytest.raises(StateError, match=r"^no free ASID$"):
        launch_snp(hv, psp, firmware)
    with pytest.raises(StateError, match=r"^no free ASID$"):
        launch_sev(hv, LegacyFirmware(psp), firmware, es=False)


def test_a_refused_launch_start_gives_its_asid_back() -> None:
    hv, psp = _host()
    with pytest.raises(StatusError) as refused:
        launch_snp(hv, psp, _firmware(), SnpLaunchConfig(policy=0x10000))  # bit 17 clear
    assert refused.value.code == SevStatus.INVALID_PARAM
    assert not hv.machine.engine.is_active(1)
    assert launch_snp(hv, psp, _firmware()).guest.vm.asid == 1


def test_a_machine_without_snp_launches_no_snp_guest() -> None:
    machine = Machine(64 * MIB, snp_enabled=False)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x21" * 64))
    with pytest.raises(StateError, match=r"^SNP is not enabled on this machine$"):
        launch_snp(Hypervisor(machine), psp, _firmware())


# -- what the launch refuses --------------------------------------------------------------------
def test_the_snp_launch_refuses_firmware_it_cannot_boot() -> None:
    hv, psp = _host()
    with pytest.raises(UsageError, match=r"^the firmware has no SEV-ES reset block: it cannot "
                                         r"boot an SNP guest$"):
        launch_snp(hv, psp, _firmware(reset_eip=None))
    hashes = SevHashTable.for_boot(b"vmlinuz")
    with pytest.raises(UsageError, match=r"^a kernel is given but the firmware has no "
                                         r"SNP_KERNEL_HASHES section$"):
        launch_snp(hv, psp, _firmware(sections=SECTIONS[:3]), SnpLaunchConfig(hashes=hashes))
    with pytest.raises(UsageError, match=r"^the firmware has no SEV hash table area for the "
                                         r"kernel hashes$"):
        launch_snp(hv, psp, _firmware(sev_hash_table=None), SnpLaunchConfig(hashes=hashes))


def test_the_svsm_launch_refuses_what_it_would_not_measure() -> None:
    hv, psp = _host()
    ovmf = build_image(0x10000, seed=b"ovmf")
    svsm = build_svsm_image(0x4000, sections=SECTIONS[1:3])
    with pytest.raises(UsageError, match=r"^an SVSM launch measures no kernel hashes$"):
        launch_snp_svsm(hv, psp, ovmf, svsm, 0,
                        SnpLaunchConfig(hashes=SevHashTable.for_boot(b"k")))
    with pytest.raises(UsageError, match=r"^an SVSM launch fixes SEV_FEATURES at 0x1$"):
        launch_snp_svsm(hv, psp, ovmf, svsm, 0, SnpLaunchConfig(guest_features=0x21))


def test_the_sev_launch_refuses_firmware_it_cannot_boot() -> None:
    hv, psp = _host()
    legacy = LegacyFirmware(psp)
    with pytest.raises(UsageError, match=r"^a kernel is given but the firmware has no SEV hash "
                                         r"table area$"):
        launch_sev(hv, legacy, _firmware(sev_hash_table=None), es=False,
                   hashes=SevHashTable.for_boot(b"vmlinuz"))
    with pytest.raises(UsageError, match=r"^the firmware has no SEV-ES reset block: it cannot "
                                         r"boot SEV-ES$"):
        launch_sev(hv, legacy, _firmware(reset_eip=None), es=True)


# -- the pages staged, and the RAM around them ---------------------------------------------------
def _refuse_rmpupdate_of(hv: Hypervisor, allocation: int, index: int) -> list[int]:
    """Make the RMP refuse page ``index`` of the host's ``allocation``-th allocation."""
    allocate = hv.allocate_pages
    allocations: list[list[int]] = []
    poisoned: list[int] = []

    def allocate_poisoned(asked: int) -> list[int]:
        pages = allocate(asked)
        allocations.append(pages)
        if len(allocations) == allocation:
            hv.machine.rmp.firmware_own(pages[index])  # immutable: RMPUPDATE fails
            hv.machine.rmp.entry(pages[index]).assigned = False
            poisoned.append(pages[index])
        return pages

    hv.allocate_pages = allocate_poisoned  # type: ignore[method-assign]
    return poisoned


# the launch's allocations: the firmware (16 pages), SEC_MEM (2), SECRETS, CPUID, the kernel
# hashes' page (zero pages without a kernel), the VMSA
@pytest.mark.parametrize(("allocation", "index"), [(1, 5), (2, 1), (4, 0), (6, 0)])
def test_a_refused_rmpupdate_of_a_launch_page_stops_the_launch(
    allocation: int, index: int
) -> None:
    hv, psp = _host()
    poisoned = _refuse_rmpupdate_of(hv, allocation, index)
    with pytest.raises(StatusError) as refused:
        launch_snp(hv, psp, _firmware(), SnpLaunchConfig(ram_bytes=0))
    assert refused.value.code == RmpStatus.FAIL_PERMISSION
    assert str(refused.value) == f"RMPUPDATE of {poisoned[0]:#x} failed: FAIL_PERMISSION"


def test_a_section_of_no_pages_is_launched_as_nothing() -> None:
    hv, psp = _host()
    empty = (MetadataSection(0x800000, 0, SectionType.SNP_SEC_MEM), *SECTIONS[1:])
    firmware = _firmware(sections=empty)
    launched = launch_snp(hv, psp, firmware)
    assert launched.measurement == snp_launch_digest(OvmfImage.parse(firmware),
                                                     VcpuConfig(1, MILAN))
    assert launched.guest.vm.translate(0x800000) is None


def test_the_vmsas_are_staged_at_the_rmps_vmsa_address_and_never_mapped() -> None:
    hv, psp = _host()
    launched = launch_snp(hv, psp, _firmware(), SnpLaunchConfig(vcpus=2))
    vm = launched.guest.vm
    mapped = set(vm.nested.values())
    for vcpu in launched.guest.vcpus:
        assert vcpu.vmsa_spa is not None and vcpu.vmsa_spa >> 12 not in mapped
        entry = hv.machine.rmp.entry(vcpu.vmsa_spa)
        assert (entry.asid, entry.gpa, entry.vmsa) == (vm.asid, VMSA_GPA, True)


def test_launched_pages_inside_the_ram_keep_their_contents() -> None:
    """Under an SVSM the metadata pages lie at the bottom of RAM: the RAM takes every other
    page, assigned and left for the guest to validate."""
    hv, psp = _host()
    ovmf = build_image(0x10000, seed=b"ovmf below svsm")
    sections = (
        MetadataSection(0x0, 0x3000, SectionType.SNP_SEC_MEM),
        MetadataSection(0x3000, 0x1000, SectionType.SNP_SECRETS),
        MetadataSection(0x4000, 0x1000, SectionType.CPUID),
        MetadataSection(0x9000, 0x2000, SectionType.SVSM_CAA),
    )
    svsm = build_svsm_image(0x8000, entry_offset=0x2000, sections=sections, seed=b"svsm")
    launched = launch_snp_svsm(hv, psp, ovmf, svsm, 0x4000,
                               SnpLaunchConfig(ram_bytes=0x40000))
    vm, rmp = launched.guest.vm, hv.machine.rmp
    launched_gpas = {0x0, 0x1000, 0x2000, 0x3000, 0x4000, 0x9000, 0xA000}
    for gpa in range(0, 0x40000, PAGE_SIZE):
        spa = vm.translate(gpa)
        assert spa is not None and spa in launched.guest.frames, hex(gpa)
        entry = rmp.entry(spa)
        assert (entry.assigned, entry.asid, entry.gpa) == (True, vm.asid, gpa)
        assert entry.validated == (gpa in launched_gpas), hex(gpa)
    assert _guest_reads(launched, 0x4000) == host_cpuid_page(hv).to_bytes()


# -- SEV and SEV-ES ------------------------------------------------------------------------------
def test_the_sev_launch_defaults_and_its_ram() -> None:
    hv, psp = _host()
    firmware = _firmware()
    launched = launch_sev(hv, LegacyFirmware(psp), firmware, es=False)
    guest = launched.guest
    assert guest.mode is Mode.SEV and [v.index for v in guest.vcpus] == [0]
    image = OvmfImage.parse(firmware)
    flash = {gpa >> 12 for gpa, _ in image.pages()}
    assert set(guest.vm.nested) == flash | set(range(0x100))
    assert sorted(guest.frames) == sorted(guest.vm.nested[f] << 12 for f in guest.vm.nested)
    guest.vcpus[0].vmexit(EXIT_HLT)  # SEV: a running vCPU from the start, its state in the VMCB
    assert guest.exits[-1].vmcb is not None


def test_the_sev_ram_does_not_replace_the_hash_table() -> None:
    hv, psp = _host()
    hashes = SevHashTable.for_boot(b"vmlinuz", b"initrd", "quiet")
    firmware = _firmware()
    launched = launch_sev(hv, LegacyFirmware(psp), firmware, es=True, vcpus=3,
                          hashes=hashes, tik=TIK, ram_bytes=0x90_0000)
    guest = launched.guest
    assert [v.index for v in guest.vcpus] == [0, 1, 2]
    vm = guest.vm
    assert all(gpa >> 12 in vm.nested for gpa in range(0, 0x90_0000, PAGE_SIZE))
    vm.set_private(HASH_AREA.gpa, True)
    assert vm.access(HASH_AREA.gpa, len(hashes.to_bytes())) == hashes.to_bytes()
    vm.set_private(0x8F_F000, True)
    vm.access(0x8F_F000, 4, data=b"ram!")  # the last RAM page, the guest's own
    assert vm.access(0x8F_F000, 4) == b"ram!"
    predicted = sev_es_launch_digest(OvmfImage.parse(firmware), VcpuConfig(3, MILAN), hashes)
    version = psp.version
    mac = measure_mac(TIK, (version.major, version.minor), version.build, 0x5, predicted,
                      launched.measure[32:])
    assert launched.measure[:32] == mac


def test_a_destroyed_sev_guest_is_decommissioned_and_its_asid_reused() -> None:
    """The host's own PSP launched it: destroying the VM decommissions its guest context (the
    PSP refused a second LAUNCH_START on the ASID with ASID_OWNED before)."""
    hv, psp = _host()
    assert hv.legacy is not None
    firmware = _firmware()
    launched = launch_sev(hv, hv.legacy, firmware, es=True)
    assert launched.guest.handle == launched.handle
    frames = list(launched.guest.frames)
    hv.destroy_vm(launched.guest)
    with pytest.raises(StatusError) as gone:
        hv.legacy.launch_finish(launched.handle)
    assert gone.value.code == SevStatus.INVALID_GUEST
    again = launch_sev(hv, LegacyFirmware(psp), firmware, es=False)
    assert again.guest.vm.asid == launched.guest.vm.asid
    assert set(again.guest.frames) & set(frames)  # the pages came back to the host
    other = SecureProcessor(hv.machine, ChipFuses("Milan", bytes(64), bytes(64)))
    foreign = launch_sev(hv, LegacyFirmware(other), firmware, es=False)
    assert foreign.guest.handle is None  # another PSP's guest: not this host's to decommission
