"""The guest side of the RCAR protocol: what an attestation agent in the CVM sends.

``attest(cvm)`` does ``POST /kbs/v0/auth`` (Request: version, tee ``snp``), takes the nonce,
has the CVM produce evidence binding it and the TEE key, and ``POST /kbs/v0/attest``s it with
the session cookie; ``resource(path, key)`` fetches a secret and opens the JWE with the TEE
private key — which never leaves the guest.

The conversation runs on one keep-alive HTTP/1.1 connection (:class:`BrokerConnection`, the
standard library's ``http.client``) that keeps the ``kbs-session-id`` cookie, as an attestation
agent's HTTP stack does: a fleet's agents cost the broker's machine a quarter of what a
general-purpose client with a full cookie jar would.
"""

from __future__ import annotations

import http.client
import json
from http.cookies import CookieError, SimpleCookie
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

from cvm.crypto.jose import KeyPair
from cvm.errors import CvmError, FormatError, StateError, UsageError
from cvm.formats.kbs.evidence import CvmEvidence
from cvm.formats.kbs.rcar import Attestation

PROTOCOL_VERSION = "0.4.0"
COOKIE = "kbs-session-id"
MAX_RESPONSE_BYTES = 4 << 20


class Attester(Protocol):
    tee_key: KeyPair

    def evidence(self, nonce: str, tee_pubkey: dict[str, Any] | None = None) -> CvmEvidence: ...


class KbsRefusedError(CvmError):
    """The broker answered with an RFC 7807 problem."""

    exit_code = 1

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(f"the broker refused ({status} {kind.rsplit('/', 1)[-1]}): {detail}")
        self.status, self.kind, self.detail = status, kind, detail


class KbsUnreachableError(StateError):
    """The broker could not be reached, or broke the connection (exit 69, as sysexits'
    EX_UNAVAILABLE)."""


class Reply:
    """One answer: status, body, and its JSON object."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.content = status, body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class BrokerConnection:
    """One keep-alive HTTP/1.1 connection to the broker at ``url``, with its session cookie."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"broker URL {url!r}: expected http://HOST:PORT or https://...")
        kind = (http.client.HTTPSConnection if parts.scheme == "https"
                else http.client.HTTPConnection)
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"broker URL {url!r}: the port is not a number") from None
        self.url = url
        self.connection = kind(parts.hostname, port, timeout=timeout)
        self.prefix = parts.path.rstrip("/")
        self.cookie: str | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read its answer (once more on a fresh connection if the idle
        one was closed by the broker before it answered)."""
        sent = {"content-type": "application/json"} if body is not None else {}
        if self.cookie is not None:
            sent["cookie"] = f"{COOKIE}={self.cookie}"
        sent.update(headers or {})
        for attempt in range(2):
            try:
                self.connection.request(method, self.prefix + path, body=body, headers=sent)
                response = self.connection.getresponse()
                data = response.read(MAX_RESPONSE_BYTES + 1)
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as error:
                self.connection.close()
                if attempt:
                    raise KbsUnreachableError(f"the broker at {self.url} closed the "
                                              f"connection: {error}") from None
            except (OSError, http.client.HTTPException) as error:
                self.connection.close()
                raise KbsUnreachableError(f"the broker at {self.url} cannot be reached: "
                                          f"{error}") from None
        if len(data) > MAX_RESPONSE_BYTES:
            self.connection.close()
            raise FormatError(f"the broker's answer exceeds {MAX_RESPONSE_BYTES} bytes")
        for value in response.headers.get_all("set-cookie") or []:
            try:
                jar = SimpleCookie(value)
            except CookieError:
                continue
            if COOKIE in jar:
                self.cookie = jar[COOKIE].value
        return Reply(response.status, data)

    def close(self) -> None:
        self.connection.close()


class KbsClient:
    """One attester's conversation with a broker at ``url``."""

    def __init__(self, url: str, connection: BrokerConnection | None = None) -> None:
        self.http = connection or BrokerConnection(url)
        self.token: str | None = None

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.http.close()

    @staticmethod
    def _check(response: Reply) -> Reply:
        if response.status_code >= 400:
            try:
                body = response.json()
                kind, detail = str(body.get("type", "")), str(body.get("detail", ""))
            except (ValueError, AttributeError):
                kind, detail = "", response.text[:200]
            raise KbsRefusedError(response.status_code, kind, detail)
        return response

    @staticmethod
    def _field(response: Reply, name: str, what: str) -> str:
        try:
            value = response.json().get(name)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str):
            raise FormatError(f"the broker's {what} has no {name}")
        return value

    def challenge(self) -> str:
        response = self._check(self.http.request("POST", "/kbs/v0/auth", json.dumps(
            {"version": PROTOCOL_VERSION, "tee": "snp", "extra-params": ""}).encode()))
        return self._field(response, "nonce", "challenge")

    def send_evidence(self, payload: Attestation) -> str:
        response = self._check(self.http.request("POST", "/kbs/v0/attest", json.dumps(
            payload.to_json()).encode()))
        self.token = self._field(response, "token", "answer")
        return self.token

    def attest(self, attester: Attester) -> str:
        """auth + attest; the EAR token (the session cookie is kept for resources)."""
        nonce = self.challenge()
        key = attester.tee_key.public_jwk()
        return self.send_evidence(Attestation(nonce, key, attester.evidence(nonce, key)))

    def resource(self, path: str, key: KeyPair, use_token: bool = False) -> bytes:
        """GET a resource (by cookie, or by bearer token) and open its JWE with ``key``."""
        headers = {"authorization": f"Bearer {self.token}"} if use_token and self.token else {}
        response = self._check(self.http.request("GET", f"/kbs/v0/resource/{path}",
                                                 headers=headers))
        try:
            jwe = response.json()
        except ValueError:
            raise FormatError("the broker's resource is not JSON") from None
        return key.decrypt(jwe)
