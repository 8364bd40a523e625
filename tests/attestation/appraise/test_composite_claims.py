"""What composite appraisal hands the Rego policy and the verdict (no VM needed): the report's
claims field by field, the findings as rows, and the validate step's decision."""

from __future__ import annotations

from cvm.attestation.verifier.composite import Verdict, decide, report_claims
from cvm.attestation.verifier.rego_policy import RegoPolicy
from cvm.errors import Finding
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.tcb_version import TcbVersion


def test_every_report_claim_is_its_own_field() -> None:
    """Each claim comes from its own field (all distinct here), in the names policies use."""
    report = AttestationReport(
        guest_svn=7, policy=GuestPolicy(smt=True, debug=True), vmpl=2,
        current_tcb=TcbVersion(boot_loader=1, tee=2, snp=3, microcode=4),
        reported_tcb=TcbVersion(boot_loader=5, tee=6, snp=7, microcode=8),
        committed_tcb=TcbVersion(boot_loader=9, tee=10, snp=11, microcode=12),
        launch_tcb=TcbVersion(boot_loader=13, tee=14, snp=15, microcode=16),
        report_data=b"\x01" * 64, measurement=b"\x02" * 48, host_data=b"\x03" * 32,
        id_key_digest=b"\x04" * 48, chip_id=b"\x05" * 64, current_major=1, current_minor=55)
    assert report_claims(report) == {
        "measurement": "02" * 48, "host_data": "03" * 32, "report_data": "01" * 64,
        "chip_id": "05" * 64, "id_key_digest": "04" * 48, "vmpl": 2, "guest_svn": 7,
        "firmware": "1.55",
        "reported_tcb": {"boot_loader": 5, "tee": 6, "snp": 7, "microcode": 8},
        "current_tcb": {"boot_loader": 1, "tee": 2, "snp": 3, "microcode": 4},
        "committed_tcb": {"boot_loader": 9, "tee": 10, "snp": 11, "microcode": 12},
        "launch_tcb": {"boot_loader": 13, "tee": 14, "snp": 15, "microcode": 16},
        "policy": {"debug": True, "migrate_ma": False, "smt": True, "single_socket": False},
    }
    other = GuestPolicy(migrate_ma=True, single_socket=True)
    assert report_claims(AttestationReport(policy=other))["policy"] == {
        "debug": False, "migrate_ma": True, "smt": False, "single_socket": True}


def test_findings_are_rows_of_rule_expected_actual_input() -> None:
    findings = (Finding("pcr.4", "aa", "bb", "the UKI"), Finding("vmpl", "0", "1", "report"))
    verdict = Verdict("contraindicated", "validate", findings, ())
    assert verdict.findings_json() == [
        {"rule": "pcr.4", "expected": "aa", "actual": "bb", "input": "the UKI"},
        {"rule": "vmpl", "expected": "0", "actual": "1", "input": "report"}]


POLICY = """package cvm.policy
import rego.v1
default allow := false
allow if count(input.findings) == 0
deny contains {"rule": f.rule, "expected": f.expected, "actual": f.actual, "input": f.input} if {
	some f in input.findings
}
deny contains {"rule": "input of", "expected": f.rule, "actual": f.input, "input": ""} if {
	some f in input.findings
}
deny contains {"rule": "claims.vmpl", "expected": "0", "actual": sprintf("%d", [input.claims.vmpl]),
	"input": concat(",", input.unchecked)} if {
	input.claims.vmpl != 0
}
"""


def test_the_validate_decision_adds_the_policys_own_findings_once() -> None:
    """The reference's findings reach the policy as rows and are not repeated when the
    policy denies them again; its own deny rows are added, with the unchecked list it saw."""
    policy = RegoPolicy(POLICY, "echo")
    reference = Finding("measurement", "aa", "bb", "launch")
    verdict = decide([reference], {"vmpl": 1}, ("chip_id", "host_data"), policy)
    assert verdict == Verdict("contraindicated", "validate", (
        reference, Finding("claims.vmpl", "0", "1", "chip_id,host_data"),
        Finding("input of", "measurement", "launch", "")),
        ("chip_id", "host_data"), {"vmpl": 1}, "echo")
    assert verdict.claims == {"vmpl": 1} and verdict.policy_id == "echo"
    assert decide([], {"vmpl": 0}, (), policy) == Verdict("affirming", "", (), (), {}, "echo")
    assert decide([], {"vmpl": 0}, (), policy).accepted
    assert not decide([reference], {"vmpl": 0}, (), policy).accepted


def test_a_reference_finding_refuses_whatever_the_policy_allows() -> None:
    lenient = RegoPolicy("package cvm.policy\nimport rego.v1\nallow := true\n", "lenient")
    reference = Finding("vmpl", "0", "1", "report")
    assert decide([reference], {}, (), lenient) == Verdict(
        "contraindicated", "validate", (reference,), (), {}, "lenient")
    closed = RegoPolicy("package cvm.policy\nimport rego.v1\ndefault allow := false\n", "shut")
    assert decide([], {}, ("x",), closed).findings == (
        Finding("policy.allow", "true", "false", "policy 'shut' denies without a deny rule"),)
