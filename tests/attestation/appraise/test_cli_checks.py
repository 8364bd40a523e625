"""``cvm attest appraise``, one decision at a time: every check runs unless the user opts out by
name (no ``--nonce``: freshness is not checked, and the output says so), only AMD's roots are
trusted unless ``--trust emulated``, the time and policy given are the ones used, and the exit
code tells not authentic (66) from not acceptable (67)."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.verifier.collateral import CollateralCache
from cvm.cli import attest
from cvm.cli.main import execute
from cvm.errors import Finding, FormatError, UsageError

DENY_ALL = ('package cvm.policy\nimport rego.v1\ndefault allow := false\n'
            'deny contains {"rule": "owner-says-no", "expected": "nothing", "actual": "this", '
            '"input": "policy"} if { true }\n'
            'allow if count(deny) == 0\n')


@dataclass(frozen=True)
class Made:
    evidence: Path
    reference: Path
    owner: Path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    folder = tmp_path_factory.mktemp("attest")
    owner = folder / "owner"
    assert execute(["attest", "owner", str(owner)]) == 0
    evidence = folder / "evidence.json"
    assert execute(["attest", "evidence", "--nonce", "n1", "--out", str(evidence), "--owner",
                    str(owner)]) == 0
    return Made(evidence, owner / "reference.json", owner)


def _appraise(made: Made, **options: Any) -> Any:
    return attest.appraisal(made.evidence, made.reference, **{"trust": "emulated", **options})


def _rules(verdict: Any) -> list[str]:
    return [finding.claim for finding in verdict.findings]


def test_the_owner_is_on_the_installations_pinned_root(made: Made) -> None:
    """What ``--trust emulated`` trusts: a fresh owner's and a stored owner's chips both."""
    pinned = RootStore.for_workspace(DEFAULT_WORKSPACE).trust_anchors()
    fresh, stored = attest._owner(None), attest._owner(made.owner)
    assert fresh.vendor.trust_anchor() in pinned and stored.vendor.trust_anchor() in pinned
    assert stored.image.uki == (made.owner / "uki.efi").read_bytes()


def test_every_check_passes_on_genuine_evidence_with_its_challenge(made: Made) -> None:
    verdict = _appraise(made, nonce="n1")
    assert verdict.accepted and verdict.findings == ()
    assert "nonce_freshness" not in verdict.unchecked and attest.exit_code(verdict) == 0


def test_without_a_challenge_freshness_is_unchecked_and_said_so(made: Made) -> None:
    verdict = _appraise(made)
    assert verdict.accepted and "nonce_freshness" in verdict.unchecked
    assert any(line.startswith("not checked: ") and "nonce_freshness" in line
               for line in attest.verdict_lines(verdict))


def test_the_challenge_given_is_the_one_checked(made: Made) -> None:
    """Not the nonce the evidence carries: another session's challenge is refused."""
    verdict = _appraise(made, nonce="n2")
    assert not verdict.accepted and verdict.step == "verify"
    assert [(f.claim, f.expected, f.actual) for f in verdict.findings] == [
        ("verify.nonce", "n2", "n1")]
    assert attest.exit_code(verdict) == attest.EXIT_NOT_AUTHENTIC == 66


def test_only_amds_roots_are_trusted_by_default(made: Made) -> None:
    verdict = attest.appraisal(made.evidence, made.reference, nonce="n1")
    assert not verdict.accepted and verdict.step == "verify"
    assert attest.exit_code(verdict) == 66
    verdict = attest.appraisal(made.evidence, made.reference, nonce="n1", trust="amd")
    assert not verdict.accepted and verdict.step == "verify"


def test_the_roots_trusted_by_name() -> None:
    emulated = attest._roots("emulated")
    assert emulated.label == "emulated" and emulated.roots == {
        fingerprint: product for product, fingerprint in
        RootStore.for_workspace(DEFAULT_WORKSPACE).trust_anchors()}
    amd = attest._roots("amd")
    assert amd.label == "amd" and not set(amd.roots) & set(emulated.roots)


@pytest.mark.parametrize("trust", ["AMD", "emulated ", "", "none"])
def test_an_unknown_trust_is_refused_by_name(made: Made, trust: str) -> None:
    with pytest.raises(UsageError) as raised:
        _appraise(made, trust=trust)
    assert str(raised.value) == f"--trust must be amd or emulated, not {trust!r}"


def test_the_time_given_is_the_time_appraised(made: Made) -> None:
    """Long after the chip's certificates expire the same evidence is not authentic."""
    assert _appraise(made, nonce="n1", now=datetime.now(UTC).isoformat()).accepted
    late = _appraise(made, nonce="n1", now="2200-01-01T00:00:00")
    assert not late.accepted and late.step == "verify" and attest.exit_code(late) == 66
    early = _appraise(made, nonce="n1", now="2000-01-01T00:00:00+00:00")
    assert not early.accepted and early.step == "verify"


def test_the_time_given_is_the_appraisals_and_named_when_malformed(made: Made) -> None:
    """The time itself is :func:`cvm.cli.options.given_time`'s (tests/cli/test_options.py)."""
    assert not _appraise(made, nonce="n1", now="2000-01-01T00:00:00").accepted
    with pytest.raises(UsageError) as raised:
        _appraise(made, nonce="n1", now="yesterday")
    assert str(raised.value) == "--now 'yesterday' is not an ISO 8601 time"


def test_the_policy_given_is_the_one_applied(made: Made, tmp_path: Path) -> None:
    policy = tmp_path / "no.rego"
    policy.write_text(DENY_ALL)
    verdict = _appraise(made, nonce="n1", policy=policy)
    assert not verdict.accepted and verdict.step == "validate"
    assert "owner-says-no" in _rules(verdict) and verdict.policy_id == "no.rego"
    assert attest.exit_code(verdict) == attest.EXIT_REFUSED == 67
    assert _appraise(made, nonce="n1").policy_id == "default"


def test_the_reference_values_given_are_the_ones_compared(made: Made, tmp_path: Path) -> None:
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({**json.loads(made.reference.read_text()),
                                     "measurement": ["cd" * 48]}))
    verdict = attest.appraisal(made.evidence, reference, nonce="n1", trust="emulated")
    assert not verdict.accepted and verdict.step == "validate"
    assert _rules(verdict) == ["measurement"] and attest.exit_code(verdict) == 67


def test_a_launch_mismatch_is_explained_with_the_expected_configuration(
        made: Made, tmp_path: Path) -> None:
    """--firmware with --vcpus: the explainer starts from the configuration the user names."""
    wide = tmp_path / "wide.json"
    assert execute(["attest", "evidence", "--nonce", "n3", "--out", str(wide), "--owner",
                    str(made.owner), "--vcpus", "2"]) == 0
    firmware = made.owner / "firmware.fd"
    verdict = attest.appraisal(wide, made.reference, nonce="n3", trust="emulated",
                               firmware=firmware)
    assert [f.hint for f in verdict.findings] == ["matches with 2 vCPUs instead of 1"]
    plain = attest.appraisal(wide, made.reference, nonce="n3", trust="emulated")
    assert [f.hint for f in plain.findings] != ["matches with 2 vCPUs instead of 1"]
    other = attest.appraisal(wide, made.reference, nonce="n3", trust="emulated",
                             firmware=firmware, vcpus=3, vcpu_type="EPYC-Rome")
    assert [f.hint for f in other.findings] != ["matches with 2 vCPUs instead of 1"]


def test_the_explainers_options_are_read_with_firmware() -> None:
    attest.explainer_options_unused(Path("firmware.fd"), 4, "EPYC-Genoa")
    attest.explainer_options_unused(None, 1, "EPYC-Milan")
    with pytest.raises(UsageError, match=r"^--vcpus: not for an appraisal without --firmware$"):
        attest.explainer_options_unused(None, 2, "EPYC-Milan")
    with pytest.raises(UsageError, match=r"^--vcpu-type: not for an appraisal without"):
        attest.explainer_options_unused(None, 1, "EPYC-Rome")


@dataclass(frozen=True)
class FakeVerdict:
    status: str
    step: str
    accepted: bool
    findings: tuple[Finding, ...] = ()
    unchecked: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)

    def findings_json(self) -> list[dict[str, str]]:
        return [{"rule": f.claim} for f in self.findings]


@pytest.mark.parametrize(("step", "accepted", "code"), [
    ("", True, 0), ("verify", True, 0), ("validate", True, 0),
    ("verify", False, 66), ("replay", False, 66), ("validate", False, 67), ("", False, 67),
    ("policy", False, 67),
])
def test_the_exit_code_names_the_step_that_refused(step: str, accepted: bool, code: int) -> None:
    verdict = FakeVerdict("affirming" if accepted else "contraindicated", step, accepted)
    assert attest.exit_code(verdict) == code


def test_a_refused_verdict_prints_its_step_every_finding_and_what_was_not_checked() -> None:
    verdict = FakeVerdict("contraindicated", "validate", False, (
        Finding("measurement", "aa", "bb", "matches with 2 vCPUs instead of 1"),
        Finding("policy.debug", "false", "true", "")), ("host_data", "nonce_freshness"))
    assert attest.verdict_lines(verdict) == [
        "verdict: contraindicated (refused at validate)",
        "  measurement: expected aa, got bb",
        "    input: matches with 2 vCPUs instead of 1",
        "  policy.debug: expected false, got true",
        "not checked: host_data, nonce_freshness",
    ]


def test_an_accepted_verdict_with_everything_checked_says_nothing_was_left() -> None:
    verdict = FakeVerdict("affirming", "", True)
    assert attest.verdict_lines(verdict) == ["verdict: affirming", "not checked: nothing"]


def test_the_json_verdict_has_every_part() -> None:
    verdict = FakeVerdict("contraindicated", "replay", False,
                          (Finding("replay.event_log", "a log", "none", ""),),
                          ("pcrs",), {"measurement": "ab"})
    assert attest.verdict_json(verdict) == {
        "status": "contraindicated", "step": "replay", "findings": [{"rule": "replay.event_log"}],
        "unchecked": ["pcrs"], "claims": {"measurement": "ab"}}


@pytest.mark.parametrize(("text", "path"), [
    ("repo/type/tag", "repo/type/tag"), ("/repo/type/tag/", "repo/type/tag"),
    ("Xrepo/type/tagX", "Xrepo/type/tagX"),
])
def test_a_resource_path_is_three_parts(text: str, path: str) -> None:
    assert attest._resource_path(text) == path


@pytest.mark.parametrize("text", ["repo/type", "repo/type/tag/more", "repo//tag", "", "//",
                                  "repo/type/"])
def test_a_resource_path_of_other_shapes_is_refused(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        attest._resource_path(text)
    assert str(raised.value) == f"--resource {text!r} is not REPOSITORY/TYPE/TAG"


def test_evidence_that_is_not_json_is_named_by_its_path(made: Made, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence.json"
    evidence.write_text("{not json")
    with pytest.raises(FormatError) as raised:
        attest.appraisal(evidence, made.reference)
    assert str(raised.value).startswith(f"{evidence}: not JSON (")


def test_the_crl_is_taken_from_the_collateral_cache(made: Made, tmp_path: Path) -> None:
    """Evidence without a CRL is checked against the cached one: a revoked ASK is refused."""
    vendor = RootStore.for_workspace(DEFAULT_WORKSPACE).vendor("Milan",
                                                                clock=lambda: datetime.now(UTC))
    cache = CollateralCache(tmp_path / "collateral")
    cache.put_crl("Milan", vendor.crl())
    assert _appraise(made, nonce="n1", collateral=tmp_path / "collateral").accepted
    vendor.revoke_ask()
    cache.put_crl("Milan", vendor.crl())
    verdict = _appraise(made, nonce="n1", collateral=tmp_path / "collateral")
    assert not verdict.accepted and verdict.step == "verify"
    assert "revoked" in " ".join(str(finding) for finding in verdict.findings)
    assert _appraise(made, nonce="n1").accepted  # no cache given: the CRL is not consulted


@pytest.mark.parametrize("document", [{}, {"runtime-data": {}, "tee-evidence": {}},
                                      {"version": "cvm-reference/1"}])
def test_evidence_of_another_shape_is_named_by_its_path(
        made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        document: dict[str, Any]) -> None:
    """JSON that is not an attestation payload: one line led by the file, exit 65."""
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(document))
    assert execute(["attest", "appraise", str(evidence), "--reference", str(made.reference)]) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"cvm: error: {evidence}: ") and err.count("\n") == 1


def test_a_policy_that_is_not_utf8_is_named_with_the_byte(made: Made, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    policy = tmp_path / "policy.rego"
    policy.write_bytes(b"package cvm.policy\n# caf\xe9\n")
    with pytest.raises(FormatError) as raised:
        _appraise(made, nonce="n1", policy=policy)
    assert str(raised.value) == f"--policy {policy}: not UTF-8 text (byte 24)"
    assert execute(["attest", "appraise", str(made.evidence), "--reference", str(made.reference),
                    "--policy", str(policy), "--trust", "emulated"]) == 65
    assert capsys.readouterr().err == f"cvm: error: --policy {policy}: not UTF-8 text (byte 24)\n"


def test_a_policy_over_the_size_limit_is_malformed_input(made: Made, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """A policy file too large to be one is bad input (65), named, like any other bad policy."""
    policy = tmp_path / "big.rego"
    policy.write_text("package cvm.policy\n" + "#" * (64 << 10) + "\n")
    assert execute(["attest", "appraise", str(made.evidence), "--reference", str(made.reference),
                    "--policy", str(policy), "--trust", "emulated"]) == 65
    assert capsys.readouterr().err == (f"cvm: error: --policy {policy}: policy 'big.rego' "
                                       f"exceeds 65536 bytes\n")


def test_a_collateral_cache_without_a_crl_is_refused_not_skipped(
        made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user asked for revocation from the cache: a cache without the CRL (a folder that
    does not exist, or holds none) is the missing file's error, 74, not an appraisal without
    revocation."""
    (tmp_path / "empty").mkdir()
    for cache in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(FileNotFoundError) as raised:
            _appraise(made, nonce="n1", collateral=cache)
        assert (raised.value.errno, raised.value.filename) == (errno.ENOENT, str(cache))
        assert raised.value.strerror == ("no Milan CRL in the collateral cache (fetch KDS "
                                         "/vcek/v1/Milan/crl, then cvm attest collateral add it)")
        assert execute(["attest", "appraise", str(made.evidence), "--reference",
                        str(made.reference), "--trust", "emulated", "--collateral",
                        str(cache)]) == 74
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == (
            "cvm: error: no Milan CRL in the collateral cache (fetch KDS /vcek/v1/Milan/crl, then "
            f"cvm attest collateral add it): {cache}\n")


def test_the_commands_defaults_are_the_secure_ones(made: Made,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``appraise`` called with EVIDENCE and ``--reference`` alone, as typer calls it with no
    option given: AMD's roots (the emulated chain not authentic, 66), the built-in policy, no
    challenge, the time now, text output, no explainer options to refuse."""
    with pytest.raises(typer.Exit) as raised:
        attest.appraise(made.evidence, made.reference)
    assert raised.value.exit_code == 66
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "verdict: contraindicated (refused at verify)"
    assert lines[-1].startswith("not checked: ") and "nonce_freshness" in lines[-1]
    attest.appraise(made.evidence, made.reference, trust="emulated")
    out = capsys.readouterr().out
    assert out.startswith("verdict: affirming\n") and "nonce_freshness" in out


def test_a_policy_that_does_not_compile_is_one_line_with_its_place(
        made: Made, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Nothing on stdout (regopy's own report is silenced), one line on stderr: the option, the
    file, the policy and each error with its line and column."""
    policy = tmp_path / "broken.rego"
    policy.write_text("package cvm.policy\nallow if {\n")
    capfd.readouterr()
    assert execute(["attest", "appraise", str(made.evidence), "--reference", str(made.reference),
                    "--policy", str(policy), "--trust", "emulated"]) == 65
    assert capfd.readouterr() == ("", (
        f"cvm: error: --policy {policy}: policy 'broken.rego' does not compile: this is "
        "unclosed at line 2, column 10; this is unclosed at line 1, column 1\n"))


def test_the_command_passes_the_time_on_and_prints_json_indented(
        made: Made, capsys: pytest.CaptureFixture[str]) -> None:
    """``--now`` reaches the appraisal (long after the chip's certificates expire: not
    authentic, 66); ``--json`` prints the verdict's document indented by two spaces."""
    base = ["attest", "appraise", str(made.evidence), "--reference", str(made.reference),
            "--trust", "emulated", "--nonce", "n1"]
    capsys.readouterr()
    assert execute([*base, "--now", "2200-01-01T00:00:00"]) == 66
    assert capsys.readouterr().out.startswith("verdict: contraindicated (refused at verify)\n")
    assert execute([*base, "--json"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(json.loads(out), indent=2) + "\n"
    assert out.startswith('{\n  "status": "affirming",\n  "step": ')


@pytest.mark.parametrize(("option", "content"), [
    ("--reference", b'{"version": "cvm-reference/1", "measurement": []}'),
    ("--reference", b"[]"),
    ("--firmware", b"not a firmware image"),
])
def test_an_input_that_does_not_parse_is_named_with_its_option(
        made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str,
        content: bytes) -> None:
    """One line led by the option and the file: which of the command's inputs is wrong."""
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    files = {"--reference": str(made.reference), option: str(bad)}
    capsys.readouterr()
    assert execute(["attest", "appraise", str(made.evidence), "--trust", "emulated",
                    *[word for pair in files.items() for word in pair]]) == 65
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"cvm: error: {option} {bad}: ")
    assert captured.err.count("\n") == 1
