"""The attestation agent's HTTP/1.1 connection to the broker (no broker needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cvm.attestation.kbs import client as kbs_client
from cvm.attestation.kbs.client import BrokerConnection, KbsClient, KbsUnreachableError
from cvm.errors import FormatError, UsageError


def _answer(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
            f"\r\n{extra}\r\n").encode() + body


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        rest += connection.recv(65536)
    return head


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """A server that answers each connection's first request with the next scripted answer,
    then closes that connection without a word (as a broker closing an idle keep-alive)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    answers: list[bytes] = []
    heads: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                heads.append(_read_request(connection))
                if answers:
                    connection.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", answers, heads
    listener.close()


def test_the_session_cookie_is_kept_and_sent_back(server: tuple[str, list[bytes], list[bytes]]
                                                  ) -> None:
    url, answers, heads = server
    answers += [_answer(b'{"nonce": "n1"}', "set-cookie: kbs-session-id=abc; HttpOnly; "
                                             "Path=/kbs/v0\r\nset-cookie: other=1\r\n"),
                _answer(b'{"nonce": "n2"}')]
    client = KbsClient(url)
    assert client.challenge() == "n1"
    assert client.http.cookie == "abc"
    assert client.challenge() == "n2"  # the first connection was closed: sent again, anew
    assert b"cookie: kbs-session-id=abc" in heads[-1].lower()
    assert heads[-1].startswith(b"POST /kbs/v0/auth HTTP/1.1")
    client.http.close()


def test_a_connection_closed_twice_is_unreachable(server: tuple[str, list[bytes], list[bytes]]
                                                  ) -> None:
    url, _, heads = server
    with pytest.raises(KbsUnreachableError, match="closed the connection"):
        KbsClient(url).challenge()
    assert len(heads) == 2  # one retry on a fresh connection, not more


def test_unreachable_and_malformed_urls() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(KbsUnreachableError, match="cannot be reached") as refused:
        KbsClient(f"http://127.0.0.1:{port}").challenge()
    assert refused.value.exit_code == 69
    for url in ("ftp://host", "http://", "http://host:port"):
        with pytest.raises(UsageError):
            BrokerConnection(url)


def test_answers_that_are_not_the_protocol(server: tuple[str, list[bytes], list[bytes]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    url, answers, _ = server
    answers += [_answer(b"[]"), _answer(b'{"nonce": 5}'), _answer(b"x" * 101)]
    client = KbsClient(url)
    with pytest.raises(FormatError, match="challenge has no nonce"):
        client.challenge()
    with pytest.raises(FormatError, match="challenge has no nonce"):
        client.challenge()
    monkeypatch.setattr(kbs_client, "MAX_RESPONSE_BYTES", 100)
    with pytest.raises(FormatError, match="exceeds 100 bytes"):
        client.challenge()


def test_one_connection_carries_the_conversation() -> None:
    """Answers that keep the connection (one of them chunked) leave it open for the next."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[int] = []
    parts = [b'{"non', b'ce": "n2"}']
    chunked = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
               b"transfer-encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
               + b"0\r\n\r\n")

    def serve() -> None:
        connection, _ = listener.accept()
        listener.close()  # no second connection: a retry is refused
        accepted.append(1)
        with connection:
            for answer in (_answer(b'{"nonce": "n1"}'), chunked):
                _read_request(connection)
                connection.sendall(answer)
            _read_request(connection)  # the third request: the connection is dropped

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = KbsClient(f"http://127.0.0.1:{listener.getsockname()[1]}")
    assert client.challenge() == "n1"
    assert client.challenge() == "n2"
    with pytest.raises(KbsUnreachableError):
        client.challenge()  # dropped, then refused: the listener accepts no second connection
    thread.join(timeout=5)
    assert accepted == [1]


def test_an_answer_cut_short_is_unreachable(server: tuple[str, list[bytes], list[bytes]]
                                            ) -> None:
    url, answers, _ = server
    answers.append(_answer(b'{"nonce": "n1"}')[:-3])  # the body ends before its length
    with pytest.raises(KbsUnreachableError, match="cannot be reached"):
        KbsClient(url).challenge()
