"""``cvm report``, one decision at a time: a report file raw or in hex, the certificates found
in a folder, one source of evidence, the roots, the time, the reference values and their sizes,
the product, what ``verify`` prints before and after a refusal, the emulated roots made."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cvm.cli import report
from cvm.cli.main import execute
from cvm.errors import ChainError, Finding, FormatError, PolicyError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.guest_policy import GuestPolicy
from cvm.formats.snp.tcb_version import TcbVersion

from .test_report import AT, _write_evidence, data_home, isolated_data_home, real  # noqa: F401

HEXES: dict[str, str | None] = dict.fromkeys(report.HEX_SIZES)


def _verification(folder: Path, **given: Any) -> report.Verification:
    options: dict[str, Any] = {
        "certs": folder, "vcek": None, "chain": None, "cert_table": None, "crl": None,
        "product": None, "trust": report.Trust.emulated, "workspace": "default",
        "hexes": HEXES, "vmpl": None, "min_tcb": None, "min_guest_svn": None,
        "allow_debug": False, "allow_migration_agent": False, "refuse_debug": False,
        "at": AT, **given}
    return report.verification(folder / "report.bin", **options)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory, data_home: Path) -> Path:  # noqa: F811
    return _write_evidence(tmp_path_factory.mktemp("decisions"), data_home)


def test_a_report_is_raw_or_hex_with_spaces_and_lines(tmp_path: Path) -> None:
    raw = bytes(range(256)) * 4 + bytes(0x4A0 - 1024)
    path = tmp_path / "r"
    path.write_bytes(raw)
    assert report.read_report(path) == raw
    text = raw.hex()
    path.write_text(" ".join(text[i:i + 64] for i in range(0, len(text), 64)) + "\n")
    assert report.read_report(path) == raw
    path.write_text("\n".join(text[i:i + 64] for i in range(0, len(text), 64)))
    assert report.read_report(path) == raw


@pytest.mark.parametrize(("data", "says"), [
    (b"zz", "not a 1184-byte report (nor its hex)"), (b"\xff\xfe", "not a 1184-byte report "
                                                      "(nor its hex)"),
    (b"00" * 0x49F, "1183 bytes, an SNP report has 1184"),
    (b"", "0 bytes, an SNP report has 1184")])
def test_anything_else_is_refused(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "r"
    path.write_bytes(data)
    with pytest.raises(FormatError) as refused:
        report.read_report(path)
    assert str(refused.value) == f"{path}: {says}"


def test_show_prints_every_field_bytes_in_hex(real: dict[str, Path]) -> None:  # noqa: F811
    parsed = AttestationReport.from_bytes(report.read_report(real["report"]))
    lines = report.show_lines(parsed)
    assert len(lines) == len(parsed.to_json())
    assert lines[0] == f"{'version':20} 2"
    assert f"{'measurement':20} {parsed.measurement.hex()}" in lines


def test_the_certificates_are_found_by_name_whatever_the_case(tmp_path: Path) -> None:
    for name in ("notes.txt", "VCEK.Pem", "vcek.zip", "ask.crt", "ark.cer", "ark.der"):
        (tmp_path / name).write_bytes(b"x")
    assert report._find(tmp_path, "vcek") == tmp_path / "VCEK.Pem"
    assert report._find(tmp_path, "ask") == tmp_path / "ask.crt"
    assert report._find(tmp_path, "ark") == tmp_path / "ark.cer"
    with pytest.raises(UsageError) as refused:
        report._find(tmp_path, "notes")
    assert str(refused.value) == f"{tmp_path}: no notes.pem or notes.der"


@pytest.mark.parametrize("given", [
    {"certs": Path("d"), "vcek": Path("v")}, {"certs": Path("d"), "chain": Path("c")},
    {"certs": Path("d"), "cert_table": Path("t")}, {"vcek": Path("v"), "cert_table": Path("t")},
])
def test_one_source_of_evidence(given: dict[str, Path]) -> None:
    options: dict[str, Path | None] = {"certs": None, "vcek": None, "chain": None, "crl": None,
                                       "cert_table": None, **given}
    with pytest.raises(UsageError) as refused:
        report._evidence(b"", **options)  # type: ignore[arg-type]
    assert str(refused.value) == "give one of --certs DIR, --vcek F --chain F, or --cert-table F"


@pytest.mark.parametrize("given", [{}, {"vcek": Path("v")}, {"chain": Path("c")}])
def test_a_vcek_and_its_chain_go_together(given: dict[str, Path]) -> None:
    options: dict[str, Path | None] = {"certs": None, "vcek": None, "chain": None, "crl": None,
                                       "cert_table": None, **given}
    with pytest.raises(UsageError) as refused:
        report._evidence(b"", **options)  # type: ignore[arg-type]
    assert str(refused.value) == "give --certs DIR, --cert-table FILE, or both --vcek and --chain"


def test_the_evidence_from_a_folder_takes_each_certificate_and_the_crl(
        evidence: Path, real: dict[str, Path]) -> None:  # noqa: F811
    crl = evidence / "ark.crl"
    crl.write_bytes(_a_crl())
    found = report._evidence(b"r", evidence, None, None, crl, None)
    assert found.vcek == (evidence / "vcek.der").read_bytes()
    assert found.ask == (evidence / "ask.der").read_bytes()
    assert found.ark == (evidence / "ark.der").read_bytes()
    assert found.crl == crl.read_bytes() and found.report == b"r"
    found = report._evidence(b"r", None, real["vcek"], real["chain"], crl, None)
    assert found.crl == crl.read_bytes() and found.vcek == real["vcek"].read_bytes()


def _a_crl() -> bytes:
    """A CRL (an emulated AMD's): the CLI reads a CRL file before the verifier checks it."""
    from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore

    return RootStore.for_workspace(DEFAULT_WORKSPACE).vendor("Milan", create=True).crl()


def test_the_roots_are_amds_or_the_workspaces_emulated_ones() -> None:
    assert report._roots(report.Trust.amd, "default").label == "amd"
    assert report._roots(report.Trust.emulated, "default").label == "emulated"


@pytest.mark.parametrize(("name", "size"), sorted(report.HEX_SIZES.items()))
def test_each_hex_value_has_its_fields_size(name: str, size: int) -> None:
    option = "--" + name.replace("_", "-")
    assert report.hex_value("ab" * size, name) == b"\xab" * size
    for wrong in (size - 1, size + 1):
        with pytest.raises(UsageError) as refused:
            report.hex_value("ab" * wrong, name)
        assert str(refused.value) == f"{option}: {wrong} bytes of hex, the field has {size}"
    with pytest.raises(UsageError) as refused:
        report.hex_value("x" * size, name)
    assert str(refused.value) == f"{option}: not hex"
    assert report.hex_value(None, name) is None


def _reference(**given: Any) -> Any:
    options: dict[str, Any] = {"hexes": HEXES, "vmpl": None, "min_tcb": None,
                               "min_guest_svn": None, "allow_debug": False,
                               "allow_migration_agent": False, **given}
    return report._reference(**options)


def test_each_reference_value_reaches_its_field() -> None:
    hexes = {name: f"{index:02x}" * size
             for index, (name, size) in enumerate(report.HEX_SIZES.items(), 1)}
    values = _reference(hexes=hexes, vmpl=3, min_tcb="0x7309000000000003", min_guest_svn=7,
                        allow_debug=True, allow_migration_agent=True)
    for index, (name, size) in enumerate(report.HEX_SIZES.items(), 1):
        assert getattr(values, name) == bytes([index]) * size
    assert values.vmpl == 3 and values.minimum_guest_svn == 7
    assert values.minimum_tcb == TcbVersion.from_int(0x7309000000000003)
    assert values.allow_debug and values.allow_migration_agent
    plain = _reference()
    assert plain.minimum_tcb is None and not plain.allow_debug
    assert not plain.allow_migration_agent


@pytest.mark.parametrize(("given", "accepted"), [
    ({"vmpl": 0}, True), ({"vmpl": 3}, True), ({"vmpl": 4}, False), ({"vmpl": -1}, False),
    ({"min_tcb": "0"}, True), ({"min_tcb": "0xffff00000000ffff"}, True),
    ({"min_tcb": str(1 << 64)}, False), ({"min_tcb": "-1"}, False),
    ({"min_guest_svn": 0}, True), ({"min_guest_svn": (1 << 32) - 1}, True),
    ({"min_guest_svn": 1 << 32}, False), ({"min_guest_svn": -1}, False)])
def test_the_limits_of_each_number(given: dict[str, Any], accepted: bool) -> None:
    if accepted:
        _reference(**given)
        return
    says = {"vmpl": f"--vmpl: {given.get('vmpl')} is not a VMPL (0 to 3)",
            "min_tcb": "--min-tcb: not a 64-bit TCB_VERSION",
            "min_guest_svn": "--min-guest-svn: not a 32-bit SVN"}[next(iter(given))]
    with pytest.raises(UsageError) as refused:
        _reference(**given)
    assert str(refused.value) == says


def test_a_tcb_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(UsageError) as refused:
        _reference(min_tcb="tcb")
    assert str(refused.value) == "--min-tcb: not an integer"


def test_refuse_debug_is_gone(evidence: Path) -> None:
    with pytest.raises(UsageError) as refused:
        _verification(evidence, refuse_debug=True)
    assert str(refused.value) == report.REFUSE_DEBUG_GONE


def test_the_product_named_must_be_the_evidences(evidence: Path) -> None:
    assert _verification(evidence, product="milan").verified.chain.product == "Milan"
    with pytest.raises(ChainError) as refused:
        _verification(evidence, product="Genoa")
    assert str(refused.value) == "the evidence is for Milan, not Genoa"


def test_the_time_given_is_the_verifiers(evidence: Path) -> None:
    """The time itself is :func:`cvm.cli.options.given_time`'s (tests/cli/test_options.py)."""
    with pytest.raises(ChainError):
        _verification(evidence, at="1999-01-01T00:00:00")
    with pytest.raises(UsageError) as refused:
        _verification(evidence, at="soon")
    assert str(refused.value) == "--at 'soon' is not an ISO 8601 time"


def test_a_verification_names_its_roots_findings_and_what_is_not_checked(
        evidence: Path) -> None:
    result = _verification(evidence, hexes={**HEXES, "measurement": "00" * 48})
    assert result.trust == "emulated"
    assert [f.claim for f in result.findings] == ["measurement"]
    assert "MEASUREMENT" not in result.not_checked and "REPORT_DATA" in result.not_checked
    document = report.verification_json(result)
    assert document["authentic"] is True and document["acceptable"] is False
    assert document["trust"] == "emulated" and document["product"] == "Milan"
    assert document["ark_sha256"] == result.verified.chain.ark_fingerprint
    assert document["findings"] == [{"claim": "measurement", "expected": "00" * 48,
                                     "actual": "11" * 48}]
    assert document["not_checked"] == list(result.not_checked)
    assert document["report"] == result.verified.report.to_json()
    assert report.verification_json(_verification(evidence))["acceptable"] is True


def test_verify_prints_the_chain_and_what_is_not_checked(evidence: Path) -> None:
    result = _verification(evidence)
    chain = result.verified.chain
    assert not result.revocation_checked  # no CRL given
    assert report.verification_lines(result) == [
        f"authentic: Milan report, VCEK chain to the emulated root "
        f"{chain.ark_fingerprint[:16]}..., TCB {result.verified.report.reported_tcb}",
        f"not checked (no reference value given): {', '.join(result.not_checked)}",
        "not checked: revocation (no CRL given or cached: the ASK may be revoked)"]
    checked = replace(result, not_checked=(), revocation_checked=True)
    assert report.verification_lines(checked) == [report.verification_lines(result)[0]]
    assert report.verification_json(result)["revocation_checked"] is False
    assert report.verification_json(checked)["revocation_checked"] is True


def test_a_verification_with_a_crl_checked_revocation(evidence: Path, tmp_path: Path) -> None:
    crl = tmp_path / "ark.crl"
    crl.write_bytes(_a_crl())
    assert _verification(evidence, crl=crl, at=None).revocation_checked  # the CRL is of now


def test_a_finding_is_one_policy_error_with_every_finding() -> None:
    report.refuse_findings(())
    findings = (Finding("a", "1", "2"), Finding("b", "3", "4"))
    with pytest.raises(PolicyError) as refused:
        report.refuse_findings(findings)
    assert str(refused.value) == (f"the report is authentic but not acceptable: {findings[0]}; "
                                  f"{findings[1]}")
    assert refused.value.findings == findings


def test_verify_prints_the_measurement_last_and_not_when_refused(
        tmp_path: Path, evidence: Path, data_home: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["report", "verify", str(evidence / "report.bin"), "--certs", str(evidence),
            "--at", AT, "--trust", "emulated"]
    assert execute(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "measurement " + "11" * 48
    debug = _write_evidence(tmp_path / "debug", data_home, policy=GuestPolicy(debug=True))
    assert execute(["report", "verify", str(debug / "report.bin"), "--certs", str(debug),
                    "--at", AT, "--trust", "emulated"]) == 67
    assert "measurement " not in capsys.readouterr().out


def test_the_emulated_roots_are_milans_unless_named(data_home: Path) -> None:  # noqa: F811
    store, pins = report.emulated_roots("decisions-a", None)
    assert [name for name, _ in pins] == ["Milan"]
    store, pins = report.emulated_roots("decisions-b", ["Genoa", "Turin"])
    assert [name for name, _ in pins] == ["Genoa", "Turin"]
    assert store.directory == data_home / "cvm" / "emulated-amd" / "decisions-b"
    assert report.root_lines("w", Path("/d"), [("Milan", "ab"), ("Genoa", "cd")]) == [
        "emulated AMD roots of workspace 'w' in /d:", "  Milan  ARK SHA-256 ab",
        "  Genoa  ARK SHA-256 cd"]


def test_a_certificate_table_comes_with_the_crl(evidence: Path, tmp_path: Path) -> None:
    from cvm.attestation.verifier import Evidence

    table = tmp_path / "certs.table"
    table.write_bytes(Evidence(b"", (evidence / "vcek.der").read_bytes(),
                               (evidence / "ask.der").read_bytes(),
                               (evidence / "ark.der").read_bytes()).cert_table())
    crl = tmp_path / "ark.crl"
    crl.write_bytes(_a_crl())
    found = report._evidence(b"r", None, None, None, crl, table)
    assert found.crl == crl.read_bytes() and found.vcek == (evidence / "vcek.der").read_bytes()


def test_the_crl_given_is_checked(evidence: Path, tmp_path: Path) -> None:
    from cvm.errors import CvmError

    crl = tmp_path / "ark.crl"
    crl.write_bytes(b"not a crl")
    with pytest.raises(CvmError) as refused:
        _verification(evidence, crl=crl)
    assert "CRL" in str(refused.value) or "crl" in str(refused.value)


def test_a_report_that_does_not_parse_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "report.bin"
    bad.write_bytes((9).to_bytes(4, "little") + bytes(0x4A0 - 4))
    with pytest.raises(FormatError) as refused:
        _verification(tmp_path)
    assert str(refused.value) == (
        f"{bad}: ATTESTATION_REPORT: unsupported version 9 (know 2 to 5)")
