"""The broker on loopback: a genuine CVM gets its secret; tampered, replayed, stale and hostile
evidence is denied with a generic answer, and the audit log holds the finding."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from cvm.attestation.kbs.client import KbsClient, KbsRefusedError
from cvm.crypto.jose import KeyPair
from cvm.errors import IntegrityError, PolicyError
from cvm.formats.kbs.rcar import Attestation
from cvm.scenarios.attested_guest import BOOT_ATTACKS, OLD_TCB, Cvm, Owner

from .conftest import SECRET, SECRET_PATH, Kbs
from .units import STRICT_POLICY

GENERIC = "attestation failed"


@pytest.fixture(scope="module")
def genuine(owner: Owner) -> Cvm:
    return owner.launch(0)


def _rules(row: dict[str, Any]) -> set[str]:
    return {finding["rule"] for finding in row["findings"]}


def _refused(kbs: Kbs, attester: Any) -> KbsRefusedError:
    with KbsClient(kbs.url) as client, pytest.raises(KbsRefusedError) as refused:
        client.attest(attester)
    return refused.value


def test_genuine_cvm_gets_its_secret(kbs: Kbs, genuine: Cvm) -> None:
    with KbsClient(kbs.url) as client:
        token = client.attest(genuine)
        assert client.resource(SECRET_PATH, genuine.tee_key) == SECRET
        assert client.resource(SECRET_PATH, genuine.tee_key, use_token=True) == SECRET
        with pytest.raises(IntegrityError):  # wrapped to the TEE key: no one else opens it
            client.resource(SECRET_PATH, KeyPair.generate())
    header, claims = kbs.broker.token_key.verify_token(token)
    assert header["alg"] == "ES256" and claims["submods"]["cpu0"]["ear.status"] == "affirming"
    assert claims["tee-pubkey"] == genuine.tee_key.public_jwk()
    affirmed = [row for row in kbs.audit() if row["outcome"] == "affirmed"]
    assert affirmed and "unchecked: host_data" in str(affirmed[-1]["subject"])
    assert any(row["outcome"] == "released" for row in kbs.audit())


def test_secret_is_encrypted_at_rest(kbs: Kbs) -> None:
    sealed = kbs.broker.storage.secret(SECRET_PATH)
    assert sealed is not None and SECRET not in sealed.ciphertext


def test_tampered_evidence_is_denied(kbs: Kbs, genuine: Cvm) -> None:
    class Tampered:
        tee_key = genuine.tee_key

        def evidence(self, nonce: str, key: Any = None) -> Any:
            evidence = genuine.evidence(nonce, key)
            report = bytearray(evidence.report)
            report[0x90] ^= 1
            return replace(evidence, report=bytes(report))

    refused = _refused(kbs, Tampered())
    assert refused.status == 401 and refused.detail == GENERIC
    assert _rules(kbs.last_denial()) == {"verify.report_signature"}


def test_replayed_and_stale_evidence_is_denied(kbs: Kbs, genuine: Cvm) -> None:
    with KbsClient(kbs.url) as first:
        nonce = first.challenge()
        payload = Attestation(nonce, genuine.tee_key.public_jwk(), genuine.evidence(nonce))
        first.send_evidence(payload)
        other_key = KeyPair.generate().public_jwk()  # new runtime data, so a new report
        with pytest.raises(KbsRefusedError) as again:  # the nonce is single-use
            first.send_evidence(Attestation(nonce, other_key, genuine.evidence(nonce, other_key)))
        assert again.value.status == 401 and "used" in again.value.detail
        assert _rules(kbs.last_denial()) == {"session"}
    with KbsClient(kbs.url) as second:
        second.challenge()
        with pytest.raises(KbsRefusedError) as replayed:
            second.send_evidence(payload)
    assert replayed.value.detail == GENERIC
    assert _rules(kbs.last_denial()) == {"verify.replay"}
    with KbsClient(kbs.url) as third:  # evidence made for another nonce, never shown before
        fresh = third.challenge()
        old = genuine.evidence("an old nonce")
        with pytest.raises(KbsRefusedError):
            third.send_evidence(Attestation(fresh, genuine.tee_key.public_jwk(), old))
    assert _rules(kbs.last_denial()) == {"verify.report_data"}
    with KbsClient(kbs.url) as late:
        nonce = late.challenge()
        kbs.clock.offset += 61  # past the session's lifetime
        try:
            with pytest.raises(KbsRefusedError) as stale:
                late.send_evidence(Attestation(nonce, genuine.tee_key.public_jwk(),
                                               genuine.evidence(nonce)))
        finally:
            kbs.clock.offset -= 61
    assert stale.value.status == 401 and "expired" in stale.value.detail


def test_expired_token_and_foreign_cookie(kbs: Kbs, genuine: Cvm, owner: Owner) -> None:
    other = owner.launch(1)
    with KbsClient(kbs.url) as mine, KbsClient(kbs.url) as theirs:
        mine.attest(genuine)
        theirs.attest(other)
        cookie = mine.http.cookie
        assert cookie is not None
        # a session cookie presented with another TEE's token
        response = httpx.get(f"{kbs.url}/kbs/v0/resource/{SECRET_PATH}",
                             headers={"authorization": f"Bearer {theirs.token}",
                                      "cookie": f"kbs-session-id={cookie}"})
        assert response.status_code == 401
        # a stolen cookie gets a JWE only the session's TEE key opens
        stolen = httpx.get(f"{kbs.url}/kbs/v0/resource/{SECRET_PATH}",
                           headers={"cookie": f"kbs-session-id={cookie}"})
        assert stolen.status_code == 200
        with pytest.raises(IntegrityError):
            other.tee_key.decrypt(stolen.json())
        kbs.clock.offset += 121
        try:
            bearer_only = httpx.get(f"{kbs.url}/kbs/v0/resource/{SECRET_PATH}",
                                    headers={"authorization": f"Bearer {mine.token}"})
            assert bearer_only.status_code == 401
            assert bearer_only.json()["type"].endswith("/TokenVerifierError")
            with pytest.raises(KbsRefusedError) as expired:
                mine.resource(SECRET_PATH, genuine.tee_key, use_token=True)
            with pytest.raises(KbsRefusedError) as expired_cookie:
                mine.resource(SECRET_PATH, genuine.tee_key)
        finally:
            kbs.clock.offset -= 121
        assert expired.value.status == 401 and expired_cookie.value.status == 401
    forged = (theirs.token or "").rsplit(".", 1)[0] + ".AAAA"
    response = httpx.get(f"{kbs.url}/kbs/v0/resource/{SECRET_PATH}",
                         headers={"authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_boot_chain_attacks_are_denied_with_their_finding(kbs: Kbs, owner: Owner) -> None:
    booted = 0
    for index, (attack, make) in enumerate(BOOT_ATTACKS.items()):
        uki, varstore = make(owner.image)
        try:
            cvm = owner.launch(10 + index, uki=uki, varstore=varstore)
        except PolicyError:
            continue  # Secure Boot refused the image: the CVM never runs to attest
        refused = _refused(kbs, cvm)
        assert refused.detail == GENERIC
        row = kbs.last_denial()
        assert {"pcr.4", "boot_images"} <= _rules(row), attack
        pcr4 = next(f for f in row["findings"] if f["rule"] == "pcr.4")  # type: ignore[union-attr]
        assert "BOOTX64.EFI" in pcr4["input"]
        booted += 1
    assert booted == 1  # Secure Boot off: the one the firmware lets boot, the broker refuses


def test_launch_and_tcb_attacks_are_denied(kbs: Kbs, owner: Owner) -> None:
    _refused(kbs, owner.launch(30, vcpus=2))
    assert _rules(kbs.last_denial()) == {"measurement"}
    _refused(kbs, owner.launch(31, OLD_TCB))
    assert "reported_tcb" in _rules(kbs.last_denial())
    _refused(kbs, owner.launch(32, policy=0x30000 | 1 << 19))
    assert _rules(kbs.last_denial()) == {"policy.debug"}


def test_malformed_requests_get_4xx(kbs: Kbs) -> None:
    with httpx.Client(base_url=kbs.url) as client:
        assert client.post("/kbs/v0/auth", content=b"{not json").status_code == 400
        body = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "x": 1})
        assert body.status_code == 400 and body.json()["type"].endswith("/InvalidRequest")
        assert client.post("/kbs/v0/auth", json={"version": "9", "tee": "snp"}).status_code == 401
        assert client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "tdx"}
                           ).status_code == 401
        assert client.post("/kbs/v0/auth", content=b"x" * (2 << 20)).status_code == 413
        client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"})
        assert client.post("/kbs/v0/attest", json={"runtime-data": {}}).status_code == 400
        assert client.post("/kbs/v0/attest", content=b"[]").status_code == 400
        assert client.get("/kbs/v0/resource/a/b/c").status_code == 401
        assert client.get("/kbs/v0/resource/a/b/c%00").status_code in (401, 404)
        assert client.get("/kbs/v0/nothing").status_code == 404
        assert client.post(f"/kbs/v0/resource/{SECRET_PATH}", content=b"x").status_code == 401
        assert client.get("/kbs/v0/audit").status_code == 401
        with kbs.admin() as admin:
            assert admin.get("/kbs/v0/resource/a/b/c").status_code == 401  # admin is no TEE
            assert admin.post("/kbs/v0/reference-values", content=b"{}").status_code == 400


def test_policy_rollout_through_the_admin_api(kbs: Kbs, genuine: Cvm) -> None:
    strict = STRICT_POLICY.encode()
    with kbs.admin() as admin:
        body = {"type": "rego", "policy_id": "default", "policy": base64.b64encode(strict).decode()}
        assert admin.post("/kbs/v0/attestation-policy", json=body).status_code == 200
        broken = {**body, "policy": base64.b64encode(b"package x\nallow if {").decode()}
        assert admin.post("/kbs/v0/attestation-policy", json=broken).status_code == 400
        try:
            _refused(kbs, genuine)
            assert _rules(kbs.last_denial()) == {"tcb.snp"}
        finally:
            from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY

            default = {**body, "policy": base64.b64encode(DEFAULT_POLICY.encode()).decode()}
            assert admin.post("/kbs/v0/attestation-policy", json=default).status_code == 200
    with KbsClient(kbs.url) as client:
        client.attest(genuine)
    assert json.dumps(kbs.audit()).count("tcb.snp") >= 1
