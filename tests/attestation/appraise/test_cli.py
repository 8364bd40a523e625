"""``cvm attest owner|evidence|appraise``: the dry run prints the verdict, every finding with
its input, and what was not checked; exit codes say authentic (66) or acceptable (67)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.verifier.collateral import CollateralCache
from cvm.cli.main import execute

EMULATED = ("attest", "appraise", "--trust", "emulated")


def test_evidence_and_appraisal_dry_run(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    owner = tmp_path / "owner"
    assert execute(["attest", "owner", str(owner)]) == 0
    reference = owner / "reference.json"
    evidence = tmp_path / "evidence.json"
    key = tmp_path / "tee-key.json"
    assert execute(["attest", "evidence", "--nonce", "n1", "--out", str(evidence), "--owner",
                    str(owner), "--key-out", str(key)]) == 0
    assert key.stat().st_mode & 0o077 == 0
    capsys.readouterr()
    assert execute([*EMULATED, str(evidence), "--reference", str(reference),
                    "--nonce", "n1"]) == 0
    out = capsys.readouterr().out
    assert "verdict: affirming" in out and "not checked: host_data" in out
    assert "nonce_freshness" not in out
    assert execute([*EMULATED, str(evidence), "--reference", str(reference)]) == 0
    assert "nonce_freshness" in capsys.readouterr().out
    assert execute([*EMULATED, str(evidence), "--reference", str(reference),
                    "--nonce", "n2"]) == 66
    assert "verify.nonce: expected n2, got n1" in capsys.readouterr().out
    assert execute(["attest", "appraise", str(evidence), "--reference", str(reference),
                    "--trust", "amd"]) == 66
    capsys.readouterr()
    # by default only AMD's real roots are trusted: the emulated chain is not authentic
    assert execute(["attest", "appraise", str(evidence), "--reference", str(reference)]) == 66
    assert "chain" in capsys.readouterr().out
    # the installation's own emulated AMD, whose root signed the evidence's chain
    vendor = RootStore.for_workspace(DEFAULT_WORKSPACE).vendor("Milan",
                                                                clock=lambda: datetime.now(UTC))
    cache = CollateralCache(tmp_path / "collateral")
    cache.put_crl("Milan", vendor.crl())
    capsys.readouterr()
    assert execute([*EMULATED, str(evidence), "--reference", str(reference),
                    "--collateral", str(tmp_path / "collateral")]) == 0
    vendor.revoke_ask()
    cache.put_crl("Milan", vendor.crl())  # offline: the cached CRL now revokes the ASK
    assert execute([*EMULATED, str(evidence), "--reference", str(reference),
                    "--collateral", str(tmp_path / "collateral")]) == 66
    assert "revoked" in capsys.readouterr().out

    wide = tmp_path / "wide.json"
    assert execute(["attest", "evidence", "--nonce", "n3", "--out", str(wide), "--owner",
                    str(owner), "--vcpus", "2"]) == 0
    capsys.readouterr()
    assert execute([*EMULATED, str(wide), "--reference", str(reference),
                    "--firmware", str(owner / "firmware.fd"), "--json"]) == 67
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == "contraindicated" and verdict["step"] == "validate"
    assert verdict["findings"] == [{
        "rule": "measurement", "expected": verdict["findings"][0]["expected"],
        "actual": verdict["findings"][0]["actual"],
        "input": "matches with 2 vCPUs instead of 1"}]


def test_bad_inputs_are_one_line_errors(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"version": "cvm-reference/1", "measurement": ["00" * 48]}))
    evidence = tmp_path / "evidence.json"
    evidence.write_text("{\"runtime-data\": 1}")
    assert execute(["attest", "appraise", str(evidence), "--reference", str(reference)]) == 65
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cvm: error: ")
    assert execute(["attest", "appraise", str(tmp_path / "missing.json"), "--reference",
                    str(reference)]) == 74


@pytest.mark.parametrize(("args", "names"), [
    (["--vcpus", "2"], "--vcpus"),
    (["--vcpu-type", "EPYC-Rome"], "--vcpu-type"),
    (["--vcpus", "4", "--vcpu-type", "EPYC-Genoa"], "--vcpus, --vcpu-type"),
])
def test_the_explainers_options_without_firmware_are_refused_not_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], names: str) -> None:
    """Before the evidence is even read: they shape only the launch explainer --firmware runs."""
    assert execute(["attest", "appraise", str(tmp_path / "none.json"), "--reference",
                    str(tmp_path / "none.json"), *args]) == 64
    assert capsys.readouterr().err == (f"cvm: error: {names}: not for an appraisal without "
                                       "--firmware\n")
