"""The host's side of an SEV-SNP launch, in QEMU's order, and its guest-request relay.

QEMU ``target/i386/sev.c`` with KVM ``arch/x86/kvm/svm/sev.c`` (SEV-SNP Firmware ABI, AMD
56860, §8.16-8.18): SNP_LAUNCH_START with the guest policy; for every page to pre-load, the
host writes the plaintext into a page it owns, makes it pre-guest with RMPUPDATE (assigned to
the guest's ASID at its GPA) and issues SNP_LAUNCH_UPDATE — a range of pages at a time, as
``KVM_SEV_SNP_LAUNCH_UPDATE`` takes it, the firmware command running once per page: the
firmware image as NORMAL pages at ``4 GiB - size``, then each OVMF ``ASEV`` metadata section
(SEC_MEM and SVSM_CAA as ZERO, SECRETS, CPUID, KERNEL_HASHES with the SEV hash table), then
one VMSA page per vCPU; finally SNP_LAUNCH_FINISH with the optional ID block. When the
firmware rejects the CPUID page it writes corrected values back; QEMU reports them and retries
once with the corrected page.

The host is untrusted: everything it hands the firmware crosses as bytes in DRAM, and what it
learns back is the corrected CPUID table and the launch digest. :class:`GuestRequestRelay` is
the host's handler of the GHCB ``SNP_GUEST_REQUEST`` exit (GHCB spec 56421 §4.1.7): it copies
the guest's shared request page to the firmware and the response back, and can be wrapped by an
adversary to replay or drop messages. A launched VM is handed to the hypervisor with
:meth:`~cvm.host.vmm.Hypervisor.adopt`, which routes its exits like any other guest's.
:func:`launch_snp_svsm` is the launch under an SVSM (:mod:`cvm.formats.svsm.svsm_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cvm.errors import StateError, StatusError, UsageError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.cpuid_page import CpuidFunction, CpuidPage
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.page_info import VMSA_GPA, PageType
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.vmsa import BSP_RESET_EIP, Vmsa, initial_vmsa
from cvm.formats.svsm.svsm_image import (
    SVSM_SEV_FEATURES,
    SvsmImage,
    svsm_end_gpa,
    svsm_initial_vmsa,
)
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.memory.rmp import RmpStatus
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware
from cvm.hardware.psp.status import SevStatus
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu, VmExit
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.vmm import Guest, Hypervisor

FOUR_GIB = 1 << 32
NAE_SNP_GUEST_REQUEST = 0x8000_0011
DEFAULT_POLICY = 0x30000  # QEMU's default: SMT allowed, reserved bit 17


@dataclass(frozen=True)
class SnpLaunchConfig:
    """What the VMM is asked to launch (QEMU ``-cpu``, ``-smp``, ``sev-snp-guest`` options)."""

    vcpus: int = 1
    vcpu_signature: int = 0x00A00F11  # EPYC-Milan
    guest_features: int = 0x1
    policy: int = DEFAULT_POLICY
    hashes: SevHashTable | None = None
    ram_bytes: int = 0x10_0000
    id_block: bytes | None = None
    id_auth: bytes | None = None
    host_data: bytes = bytes(32)
    retry_cpuid: bool = True


@dataclass
class SnpLaunch:
    """A launched guest as the host knows it."""

    guest: Guest
    handle: int
    measurement: bytes
    secrets_gpa: int | None
    cpuid_gpa: int | None
    cpuid_corrections: tuple[str, ...] = ()


@dataclass
class GuestRequestRelay:
    """The host's SNP_GUEST_REQUEST handler: an exit hook on :class:`Hypervisor`."""

    psp: SecureProcessor
    handles: dict[int, int] = field(default_factory=dict)  # ASID -> guest handle
    log: list[tuple[bytes, bytes | None]] = field(default_factory=list)

    def forward(self, handle: int, request: bytes) -> tuple[int, bytes | None]:
        """Pass one request page to the firmware: (firmware status, response page or None)."""
        try:
            return 0, self.psp.snp_guest_request(handle, request)
        except StatusError as error:
            return error.code, None

    def __call__(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if info.exit_code != EXIT_VMGEXIT or not vcpu.ghcb_msr or vcpu.ghcb_msr % PAGE_SIZE:
            return
        ghcb_spa = guest.vm.translate(vcpu.ghcb_msr)
        handle = self.handles.get(guest.vm.asid)
        if ghcb_spa is None or handle is None:
            return
        machine = guest.vm.machine
        ghcb = Ghcb.from_bytes(machine.host_read(ghcb_spa, PAGE_SIZE))
        if ghcb.get("sw_exitcode") != NAE_SNP_GUEST_REQUEST:
            return
        request_spa = _translate(guest, ghcb.get("sw_exitinfo1"))
        response_spa = _translate(guest, ghcb.get("sw_exitinfo2"))
        if request_spa is None or response_spa is None:
            status, response = int(SevStatus.INVALID_ADDRESS), None
        else:
            request = machine.host_read(request_spa, PAGE_SIZE)
            status, response = self.forward(handle, request)
            self.log.append((request, response))
            if response is not None:
                machine.host_write(response_spa, response)
        # as KVM answers: SW_EXITINFO1 0 (the event was handled), the firmware's status in
        # SW_EXITINFO2
        machine.host_write(ghcb_spa, Ghcb.build(sw_exitinfo1=0, sw_exitinfo2=status).to_bytes())


def _translate(guest: Guest, gpa: int | None) -> int | None:
    """The system address of a page the guest named in the GHCB; None when the field was not
    marked valid or the page is not mapped."""
    return None if gpa is None else guest.vm.translate(gpa)


def host_cpuid_page(hv: Hypervisor) -> CpuidPage:
    """The CPUID page the host proposes: its CPUID answers for every leaf it knows."""
    return CpuidPage(
        tuple(CpuidFunction(leaf, 0, 0, 0, *values) for leaf, values in sorted(hv.cpuid.items()))
    )


class _Launcher:
    """One launch in progress: the VM, its guest handle and the pages handed over so far."""

    def __init__(self, hv: Hypervisor, psp: SecureProcessor, config: SnpLaunchConfig) -> None:
        machine = hv.machine
        if not machine.snp_enabled:
            raise StateError("SNP is not enabled on this machine")
        asid = hv.free_asid()
        machine.engine.activate(asid)
        self.hv, self.psp, self.config = hv, psp, config
        self.vm = VirtualMachine(machine, asid, Mode.SEV_SNP, FOUR_GIB)
        self.frames: list[int] = []
        try:
            self.handle = psp.snp_launch_start(asid, config.policy)
        except StatusError:
            machine.engine.deactivate(asid)
            raise

    def stage(self, gpa: int, data: bytes) -> int:
        """Write ``data`` into a new host page, map it at ``gpa`` and make it pre-guest."""
        spa = self.hv.allocate_page()
        self.hv.machine.host_write(spa, data)
        self.vm.map(gpa, spa)
        self.frames.append(spa)
        self.assign(spa, gpa)
        return spa

    def stage_vmsa(self, vmsa: Vmsa) -> int:
        """Write ``vmsa`` into a new host page and make it pre-guest at the RMP's VMSA address;
        no guest address maps it (KVM's ``snp_launch_update_vmsa``)."""
        spa = self.hv.allocate_page()
        self.hv.machine.host_write(spa, vmsa.to_bytes())
        self.assign(spa, VMSA_GPA)
        return spa

    def assign(self, spa: int, gpa: int) -> None:
        """RMPUPDATE of ``spa`` to this guest at ``gpa``."""
        status = self.hv.machine.rmp.rmpupdate(spa, assigned=True, asid=self.vm.asid, gpa=gpa)
        if status is not RmpStatus.SUCCESS:
            raise StatusError(f"RMPUPDATE of {spa:#x} failed: {status.name}", int(status))

    def stage_pages(self, pages: Sequence[tuple[int, bytes]]) -> list[int]:
        """:meth:`stage` of each (GPA, page) in order, the host pages taken at once (and the
        plaintext written at once when they follow one another)."""
        machine = self.hv.machine
        spas = self.hv.allocate_pages(len(pages))
        datas = [data for _, data in pages]
        run = range(spas[0], spas[0] + len(spas) * PAGE_SIZE, PAGE_SIZE) if spas else range(0)
        if spas and spas == list(run) and all(len(data) == PAGE_SIZE for data in datas):
            machine.host_write(spas[0], b"".join(datas))  # fresh pages follow one another
        else:
            for spa, data in zip(spas, datas, strict=True):
                machine.host_write(spa, data)
        self.assign_pages([gpa for gpa, _ in pages], spas)
        return spas

    def assign_pages(self, gpas: list[int], spas: list[int]) -> None:
        """Map each ``gpas[i]`` at ``spas[i]`` and RMPUPDATE it to this guest there."""
        self.vm.map_pages(gpas, spas)
        self.frames.extend(spas)
        status, done = self.hv.machine.rmp.rmpupdate_pages(spas, gpas, self.vm.asid)
        if status is not RmpStatus.SUCCESS:
            raise StatusError(f"RMPUPDATE of {spas[done]:#x} failed: {status.name}", int(status))

    def update(self, gpa: int, data: bytes, page_type: PageType) -> int:
        return self.update_pages([(gpa, data)], page_type)[0]

    def update_pages(self, pages: Sequence[tuple[int, bytes]], page_type: PageType) -> list[int]:
        """Stage each (GPA, page) and launch them in order: SNP_LAUNCH_UPDATE of each page."""
        spas = self.stage_pages(pages)
        self.psp.snp_launch_update_pages(self.handle, spas, page_type)
        return spas

    def cpuid(self, gpa: int) -> tuple[str, ...]:
        """Hand over the CPUID page; retry once with the firmware's corrections."""
        page = host_cpuid_page(self.hv).to_bytes()
        spa = self.stage(gpa, page)
        try:
            self.psp.snp_launch_update(self.handle, spa, PageType.CPUID)
            return ()
        except StatusError as error:
            if error.code != SevStatus.INVALID_PARAM or not self.config.retry_cpuid:
                raise
            corrected = self.hv.machine.host_read(spa, PAGE_SIZE)
            if corrected == page:
                raise
            self.hv.machine.rmp.rmpupdate(spa, assigned=False)  # the host's again, to write
            self.hv.machine.host_write(spa, corrected)
            self.assign(spa, gpa)
            self.psp.snp_launch_update(self.handle, spa, PageType.CPUID)
            return (str(error),)

    def section(self, image: OvmfImage, section: MetadataSection) -> tuple[str, ...]:
        kind, hashes = section.type, self.config.hashes
        if kind is SectionType.SNP_SECRETS:
            self.update(section.gpa, bytes(PAGE_SIZE), PageType.SECRETS)
        elif kind is SectionType.CPUID:
            return self.cpuid(section.gpa)
        elif kind is SectionType.SNP_KERNEL_HASHES and hashes is not None:
            area = image.sev_hash_table
            if area is None:
                raise UsageError("the firmware has no SEV hash table area for the kernel hashes")
            page = hashes.to_page(area.gpa % PAGE_SIZE)
            self.update(section.gpa, page, PageType.NORMAL)
        else:
            self.update_pages([(gpa, bytes(PAGE_SIZE)) for gpa in section.pages], PageType.ZERO)
        return ()

    def sections(self, image: OvmfImage) -> list[str]:
        """Every metadata section of ``image`` in file order; the CPUID corrections."""
        return [text for section in image.sections for text in self.section(image, section)]

    def ram(self, size: int, skip: set[int]) -> None:
        """Private RAM the guest validates itself: assigned, never measured."""
        wanted = [gpa for gpa in range(0, size, PAGE_SIZE) if gpa >> 12 not in skip]
        self.assign_pages(wanted, self.hv.allocate_pages(len(wanted)))


def launch_snp(
    hv: Hypervisor,
    psp: SecureProcessor,
    firmware: bytes,
    config: SnpLaunchConfig = SnpLaunchConfig(),
    relay: GuestRequestRelay | None = None,
) -> SnpLaunch:
    """Launch ``firmware`` as an SEV-SNP guest the way QEMU does; returns the running guest."""
    image = OvmfImage.parse(firmware)
    reset = image.reset_block
    if reset is None:
        raise UsageError("the firmware has no SEV-ES reset block: it cannot boot an SNP guest")
    if config.hashes is not None and not image.has_section(SectionType.SNP_KERNEL_HASHES):
        raise UsageError("a kernel is given but the firmware has no SNP_KERNEL_HASHES section")
    launcher = _Launcher(hv, psp, config)
    launcher.update_pages(image.pages(), PageType.NORMAL)
    corrections = launcher.sections(image)
    vmsas = [
        initial_vmsa(
            BSP_RESET_EIP if index == 0 else reset.eip,
            sev_features=config.guest_features,
            vcpu_signature=config.vcpu_signature,
        )
        for index in range(config.vcpus)
    ]
    return _finish(launcher, vmsas, image.sections, corrections, relay)


def launch_snp_svsm(
    hv: Hypervisor,
    psp: SecureProcessor,
    firmware: bytes,
    svsm: bytes,
    vars_size: int,
    config: SnpLaunchConfig = SnpLaunchConfig(),
    relay: GuestRequestRelay | None = None,
) -> SnpLaunch:
    """Launch ``firmware`` under the SVSM image ``svsm`` as QEMU for COCONUT-SVSM does.

    The OVMF pages, the SVSM pages (ending ``vars_size`` bytes below OVMF), the SVSM image's
    metadata sections, then one VMSA per vCPU at the SVSM entry point
    (:mod:`cvm.image.svsm_measurement` predicts the resulting digest).
    """
    image = OvmfImage.parse(firmware)
    svsm_image = SvsmImage.parse(svsm, end_gpa=svsm_end_gpa(image, vars_size))
    if config.hashes is not None:
        raise UsageError("an SVSM launch measures no kernel hashes")
    if config.guest_features != SVSM_SEV_FEATURES:
        raise UsageError(f"an SVSM launch fixes SEV_FEATURES at {SVSM_SEV_FEATURES:#x}")
    launcher = _Launcher(hv, psp, config)
    launcher.update_pages(image.pages() + svsm_image.pages(), PageType.NORMAL)
    corrections = launcher.sections(svsm_image.image)
    vmsa = svsm_initial_vmsa(svsm_image.entry_point, config.vcpu_signature)
    return _finish(launcher, [vmsa] * config.vcpus, svsm_image.sections, corrections, relay)


def _finish(
    launcher: _Launcher,
    vmsas: list[Vmsa],
    sections: tuple[MetadataSection, ...],
    corrections: list[str],
    relay: GuestRequestRelay | None,
) -> SnpLaunch:
    """The VMSA pages, SNP_LAUNCH_FINISH, private RAM, and the hand-over to the hypervisor."""
    hv, psp, config = launcher.hv, launcher.psp, launcher.config
    vcpus: list[Vcpu] = []
    for index, vmsa in enumerate(vmsas):
        spa = launcher.stage_vmsa(vmsa)
        psp.snp_launch_update(launcher.handle, spa, PageType.VMSA)
        vcpu = Vcpu(launcher.vm, index)
        vcpu.vmsa_spa = spa
        vcpu.registers = None  # the state lives in the encrypted VMSA until VMRUN
        vcpus.append(vcpu)
    measurement = psp.snp_launch_finish(
        launcher.handle,
        id_block=config.id_block,
        id_auth=config.id_auth,
        host_data=config.host_data,
    )
    taken = set(launcher.vm.nested)  # guest frames already backed by launch pages
    launcher.ram(config.ram_bytes, taken)
    own = launcher.handle if psp is hv.psp else None
    guest = hv.adopt(launcher.vm, vcpus, launcher.frames, handle=own)
    if relay is not None:
        relay.handles[launcher.vm.asid] = launcher.handle
        if relay not in hv.exit_hooks:
            hv.exit_hooks.append(relay)
    first = {section.type: section.gpa for section in reversed(sections)}
    secrets, cpuid = first.get(SectionType.SNP_SECRETS), first.get(SectionType.CPUID)
    return SnpLaunch(guest, launcher.handle, measurement, secrets, cpuid, tuple(corrections))


@dataclass
class SevLaunch:
    """A launched SEV or SEV-ES guest and the LAUNCH_MEASURE blob the host passes on."""

    guest: Guest
    handle: int
    measure: bytes


def launch_sev(
    hv: Hypervisor,
    firmware_commands: LegacyFirmware,
    firmware: bytes,
    *,
    es: bool,
    vcpus: int = 1,
    vcpu_signature: int = 0x00A00F11,
    hashes: SevHashTable | None = None,
    policy: int | None = None,
    tik: bytes | None = None,
    ram_bytes: int = 0x10_0000,
) -> SevLaunch:
    """Launch ``firmware`` as an SEV (``es`` False) or SEV-ES guest the way QEMU does.

    LAUNCH_UPDATE_DATA of the flash image, then of the padded SEV hash table in place at its
    GPA (measured direct boot), LAUNCH_UPDATE_VMSA per vCPU (SEV-ES), LAUNCH_MEASURE and
    LAUNCH_FINISH. The default policy is QEMU's: NODBG, plus ES for SEV-ES.
    """
    image = OvmfImage.parse(firmware)
    area = image.sev_hash_table
    if hashes is not None and area is None:
        raise UsageError("a kernel is given but the firmware has no SEV hash table area")
    reset = image.reset_block
    if es and reset is None:
        raise UsageError("the firmware has no SEV-ES reset block: it cannot boot SEV-ES")
    machine = hv.machine
    asid = hv.free_asid()
    machine.engine.activate(asid)
    vm = VirtualMachine(machine, asid, Mode.SEV_ES if es else Mode.SEV, FOUR_GIB)
    if policy is None:
        policy = 0x5 if es else 0x1
    handle = firmware_commands.launch_start(asid, policy, tik)
    frames: list[int] = []

    def place(gpa: int, data: bytes) -> int:
        spa = hv.allocate_page()
        machine.host_write(spa, data)
        vm.map(gpa, spa)
        frames.append(spa)
        return spa

    for gpa, page in image.pages():
        firmware_commands.launch_update_data(handle, place(gpa, page), PAGE_SIZE)
    if hashes is not None and area is not None:
        offset = area.gpa % PAGE_SIZE
        spa = place(area.gpa - offset, hashes.to_page(offset))
        firmware_commands.launch_update_data(handle, spa + offset, len(hashes.to_bytes()))
    cpus: list[Vcpu] = []
    for index in range(vcpus):
        vcpu = Vcpu(vm, index)
        if es and reset is not None:
            eip = BSP_RESET_EIP if index == 0 else reset.eip
            state = initial_vmsa(eip, sev_features=0, vcpu_signature=vcpu_signature)
            spa = hv.allocate_page()
            machine.host_write(spa, state.to_bytes())
            firmware_commands.launch_update_vmsa(handle, spa)
            vcpu.vmsa_spa = spa
            vcpu.registers = None
        cpus.append(vcpu)
    measure = firmware_commands.launch_measure(handle)
    firmware_commands.launch_finish(handle)
    ram = [gpa for gpa in range(0, ram_bytes, PAGE_SIZE) if gpa >> 12 not in vm.nested]
    spas = hv.allocate_pages(len(ram))
    vm.map_pages(ram, spas)
    frames.extend(spas)
    own = handle if firmware_commands.psp is hv.psp else None
    guest = hv.adopt(vm, cpus, frames, handle=own)
    return SevLaunch(guest, handle, measure)
