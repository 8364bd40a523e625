"""The one running confidential VM that every host attack acts on.

:class:`BootLab` implements :class:`~cvm.host.adversary.lab.Lab` over
:func:`cvm.guest.run.boot_bundle`: the host gets its own copy of the owner's bundle (never the
``owner/`` folder), launches the VM from it through the PSP, and the guest boots as it always
does — the SVSM and its vTPM (SEV-SNP) or the host's vTPM, Secure Boot and measured boot, the
initramfs unsealing the volume key and opening the LUKS2 root, the workload writing its data
on the encrypted root. Only then does the attack begin, against the secrets that VM really
holds: the volume key in the OS's keyring page, the workload's data in its page (the page the
memory attacks aim at), the vTPM's seeds and state key in the SVSM's VMPL0 pages, VMPCK0.

What the guest does while it is attacked (write and read a page, set a register, take an exit,
ask for CPUID or a report) it does through its own vCPU, at the level it runs at (VMPL1 under
the SVSM); what the host does to boot it again (changed files, firmware, policy, a rolled-back
PSP) goes through :meth:`BootLab.boot`, which launches the VM afresh from the host's files on
the same host. The owner's relying party and its rollback counter persist across the boots of
one lab, as they would across reboots of one VM; the relying party's own policy demands the
platform's current TCB.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.verifier.appraisal import Evidence as VerifierEvidence
from cvm.attestation.verifier.appraisal import VerifiedReport, Verifier
from cvm.attestation.verifier.policy import ReferenceValues
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import CvmError, FormatError, PolicyError, StateError, VerificationError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.ovmf.sev_metadata import SectionType
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.cpuid_page import CpuidPage
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.svsm.svsm_image import SvsmImage, svsm_end_gpa
from cvm.guest.run import PRODUCT, boot_bundle, relying_party
from cvm.guest.trace import VmTrace
from cvm.guest.vm import GuestMemoryMap, GuestVm
from cvm.hardware.fault import FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor
from cvm.hardware.vm import Mode
from cvm.host.adversary.boot_files import manifest
from cvm.host.adversary.host_view import HostView
from cvm.host.adversary.lab import BootReport, Evidence, Release
from cvm.host.launch import DEFAULT_POLICY
from cvm.host.vm_run import load_host_image
from cvm.host.vmm import Guest, Hypervisor
from cvm.image.provisioning import RelyingParty, owner_reference
from cvm.image.reference_values import ImageReferenceValues
from cvm.scenarios.attack_bundles import LabBundles
from cvm.scenarios.lab_files import file_extents, host_copy
from cvm.vtpm.state_file import MonotonicCounter

RandomBytes = Callable[[int], bytes]
DRAM_BYTES = 4 << 30
STATE_BOOTED = ("initramfs", "workload")
OLD_TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
NEW_TCB = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
OLD_FIRMWARE, NEW_FIRMWARE = FirmwareVersion(1, 52, 4), FirmwareVersion(1, 55, 24)
SNP_POLICY_DEBUG = 1 << 19
SEV_POLICY_NODBG, SEV_POLICY_ES = 0x1, 0x4
MEMORY = GuestMemoryMap()
SECRET_GPA = MEMORY.data  # the workload's data page
SPARE_GPA = MEMORY.data + 2 * PAGE_SIZE  # a page of the OS's that nothing else uses
NONCE_BYTES = 64


class TcbFloorVerifier(Verifier):
    """The relying party's verifier: the image's reference values, and the platform TCB the
    relying party demands (its own policy, not the image's)."""

    def __init__(self, roots: TrustRoots, minimum_tcb: TcbVersion) -> None:
        super().__init__(roots)
        self.minimum_tcb = minimum_tcb

    def appraise(self, evidence: VerifierEvidence, reference: ReferenceValues) -> VerifiedReport:
        return super().appraise(evidence, replace(reference, minimum_tcb=self.minimum_tcb))


def forge_launch_digest(path: Path, mode: str, digest: bytes) -> None:
    """Write ``digest`` as ``mode``'s launch digest into the reference values at ``path`` (the
    host's copy), as a host that edits the files it was handed would."""
    document = json.loads(path.read_bytes())
    for entry in document["launch"]:
        if entry["mode"] == mode:
            entry["digest"] = digest.hex()
    path.write_text(json.dumps(document, indent=1) + "\n")


def owner_party(folder: Path, reference: ImageReferenceValues, vendor: Vendor,
                random_bytes: RandomBytes) -> RelyingParty:
    """The owner's relying party for the image in ``folder`` (it reads ``owner/``), demanding
    the platform's current TCB."""
    return relying_party(folder, reference, vendor, random_bytes,
                         lambda roots: TcbFloorVerifier(roots, NEW_TCB))


@lru_cache(maxsize=8)
def _vcek(vendor: Vendor, chip_id: bytes, tcb: TcbVersion) -> bytes:
    return vendor.vcek_certificate(chip_id, tcb)


def release_of(refusal: CvmError | None, released: bool) -> Release:
    """The relying party's decision, from its error (findings name the failed claims)."""
    if released:
        return Release(True, True, detail="measurement, policy, TCB and nonce accepted")
    if isinstance(refusal, PolicyError):
        return Release(False, True, tuple(f.claim for f in refusal.findings), str(refusal))
    if isinstance(refusal, VerificationError):
        claim = "chain" if "chain" in type(refusal).__name__.lower() else "signature"
        return Release(False, True, (claim,), str(refusal))
    return Release(False, True, (), f"{type(refusal).__name__}: {refusal}")


def latest_guest(traces: list[VmTrace]) -> Guest:
    """The host's record of the VM of the latest launch that got as far as a guest."""
    for trace in reversed(traces):
        if trace.guest is not None:
            guest: Guest = trace.guest
            return guest
    raise StateError("the VM has not been launched yet")


def workload_data(known: dict[str, bytes]) -> bytes:
    """The workload's data among the secrets a boot held (empty before any boot held it)."""
    return known.get("workload data", b"")


class BootLab:
    """One mode's VM booted from a host-side copy of the owner's bundle; see the module
    docstring. ``boot`` False leaves it unlaunched (the first :meth:`boot` starts it)."""

    def __init__(self, mode: Mode, bundles: LabBundles, random_bytes: RandomBytes = os.urandom,
                 workdir: Path | None = None, *, boot: bool = True) -> None:
        self._mode = mode
        self.bundles = bundles
        self.random_bytes = random_bytes
        self._scratch = tempfile.TemporaryDirectory(prefix="cvm-lab-", dir=workdir)
        self._scratch_path = Path(self._scratch.name)
        self._inherited: list[tempfile.TemporaryDirectory[str]] = []
        self._copy_pending = False
        self.owner_folder = bundles.own_for(mode)
        self._bundle = host_copy(self.owner_folder, self._scratch_path / "host")
        self._foreign: Path | None = None
        self.vendor = default_vendor(PRODUCT)
        machine = Machine(DRAM_BYTES, random_bytes=random_bytes)
        psp = SecureProcessor(machine, self.vendor.manufacture_chip(0), tcb=OLD_TCB)
        psp.download_firmware(NEW_TCB, NEW_FIRMWARE)
        psp.commit()
        self._host = Hypervisor(machine, psp)
        self.view = HostView(self._host)
        self._devices = list(self._host.exit_hooks)  # the host's own hooks, before any VM
        self.reference = owner_reference(self.owner_folder, "the owner's relying party")
        self.party = owner_party(self.owner_folder, self.reference, self.vendor, random_bytes)
        self.counter = MonotonicCounter()
        self.traces: list[VmTrace] = []
        self._known: dict[str, bytes] = {}
        if boot:
            first = self.boot()
            if not first.workload:
                self.close()
                raise StateError(f"the genuine {mode.value} boot failed at {first.refused_by}: "
                                 f"{first.error}")

    def close(self) -> None:
        self._scratch.cleanup()

    def rehome(self, workdir: Path | None = None) -> None:
        """Give this lab (a forked copy of a booted one) its own copy of the host's files, so
        that what an attack changes on disk stays its own — made when the files are first
        written or booted from, not before (most attacks never touch them). The original's
        folder is the original's: this copy keeps its handle (never cleaning it up)."""
        self._inherited.append(self._scratch)
        self._scratch = tempfile.TemporaryDirectory(prefix="cvm-lab-", dir=workdir)
        self._copy_pending = True

    def _own_files(self) -> Path:
        """The host's folder of this lab, copied first if it is still the original's."""
        if self._copy_pending:
            scratch = Path(self._scratch.name)
            self._bundle = host_copy(self._bundle, scratch / "host")
            if self._foreign is not None:
                self._foreign = host_copy(self._foreign, scratch / "foreign")
            self._scratch_path = scratch
            self._copy_pending = False
        return self._bundle

    def known_secrets(self) -> dict[str, bytes]:
        """The secrets each boot held when it ended (read back through its guest then)."""
        return dict(self._known)

    # -- the Lab protocol: the host and the VM ------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def host(self) -> Hypervisor:
        return self._host

    @property
    def guest(self) -> Guest:
        return latest_guest(self.traces)

    @property
    def psp(self) -> SecureProcessor | None:
        return self._host.psp

    @property
    def secret(self) -> bytes:
        """The workload's data as the latest boot left it in its page."""
        return workload_data(self._known)

    @property
    def secret_gpa(self) -> int:
        return SECRET_GPA

    @property
    def spare_gpa(self) -> int:
        return SPARE_GPA

    def running(self) -> GuestVm:
        """The guest of the VM the host runs now (the latest launch)."""
        for trace in reversed(self.traces):
            if trace.vm is not None:
                vm: GuestVm = trace.vm
                return vm
        raise StateError("the VM has not been launched yet")

    def secrets(self) -> dict[str, bytes]:
        """Every secret any boot of this lab held, read back through its guest (the secrets
        known when each boot ended, and those it still holds)."""
        found = dict(self._known)
        for trace in self.traces:
            try:
                secrets = trace.secrets()
            except (CvmError, FaultRaised):
                continue  # an attack took the page away: what was known stays known
            found.update({k: v for k, v in secrets.items() if len(v) >= 8 and any(v)})
        return found

    def host_files(self) -> dict[str, bytes]:
        """The files the host holds (each data extent of a sparse file apart, named with its
        offset), and the logs of every run."""
        files = {}
        for path in sorted(self._bundle.rglob("*")):
            if path.is_file():
                name = str(path.relative_to(self._bundle))
                extents = file_extents(path)
                if len(extents) == 1 and extents[0][0] == 0:
                    files[name] = extents[0][1]
                    continue
                for start, data in extents:
                    files[f"{name} at {start:#x}"] = data
        for number, trace in enumerate(self.traces):
            if trace.run is not None:
                files[f"host log of boot {number}"] = b"\n".join(trace.run.log)
        return files

    # -- the guest, acting --------------------------------------------------------------------
    def guest_write(self, gpa: int, data: bytes) -> None:
        self.running().vcpu.write(gpa, data)

    def guest_read(self, gpa: int, size: int) -> bytes:
        return self.running().vcpu.read(gpa, size)

    def guest_set_register(self, name: str, value: int) -> None:
        self.running().vcpu.set_register(name, value)

    def guest_register(self, name: str) -> int:
        return self.running().vcpu.register(name)

    def guest_exit(self) -> None:
        self.running().kernel.halt()

    def guest_cpuid(self, leaf: int) -> tuple[int, int, int, int]:
        if not self._mode.snp:
            return self.running().kernel.cpuid(leaf)
        # An SNP guest trusts its CPUID page, which the PSP checked at launch: the host's
        # answers reach it only through a launch, so the VM is launched again with them and
        # the SVSM reads the page the PSP accepted.
        self.boot()
        vm = self.running()
        if vm.svsm is None:
            raise StateError("the relaunched VM has no SVSM to read its CPUID page")
        gpa = self._cpuid_gpa()

        def read_page() -> bytes:
            vm.vcpu.vm.set_private(gpa, True)  # the SVSM maps its CPUID page private
            return vm.vcpu.read(gpa, PAGE_SIZE)

        page = CpuidPage.from_bytes(vm.svsm.at_vmpl0(read_page))
        for function in page.functions:
            if function.eax_in == leaf and function.ecx_in == 0:
                return function.eax, function.ebx, function.ecx, function.edx
        return 0, 0, 0, 0

    def _cpuid_gpa(self) -> int:
        image = load_host_image(self._own_files())
        if image.svsm is None:
            raise StateError("an SNP image without an SVSM")
        end = svsm_end_gpa(OvmfImage.parse(image.firmware), len(image.varstore))
        for section in SvsmImage.parse(image.svsm, end_gpa=end).sections:
            if section.type is SectionType.CPUID:
                return section.gpa
        raise StateError("the SVSM image has no CPUID page")

    def guest_interrupt_masked(self) -> None:
        vcpu = self.running().vcpu
        vcpu.set_register("rflags", vcpu.register("rflags") & ~(1 << 9))

    def guest_events(self) -> list[int]:
        return list(self.running().vcpu.delivered_events)

    # -- launch and evidence ------------------------------------------------------------------
    def launch(self, *, flip_firmware_bit: int | None = None, debug: bool = False,
               rollback: bool = False, forge_reference: bool = False) -> Release:
        if flip_firmware_bit is not None:
            bundle = self._own_files()
            firmware = bundle / str(manifest(bundle)["firmware"]["ovmf"])
            data = bytearray(firmware.read_bytes())
            data[flip_firmware_bit // 8] ^= 1 << flip_firmware_bit % 8
            firmware.write_bytes(bytes(data))
        if forge_reference and self._mode.snp:  # the other modes' launches are not appraised
            self._boot(None)  # once, to learn what the PSP measures of the host's firmware
            digest = self.traces[-1].launch_measurement
            if digest is not None:
                forge_launch_digest(self._own_files() / "reference-values.json",
                                    self._mode.value, digest)
        if rollback:
            assert self._host.psp is not None
            self._host.psp.boot_firmware(OLD_TCB, OLD_FIRMWARE)  # the host reflashes it
        policy = None
        if debug and self._mode.snp:
            policy = DEFAULT_POLICY | SNP_POLICY_DEBUG
        elif debug:
            policy = (SEV_POLICY_ES if self._mode is Mode.SEV_ES else 0) & ~SEV_POLICY_NODBG
        released = self.party.released
        report = self._boot(policy)
        if not self._mode.snp:
            where = f" (stopped at {report.refused_by}: {report.error})" if report.error else ""
            return Release(report.unsealed, False, detail="nothing appraised the launch; the "
                           "host's vTPM " + ("unsealed the volume key" if report.unsealed
                                             else "did not unseal") + where)
        refusal = self.traces[-1].refused
        return release_of(None if refusal is None else refusal[1],
                          self.party.released > released)

    def attest(self) -> tuple[bytes, Evidence]:
        vm = self.running()
        if vm.svsm is None:
            raise StateError(f"a {self._mode.value} VM gives no SNP evidence")
        nonce = self.random_bytes(NONCE_BYTES)
        report = vm.svsm.report(nonce)
        psp = self._host.psp
        assert psp is not None
        tcb = AttestationReport.from_bytes(report).reported_tcb
        return nonce, Evidence(report, _vcek(self.vendor, psp.chip_id, tcb),
                               self.vendor.cert_chain())

    def appraise(self, evidence: Evidence, nonce: bytes) -> Release:
        if not self._mode.snp:
            return Release(False, False, ("chain",), "no vendor root for this mode's evidence")
        reference = self.reference.snp_reference(self.traces[-1].vcpus, nonce)
        try:
            self.party.verifier.appraise(VerifierEvidence.from_cert_chain(
                evidence.report, evidence.vcek, evidence.cert_chain), reference)
        except (PolicyError, VerificationError, FormatError) as refused:
            return release_of(refused, False)
        return release_of(None, True)

    def guest_request_report(self) -> str:
        vm = self.running()
        if vm.svsm is None:
            return "no guest-request channel"
        try:
            vm.svsm.report(self.random_bytes(NONCE_BYTES))
        except CvmError as refused:
            return f"{type(refused).__name__}: {refused}"
        return "ok"

    # -- files at rest and booting from them ----------------------------------------------------
    def bundle(self) -> Path:
        return self._own_files()

    def foreign_bundle(self) -> Path:
        self._own_files()
        if self._foreign is None:
            self._foreign = host_copy(self.bundles.foreign_for(self._mode),
                                      self._scratch_path / "foreign")
        return self._foreign

    def old_release(self) -> Path:
        return self.bundles.old_release

    def boot(self) -> BootReport:
        return self._boot(None)

    def _boot(self, policy: int | None) -> BootReport:
        """Launch the VM again from the host's files; the previous run's devices go with it."""
        self._host.exit_hooks[:] = self._devices
        trace = boot_bundle(self._own_files(), self._mode, host=self._host,
                            random=self.random_bytes, counter=self.counter,
                            party=self.party, store_state=True, policy=policy)
        self.traces.append(trace)
        with contextlib.suppress(CvmError, FaultRaised):  # a VM that never started: nothing
            self._known.update({k: v for k, v in trace.secrets().items()
                                if len(v) >= 8 and any(v)})
        if trace.refused is None:
            return BootReport(True, trace.unsealed, trace.workload_ok)
        stage, error = trace.refused
        return BootReport(stage in STATE_BOOTED, trace.unsealed, trace.workload_ok, stage,
                          str(error), type(error).__name__)
