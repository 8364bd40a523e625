"""The guest side of the RCAR protocol: what an attestation agent in the CVM sends.

``attest(cvm)`` does ``POST /kbs/v0/auth`` (Request: version, tee ``snp``), takes the nonce,
has the CVM produce evidence binding it and the TEE key, and ``POST /kbs/v0/attest``s it with
the session cookie; ``resource(path, key)`` fetches a secret and opens the JWE with the TEE
private key — which never leaves the guest.

The conversation runs on one keep-alive HTTP/1.1 connection (:class:`BrokerConnection`: a
socket, each request written in one send, each answer read strictly by
:mod:`cvm.formats.http1`) that keeps the ``kbs-session-id`` cookie, as an attestation agent's
HTTP stack does. A fleet's agents share the broker's machine in the load test: the standard
library's ``http.client`` (a request's head and body in two sends, every answer's head through
the e-mail parser) and ``h11``'s general state machine each cost a round trip more CPU than the
broker's report verification.
"""

from __future__ import annotations

import json
import socket
import ssl
from types import TracebackType
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from cvm.crypto.jose import KeyPair
from cvm.errors import CvmError, FormatError, StateError, UsageError
from cvm.formats import http1
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
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"broker URL {url!r}: the port is not a number") from None
        self.url, self.timeout = url, timeout
        self.address = (parts.hostname, port or (443 if parts.scheme == "https" else 80))
        self.tls = parts.scheme == "https"
        self.host = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.cookie: str | None = None
        self._socket: socket.socket | None = None
        self._stream: BinaryIO | None = None

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        if self._socket is None or self._stream is None:
            raw = socket.create_connection(self.address, timeout=self.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket = (ssl.create_default_context().wrap_socket(
                raw, server_hostname=self.address[0]) if self.tls else raw)
            self._stream = self._socket.makefile("rb")
        return self._socket, self._stream

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read its answer (once more on a fresh connection if the
        broker closed the connection before answering, as it does with an idle one)."""
        sent = [("host", self.host)]
        if body is not None:
            sent.append(("content-type", "application/json"))
        if self.cookie is not None:
            sent.append(("cookie", f"{COOKIE}={self.cookie}"))
        sent += list((headers or {}).items())
        wire = http1.request(method, self.prefix + path, sent, body or b"")
        for attempt in range(2):
            try:
                connection, stream = self._connect()
                connection.sendall(wire)
                answer = http1.read_response(stream.readline, stream.read, MAX_RESPONSE_BYTES)
                break
            except (BrokenPipeError, ConnectionResetError, http1.NoAnswerError) as error:
                self.close()  # an idle connection the broker closed: once more, anew
                if attempt:
                    raise KbsUnreachableError(f"the broker at {self.url} closed the "
                                              f"connection: {error}") from None
            except http1.TooLargeError:
                self.close()
                raise
            except (OSError, FormatError) as error:  # cut short, refused, or not HTTP/1.1
                self.close()
                raise KbsUnreachableError(f"the broker at {self.url} cannot be reached: "
                                          f"{error}") from None
        else:  # pragma: no cover - the loop breaks or raises
            raise AssertionError("unreachable")
        for header in answer.all("set-cookie"):
            value = http1.cookie_value(header, COOKIE)
            self.cookie = (value or None) if value is not None else self.cookie
        if not answer.keep_alive:
            self.close()
        return Reply(answer.status, answer.body)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None


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
