"""Emulated evidence for verifier tests: a Milan vendor, one chip, a signing function.

Reports are signed here with the VCEK the emulated KDS certifies (the key the PSP derives),
standing in for the emulated PSP firmware.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from cvm.amd import DEFAULT_SEED, ChipFuses, Vendor, derive_vcek_private_key
from cvm.attestation.verifier import Evidence, ReferenceValues, TrustRoots, Verifier
from cvm.crypto import amd_ecdsa
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.platform_info import PlatformInfo
from cvm.formats.snp.tcb_version import TcbVersion

ISSUE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
VERIFY_TIME = datetime(2026, 6, 1, tzinfo=UTC)
TCB = TcbVersion(boot_loader=4, tee=0, snp=22, microcode=213)


@dataclass
class Emulated:
    vendor: Vendor
    chip: ChipFuses
    report: AttestationReport
    reference: ReferenceValues
    sign: Callable[[AttestationReport], bytes]
    evidence: Callable[[bytes], Evidence]
    verifier: Verifier


@pytest.fixture(scope="session")
def emulated() -> Emulated:
    vendor = Vendor("Milan", DEFAULT_SEED, clock=lambda: ISSUE_TIME)
    chip = vendor.manufacture_chip(7)

    def sign(report: AttestationReport) -> bytes:
        key = derive_vcek_private_key(chip.chip_secret, report.reported_tcb, "Milan")
        r, s = amd_ecdsa.sign(key, report.signed_bytes())
        return report.with_signature(r, s).to_bytes()

    def evidence(data: bytes) -> Evidence:
        tcb = AttestationReport.from_bytes(data).reported_tcb
        return Evidence(
            data, vendor.vcek_certificate(chip.chip_id, tcb), vendor.ask_certificate,
            vendor.ark_certificate,
        )

    report = AttestationReport(
        version=3,
        guest_svn=2,
        policy=GuestPolicy(smt=True),
        family_id=b"F" * 16,
        image_id=b"I" * 16,
        current_tcb=TCB,
        platform_info=PlatformInfo(smt_en=True),
        report_data=hashlib.sha512(b"nonce").digest(),
        measurement=hashlib.sha384(b"firmware").digest(),
        host_data=b"H" * 32,
        id_key_digest=b"K" * 48,
        author_key_digest=b"A" * 48,
        report_id=b"R" * 32,
        reported_tcb=TCB,
        cpuid_fam_id=0x19, cpuid_mod_id=0x01, cpuid_step=0x1,
        chip_id=chip.chip_id,
        committed_tcb=TCB,
        current_major=1, current_minor=55, current_build=21,
        committed_major=1, committed_minor=55, committed_build=21,
        launch_tcb=TCB,
    )
    reference = ReferenceValues(
        measurement=report.measurement,
        report_data=report.report_data,
        host_data=report.host_data,
        family_id=report.family_id,
        image_id=report.image_id,
        id_key_digest=report.id_key_digest,
        author_key_digest=report.author_key_digest,
        chip_id=report.chip_id,
        vmpl=0,
        minimum_tcb=TCB,
        minimum_guest_svn=2,
        minimum_firmware=(1, 55),
    )
    roots = TrustRoots.of([vendor.trust_anchor()], "emulated")
    return Emulated(
        vendor, chip, report, reference, sign, evidence,
        Verifier(roots, clock=lambda: VERIFY_TIME),
    )
