"""The host's network relay: the address it takes from the URL, one connection per exchange,
everything read until the server closes (and no more than the cap), the transcript of both
directions, and an unreachable broker named in one line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from cvm.errors import ExternalToolError, UsageError
from cvm.host import relay
from cvm.host.relay import NetworkRelay


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """A server on localhost that reads one request per connection and answers it reversed,
    then closes; the requests it received are listed."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while True:
            connection, _ = listener.accept()
            if stop.is_set():
                connection.close()
                return
            with connection:
                request = connection.recv(1 << 16)
                received.append(request)
                connection.sendall(request[::-1] * 3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    yield port, received
    stop.set()
    socket.create_connection(("127.0.0.1", port)).close()  # wakes the accept
    thread.join(5)
    listener.close()


def test_an_exchange_sends_the_request_and_returns_the_whole_answer(
        server: tuple[int, list[bytes]]) -> None:
    port, received = server
    transcript: list[bytes] = [b"earlier"]
    network = NetworkRelay(f"http://127.0.0.1:{port}/kbs/v0", transcript)
    assert network.address == ("127.0.0.1", port)
    assert network.transcript is transcript
    assert network.exchange(b"GET /one") == b"eno/ TEG" * 3
    assert network.exchange(b"GET /two") == b"owt/ TEG" * 3
    assert received == [b"GET /one", b"GET /two"]
    assert transcript == [b"earlier", b"GET /one", b"eno/ TEG" * 3, b"GET /two", b"owt/ TEG" * 3]
    assert network.bytes_seen() == b"".join(transcript)


def test_the_address_defaults_to_port_80_and_the_transcript_to_a_new_list() -> None:
    one, two = NetworkRelay("http://kbs.example"), NetworkRelay("http://kbs.example:8080")
    assert (one.address, two.address) == (("kbs.example", 80), ("kbs.example", 8080))
    assert one.transcript == [] and one.transcript is not two.transcript
    assert (one.timeout, NetworkRelay("http://x", timeout=2.5).timeout) == (30.0, 2.5)
    assert one.bytes_seen() == b""


@pytest.mark.parametrize("url", ["https://kbs.example", "http://", "kbs.example:80",
                                 "ftp://kbs.example", "http://:80/"])
def test_anything_but_http_host_port_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match=rf"^--kbs {url!r}: expected http://HOST:PORT$"):
        NetworkRelay(url)


def test_an_unreachable_broker_is_named_and_the_request_still_logged() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    network = NetworkRelay(f"http://127.0.0.1:{port}")
    with pytest.raises(ExternalToolError,
                       match=rf"^cannot reach the key broker at 127\.0\.0\.1:{port} "
                             r"\(Connection refused\)$") as refused:
        network.exchange(b"GET /")
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    assert network.transcript == [b"GET /"]


class _Connection:
    """A connection that answers with scripted chunks and records what it was given."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks, self.sent, self.sizes = list(chunks), b"", []

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.closed = True

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        self.sizes.append(size)
        return self.chunks.pop(0) if self.chunks else b""


def _scripted(monkeypatch: pytest.MonkeyPatch, connection: _Connection) -> list[object]:
    calls: list[object] = []

    def connect(address: object, timeout: float) -> _Connection:
        calls.append((address, timeout))
        return connection

    monkeypatch.setattr(relay.socket, "create_connection", connect)
    return calls


def test_the_answer_is_read_in_chunks_until_the_server_closes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    connection = _Connection([b"HTTP/1.1 200", b" OK\r\n", b"\r\n"])
    calls = _scripted(monkeypatch, connection)
    network = NetworkRelay("http://kbs.example:8080", timeout=4.0)
    assert network.exchange(b"request") == b"HTTP/1.1 200 OK\r\n\r\n"
    assert calls == [(("kbs.example", 8080), 4.0)]
    assert connection.sent == b"request" and connection.closed
    assert connection.sizes == [relay.CHUNK_BYTES] * 4


def test_an_answer_over_the_cap_stops_at_the_chunk_that_passes_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "MAX_ANSWER_BYTES", 10)
    connection = _Connection([b"x" * 5, b"x" * 5, b"y" * 3, b"z" * 100])
    _scripted(monkeypatch, connection)
    assert NetworkRelay("http://kbs.example").exchange(b"r") == b"x" * 10 + b"y" * 3
    assert connection.chunks == [b"z" * 100]  # never read


def test_an_error_without_strerror_is_named_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(address: object, timeout: float) -> _Connection:
        raise TimeoutError("timed out")

    monkeypatch.setattr(relay.socket, "create_connection", connect)
    with pytest.raises(ExternalToolError,
                       match=r"^cannot reach the key broker at kbs\.example:80 \(timed out\)$"):
        NetworkRelay("http://kbs.example").exchange(b"r")
