"""Validation rules one by one: each names its claim, the expected and the actual value."""

from __future__ import annotations

from cvm.attestation.verifier import ReferenceValues, validate
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.tcb_version import TcbVersion

REPORT = AttestationReport(
    policy=GuestPolicy(smt=True, migrate_ma=True),
    measurement=b"\x01" * 48,
    current_tcb=TcbVersion(boot_loader=3, snp=8, microcode=115),
    reported_tcb=TcbVersion(boot_loader=3, snp=8, microcode=115),
    committed_tcb=TcbVersion(boot_loader=3, snp=8, microcode=115),
    launch_tcb=TcbVersion(boot_loader=2, snp=8, microcode=115),
    current_major=1, current_minor=55,
)


def _claims(reference: ReferenceValues) -> list[str]:
    return [finding.claim for finding in validate(REPORT, reference)]


def test_nothing_checked_but_policy_defaults() -> None:
    assert _claims(ReferenceValues()) == ["policy.migrate_ma"]
    assert _claims(ReferenceValues(allow_migration_agent=True)) == []


def test_any_of_several_measurements() -> None:
    reference = ReferenceValues(measurement=[b"\x02" * 48, b"\x01" * 48],
                                allow_migration_agent=True)
    assert _claims(reference) == []
    findings = validate(REPORT, ReferenceValues(measurement=[b"\x02" * 48],
                                                allow_migration_agent=True))
    assert findings[0].expected == "02" * 48 and findings[0].actual == "01" * 48


def test_minimum_tcb_is_checked_on_every_tcb_field() -> None:
    reference = ReferenceValues(minimum_tcb=TcbVersion(boot_loader=3, snp=8, microcode=115),
                                allow_migration_agent=True)
    findings = validate(REPORT, reference)
    assert [f.claim for f in findings] == ["launch_tcb"]
    assert "boot_loader=2" in findings[0].actual and "rollback" in findings[0].hint


def test_required_policy_bits_and_versions() -> None:
    reference = ReferenceValues(
        require_no_smt=True, require_single_socket=True, require_aes_256_xts=True,
        minimum_firmware=(1, 56), minimum_guest_svn=1, vmpl=2, allow_migration_agent=True,
    )
    assert _claims(reference) == [
        "vmpl", "guest_svn", "firmware_version", "policy.smt", "policy.single_socket",
        "policy.mem_aes_256_xts",
    ]
    assert str(validate(REPORT, reference)[0]) == "vmpl differs: expected 2, got 0"
