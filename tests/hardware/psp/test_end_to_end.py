"""The issue's full emulated launch: the host launches an OVMF image on the emulated PSP, the
guest asks for a report, and the verifier — trusting only the emulated vendor's root — accepts
it against the owner's predicted measurement. One byte of firmware, a debug policy and a TCB
rollback are each caught with their own finding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.amd.pki import Vendor, default_vendor
from cvm.attestation.verifier.appraisal import Evidence, Verifier
from cvm.attestation.verifier.policy import ReferenceValues
from cvm.attestation.verifier.trust import TrustRoots
from cvm.errors import ChainError, PolicyError
from cvm.formats.ovmf.image import OvmfImage
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.sev_hashes import SevHashTable
from cvm.formats.snp.tcb_version import TcbVersion
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import FirmwareVersion, SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.image.measurement import VcpuConfig, snp_launch_digest

pytestmark = pytest.mark.slow  # the emulated vendor's RSA-4096 roots take seconds to derive

MILAN = 0x00A00F11
NONCE = bytes(range(64))
OLD = TcbVersion(boot_loader=3, tee=0, snp=8, microcode=115)
NEW = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)
TCB_CLAIMS = {"current_tcb", "committed_tcb", "reported_tcb", "launch_tcb"}


@pytest.fixture(scope="module")
def vendor() -> Vendor:
    return default_vendor("Milan")


@pytest.fixture
def world(vendor: Vendor) -> tuple[Hypervisor, SecureProcessor]:
    machine = Machine(8 << 30)
    psp = SecureProcessor(machine, vendor.manufacture_chip(0), tcb=OLD)
    psp.download_firmware(NEW, FirmwareVersion(1, 55, 24))
    psp.commit()
    return Hypervisor(machine), psp


@pytest.fixture
def run_guest(
    world: tuple[Hypervisor, SecureProcessor], vendor: Vendor, requester: Callable[..., Any]
) -> Callable[..., Evidence]:
    """Launch ``firmware`` with ``config``; the guest asks for a report; returns the evidence."""
    hv, psp = world

    def run(firmware: bytes, **config: Any) -> Evidence:
        relay = GuestRequestRelay(psp)
        launched = launch_snp(hv, psp, firmware, SnpLaunchConfig(**config), relay)
        response = requester(launched).report(NONCE)
        assert response.status == 0
        report = AttestationReport.from_bytes(response.report)
        vcek = vendor.vcek_certificate(psp.chip_id, report.reported_tcb)
        return Evidence.from_cert_chain(response.report, vcek, vendor.cert_chain())

    return run


def _reference(firmware: bytes, hashes: SevHashTable | None) -> ReferenceValues:
    predicted = snp_launch_digest(OvmfImage.parse(firmware), VcpuConfig(2, MILAN), hashes)
    return ReferenceValues(measurement=predicted, report_data=NONCE, vmpl=0, minimum_tcb=NEW)


def _claims(error: PolicyError) -> set[str]:
    return {finding.claim for finding in error.findings}


def test_emulated_launch_is_accepted(
    run_guest: Callable[..., Evidence], vendor: Vendor, firmware: bytes
) -> None:
    hashes = SevHashTable.for_boot(b"vmlinuz", b"initrd", "console=ttyS0")
    evidence = run_guest(firmware, vcpus=2, hashes=hashes)
    verifier = Verifier(TrustRoots.of([vendor.trust_anchor()], "emulated"))
    verified = verifier.appraise(evidence, _reference(firmware, hashes))
    assert verified.report.report_data == NONCE
    with pytest.raises(ChainError):  # AMD's real roots never vouch for emulated evidence
        Verifier(TrustRoots.amd()).verify(evidence)


def test_one_byte_of_firmware_is_caught(
    run_guest: Callable[..., Evidence], vendor: Vendor, firmware: bytes
) -> None:
    tampered = bytearray(firmware)
    tampered[0x1234] ^= 0x01
    evidence = run_guest(bytes(tampered), vcpus=2)
    verifier = Verifier(TrustRoots.of([vendor.trust_anchor()]))
    with pytest.raises(PolicyError) as refused:
        verifier.appraise(evidence, _reference(firmware, None))
    assert _claims(refused.value) == {"measurement"}


def test_debug_policy_is_caught(
    run_guest: Callable[..., Evidence], vendor: Vendor, firmware: bytes
) -> None:
    evidence = run_guest(firmware, vcpus=2, policy=0x30000 | 1 << 19)
    verifier = Verifier(TrustRoots.of([vendor.trust_anchor()]))
    with pytest.raises(PolicyError) as refused:
        verifier.appraise(evidence, _reference(firmware, None))
    assert _claims(refused.value) == {"policy.debug"}


def test_tcb_rollback_is_caught(
    world: tuple[Hypervisor, SecureProcessor],
    run_guest: Callable[..., Evidence],
    vendor: Vendor,
    firmware: bytes,
) -> None:
    _, psp = world
    psp.boot_firmware(OLD, FirmwareVersion(1, 52, 4))  # the host reflashes the old firmware
    evidence = run_guest(firmware, vcpus=2)
    verifier = Verifier(TrustRoots.of([vendor.trust_anchor()]))
    verified = verifier.verify(evidence)  # still authentic: signed by the VCEK of the old TCB
    assert verified.report.reported_tcb == OLD
    with pytest.raises(PolicyError) as refused:
        verifier.appraise(evidence, _reference(firmware, None))
    claims = _claims(refused.value)
    assert claims and claims <= TCB_CLAIMS and "reported_tcb" in claims
