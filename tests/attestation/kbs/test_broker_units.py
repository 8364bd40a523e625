"""The broker's protocol in process (no HTTP): a genuine CVM's round trip, and every refusal —
with what the requester is told, what the audit log holds and what the database keeps."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from cvm import __version__
from cvm.attestation.kbs.broker import (
    DENIED,
    TOKEN_KEY_NAME,
    Broker,
    BrokerSettings,
    resource_path,
)
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY
from cvm.crypto.jose import KeyPair
from cvm.errors import FormatError, UsageError
from cvm.formats.kbs.ear import CONTRAINDICATED, AttestationResult
from cvm.formats.kbs.json_fields import b64url_encode
from cvm.formats.kbs.rcar import PROTOCOL_VERSIONS
from cvm.formats.kbs.vtpm_counter import KeyRelease
from cvm.formats.snp.attestation_report import AttestationReport

from .units import (
    AUTH,
    KEK,
    SECRET,
    SECRET_PATH,
    SESSION_TTL,
    STRICT_POLICY,
    TOKEN_TTL,
    VTPM_PATH,
    VTPM_SECRET,
    FastKbs,
    refused,
    rules,
)


def _chip(kbs: FastKbs) -> str:
    return AttestationReport.from_bytes(kbs.evidence("chip").report).chip_id.hex()


def test_a_genuine_cvm_gets_a_token_and_its_secret(fast_kbs: FastKbs) -> None:
    kbs, now = fast_kbs, fast_kbs.clock.now
    session_id, challenge = kbs.broker.auth(AUTH)
    assert set(challenge) == {"nonce", "extra-params"} and challenge["extra-params"] == {}
    nonce = challenge["nonce"]
    assert len(base64.urlsafe_b64decode(nonce + "=")) == 32 and len(session_id) == 48
    session = kbs.broker.storage.session(session_id)
    assert session is not None
    assert (session["state"], session["nonce"], session["tee"]) == ("challenged", nonce, "snp")
    assert (session["created"], session["expires"]) == (now, now + SESSION_TTL)

    body = kbs.attestation(nonce)
    token = kbs.broker.attest(session_id, body)
    header, claims = kbs.broker.token_key.verify_token(token)
    assert header["kid"] == kbs.broker.token_key_id()
    result = AttestationResult.from_claims(claims)
    assert (result.issued_at, result.expires_at) == (int(now), int(now + TOKEN_TTL))
    assert result.nonce == nonce and result.status == "affirming"
    assert result.tee_pubkey == kbs.key.public_jwk() and claims["iss"] == "cvm-kbs"
    assert result.evidence_claims["measurement"] == kbs.guests.owner.measurement.hex()
    assert result.policy_id == "default" and len(result.token_id) == 32
    assert claims["ear.verifier-id"] == {"developer": "cvm", "build": __version__}

    session = kbs.broker.storage.session(session_id)
    assert session is not None and session["state"] == "attested"
    assert (session["token_id"], session["expires"]) == (result.token_id, now + TOKEN_TTL)
    assert json.loads(session["tee_pubkey"]) == kbs.key.public_jwk()
    affirmed = kbs.last()
    assert (affirmed["action"], affirmed["outcome"], affirmed["session_id"]) == (
        "attest", "affirmed", session_id)
    assert affirmed["chip_id"] == _chip(kbs) and affirmed["at"] == now
    assert affirmed["subject"].startswith("unchecked: ") and "host_data" in affirmed["subject"]
    assert affirmed["findings"] == []

    jwe = kbs.broker.resource(SECRET_PATH, session_id, None)
    assert kbs.key.decrypt(jwe) == SECRET
    released = kbs.last()
    assert (released["action"], released["outcome"], released["session_id"]) == (
        "resource", "released", session_id)
    assert released["subject"] == f"{SECRET_PATH} (session {session_id})"
    assert released["findings"] == [] and released["at"] == now
    by_token = kbs.broker.resource(SECRET_PATH, None, token)
    assert kbs.key.decrypt(by_token) == SECRET
    assert kbs.last()["subject"] == f"{SECRET_PATH} (token {result.token_id})"
    assert kbs.last()["session_id"] is None


def test_every_protocol_version_and_only_snp(fast_kbs: FastKbs) -> None:
    for version in PROTOCOL_VERSIONS:
        fast_kbs.broker.auth(json.dumps({"version": version, "tee": "snp"}).encode())
    with pytest.raises(FormatError, match=r"^request: not JSON"):
        fast_kbs.broker.auth(b"{")
    old = refused(lambda: fast_kbs.broker.auth(b'{"version": "0.0.9", "tee": "snp"}'))
    assert (old.status, old.kind) == (401, "ProtocolVersion") and "0.0.9" in old.detail
    tdx = refused(lambda: fast_kbs.broker.auth(b'{"version": "0.4.0", "tee": "tdx"}'))
    assert (tdx.status, tdx.kind) == (401, "UnsupportedTee") and "tdx" in tdx.detail
    with pytest.raises(FormatError):
        fast_kbs.broker.auth(b'{"version": "0.4.0"}')


def test_the_nonce_is_single_use(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    session_id, nonce = kbs.auth()
    kbs.broker.attest(session_id, kbs.attestation(nonce))
    other = KeyPair.generate().public_jwk()  # another key: a report never shown before
    again = refused(lambda: kbs.broker.attest(session_id, kbs.attestation(nonce, other)))
    assert (again.status, again.kind) == (401, "InvalidSession")
    assert all(word in again.detail for word in ("unknown", "expired", "used"))
    row = kbs.last()
    assert (row["action"], row["outcome"], row["session_id"]) == ("attest", "refused", session_id)
    assert row["at"] == kbs.clock.now
    assert rules(row) == {"session"} and row["findings"][0]["input"] == "kbs-session-id"
    session = kbs.broker.storage.session(session_id)
    assert session is not None and session["state"] == "attested"  # the first one stands


def test_the_nonce_expires(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    session_id, nonce = kbs.auth()
    kbs.clock.now += SESSION_TTL  # the session's last instant has passed
    late = refused(lambda: kbs.broker.attest(session_id, kbs.attestation(nonce)))
    assert (late.status, late.kind) == (401, "InvalidSession")
    live_id, live_nonce = kbs.auth()
    kbs.clock.now += SESSION_TTL - 1
    assert kbs.broker.attest(live_id, kbs.attestation(live_nonce))
    unknown = refused(lambda: kbs.broker.attest("no-such-session", kbs.attestation(nonce)))
    assert unknown.kind == "InvalidSession"


def test_no_cookie_is_refused_before_anything(fast_kbs: FastKbs) -> None:
    for session_id in (None, ""):
        problem = refused(lambda s=session_id: fast_kbs.broker.attest(s, b"not even json"))
        assert (problem.status, problem.kind) == (401, "UnAuthenticatedCookie")
    assert fast_kbs.audit()[-1]["action"] == "admin"


def test_replayed_evidence_is_denied(fast_kbs: FastKbs) -> None:
    """Evidence shown once is refused in a later session — to another nonce, or, when the
    broker's nonces collide, to the very nonce it binds — and no token is issued."""
    kbs = fast_kbs
    kbs.random.nonces = [b"\x07" * 32, b"\x07" * 32]
    first, nonce = kbs.auth()
    second, same = kbs.auth()
    assert same == nonce
    body = kbs.attestation(nonce)
    kbs.broker.attest(first, body)
    replay = refused(lambda: kbs.broker.attest(second, body))
    assert (replay.status, replay.kind, replay.detail) == (401, "AttestationFailed", DENIED)
    row = kbs.last()
    assert (row["action"], row["outcome"], row["session_id"], row["chip_id"], row["at"]) == (
        "attest", "denied", second, _chip(kbs), kbs.clock.now)
    assert rules(row) == {"verify.replay"} and row["findings"][0]["input"] == "report"
    report = json.loads(body)["tee-evidence"]["primary_evidence"]["report"]
    digest = hashlib.sha384(base64.b64decode(report)).hexdigest()
    assert f"report {digest[:16]}… " in row["findings"][0]["actual"]  # which report it was
    session = kbs.broker.storage.session(second)
    assert session is not None and (session["state"], session["token_id"]) == ("denied", None)
    assert session["expires"] == kbs.clock.now
    assert kbs.broker.resource(SECRET_PATH, first, None)  # the first session is untouched
    with pytest.raises(Exception, match="not attested"):
        kbs.broker.resource(SECRET_PATH, second, None)

    third, _ = kbs.auth()  # another nonce: the appraisal refuses, the replay is what is logged
    assert refused(lambda: kbs.broker.attest(third, body)).detail == DENIED
    row = kbs.last()
    assert rules(row) == {"verify.replay"} and row["session_id"] == third
    assert (row["chip_id"], row["at"]) == (_chip(kbs), kbs.clock.now)


def test_evidence_for_a_nonce_the_broker_did_not_give_is_denied(fast_kbs: FastKbs) -> None:
    """Evidence consistent in itself (runtime data, report) but for another nonce than the
    session's challenge."""
    kbs = fast_kbs
    session_id, _ = kbs.auth()
    denial = refused(lambda: kbs.broker.attest(session_id, kbs.attestation("my-own-nonce")))
    assert (denial.status, denial.detail) == (401, DENIED)
    assert rules(kbs.last()) and "nonce" in json.dumps(kbs.last()["findings"])


def test_denied_evidence_gets_a_generic_answer_and_the_log_the_findings(
        fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    reference = {**kbs.guests.reference, "measurement": ["00" * 48]}
    assert kbs.broker.set_reference(json.dumps(reference).encode()) == 2
    session_id, nonce = kbs.auth()
    body = kbs.attestation(nonce)
    denial = refused(lambda: kbs.broker.attest(session_id, body))
    assert (denial.status, denial.kind, denial.detail) == (401, "AttestationFailed", DENIED)
    row = kbs.last()
    assert (row["action"], row["outcome"], row["session_id"]) == ("attest", "denied", session_id)
    assert rules(row) == {"measurement"} and row["chip_id"] == _chip(kbs)
    assert row["at"] == kbs.clock.now
    session = kbs.broker.storage.session(session_id)
    assert session is not None and session["state"] == "denied"
    assert session["expires"] == kbs.clock.now
    assert json.loads(session["tee_pubkey"]) == kbs.key.public_jwk()
    # the denied report was recorded: shown again (with the reference fixed), it is a replay
    kbs.broker.set_reference(json.dumps(kbs.guests.reference).encode())
    again, _ = kbs.auth()
    refused(lambda: kbs.broker.attest(again, body))
    assert rules(kbs.last()) == {"verify.replay"}


def test_without_reference_values_nothing_is_affirmed(tmp_path: object, fast_kbs: FastKbs
                                                      ) -> None:
    kbs = fast_kbs
    bare = Broker(Storage(f"sqlite:///{tmp_path}/bare.db"), KEK, kbs.guests.roots,
                  clock=kbs.clock)
    session_id, challenge = bare.auth(AUTH)
    body = kbs.attestation(challenge["nonce"])
    denial = refused(lambda: bare.attest(session_id, body))
    assert (denial.status, denial.kind, denial.detail) == (401, "AttestationFailed", DENIED)
    row = bare.storage.audit_log()[-1]
    assert rules(row) == {"reference"} and row["outcome"] == "denied"
    assert row["at"] == kbs.clock.now
    assert row["chip_id"] == _chip(kbs) and row["session_id"] == session_id
    session = bare.storage.session(session_id)
    assert session is not None and session["state"] == "denied"
    other, challenge = bare.auth(AUTH)  # the report was recorded: a replay now
    refused(lambda: bare.attest(other, body))
    assert rules(bare.storage.audit_log()[-1]) == {"verify.replay"}
    bare.storage.engine.dispose()


def test_a_report_that_does_not_parse_is_denied_with_its_finding(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    session_id, nonce = kbs.auth()
    document = json.loads(kbs.attestation(nonce))
    primary = document["tee-evidence"]["primary_evidence"]
    report = bytearray(base64.b64decode(primary["report"]))
    report[0:4] = (99).to_bytes(4, "little")  # a report version no PSP writes
    primary["report"] = base64.b64encode(bytes(report)).decode()
    denial = refused(lambda: kbs.broker.attest(session_id, json.dumps(document).encode()))
    assert (denial.status, denial.kind, denial.detail) == (401, "AttestationFailed", DENIED)
    row = kbs.last()
    assert rules(row) == {"verify.report"} and row["chip_id"] is None
    assert (row["action"], row["outcome"], row["session_id"], row["at"]) == (
        "attest", "denied", session_id, kbs.clock.now)
    assert row["findings"][0]["input"] == "report"
    assert "version" in row["findings"][0]["actual"]  # what the parser said
    session = kbs.broker.storage.session(session_id)
    assert session is not None and session["state"] == "denied"
    assert session["expires"] == kbs.clock.now


def test_malformed_attestations_are_format_errors(fast_kbs: FastKbs) -> None:
    session_id, _ = fast_kbs.auth()
    for body in (b"{", b"[]", b'{"runtime-data": {}}'):
        with pytest.raises(FormatError, match=r"^attestation"):
            fast_kbs.broker.attest(session_id, body)
    session = fast_kbs.broker.storage.session(session_id)
    assert session is not None and session["state"] == "challenged"  # the nonce is not spent


def test_a_policy_rollout_takes_effect_on_the_next_attestation(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    kbs.attest()  # the default policy, cached
    assert kbs.broker.set_policy(STRICT_POLICY) == 1
    session_id, nonce = kbs.auth()
    refused(lambda: kbs.broker.attest(session_id, kbs.attestation(nonce)))
    assert rules(kbs.last()) == {"tcb.snp"}
    assert kbs.broker.set_policy(DEFAULT_POLICY) == 2
    assert kbs.attest()[1]
    assert kbs.broker.set_reference(json.dumps(kbs.guests.reference).encode()) == 2
    admin = [row for row in kbs.audit() if row["action"] == "admin"]
    assert [(row["outcome"], row["subject"]) for row in admin] == [
        ("reference", "default v1"), ("secret", SECRET_PATH), ("secret", VTPM_PATH),
        ("policy", "default v1"), ("policy", "default v2"), ("reference", "default v2")]
    assert all(row["at"] == kbs.clock.now and row["findings"] == [] for row in admin)
    with pytest.raises(FormatError, match="does not compile"):
        kbs.broker.set_policy("package x\nallow if {")
    with pytest.raises(FormatError):
        kbs.broker.set_reference(b'{"version": "cvm-reference/1"}')
    assert kbs.broker.set_policy(STRICT_POLICY, "other") == 1  # another id, its own versions
    assert kbs.attest()[1]  # and the default policy still decides


def test_resource_refusals(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    nothing = refused(lambda: kbs.broker.resource(SECRET_PATH, None, None))
    assert (nothing.status, nothing.kind) == (401, "TokenNotFound")
    assert "cookie" in nothing.detail and "token" in nothing.detail
    assert refused(lambda: kbs.broker.resource(SECRET_PATH, "", None)).kind == "TokenNotFound"
    unknown = refused(lambda: kbs.broker.resource(SECRET_PATH, "no-such", None))
    assert (unknown.status, unknown.kind) == (401, "UnAuthenticatedCookie")
    challenged, _ = kbs.auth()
    assert refused(lambda: kbs.broker.resource(SECRET_PATH, challenged, None)).status == 401
    session_id, token = kbs.attest()
    missing = refused(lambda: kbs.broker.resource("default/disk/other", session_id, None))
    assert (missing.status, missing.kind) == (404, "ResourceNotFound")
    assert "default/disk/other" in missing.detail
    assert kbs.last()["outcome"] == "affirmed"  # nothing released, nothing logged
    kbs.clock.now += TOKEN_TTL - 1
    assert kbs.broker.resource(SECRET_PATH, session_id, None)
    assert kbs.broker.resource(SECRET_PATH, None, token)
    kbs.clock.now += 1  # the session's and the token's last instant has passed
    expired = refused(lambda: kbs.broker.resource(SECRET_PATH, session_id, None))
    assert (expired.status, expired.kind) == (401, "UnAuthenticatedCookie")
    stale = refused(lambda: kbs.broker.resource(SECRET_PATH, None, token))
    assert (stale.status, stale.kind, stale.detail) == (
        401, "TokenVerifierError", "the attestation token has expired")


def test_tokens_the_broker_did_not_issue_are_refused(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    _, token = kbs.attest()
    header, claims = kbs.broker.token_key.verify_token(token)
    forged = token.rsplit(".", 1)[0] + ".AAAA"
    for bad in (forged, "x.y.z", KeyPair.generate().sign_token(claims, header["kid"])):
        problem = refused(lambda t=bad: kbs.broker.resource(SECRET_PATH, None, t))
        assert (problem.status, problem.kind, problem.detail) == (
            401, "TokenVerifierError", "the attestation token is not valid")
    other_kid = kbs.broker.token_key.sign_token(claims, "another-key")
    assert refused(lambda: kbs.broker.resource(SECRET_PATH, None, other_kid)).status == 401
    not_ear = kbs.broker.token_key.sign_token({**claims, "eat_profile": "x"}, header["kid"])
    assert refused(lambda: kbs.broker.resource(SECRET_PATH, None, not_ear)).status == 401
    result = AttestationResult.from_claims(claims)
    contra = AttestationResult(result.issued_at, result.expires_at, result.token_id,
                               result.nonce, CONTRAINDICATED, result.policy_id,
                               result.tee_pubkey, result.evidence_claims)
    signed = kbs.broker.token_key.sign_token(contra.to_claims("cvm-kbs", "0"), header["kid"])
    denied = refused(lambda: kbs.broker.resource(SECRET_PATH, None, signed))
    assert (denied.status, denied.kind) == (403, "PolicyDeny") and "policy" in denied.detail


def test_a_session_cookie_with_another_tee_keys_token_is_refused(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    mine, my_token = kbs.attest()
    _, their_token = kbs.attest(KeyPair.generate().public_jwk())
    assert kbs.key.decrypt(kbs.broker.resource(SECRET_PATH, mine, my_token)) == SECRET
    foreign = refused(lambda: kbs.broker.resource(SECRET_PATH, mine, their_token))
    assert (foreign.status, foreign.kind) == (401, "UnAuthenticatedCookie")
    assert "another key" in foreign.detail
    row = kbs.last()
    assert (row["action"], row["outcome"], row["session_id"], row["subject"], row["at"]) == (
        "resource", "refused", mine, SECRET_PATH, kbs.clock.now)
    assert rules(row) == {"tee-pubkey"} and row["findings"][0]["input"] == "Authorization"
    challenged, _ = kbs.auth()  # a token with a cookie that is not attested
    assert refused(lambda: kbs.broker.resource(SECRET_PATH, challenged, my_token)).status == 401


def test_launch_and_composite_attestations_open_their_own_resources(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    kbs.broker.counters.register(VTPM_PATH, b'{"value": 3}', kbs.clock.now)
    launch, launch_token = kbs.attest(launch=True)
    session = kbs.broker.storage.session(launch)
    assert session is not None and session["state"] == "launch-attested"
    for args in ((launch, None), (None, launch_token)):
        release = KeyRelease.from_bytes(kbs.key.decrypt(kbs.broker.resource(VTPM_PATH, *args)))
        assert release == KeyRelease(VTPM_SECRET, 3, VTPM_PATH)
    scoped = refused(lambda: kbs.broker.resource(SECRET_PATH, launch, None))
    assert (scoped.status, scoped.kind) == (403, "PolicyDeny") and "policy" in scoped.detail
    row = kbs.last()
    assert (row["action"], row["outcome"], row["session_id"], row["at"]) == (
        "resource", "refused", launch, kbs.clock.now)
    assert row["findings"][0]["actual"] == SECRET_PATH
    assert rules(row) == {"resource.scope"} and row["subject"] == (
        f"{SECRET_PATH} (session {launch})")
    assert "launch evidence" in row["findings"][0]["input"]
    assert refused(lambda: kbs.broker.resource(SECRET_PATH, None, launch_token)).status == 403

    composite, token = kbs.attest()
    for args in ((composite, None), (None, token)):
        problem = refused(lambda a=args: kbs.broker.resource(VTPM_PATH, *a))
        assert (problem.status, problem.kind) == (403, "PolicyDeny")
    assert "composite evidence" in kbs.last()["findings"][0]["input"]
    assert kbs.last()["subject"].startswith(f"{VTPM_PATH} (token ")


def test_the_sweep_runs_once_a_minute(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    broker = Broker(kbs.broker.storage, KEK, kbs.guests.roots, clock=kbs.clock,
                    settings=BrokerSettings(session_ttl_seconds=10))
    start = kbs.clock.now
    session_id, _ = broker.auth(AUTH)  # sweeps, and sets the next sweep a minute on
    kbs.clock.now = start + 59
    broker.auth(AUTH)
    assert kbs.broker.storage.session(session_id) is not None
    kbs.clock.now = start + 60
    broker.auth(AUTH)
    assert kbs.broker.storage.session(session_id) is None
    # reports are remembered for twice a session's lifetime (20 s here)
    storage = kbs.broker.storage

    def record(digest: str, at: float) -> bool:
        row = storage.audit_row("attest", "denied", [], at=at)
        return storage.finish_attestation("s", False, {}, None, at, at, row, digest)

    assert record("r99", start + 99) and record("r100", start + 100)
    kbs.clock.now = start + 120
    broker.auth(AUTH)
    assert record("r99", start + 120)  # forgotten
    assert not record("r100", start + 120)  # remembered to the end of its 20 s


def test_secrets_and_the_token_key_are_sealed_under_the_kek(fast_kbs: FastKbs) -> None:
    kbs = fast_kbs
    stored = kbs.broker.storage.secret(SECRET_PATH)
    assert stored is not None and SECRET not in stored.ciphertext
    assert len(stored.iv) == 12 and len(stored.tag) == 16
    assert kbs.broker._open(f"secret:{SECRET_PATH}", stored) == SECRET
    key = kbs.broker.storage.key(TOKEN_KEY_NAME)
    assert key is not None and b'"d"' not in key.ciphertext
    again = Broker(kbs.broker.storage, KEK, kbs.guests.roots)  # a second worker
    assert again.token_key.public_jwk() == kbs.broker.token_key.public_jwk()
    assert again.token_key_id() == kbs.broker.token_key_id()
    digest = hashlib.sha256(json.dumps(kbs.broker.token_key.public_jwk(),
                                       sort_keys=True).encode()).digest()
    assert kbs.broker.token_key_id() == b64url_encode(digest[:12])
    with pytest.raises(UsageError, match="does not open"):
        Broker(kbs.broker.storage, bytes(32), kbs.guests.roots)
    for size in (31, 33):
        with pytest.raises(UsageError, match="32 bytes"):
            Broker(kbs.broker.storage, bytes(size), kbs.guests.roots)
    kbs.broker.set_secret(SECRET_PATH, b"rotated")
    session_id, _ = kbs.attest()
    assert kbs.key.decrypt(kbs.broker.resource(SECRET_PATH, session_id, None)) == b"rotated"


def test_resource_paths() -> None:
    assert resource_path("a", "b", "c") == "a/b/c"
    assert resource_path("A-z.0_9", "x" * 128, "t") == f"A-z.0_9/{'x' * 128}/t"
    for segments in (("a", "b/../c", "d"), ("", "b", "c"), ("a", "x" * 129, "c"),
                     ("a", "b", "c d"), ("a", "b", "c\n")):
        problem = refused(lambda s=segments: resource_path(*s))
        assert (problem.status, problem.kind) == (404, "InvalidRequestPath")
    long = "a" * 40 + "/" * 10
    detail = refused(lambda: resource_path("a", long, "c")).detail
    assert repr(long[:40]) in detail and long[:41] not in detail  # the input, bounded
