"""A live VM for the memory, register, CPU, launch and evidence attacks, and the guest's part.

:class:`LaunchedLab` implements :class:`~cvm.host.adversary.lab.Lab` with a VM launched the way
each mode launches: ``plain`` is created by the host alone; ``sev`` and ``sev-es`` through the
PSP's legacy launch commands (with an encrypted VMSA for ``sev-es``); ``sev-snp`` through
SNP_LAUNCH_START/UPDATE/FINISH of the owner's firmware image, with its secrets and CPUID pages.
The guest accepts its memory, stores the workload's secret in a private page and (ES/SNP)
registers its GHCB; an SNP guest holds VMPCK0 in its secrets page and talks to the PSP through
the host's relay. The relying party knows the owner's predicted launch digest and the vendor's
root, and appraises the guest's report before it releases the owner's secret.

Every lab is fresh (its own machine, PSP and host), so one attack cannot disturb another.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cvm.amd.kds import CHIP_ID_SIZE, CHIP_SECRET_SIZE, ChipFuses
from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.verifier.appraisal import Evidence as VerifierEvidence
from cvm.attestation.verifier.appraisal import Verifier
from cvm.attestation.verifier.policy import ReferenceValues
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import CvmError, PolicyError, StateError, VerificationError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.cpuid_page import CpuidPage
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.snp.vmsa import SevFeatures
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor
from cvm.hardware.psp.sev_legacy import LegacyFirmware
from cvm.hardware.vm import Mode
from cvm.host.adversary.host_view import HostView
from cvm.host.adversary.lab import BootReport, Evidence, Release
from cvm.host.launch import (
    DEFAULT_POLICY,
    GuestRequestRelay,
    SnpLaunch,
    SnpLaunchConfig,
    launch_sev,
    launch_snp,
)
from cvm.host.vmm import Guest, Hypervisor
from cvm.image.measurement import VcpuConfig, snp_launch_digest

RandomBytes = Callable[[int], bytes]
MILAN_SIGNATURE = 0x00A00F11
POLICY_DEBUG = 1 << 19
OLD_TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
NEW_TCB = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
)
FIRMWARE_SEED = b"cvm attack lab firmware"
RAM_BYTES = 0x40000
GHCB_GPA = 0x1000
SECRET_GPA, SPARE_GPA = 0x20000, 0x21000
DRAM_BYTES = 64 << 20
SECRET_BYTES = 32
GUEST_FEATURES = int(SevFeatures.SNP_ACTIVE | SevFeatures.RESTRICTED_INJECTION)


@lru_cache(maxsize=1)
def owner_firmware() -> tuple[bytes, bytes]:
    """The owner's firmware image and its predicted SNP launch digest (one vCPU, Milan)."""
    firmware = build_image(0x40000, sections=SECTIONS, seed=FIRMWARE_SEED)
    vcpus = VcpuConfig(1, MILAN_SIGNATURE, GUEST_FEATURES)
    digest = snp_launch_digest(OvmfImage.parse(firmware), vcpus, None)
    return firmware, digest


@dataclass
class _Platform:
    machine: Machine
    psp: SecureProcessor
    host: Hypervisor
    view: HostView


def _platform(
    vendor: Vendor | None, random_bytes: RandomBytes, *, rollback: bool = False
) -> _Platform:
    """A machine, its PSP (the vendor's chip 0, or an unregistered chip without a vendor) and
    the host, with the host's view recorded from the start."""
    machine = Machine(DRAM_BYTES, random_bytes=random_bytes)
    if vendor is not None:
        fuses = vendor.manufacture_chip(0)
    else:
        fuses = ChipFuses("Milan", random_bytes(CHIP_ID_SIZE), random_bytes(CHIP_SECRET_SIZE))
    psp = SecureProcessor(machine, fuses, tcb=OLD_TCB)
    psp.download_firmware(NEW_TCB, FirmwareVersion(1, 55, 24))
    psp.commit()
    if rollback:
        psp.boot_firmware(OLD_TCB, FirmwareVersion(1, 52, 4))  # the host reflashes old firmware
    host = Hypervisor(machine, psp)
    return _Platform(machine, psp, host, HostView(host))


@dataclass
class _Vm:
    guest: Guest
    kernel: SevGuest
    launch: SnpLaunch | None
    requester: GuestRequester | None


def _start(platform: _Platform, mode: Mode, firmware: bytes, policy: int | None = None) -> _Vm:
    """Launch a VM of ``mode`` on ``platform`` and let its guest accept its memory."""
    host = platform.host
    if mode is Mode.SEV_SNP:
        relay = GuestRequestRelay(platform.psp)
        config = SnpLaunchConfig(policy=DEFAULT_POLICY if policy is None else policy,
                                 ram_bytes=RAM_BYTES, guest_features=GUEST_FEATURES)
        launched = launch_snp(host, platform.psp, firmware, config, relay)
        vcpu = launched.guest.vcpus[0]
        vcpu.vmrun()
        assert launched.secrets_gpa is not None
        requester = GuestRequester.start(vcpu, launched.secrets_gpa, 0, ghcb_gpa=GHCB_GPA)
        kernel = SevGuest(vcpu)
        kernel.ghcb_gpa = GHCB_GPA
        kernel.accept(SECRET_GPA, 2 * PAGE_SIZE)
        return _Vm(launched.guest, kernel, launched, requester)
    if mode in (Mode.SEV, Mode.SEV_ES) and policy is not None:
        sev = launch_sev(host, LegacyFirmware(platform.psp), firmware, es=mode is Mode.SEV_ES,
                         policy=policy, ram_bytes=RAM_BYTES)
        guest = sev.guest
        if guest.vcpus[0].registers is None:
            guest.vcpus[0].vmrun()
    else:
        guest = host.create_vm(mode, RAM_BYTES)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(SECRET_GPA, 2 * PAGE_SIZE)
    if mode.encrypts_registers:
        kernel.accept(GHCB_GPA)
        kernel.setup_ghcb(GHCB_GPA)
    return _Vm(guest, kernel, None, None)


class LaunchedLab:
    """One mode's VM on a fresh host; see the module docstring."""

    def __init__(self, mode: Mode, random_bytes: RandomBytes = os.urandom) -> None:
        self._mode = mode
        self.random_bytes = random_bytes
        # Only an SNP guest's reports need the vendor's certificates (slow to derive, once).
        self.vendor = default_vendor("Milan") if mode.snp else None
        self.platform = _platform(self.vendor, random_bytes)
        self.firmware, self.digest = owner_firmware()
        self.vm = _start(self.platform, mode, self.firmware)
        self._secret = random_bytes(SECRET_BYTES)
        self.vm.kernel.cpu.write(SECRET_GPA, self._secret)

    # -- the Lab protocol: the host and the VM ------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def host(self) -> Hypervisor:
        return self.platform.host

    @property
    def guest(self) -> Guest:
        return self.vm.guest

    @property
    def psp(self) -> SecureProcessor | None:
        return self.platform.psp

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def secret_gpa(self) -> int:
        return SECRET_GPA

    @property
    def spare_gpa(self) -> int:
        return SPARE_GPA

    def secrets(self) -> dict[str, bytes]:
        """Every secret of this VM by name, read back through the guest (the harness's view)."""
        found = {"workload secret": self.vm.kernel.cpu.read(SECRET_GPA, SECRET_BYTES)}
        requester = self.vm.requester
        if requester is not None and not requester.disabled:
            found["VMPCK0"] = requester.key
        return found

    # -- the guest, acting --------------------------------------------------------------------
    def guest_write(self, gpa: int, data: bytes) -> None:
        self.vm.kernel.cpu.write(gpa, data)

    def guest_read(self, gpa: int, size: int) -> bytes:
        return self.vm.kernel.cpu.read(gpa, size)

    def guest_set_register(self, name: str, value: int) -> None:
        self.vm.kernel.cpu.set_register(name, value)

    def guest_register(self, name: str) -> int:
        return self.vm.kernel.cpu.register(name)

    def guest_exit(self) -> None:
        self.vm.kernel.halt()

    def guest_cpuid(self, leaf: int) -> tuple[int, int, int, int]:
        if not self._mode.snp:
            return self.vm.kernel.cpuid(leaf)
        # An SNP guest trusts its CPUID page, fixed at launch: launch one with the host's
        # current answers and read the page the PSP accepted.
        vm = _start(self.platform, self._mode, self.firmware)
        assert vm.launch is not None and vm.launch.cpuid_gpa is not None
        cpu = vm.kernel.cpu
        cpu.vm.set_private(vm.launch.cpuid_gpa, True)
        page = CpuidPage.from_bytes(cpu.read(vm.launch.cpuid_gpa, PAGE_SIZE))
        for function in page.functions:
            if function.eax_in == leaf and function.ecx_in == 0:
                return function.eax, function.ebx, function.ecx, function.edx
        return 0, 0, 0, 0

    def guest_interrupt_masked(self) -> None:
        self.vm.kernel.cpu.set_register("rflags", self.guest_register("rflags") & ~(1 << 9))

    def guest_events(self) -> list[int]:
        return list(self.vm.kernel.cpu.delivered_events)

    # -- launch and evidence ------------------------------------------------------------------
    def launch(
        self, *, flip_firmware_bit: int | None = None, debug: bool = False, rollback: bool = False
    ) -> Release:
        firmware = bytearray(self.firmware)
        if flip_firmware_bit is not None:
            firmware[flip_firmware_bit // 8] ^= 1 << flip_firmware_bit % 8
        platform = _platform(self.vendor, self.random_bytes, rollback=rollback)
        if self._mode is Mode.PLAIN:
            platform.host.create_vm(Mode.PLAIN, RAM_BYTES)
            return Release(True, False, detail="a plain VM gives no evidence")
        if not self._mode.snp:
            policy = (0x4 if self._mode is Mode.SEV_ES else 0) | (0 if debug else 0x1)
            _start(platform, self._mode, bytes(firmware), policy)
            return Release(True, False, detail="the launch measurement gates no secret: the "
                           "vTPM and its state key are the host's in this mode")
        policy = DEFAULT_POLICY | (POLICY_DEBUG if debug else 0)
        vm = _start(platform, self._mode, bytes(firmware), policy)
        nonce = self.random_bytes(64)
        return self.appraise(self._evidence(vm, platform, nonce), nonce)

    def _evidence(self, vm: _Vm, platform: _Platform, nonce: bytes) -> Evidence:
        assert vm.requester is not None
        report = vm.requester.report(nonce).report
        tcb = AttestationReport.from_bytes(report).reported_tcb
        assert self.vendor is not None
        vcek = self.vendor.vcek_certificate(platform.psp.chip_id, tcb)
        return Evidence(report, vcek, self.vendor.cert_chain())

    def attest(self) -> tuple[bytes, Evidence]:
        nonce = self.random_bytes(64)
        return nonce, self._evidence(self.vm, self.platform, nonce)

    def appraise(self, evidence: Evidence, nonce: bytes) -> Release:
        if self.vendor is None:
            return Release(False, False, ("chain",), "no vendor root for this mode's evidence")
        roots = TrustRoots.of([self.vendor.trust_anchor()], "emulated")
        reference = ReferenceValues(measurement=self.digest, report_data=nonce, vmpl=0,
                                    minimum_tcb=NEW_TCB)
        try:
            Verifier(roots).appraise(
                VerifierEvidence.from_cert_chain(evidence.report, evidence.vcek,
                                                 evidence.cert_chain),
                reference,
            )
        except PolicyError as refused:
            claims = tuple(f.claim for f in refused.findings)
            return Release(False, True, claims, str(refused))
        except VerificationError as refused:
            claim = "chain" if "chain" in type(refused).__name__.lower() else "signature"
            return Release(False, True, (claim,), str(refused))
        return Release(True, True, detail="measurement, policy, TCB and nonce accepted")

    def guest_request_report(self) -> str:
        if self.vm.requester is None:
            return "no guest-request channel"
        try:
            self.vm.requester.report(self.random_bytes(64))
        except CvmError as refused:
            return f"{type(refused).__name__}: {refused}"
        return "ok"

    # -- files (none: this lab boots no disk) -------------------------------------------------
    def bundle(self) -> Path:
        raise StateError("this lab boots no disk image")

    def foreign_bundle(self) -> Path:
        raise StateError("this lab boots no disk image")

    def old_release(self) -> Path:
        raise StateError("this lab boots no disk image")

    def boot(self) -> BootReport:
        raise StateError("this lab boots no disk image")
