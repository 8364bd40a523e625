"""Launch and remote attestation, end to end: the owner predicts, the PSP measures and signs,
the relying party appraises — and the host's launch-time attacks each show up as a finding.

Flows 2 and 4 of ARCHITECTURE.md. The owner predicts the launch digest of a firmware image
without running it; the host launches the image through the emulated PSP (SNP_LAUNCH_START,
LAUNCH_UPDATE, LAUNCH_FINISH); the guest asks the PSP for a report binding a fresh nonce; the
verifier, trusting only the emulated vendor's root, checks the chain, the signature and every
claim against the reference values. The host may change the firmware, the policy, the PSP
firmware (TCB rollback) or replay old evidence: each attempt must be refused with its own
finding, while the genuine launch is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.verifier.appraisal import Evidence, Verifier
from cvm.attestation.verifier.policy import ReferenceValues
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import ChainError, PolicyError
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor
from cvm.host.launch import DEFAULT_POLICY, GuestRequestRelay, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig, snp_launch_digest

MILAN_SIGNATURE = 0x00A00F11
POLICY_DEBUG = 1 << 19
OLD_TCB = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
NEW_TCB = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80A000, 0x3000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x11000, SectionType.SNP_SEC_MEM),
)


@dataclass(frozen=True)
class AttestOutcome:
    """One launch attempt and what the relying party concluded."""

    attempt: str
    accepted: bool
    claims: tuple[str, ...]
    findings: tuple[str, ...]


@dataclass
class World:
    """The vendor, one machine with its PSP, the owner's firmware and reference values."""

    vendor: Vendor
    firmware: bytes
    reference: ReferenceValues
    nonce: Callable[[], bytes]

    def platform(self) -> tuple[Hypervisor, SecureProcessor]:
        machine = Machine(8 << 30)
        psp = SecureProcessor(machine, self.vendor.manufacture_chip(0), tcb=OLD_TCB)
        psp.download_firmware(NEW_TCB, FirmwareVersion(1, 55, 24))
        psp.commit()
        return Hypervisor(machine, psp), psp


def owner_world(random_bytes: Callable[[int], bytes]) -> World:
    """The owner's firmware and its predicted measurement (no launch needed to predict it)."""
    firmware = build_image(0x40000, sections=SECTIONS, seed=b"cvm demo firmware")
    predicted = snp_launch_digest(OvmfImage.parse(firmware), VcpuConfig(1, MILAN_SIGNATURE), None)
    reference = ReferenceValues(measurement=predicted, vmpl=0, minimum_tcb=NEW_TCB)
    return World(default_vendor("Milan"), firmware, reference, lambda: random_bytes(64))


def _launch(
    world: World, firmware: bytes, policy: int, rollback: bool, nonce: bytes
) -> Evidence:
    hv, psp = world.platform()
    if rollback:
        psp.boot_firmware(OLD_TCB, FirmwareVersion(1, 52, 4))  # the host reflashes old firmware
    relay = GuestRequestRelay(psp)
    launched = launch_snp(hv, psp, firmware, SnpLaunchConfig(vcpus=1, policy=policy), relay)
    vcpu = launched.guest.vcpus[0]
    vcpu.vmrun()
    assert launched.secrets_gpa is not None
    response = GuestRequester.start(vcpu, launched.secrets_gpa, 0).report(nonce)
    report = AttestationReport.from_bytes(response.report)
    vcek = world.vendor.vcek_certificate(psp.chip_id, report.reported_tcb)
    return Evidence.from_cert_chain(response.report, vcek, world.vendor.cert_chain())


def _appraise(world: World, attempt: str, evidence: Evidence, nonce: bytes,
              roots: TrustRoots | None = None) -> AttestOutcome:
    verifier = Verifier(roots or TrustRoots.of([world.vendor.trust_anchor()], "emulated"))
    reference = ReferenceValues(**{**world.reference.__dict__, "report_data": nonce})
    try:
        verifier.appraise(evidence, reference)
    except PolicyError as refused:
        claims = tuple(f.claim for f in refused.findings)
        return AttestOutcome(attempt, False, claims, tuple(str(f) for f in refused.findings))
    except ChainError as refused:
        return AttestOutcome(attempt, False, ("chain",), (str(refused),))
    return AttestOutcome(attempt, True, (), ())


# What the relying party must conclude: accepted, or refused with exactly these claims.
EXPECTED: dict[str, tuple[str, ...] | None] = {
    "genuine launch": None,
    "host flips one bit of the firmware": ("measurement",),
    "host launches with debug allowed": ("policy.debug",),
    "host rolls the PSP firmware back": (
        "current_tcb", "committed_tcb", "reported_tcb", "launch_tcb",
    ),
    "host replays the old evidence": ("report_data",),
    "emulated evidence under AMD's real roots": ("chain",),
}


def as_expected(outcome: AttestOutcome) -> bool:
    expected = EXPECTED[outcome.attempt]
    if expected is None:
        return outcome.accepted
    return not outcome.accepted and set(outcome.claims) == set(expected)


def run_all(world: World) -> list[AttestOutcome]:
    """The genuine launch, then each attack, each appraised with a fresh nonce."""
    outcomes = []
    nonce = world.nonce()
    genuine = _launch(world, world.firmware, DEFAULT_POLICY, False, nonce)
    outcomes.append(_appraise(world, "genuine launch", genuine, nonce))
    tampered = bytearray(world.firmware)
    tampered[0x1234] ^= 1
    for attempt, firmware, policy, rollback in (
        ("host flips one bit of the firmware", bytes(tampered), DEFAULT_POLICY, False),
        ("host launches with debug allowed", world.firmware, DEFAULT_POLICY | POLICY_DEBUG, False),
        ("host rolls the PSP firmware back", world.firmware, DEFAULT_POLICY, True),
    ):
        fresh = world.nonce()
        outcomes.append(_appraise(world, attempt, _launch(world, firmware, policy, rollback,
                                                          fresh), fresh))
    outcomes.append(_appraise(world, "host replays the old evidence", genuine, world.nonce()))
    outcomes.append(
        _appraise(world, "emulated evidence under AMD's real roots", genuine, nonce,
                  TrustRoots.amd())
    )
    return outcomes
