"""The launch scope at the broker, what mutation testing of ``kbs/launch.py`` found unpinned:
the launch evidence's freshness (its nonce is this session's challenge) and the audit log's
scope findings."""

from __future__ import annotations

from pathlib import Path

from cvm.attestation.kbs.launch import scope_finding

from . import units


def test_launch_evidence_for_another_challenge_is_denied(tmp_path: Path) -> None:
    """The SVSM's report binding a nonce that is not this session's challenge (a replayed
    launch attestation) is denied at the verify step, and no session is left attested."""
    service = units.make_kbs(f"sqlite:///{tmp_path / 'kbs.db'}")
    session_id, nonce = service.auth()
    body = service.launch_attestation(nonce + "-an-earlier-one")
    refused = units.refused(lambda: service.broker.attest(session_id, body))
    assert refused.status == 401
    assert "verify.nonce" in units.rules(service.last("denied"))
    service.broker.storage.engine.dispose()


def test_the_scope_findings_name_the_resource_and_the_evidence() -> None:
    assert scope_finding("r/disk/t", True) == {
        "rule": "resource.scope", "expected": "a <repository>/vtpm/<tag> resource (launch "
        "evidence opens the vTPM state key only)", "actual": "r/disk/t",
        "input": "launch evidence (the SVSM's report alone)"}
    assert scope_finding("r/vtpm/t", False) == {
        "rule": "resource.scope", "expected": "a resource that is not of type vtpm (vTPM "
        "state keys go to the SVSM's launch evidence only)", "actual": "r/vtpm/t",
        "input": "composite evidence (the guest OS's)"}
