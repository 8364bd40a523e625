"""The guest side of the RCAR protocol: what an attestation agent in the CVM sends.

``attest(cvm)`` does ``POST /kbs/v0/auth`` (Request: version, tee ``snp``), takes the nonce,
has the CVM produce evidence binding it and the TEE key, and ``POST /kbs/v0/attest``s it with
the session cookie; ``resource(path, key)`` fetches a secret and opens the JWE with the TEE
private key — which never leaves the guest.

The conversation runs on one keep-alive HTTP/1.1 connection (:class:`BrokerConnection`: a
socket, ``h11``'s strict HTTP/1.1 state machine, each request written in one send) that keeps
the ``kbs-session-id`` cookie, as an attestation agent's HTTP stack does. A fleet's agents share
the broker's machine in the load test: this costs each round trip a tenth of the CPU the standard
library's ``http.client`` did (which writes a request's head and body in two sends and parses
every answer's head with the e-mail parser).
"""

from __future__ import annotations

import json
import socket
import ssl
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11

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


class _ClosedError(Exception):
    """The broker closed the connection before a byte of its answer."""


def session_cookie(header: str) -> str | None:
    """The ``kbs-session-id`` value a ``Set-Cookie`` header sets (RFC 6265 section 5.2: the
    first ``name=value`` pair, attributes after ``;``), or None for another cookie."""
    name, _, rest = header.partition("=")
    if name.strip() != COOKIE:
        return None
    return rest.split(";", 1)[0].strip() or None


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
        self._http = h11.Connection(h11.CLIENT)

    def _connect(self) -> socket.socket:
        if self._socket is None:
            raw = socket.create_connection(self.address, timeout=self.timeout)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket = (ssl.create_default_context().wrap_socket(
                raw, server_hostname=self.address[0]) if self.tls else raw)
            self._http = h11.Connection(h11.CLIENT)
        return self._socket

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read its answer (once more on a fresh connection if the
        broker closed the connection before answering, as it does with an idle one)."""
        sent = [("host", self.host), ("content-length", str(len(body or b"")))]
        if body is not None:
            sent.append(("content-type", "application/json"))
        if self.cookie is not None:
            sent.append(("cookie", f"{COOKIE}={self.cookie}"))
        sent += list((headers or {}).items())
        for attempt in range(2):
            try:
                return self._exchange(method, self.prefix + path, sent, body or b"")
            except (_ClosedError, BrokenPipeError, ConnectionResetError) as error:
                self.close()
                if attempt:
                    reason = str(error) or "no answer"
                    raise KbsUnreachableError(f"the broker at {self.url} closed the "
                                              f"connection: {reason}") from None
            except (OSError, h11.ProtocolError) as error:
                self.close()
                raise KbsUnreachableError(f"the broker at {self.url} cannot be reached: "
                                          f"{error}") from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _exchange(self, method: str, target: str, headers: list[tuple[str, str]],
                  body: bytes) -> Reply:
        connection = self._connect()
        http = self._http
        wire = http.send(h11.Request(method=method, target=target, headers=headers)) or b""
        if body:
            wire += http.send(h11.Data(data=body)) or b""
        wire += http.send(h11.EndOfMessage()) or b""
        connection.sendall(wire)
        status, content, answered = 0, bytearray(), False
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = connection.recv(65536)
                if not data and not answered:
                    raise _ClosedError
                answered = True
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"set-cookie":
                        cookie = session_cookie(value.decode("latin-1"))
                        self.cookie = cookie if cookie is not None else self.cookie
            elif isinstance(event, h11.Data):
                content += event.data
                if len(content) > MAX_RESPONSE_BYTES:
                    self.close()
                    raise FormatError(f"the broker's answer exceeds {MAX_RESPONSE_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif not isinstance(event, h11.InformationalResponse):  # a close mid-answer
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        else:
            self.close()
        return Reply(status, bytes(content))

    def close(self) -> None:
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
