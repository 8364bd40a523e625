"""Validation rules one by one: each names its claim, the expected and the actual value."""

from __future__ import annotations

from cvm.attestation.verifier import ReferenceValues, unchecked, validate
from cvm.errors import Finding
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.tcb_version import TcbVersion

REPORT = AttestationReport(
    policy=GuestPolicy(smt=True, migrate_ma=True),
    measurement=b"\x01" * 48,
    current_tcb=TcbVersion(boot_loader=3, snp=8, microcode=115),
    reported_tcb=TcbVersion(boot_loader=2, snp=8, microcode=115),  # the host may report older
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
    assert [f.claim for f in findings] == ["reported_tcb", "launch_tcb"]
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


def test_a_running_tcb_below_the_reported_one_is_its_own_finding() -> None:
    """Whatever the reference values: no TCB the platform runs is below REPORTED_TCB."""
    reported = TcbVersion(boot_loader=3, snp=8, microcode=115)
    for field in ("current_tcb", "committed_tcb", "launch_tcb"):
        for lower in (TcbVersion(boot_loader=2, snp=8, microcode=115),
                      TcbVersion(boot_loader=3, snp=8, microcode=114),
                      TcbVersion(boot_loader=3, tee=1, snp=7, microcode=115)):
            tcbs = {"current_tcb": reported, "committed_tcb": reported, "launch_tcb": reported}
            report = REPORT.replace(reported_tcb=reported, **{**tcbs, field: lower})
            findings = validate(report, ReferenceValues(allow_migration_agent=True))
            assert [f.claim for f in findings] == [f"{field}_vs_reported_tcb"]
            assert findings[0].actual == str(lower)
            assert str(reported) in findings[0].expected
    higher = TcbVersion(boot_loader=3, snp=9, microcode=115)
    same = REPORT.replace(launch_tcb=REPORT.reported_tcb)
    assert validate(same, ReferenceValues(allow_migration_agent=True)) == ()
    ahead = same.replace(current_tcb=higher, committed_tcb=higher, launch_tcb=higher)
    assert validate(ahead, ReferenceValues(allow_migration_agent=True)) == ()


def test_debug_is_refused_unless_allowed() -> None:
    debug = REPORT.replace(policy=GuestPolicy(smt=True, debug=True))
    assert [f.claim for f in validate(debug, ReferenceValues(allow_migration_agent=True))] == [
        "policy.debug"
    ]
    assert validate(debug, ReferenceValues(allow_debug=True, allow_migration_agent=True)) == ()


def test_unchecked_names_every_missing_reference_value() -> None:
    assert unchecked(ReferenceValues()) == (
        "MEASUREMENT", "REPORT_DATA", "HOST_DATA", "minimum TCB", "ID key digest",
        "author key digest", "FAMILY_ID", "IMAGE_ID", "CHIP_ID", "VMPL", "minimum guest SVN",
        "minimum firmware version",
    )
    full = ReferenceValues(
        measurement=bytes(48), report_data=bytes(64), host_data=bytes(32),
        minimum_tcb=TcbVersion(), id_key_digest=bytes(48), author_key_digest=bytes(48),
        family_id=bytes(16), image_id=bytes(16), chip_id=bytes(64), vmpl=0,
        minimum_guest_svn=0, minimum_firmware=(0, 0),
    )
    assert unchecked(full) == ()
    assert unchecked(ReferenceValues(measurement=bytes(48), vmpl=0))[:2] == (
        "REPORT_DATA", "HOST_DATA"
    )


def test_policy_findings_say_expected_and_actual() -> None:
    bits = GuestPolicy(smt=True, migrate_ma=True, debug=True)
    report = REPORT.replace(policy=bits, launch_tcb=REPORT.reported_tcb)
    reference = ReferenceValues(require_no_smt=True, require_single_socket=True,
                                require_aes_256_xts=True, minimum_firmware=(1, 56))
    assert validate(report, reference) == (
        Finding("firmware_version", "at least 1.56", "1.55"),
        Finding("policy.debug", "0 (debug off)", "1",
                "a debug guest's memory can be decrypted by the host"),
        Finding("policy.migrate_ma", "0 (no migration agent)", "1"),
        Finding("policy.smt", "0", "1"),
        Finding("policy.single_socket", "1", "0"),
        Finding("policy.mem_aes_256_xts", "1", "0"),
    )
