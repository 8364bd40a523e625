"""Which attestation a verdict or token stands for, and what the audit log says of a resource
outside its scope."""

from __future__ import annotations

import pytest

from cvm.attestation.kbs.launch import (
    ATTESTED,
    LAUNCH_ATTESTED,
    is_launch,
    may_open,
    scope_finding,
    session_state,
)
from cvm.attestation.verifier.composite import AFFIRMING, Verdict


def test_is_launch_reads_the_evidence_claim() -> None:
    assert is_launch({"evidence": "launch"})
    assert not is_launch({"evidence": "composite"})
    assert not is_launch({})
    assert not is_launch({"launch": "evidence"})


def test_the_session_state_follows_the_verdict() -> None:
    launch = Verdict(AFFIRMING, "", (), (), {"evidence": "launch"})
    composite = Verdict(AFFIRMING, "", (), (), {"measurement": "ab"})
    assert session_state(launch) == LAUNCH_ATTESTED == "launch-attested"
    assert session_state(composite) == ATTESTED == "attested"
    assert len(LAUNCH_ATTESTED) <= 16  # fits kbs_sessions.state


def test_the_scope_finding_names_the_rule_the_path_and_the_evidence() -> None:
    launch = scope_finding("default/disk/key", True)
    assert set(launch) == {"rule", "expected", "actual", "input"}
    assert launch["rule"] == "resource.scope" and launch["actual"] == "default/disk/key"
    assert "<repository>/vtpm/<tag>" in launch["expected"] and "launch" in launch["input"]
    composite = scope_finding("default/vtpm/state-key", False)
    assert composite["rule"] == "resource.scope"
    assert composite["actual"] == "default/vtpm/state-key"
    assert "not of type vtpm" in composite["expected"] and "composite" in composite["input"]


@pytest.mark.parametrize(("path", "launch", "allowed"), [
    ("default/vtpm/state-key", True, True),
    ("default/vtpm/state-key", False, False),
    ("default/disk/root-key", True, False),
    ("default/disk/root-key", False, True),
    ("vtpm/disk/vtpm", True, False),  # the type segment decides, not the other two
    ("vtpm/disk/vtpm", False, True),
])
def test_the_resource_type_decides_which_evidence_opens_it(path: str, launch: bool,
                                                           allowed: bool) -> None:
    assert may_open(path, launch) is allowed
