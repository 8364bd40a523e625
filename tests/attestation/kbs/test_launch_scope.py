"""Composite evidence (the guest OS's) never opens a vTPM state key; launch evidence's token
opens nothing else either."""

from __future__ import annotations

import pytest

from cvm.attestation.kbs.client import KbsClient, KbsRefusedError
from cvm.scenarios.attested_guest import Cvm, Owner

from .conftest import SECRET, SECRET_PATH, Kbs

VTPM_PATH = "default/vtpm/state-key"


@pytest.fixture(scope="module")
def genuine(owner: Owner) -> Cvm:
    return owner.launch(0)


def test_a_guest_os_attesting_with_composite_evidence_gets_no_vtpm_state_key(
        kbs: Kbs, genuine: Cvm) -> None:
    with kbs.admin() as admin:
        assert admin.post(f"/kbs/v0/resource/{VTPM_PATH}", content=bytes(32)).status_code == 200
    with KbsClient(kbs.url) as client:
        client.attest(genuine)
        assert client.resource(SECRET_PATH, genuine.tee_key) == SECRET
        for by_token in (False, True):
            with pytest.raises(KbsRefusedError) as refused:
                client.resource(VTPM_PATH, genuine.tee_key, use_token=by_token)
            assert refused.value.status == 403
    refusal = kbs.last_denial()
    assert refusal["action"] == "resource"
    findings = refusal["findings"]
    assert isinstance(findings, list) and findings[0]["rule"] == "resource.scope"
    assert "composite evidence" in findings[0]["input"]
