"""The guest side of the RCAR protocol: what an attestation agent in the CVM sends.

``attest(cvm)`` does ``POST /kbs/v0/auth`` (Request: version, tee ``snp``), takes the nonce,
has the CVM produce evidence binding it and the TEE key, and ``POST /kbs/v0/attest``s it with
the session cookie; ``resource(path, key)`` fetches a secret and opens the JWE with the TEE
private key — which never leaves the guest.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, Protocol

import httpx

from cvm.crypto.jose import KeyPair
from cvm.errors import CvmError, FormatError
from cvm.formats.kbs.evidence import CvmEvidence
from cvm.formats.kbs.rcar import Attestation

PROTOCOL_VERSION = "0.4.0"
COOKIE = "kbs-session-id"


class Attester(Protocol):
    tee_key: KeyPair

    def evidence(self, nonce: str, tee_pubkey: dict[str, Any] | None = None) -> CvmEvidence: ...


class KbsRefusedError(CvmError):
    """The broker answered with an RFC 7807 problem."""

    exit_code = 1

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(f"the broker refused ({status} {kind.rsplit('/', 1)[-1]}): {detail}")
        self.status, self.kind, self.detail = status, kind, detail


class KbsClient:
    """One attester's conversation with a broker at ``url``."""

    def __init__(self, url: str, client: httpx.Client | None = None) -> None:
        self.http = client or httpx.Client(base_url=url.rstrip("/"), timeout=30.0)
        self.token: str | None = None

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.http.close()

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                body = response.json()
                kind, detail = str(body.get("type", "")), str(body.get("detail", ""))
            except (ValueError, AttributeError):
                kind, detail = "", response.text[:200]
            raise KbsRefusedError(response.status_code, kind, detail)
        return response

    def challenge(self) -> str:
        response = self._check(self.http.post(
            "/kbs/v0/auth", json={"version": PROTOCOL_VERSION, "tee": "snp",
                                  "extra-params": ""}))
        nonce = response.json().get("nonce")
        if not isinstance(nonce, str):
            raise FormatError("the broker's challenge has no nonce")
        return nonce

    def send_evidence(self, payload: Attestation) -> str:
        response = self._check(self.http.post("/kbs/v0/attest", content=json.dumps(
            payload.to_json()), headers={"content-type": "application/json"}))
        token = response.json().get("token")
        if not isinstance(token, str):
            raise FormatError("the broker's answer has no token")
        self.token = token
        return token

    def attest(self, attester: Attester) -> str:
        """auth + attest; the EAR token (the session cookie is kept for resources)."""
        nonce = self.challenge()
        key = attester.tee_key.public_jwk()
        return self.send_evidence(Attestation(nonce, key, attester.evidence(nonce, key)))

    def resource(self, path: str, key: KeyPair, use_token: bool = False) -> bytes:
        """GET a resource (by cookie, or by bearer token) and open its JWE with ``key``."""
        headers = {"authorization": f"Bearer {self.token}"} if use_token and self.token else {}
        response = self._check(self.http.get(f"/kbs/v0/resource/{path}", headers=headers))
        return key.decrypt(response.json())
