"""Emulated CVMs that attest: launched through the PSP, booted under measured boot into the vTPM
in their SVSM, each able to produce ``cvm-evidence/1`` for a verifier's nonce.

The owner side (:class:`Owner`) holds what a relying party registers: the firmware image with its
predicted launch digest, the signed UKI and varstore with the PCRs and the event log its boot
produces — the UKI, its keys and varstore made by the owner's image tools
(:func:`cvm.image.boot_chain.build_chain`, :class:`cvm.image.keys.OwnerKeys`), as
``cvm image build`` makes them; :data:`BOOT_ATTACKS` are the host's changes to that boot chain.
:meth:`Owner.launch` starts one CVM on a chosen chip and TCB, optionally with the host's changes
(other firmware, more vCPUs, another UKI or varstore), so tests, the benchmarks and
``cvm attest evidence`` share one way to make genuine and hostile evidence.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cvm.amd import DEFAULT_SEED
from cvm.amd.authority import EmulatedRoot
from cvm.amd.pki import Vendor
from cvm.crypto.drbg import OsRandom, SeededRandom
from cvm.crypto.jose import KeyPair
from cvm.formats.initramfs import InitramfsManifest, build_initramfs
from cvm.formats.kbs.evidence import CvmEvidence
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.formats.tcg.algorithm import SHA256
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.replay import replay
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.attest import (
    DEFAULT_QUOTED_PCRS,
    AttestationAgent,
    Certificates,
    VtpmPcrBank,
)
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.uki import uki_sections
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import DEFAULT_POLICY, GuestRequestRelay, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.image.boot_chain import LOADER, OS_RELEASE, build_chain, make_kernel, make_uki
from cvm.image.disk_layout import DiskPlan
from cvm.image.keys import OwnerKeys
from cvm.image.measurement import VcpuConfig, snp_launch_digest
from cvm.image.pcr_prediction import predict
from cvm.vtpm.state_file import MonotonicCounter

MILAN_SIGNATURE = 0x00A00F11
CURRENT_TCB = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
OLD_TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
)
FIRMWARE_SEED = b"cvm attested firmware"
BUFFER_GPA, SCRATCH_GPA = 0x20000, 0x21000
SEALED_PCRS = (4, 7, 11)


@dataclass(frozen=True)
class OwnerImage:
    """What the owner built: the signed UKI, the varstore, and the predicted PCRs (sha256)."""

    uki: bytes
    varstore: Varstore
    predicted: dict[int, bytes]


def build_owner_image(random: Callable[[int], bytes] | None = None) -> OwnerImage:
    """The owner's keys, its signed UKI (kernel, initramfs naming the root, command line) and
    enrolled varstore, built by the image tools, and the PCRs predicted for its boot."""
    rng = random or OsRandom()
    keys = OwnerKeys.generate(rng, vendor=False, pcr_policy=False)
    plan = DiskPlan.make(rng)
    initrd = build_initramfs(InitramfsManifest(plan.luks_uuid, str(plan.root_guid), None),
                             OS_RELEASE)
    uki = build_chain("uki", keys, initrd, plan.luks_uuid, False).files[LOADER]
    varstore = keys.varstore()
    predicted = predict(BootChain(EspFiles({LOADER: uki}), varstore)).values("sha256")
    return OwnerImage(uki, varstore, {pcr: predicted[pcr] for pcr in SEALED_PCRS})


def _host_uki(owner: OwnerImage) -> bytes:
    """The host's own UKI: another kernel, a root shell on the command line, the owner's
    initramfs (copied from its UKI), unsigned."""
    initrd = dict(uki_sections(owner.uki))[".initrd"]
    return make_uki(make_kernel("6.1.0-host"), "console=ttyS0 init=/bin/sh", initrd)


def _edited(uki: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and old in uki
    return uki.replace(old, new, 1)


# The host's changes to the owner's boot chain on the ESP: (UKI, varstore) it boots instead.
BOOT_ATTACKS: dict[str, Callable[[OwnerImage], tuple[bytes, Varstore]]] = {
    "host edits the kernel command line on the ESP": lambda owner: (
        _edited(owner.uki, b" ro\0", b" rw\0"), owner.varstore),
    "host patches one byte of the kernel": lambda owner: (
        _edited(owner.uki, b"Linux version", b"Linux versioN"), owner.varstore),
    "host swaps in its own unsigned UKI": lambda owner: (_host_uki(owner), owner.varstore),
    "host clears the varstore (Secure Boot off) and boots its UKI": lambda owner: (
        _host_uki(owner), Varstore.empty_4m()),
}


def boot_log(uki: bytes, varstore: Varstore) -> EventLog:
    """The event log (and so the PCRs) a boot of ``uki`` under ``varstore`` produces."""
    return BootChain(EspFiles({LOADER: uki}), varstore).run(SoftwarePcrBank(("sha256",))).log


@dataclass
class Cvm:
    """One running CVM: its SVSM with the vTPM, its guest OS's view, its boot's event log."""

    guest: SvsmGuest
    client: TpmClient
    event_log: bytes
    certificates: Certificates
    chip_index: int
    tcb: TcbVersion
    tee_key: KeyPair = field(default_factory=KeyPair.generate)
    agent: AttestationAgent | None = field(default=None, repr=False)

    def evidence(self, nonce: str, tee_pubkey: dict[str, Any] | None = None) -> CvmEvidence:
        """Fresh evidence for ``nonce``, binding this CVM's TEE key (or ``tee_pubkey``), from
        the CVM's attestation agent (its AK made once and kept loaded)."""
        key = self.tee_key.public_jwk() if tee_pubkey is None else tee_pubkey
        if self.agent is None:
            self.agent = AttestationAgent(self.guest, self.client, self.event_log,
                                          self.certificates)
        return self.agent.evidence(nonce, key)


@dataclass
class Owner:
    """What the owner built and predicted, and the vendor whose chips run it."""

    vendor: Vendor
    firmware: bytes
    image: OwnerImage
    measurement: bytes
    pcrs: dict[int, bytes]
    reference_log: bytes
    random: Callable[[int], bytes]
    _psps: dict[tuple[int, TcbVersion], tuple[Hypervisor, SecureProcessor, GuestRequestRelay]] = (
        field(default_factory=dict))

    def launch(self, chip_index: int = 0, tcb: TcbVersion = CURRENT_TCB, *,
               firmware: bytes | None = None, vcpus: int = 1, policy: int = DEFAULT_POLICY,
               uki: bytes | None = None, varstore: Varstore | None = None) -> Cvm:
        """Launch and boot one CVM; the keyword arguments are the host's changes."""
        hv, psp, relay = self._platform(chip_index, tcb)
        config = SnpLaunchConfig(vcpus=vcpus, policy=policy)
        launched = launch_snp(hv, psp, firmware or self.firmware, config, relay)
        vcpu = launched.guest.vcpus[0]
        vcpu.vmrun()
        assert launched.secrets_gpa is not None
        svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), self.random)
        svsm.grant(BUFFER_GPA, 2)
        guest = SvsmGuest(vcpu, svsm, BUFFER_GPA, SCRATCH_GPA)
        client = TpmClient(guest.tpm_execute)
        client.startup()
        chain = BootChain(EspFiles({LOADER: uki or self.image.uki}),
                          varstore or self.image.varstore)
        log = chain.run(VtpmPcrBank(client)).log
        certificates = Certificates(
            self.vendor.vcek_certificate(psp.chip_id, psp.reported_tcb),
            self.vendor.ask_certificate, self.vendor.ark_certificate)
        return Cvm(guest, client, log.to_bytes(), certificates, chip_index, tcb)

    def _platform(self, chip_index: int, tcb: TcbVersion
                  ) -> tuple[Hypervisor, SecureProcessor, GuestRequestRelay]:
        key = (chip_index, tcb)
        if key not in self._psps:
            machine = Machine(8 << 30, random_bytes=self.random)
            psp = SecureProcessor(machine, self.vendor.manufacture_chip(chip_index), tcb=tcb)
            self._psps[key] = (Hypervisor(machine), psp, GuestRequestRelay(psp))
        return self._psps[key]


def build_owner(vendor: Vendor, random: Callable[[int], bytes],
                image: OwnerImage | None = None) -> Owner:
    """The owner's firmware, signed boot chain and every predicted value."""
    firmware = build_image(0x40000, sections=SECTIONS, seed=FIRMWARE_SEED)
    measurement = snp_launch_digest(OvmfImage.parse(firmware), VcpuConfig(1, MILAN_SIGNATURE))
    owner_image = image or build_owner_image()
    log = boot_log(owner_image.uki, owner_image.varstore)
    pcrs = replay(log)["sha256"]
    return Owner(vendor, firmware, owner_image, measurement, pcrs, log.to_bytes(), random)


def reference_json(owner: Owner, minimum_tcb: TcbVersion = CURRENT_TCB,
                   pcrs: tuple[int, ...] = DEFAULT_QUOTED_PCRS) -> dict[str, Any]:
    """The owner's ``cvm-reference/1`` document for this image (what the KBS registers)."""
    log = EventLog.parse(owner.reference_log)
    images = sorted({
        (event.digest(SHA256.alg_id) or b"").hex() for event in log.events
        if event.pcr_index == 4 and event.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    })
    components = minimum_tcb.components()
    return {
        "version": "cvm-reference/1",
        "measurement": [owner.measurement.hex()],
        "pcrs": {"sha256": {str(pcr): owner.pcrs[pcr].hex() for pcr in pcrs
                            if pcr in owner.pcrs}},
        "boot_images": images,
        "minimum_tcb": {name: components[name] for name in
                        ("boot_loader", "tee", "snp", "microcode")},
        "vmpl": 0,
        "guest_policy": {"allow_debug": False, "allow_migration_agent": False},
        "event_log": base64.b64encode(owner.reference_log).decode(),
        "unchecked": ["host_data", "id_key_digest", "author_key_digest", "family_id",
                      "image_id", "chip_id", "minimum_guest_svn", "minimum_firmware"],
    }


def seeded_random(seed: bytes) -> Callable[[int], bytes]:
    """Reproducible randomness for emulated machines (:class:`cvm.crypto.drbg.SeededRandom`)."""
    return SeededRandom(seed)


def emulated_owner(issued: datetime, seed: bytes = b"cvm attested guests",
                   image: OwnerImage | None = None, root: EmulatedRoot | None = None) -> Owner:
    """An owner on an emulated Milan vendor whose certificates were issued at ``issued``:
    by ``root`` (an installation's stored root), or this process's ephemeral one."""
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: issued, root=root)
    return build_owner(vendor, seeded_random(seed), image)
