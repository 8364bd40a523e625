"""The key broker's logic, without HTTP: challenge, appraise, issue tokens, release secrets.

Trustee's RCAR protocol (``kbs/docs/kbs_attestation_protocol.md``): ``auth`` opens a session
with a fresh nonce; ``attest`` consumes that nonce (once, before it expires), appraises the
evidence (:func:`cvm.attestation.verifier.composite.appraise`) against the registered reference
values and Rego policy, and issues a signed EAR token; ``resource`` releases a secret, wrapped
to the TEE key of an attested session or of a valid token, as a JWE.

What the requester learns of a denial is one generic sentence; the audit log has every finding.
Secrets and the token-signing key are stored encrypted (AES-256-GCM) under the key-encryption
key, with their name as additional data, so a database row cannot be moved to another name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cvm import __version__
from cvm.attestation.kbs.launch import (
    ATTESTED,
    LAUNCH_ATTESTED,
    appraise_payload,
    is_launch,
    may_open,
    scope_finding,
    session_state,
)
from cvm.attestation.kbs.storage import Sealed, Storage
from cvm.attestation.verifier.chain import ChainVerifier
from cvm.attestation.verifier.composite import Verdict
from cvm.attestation.verifier.reference import ReferenceDocument
from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY, RegoPolicy
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto import aead
from cvm.crypto.jose import KeyPair, wrap_to
from cvm.errors import CvmError, FormatError, IntegrityError, SignatureError, UsageError
from cvm.formats.kbs.ear import AFFIRMING, AttestationResult
from cvm.formats.kbs.json_fields import b64url_encode, load_object
from cvm.formats.kbs.rcar import PROTOCOL_VERSIONS, SUPPORTED_TEES, Attestation, AuthRequest
from cvm.formats.snp.attestation_report import AttestationReport

if TYPE_CHECKING:
    from cvm.attestation.kbs.counters import CounterStore

KEK_SIZE = 32
NONCE_BYTES = 32
SESSION_ID_BYTES = 24
TOKEN_KEY_NAME = "token-signing-key"
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,128}")
DENIED = "attestation failed"
PURGE_INTERVAL_SECONDS = 60.0


class ProblemError(CvmError):
    """A request the broker refuses: HTTP status, Trustee error type, one-line detail."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


@dataclass(frozen=True)
class BrokerSettings:
    session_ttl_seconds: float = 300.0
    token_ttl_seconds: float = 300.0
    issuer: str = "cvm-kbs"


def resource_path(repository: str, kind: str, tag: str) -> str:
    for segment in (repository, kind, tag):
        if not _SEGMENT.fullmatch(segment):  # `$` would let a trailing newline through
            raise ProblemError(404, "InvalidRequestPath", f"resource path segment {segment[:40]!r} "
                          "is not [A-Za-z0-9._-]{1,128}")
    return f"{repository}/{kind}/{tag}"


_DOCUMENTS = [("reference", "default"), ("policy", "default")]


def _replay_finding(digest: str) -> list[dict[str, str]]:
    return [{"rule": "verify.replay", "expected": "a report never presented before",
             "actual": f"report {digest[:16]}… was presented in an earlier session",
             "input": "report"}]


class Broker:
    """One broker process's view of the shared database."""

    def __init__(self, storage: Storage, kek: bytes, roots: TrustRoots, *,
                 clock: Callable[[], float] = time.time,
                 random: Callable[[int], bytes] = os.urandom,
                 settings: BrokerSettings = BrokerSettings()) -> None:
        if len(kek) != KEK_SIZE:
            raise UsageError(f"the key-encryption key must be {KEK_SIZE} bytes, got {len(kek)}")
        self.storage, self.kek, self.roots = storage, kek, roots
        self.clock, self.random, self.settings = clock, random, settings
        self.chains = ChainVerifier(roots)
        self._next_purge = 0.0
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, int], Any] = {}
        self.token_key = self._token_key()
        self._key_id = self.token_key_id()
        from cvm.attestation.kbs.counters import CounterStore  # the vTPM rollback counters
        self.counters: CounterStore = CounterStore(storage)

    # ---- encryption at rest --------------------------------------------------------------
    def _seal(self, name: str, plaintext: bytes) -> Sealed:
        iv = self.random(aead.IV_SIZE)
        ciphertext, tag = aead.encrypt(self.kek, iv, plaintext, name.encode())
        return Sealed(iv, ciphertext, tag)

    def _open(self, name: str, sealed: Sealed) -> bytes:
        return aead.decrypt(self.kek, sealed.iv, sealed.ciphertext, sealed.tag, name.encode())

    def _token_key(self) -> KeyPair:
        if self.storage.key(TOKEN_KEY_NAME) is None:
            fresh = KeyPair.generate().private_jwk()
            self.storage.add_key_once(TOKEN_KEY_NAME,
                                      self._seal(TOKEN_KEY_NAME, json.dumps(fresh).encode()))
        stored = self.storage.key(TOKEN_KEY_NAME)
        assert stored is not None
        try:
            opened = self._open(TOKEN_KEY_NAME, stored)
        except IntegrityError:
            raise UsageError("the key-encryption key does not open this database's keys "
                             "(another key-encryption key wrote them)") from None
        return KeyPair.from_private_jwk(json.loads(opened))

    def token_key_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.token_key.public_jwk(), sort_keys=True).encode())
        return b64url_encode(digest.digest()[:12])

    # ---- the protocol --------------------------------------------------------------------
    def auth(self, body: bytes) -> tuple[str, dict[str, Any]]:
        """POST /kbs/v0/auth: (session id, Challenge)."""
        request = AuthRequest.from_json(load_object(body, "request"))
        if request.version not in PROTOCOL_VERSIONS:
            raise ProblemError(401, "ProtocolVersion", f"protocol version {request.version[:32]!r} "
                          f"is not supported ({', '.join(PROTOCOL_VERSIONS)})")
        if request.tee not in SUPPORTED_TEES:
            raise ProblemError(401, "UnsupportedTee", f"TEE {request.tee[:32]!r} is not supported")
        session_id = self.random(SESSION_ID_BYTES).hex()
        nonce = b64url_encode(self.random(NONCE_BYTES))
        now = self.clock()
        if now >= self._next_purge:  # each worker sweeps the shared tables now and then
            self._next_purge = now + PURGE_INTERVAL_SECONDS
            self.storage.purge(now, 2 * self.settings.session_ttl_seconds)
        self.storage.create_session(session_id, nonce, request.tee, now,
                                    self.settings.session_ttl_seconds)
        return session_id, {"nonce": nonce, "extra-params": {}}

    def _cached(self, kind: str, doc_id: str, build: Callable[[str], Any],
                default: str | None = None,
                found: tuple[str, int] | None = None) -> Any:
        if found is None:
            if default is None:
                return None
            found = (default, 0)
        body, version = found
        key = (kind, doc_id, version)
        with self._lock:
            value = self._cache.get(key)
        if value is None:
            value = build(body)
            with self._lock:
                self._cache[key] = value
        return value

    def _deny(self, session_id: str, findings: list[dict[str, str]], chip: str | None,
              now: float) -> ProblemError:
        self.storage.deny_session(session_id, now, self.storage.audit_row(
            "attest", "denied", findings, session_id=session_id, chip_id=chip, at=now))
        return ProblemError(401, "AttestationFailed", DENIED)

    def attest(self, session_id: str | None, body: bytes) -> str:
        """POST /kbs/v0/attest: appraise; the signed EAR token, or a generic denial.

        Two transactions: the nonce is consumed (with the reference values and policy read),
        then the report is recorded as presented together with the outcome — a report seen
        before (a replay) is denied whatever its appraisal said."""
        if not session_id:
            raise ProblemError(401, "UnAuthenticatedCookie", "no kbs-session-id cookie")
        payload = Attestation.from_json(load_object(body, "attestation"))
        now = self.clock()
        session, stored = self.storage.consume_nonce(session_id, now, _DOCUMENTS)
        if session is None:
            self.storage.log("attest", "refused", [{"rule": "session", "expected":
                             "a live session with an unused nonce", "actual":
                             "unknown, expired or already used", "input": "kbs-session-id"}],
                             session_id=session_id, at=now)
            raise ProblemError(401, "InvalidSession", "the session is unknown, expired or used")
        try:
            chip = AttestationReport.from_bytes(payload.evidence.report).chip_id.hex()
        except FormatError as error:
            raise self._deny(session_id, [{"rule": "verify.report", "expected": "an SNP report",
                                           "actual": str(error), "input": "report"}],
                             None, now) from None
        digest = hashlib.sha384(payload.evidence.report).hexdigest()
        reference = self._cached("reference", "default",
                                 lambda body: ReferenceDocument.from_bytes(body.encode()),
                                 found=stored.get(("reference", "default")))
        if reference is None:
            self._record(session_id, digest, now, [{
                "rule": "reference", "expected": "registered reference values",
                "actual": "none", "input": "broker configuration"}], chip)
            raise ProblemError(401, "AttestationFailed", DENIED)
        policy = self._cached("policy", "default", lambda src: RegoPolicy(src, "default"),
                              DEFAULT_POLICY, stored.get(("policy", "default")))
        verdict = appraise_payload(payload, reference, policy, self.roots,
                                   datetime.fromtimestamp(now, UTC), session["nonce"],
                                   self.chains)
        if not verdict.accepted:
            self._record(session_id, digest, now, verdict.findings_json(), chip,
                         payload.tee_pubkey)
            raise ProblemError(401, "AttestationFailed", DENIED)
        return self._issue(session_id, session["nonce"], payload, verdict, chip, now, digest)

    def _record(self, session_id: str, digest: str, now: float,
                findings: list[dict[str, str]], chip: str,
                tee_pubkey: dict[str, str] | None = None) -> None:
        """Record a denial and the report it was for (or the replay, if it was seen before)."""
        row = self.storage.audit_row("attest", "denied", findings, session_id=session_id,
                                     chip_id=chip, at=now)
        if not self.storage.finish_attestation(session_id, False, tee_pubkey or {}, None, now,
                                               now, row, digest):
            raise self._deny(session_id, _replay_finding(digest), chip, now)

    def _issue(self, session_id: str, nonce: str, payload: Attestation, verdict: Verdict,
               chip: str, now: float, digest: str) -> str:
        expires = now + self.settings.token_ttl_seconds
        result = AttestationResult(
            issued_at=int(now), expires_at=int(expires), token_id=self.random(16).hex(),
            nonce=nonce, status=AFFIRMING, policy_id=verdict.policy_id,
            tee_pubkey=payload.tee_pubkey, evidence_claims=verdict.claims)
        token = self.token_key.sign_token(result.to_claims(self.settings.issuer, __version__),
                                          self._key_id)
        if not self.storage.finish_attestation(
                session_id, True, payload.tee_pubkey, result.token_id, now, expires,
                self.storage.audit_row("attest", "affirmed", [], session_id=session_id,
                                       chip_id=chip, at=now,
                                       subject=f"unchecked: {', '.join(verdict.unchecked)}"),
                digest, state=session_state(verdict)):
            raise self._deny(session_id, _replay_finding(digest), chip, now)
        return token

    def _from_token(self, token: str, now: float) -> tuple[dict[str, str], str, bool]:
        try:
            header, claims = self.token_key.verify_token(token)
            result = AttestationResult.from_claims(claims)
        except (SignatureError, FormatError):
            raise ProblemError(401, "TokenVerifierError", "the attestation token is not valid") \
                from None
        if header.get("kid") != self._key_id or result.expires_at <= now:
            raise ProblemError(401, "TokenVerifierError", "the attestation token has expired")
        if result.status != AFFIRMING:
            raise ProblemError(403, "PolicyDeny", "access denied by policy")
        return result.tee_pubkey, f"token {result.token_id}", is_launch(result.evidence_claims)

    @staticmethod
    def _session_key(session_id: str, session: dict[str, Any] | None, now: float
                     ) -> tuple[dict[str, str], str, bool]:
        if (session is None or session["state"] not in (ATTESTED, LAUNCH_ATTESTED)
                or session["expires"] <= now):
            raise ProblemError(401, "UnAuthenticatedCookie",
                          "the session is not attested, or has expired")
        return (json.loads(session["tee_pubkey"]), f"session {session_id}",
                session["state"] == LAUNCH_ATTESTED)

    def resource(self, path: str, session_id: str | None, bearer: str | None) -> dict[str, Any]:
        """GET /kbs/v0/resource/...: the secret as a JWE wrapped to the attested TEE key."""
        now = self.clock()
        if bearer is None and not session_id:
            raise ProblemError(401, "TokenNotFound", "no kbs-session-id cookie and no bearer token")
        session, sealed = self.storage.session_and_secret(session_id, path)
        key, who, launch = (self._from_token(bearer, now) if bearer is not None
                            else self._session_key(session_id or "", session, now))
        if bearer is not None and session_id:
            session_key, _, _ = self._session_key(session_id, session, now)
            if session_key != key:
                self.storage.log("resource", "refused", [{
                    "rule": "tee-pubkey", "expected": "the session's TEE key",
                    "actual": "the token names another TEE key", "input": "Authorization"}],
                    session_id=session_id, subject=path, at=now)
                raise ProblemError(401, "UnAuthenticatedCookie",
                                   "the session belongs to another key")
        if not may_open(path, launch):
            self.storage.log("resource", "refused", [scope_finding(path, launch)],
                             session_id=session_id, subject=f"{path} ({who})", at=now)
            raise ProblemError(403, "PolicyDeny", "access denied by policy")
        if sealed is None:
            raise ProblemError(404, "ResourceNotFound", f"resource {path} does not exist")
        plaintext = self._open(f"secret:{path}", sealed)
        if launch:  # a vTPM state key goes out with its rollback counter (counters.py)
            plaintext = self.counters.release(path, plaintext, now, who)
        jwe = wrap_to(key, plaintext)
        self.storage.log("resource", "released", [], session_id=session_id,
                         subject=f"{path} ({who})", at=now)
        return jwe

    # ---- administration ------------------------------------------------------------------
    def set_secret(self, path: str, value: bytes) -> None:
        self.storage.put_secret(path, self._seal(f"secret:{path}", value))
        self.storage.log("admin", "secret", [], subject=path, at=self.clock())

    def set_reference(self, body: bytes, doc_id: str = "default") -> int:
        ReferenceDocument.from_bytes(body)  # refuse what would not parse at appraisal
        version = self.storage.put_document("reference", doc_id, body.decode())
        self.storage.log("admin", "reference", [], subject=f"{doc_id} v{version}",
                         at=self.clock())
        return version

    def set_policy(self, source: str, doc_id: str = "default") -> int:
        RegoPolicy(source, doc_id)  # refuse what does not compile
        version = self.storage.put_document("policy", doc_id, source)
        self.storage.log("admin", "policy", [], subject=f"{doc_id} v{version}", at=self.clock())
        return version
