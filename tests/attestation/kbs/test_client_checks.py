"""The attestation agent's side of the conversation, against a scripted broker on loopback:
the exact requests it writes, what it accepts back (a refusal by status, the nonce, the token,
the JWE), the session cookie and the bearer token, and its TLS (the broker's certificate and
name verified) — no broker needed."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cvm.attestation.kbs.client import (
    BrokerConnection,
    KbsClient,
    KbsRefusedError,
    KbsUnreachableError,
)
from cvm.crypto.jose import KeyPair, wrap_to
from cvm.errors import FormatError, IntegrityError, UsageError
from cvm.formats.kbs.evidence import REPORT_SIZE, CvmEvidence
from cvm.formats.kbs.rcar import Attestation

PROBLEM = "https://github.com/confidential-containers/kbs/errors"


def answer(status: int, body: bytes, content_type: str = "application/json",
           extra: str = "") -> bytes:
    """One answer that closes its connection (so each request is accepted anew)."""
    return (f"HTTP/1.1 {status} Whatever\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n").encode() + body


def problem(status: int, kind: str, detail: str) -> bytes:
    return answer(status, json.dumps({"type": f"{PROBLEM}/{kind}", "detail": detail}).encode(),
                  "application/problem+json")


@dataclass
class Request:
    line: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class ScriptedBroker:
    """Answers each accepted connection's one request with the next scripted answer."""

    url: str
    answers: list[bytes] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)


def _read(stream: Any) -> Request:
    line = stream.readline().decode().rstrip("\r\n")
    headers = []
    while (header := stream.readline().decode().rstrip("\r\n")):
        name, _, value = header.partition(":")
        headers.append((name, value.strip()))
    length = int(dict(headers).get("content-length", "0"))
    return Request(line, headers, stream.read(length))


def _serve(listener: socket.socket, broker: ScriptedBroker,
           wrap: Callable[[socket.socket], socket.socket]) -> None:
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            with wrap(raw) as connection, connection.makefile("rb") as stream:
                broker.requests.append(_read(stream))
                if broker.answers:
                    connection.sendall(broker.answers.pop(0))
        except OSError:  # a client that refused the TLS handshake
            raw.close()


def _start(wrap: Callable[[socket.socket], socket.socket] = lambda raw: raw,
           host: str = "127.0.0.1", scheme: str = "http") -> tuple[ScriptedBroker, socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    broker = ScriptedBroker(f"{scheme}://{host}:{listener.getsockname()[1]}")
    threading.Thread(target=_serve, args=(listener, broker, wrap), daemon=True).start()
    return broker, listener


@pytest.fixture
def broker() -> Iterator[ScriptedBroker]:
    scripted, listener = _start()
    yield scripted
    listener.close()


class Attester:
    """An attester whose evidence is placeholder bytes (the client never looks inside)."""

    def __init__(self) -> None:
        self.tee_key = KeyPair.generate()
        self.asked: list[tuple[str, dict[str, Any] | None]] = []

    def evidence(self, nonce: str, tee_pubkey: dict[str, Any] | None = None) -> CvmEvidence:
        self.asked.append((nonce, tee_pubkey))
        return CvmEvidence(bytes(REPORT_SIZE), b"vcek", b"ask", b"ark", b"manifest", b"ak",
                           b"attest", b"signature", b"log")


def _attested(broker: ScriptedBroker, attester: Attester, token: str = "the-token"
              ) -> KbsClient:
    broker.answers += [answer(200, b'{"nonce": "n-1"}',
                              extra="set-cookie: kbs-session-id=s-1; Path=/kbs/v0\r\n"),
                       answer(200, json.dumps({"token": token}).encode())]
    client = KbsClient(broker.url)
    assert client.attest(attester) == token
    return client


# --- the requests, byte for byte -------------------------------------------------------------

def test_the_challenge_request_is_trustees_auth_request(broker: ScriptedBroker) -> None:
    broker.answers.append(answer(200, b'{"nonce": "n-1"}'))
    assert KbsClient(broker.url).challenge() == "n-1"
    body = b'{"version": "0.4.0", "tee": "snp", "extra-params": ""}'
    [sent] = broker.requests
    assert sent.line == "POST /kbs/v0/auth HTTP/1.1"
    assert sent.headers == [("host", broker.url.removeprefix("http://")),
                            ("content-type", "application/json"),
                            ("content-length", str(len(body)))]  # no cookie before one is set
    assert sent.body == body


def test_the_attestation_carries_the_nonce_the_key_and_the_evidence_with_the_cookie(
        broker: ScriptedBroker) -> None:
    attester = Attester()
    client = _attested(broker, attester)
    key = attester.tee_key.public_jwk()
    assert attester.asked == [("n-1", key)]
    assert client.token == "the-token"
    sent = broker.requests[1]
    assert sent.line == "POST /kbs/v0/attest HTTP/1.1"
    assert ("cookie", "kbs-session-id=s-1") in sent.headers
    assert ("content-type", "application/json") in sent.headers
    assert json.loads(sent.body) == Attestation("n-1", key, attester.evidence("n-1", key)
                                                ).to_json()


def test_a_resource_is_a_get_without_a_body_by_cookie_or_by_bearer_token(
        broker: ScriptedBroker) -> None:
    attester = Attester()
    client = _attested(broker, attester)
    jwe = json.dumps(wrap_to(attester.tee_key.public_jwk(), b"the secret")).encode()
    broker.answers += [answer(200, jwe), answer(200, jwe)]
    assert client.resource("default/disk/root", attester.tee_key) == b"the secret"
    assert client.resource("default/disk/root", attester.tee_key, use_token=True) == \
        b"the secret"
    by_cookie, by_token = broker.requests[2:]
    assert by_cookie.line == "GET /kbs/v0/resource/default/disk/root HTTP/1.1"
    assert by_cookie.headers == [("host", broker.url.removeprefix("http://")),
                                 ("cookie", "kbs-session-id=s-1"), ("content-length", "0")]
    assert by_cookie.body == b""
    assert by_token.headers == [("host", broker.url.removeprefix("http://")),
                                ("cookie", "kbs-session-id=s-1"),
                                ("authorization", "Bearer the-token"), ("content-length", "0")]


def test_no_bearer_token_is_sent_before_the_broker_issued_one(broker: ScriptedBroker) -> None:
    key = KeyPair.generate()
    broker.answers.append(answer(200, json.dumps(wrap_to(key.public_jwk(), b"s")).encode()))
    client = KbsClient(broker.url)
    assert client.token is None
    assert client.resource("a/b/c", key, use_token=True) == b"s"
    assert not any(name == "authorization" for name, _ in broker.requests[0].headers)


@pytest.mark.parametrize(("path", "target"), [
    ("/base", "/base/kbs/v0/auth"), ("/base/", "/base/kbs/v0/auth"), ("", "/kbs/v0/auth"),
    ("/", "/kbs/v0/auth"), ("/KBSX/", "/KBSX/kbs/v0/auth")])  # only the last "/" goes
def test_the_urls_path_prefixes_every_request(broker: ScriptedBroker, path: str,
                                              target: str) -> None:
    broker.answers.append(answer(200, b'{"nonce": "n"}'))
    KbsClient(broker.url + path).challenge()
    assert broker.requests[0].line == f"POST {target} HTTP/1.1"


# --- what it accepts back ----------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
def test_a_status_of_400_or_more_is_the_brokers_refusal(broker: ScriptedBroker,
                                                        status: int) -> None:
    broker.answers.append(problem(status, "Unauthorized", "the evidence does not verify"))
    with pytest.raises(KbsRefusedError) as refused:
        KbsClient(broker.url).challenge()
    assert (refused.value.status, refused.value.kind, refused.value.detail) == (
        status, f"{PROBLEM}/Unauthorized", "the evidence does not verify")
    assert str(refused.value) == (f"the broker refused ({status} Unauthorized): "
                                  "the evidence does not verify")
    assert refused.value.exit_code == 1


@pytest.mark.parametrize(("body", "kind", "detail"), [
    (b"{}", "", ""),  # a problem without its members
    (b'{"type": 7, "detail": ["x"]}', "7", "['x']"),
    (b'["not", "a", "problem"]', "", '["not", "a", "problem"]'),
    (b"<html>" + b"x" * 300, "", "<html>" + "x" * 194),  # the first 200 characters
    (b"\xff\xfe gateway", "", "\ufffd\ufffd gateway"),
])
def test_a_refusal_that_is_not_a_problem_keeps_its_status_and_text(
        broker: ScriptedBroker, body: bytes, kind: str, detail: str) -> None:
    broker.answers.append(answer(502, body, "text/html"))
    with pytest.raises(KbsRefusedError) as refused:
        KbsClient(broker.url).challenge()
    assert (refused.value.status, refused.value.kind, refused.value.detail) == (502, kind, detail)


def test_a_refused_attestation_leaves_no_token(broker: ScriptedBroker) -> None:
    broker.answers += [answer(200, b'{"nonce": "n-1"}'),
                       problem(401, "Unauthorized", "the report is not signed by the VCEK")]
    client = KbsClient(broker.url)
    with pytest.raises(KbsRefusedError, match=r"\(401 Unauthorized\): the report is not"):
        client.attest(Attester())
    assert client.token is None


@pytest.mark.parametrize("body", [b"{}", b'{"token": 1}', b"[]", b"not json"])
def test_an_attestation_answer_without_a_token_is_malformed(broker: ScriptedBroker,
                                                            body: bytes) -> None:
    broker.answers += [answer(200, b'{"nonce": "n-1"}'), answer(200, body)]
    client = KbsClient(broker.url)
    with pytest.raises(FormatError, match=r"^the broker's answer has no token$"):
        client.attest(Attester())
    assert client.token is None


def test_a_resource_that_is_not_a_jwe_for_this_key_is_refused(broker: ScriptedBroker) -> None:
    key, other = KeyPair.generate(), KeyPair.generate()
    broker.answers += [answer(200, b"<html>secret</html>", "text/html"),
                       answer(200, json.dumps(wrap_to(other.public_jwk(), b"s")).encode()),
                       answer(200, b'["a", "list"]'),
                       problem(404, "ResourceNotFound", "no such resource")]
    client = KbsClient(broker.url)
    with pytest.raises(FormatError, match=r"^the broker's resource is not JSON$"):
        client.resource("a/b/c", key)
    with pytest.raises(IntegrityError, match="does not open with this key"):
        client.resource("a/b/c", key)
    with pytest.raises(IntegrityError, match="does not open with this key"):
        client.resource("a/b/c", key)
    with pytest.raises(KbsRefusedError, match=r"\(404 ResourceNotFound\): no such resource"):
        client.resource("a/b/c", key)


# --- the connection: URLs, time-outs, TLS ----------------------------------------------------

def test_a_malformed_broker_url_is_named() -> None:
    with pytest.raises(UsageError) as scheme:
        BrokerConnection("ftp://broker")
    assert str(scheme.value) == ("broker URL 'ftp://broker': expected http://HOST:PORT or "
                                 "https://...")
    with pytest.raises(UsageError) as port:
        BrokerConnection("http://broker:eighty")
    assert str(port.value) == "broker URL 'http://broker:eighty': the port is not a number"


def test_the_default_ports_and_the_waiting_bound() -> None:
    plain, secure = BrokerConnection("http://broker"), BrokerConnection("https://broker/kbs")
    assert (plain.address, plain.tls) == (("broker", 80), False)
    assert (secure.address, secure.tls, secure.prefix) == (("broker", 443), True, "/kbs")
    assert BrokerConnection("https://broker:8443").address == ("broker", 8443)
    assert plain.timeout == 30.0
    assert plain.cookie is None


def test_a_broker_that_never_answers_is_given_up_on() -> None:
    """The connection's time-out bounds each read: a silent broker is unreachable."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    release = threading.Event()

    def hold() -> None:
        connection, _ = listener.accept()
        listener.close()  # a retry is refused
        with connection:
            release.wait(10)  # silent (and then closed, should the client not give up)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    client = KbsClient("", BrokerConnection(f"http://127.0.0.1:{listener.getsockname()[1]}",
                                            timeout=0.2))
    with pytest.raises(KbsUnreachableError, match="cannot be reached: timed out"):
        client.challenge()
    release.set()
    thread.join(5)


@dataclass(frozen=True)
class Pki:
    ca: Path
    certificate: Path
    key: Path


def _pki(folder: Path, name: str) -> Pki:
    """A CA and a server certificate for ``name`` (and nothing else) that it issued."""
    now = datetime.now(UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test broker CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(2)
              .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                  ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    folder.mkdir(exist_ok=True)
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return pki


def _tls_broker(pki: Pki) -> tuple[ScriptedBroker, socket.socket]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.certificate, pki.key)
    return _start(lambda raw: context.wrap_socket(raw, server_side=True), "localhost", "https")


@pytest.mark.parametrize(("name", "trusted", "outcome"), [
    ("localhost", True, None),
    ("localhost", False, "certificate verify failed: unable to get local issuer certificate"),
    ("broker.example", True, "certificate verify failed: Hostname mismatch"),
])
def test_https_verifies_the_brokers_certificate_and_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, trusted: bool,
        outcome: str | None) -> None:
    pki = _pki(tmp_path, name)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca if trusted else
                                            _pki(tmp_path / "another", name).ca))
    scripted, listener = _tls_broker(pki)
    scripted.answers.append(answer(200, b'{"nonce": "over TLS"}'))
    try:
        client = KbsClient(scripted.url)
        if outcome is None:
            assert client.challenge() == "over TLS"
            assert scripted.requests[0].line == "POST /kbs/v0/auth HTTP/1.1"
        else:
            with pytest.raises(KbsUnreachableError, match=f"cannot be reached: .*{outcome}"):
                client.challenge()
            assert scripted.requests == []  # nothing was sent to an unverified broker
        client.http.close()
    finally:
        listener.close()
