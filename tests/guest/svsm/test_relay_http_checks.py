"""The SVSM's HTTP over the host's relay, byte by byte: the request it writes (headers, body,
path prefix, cookie) and the exact refusal of each answer it cannot use."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.guest.svsm.relay_http import MAX_RESPONSE_BYTES, RelayHttp


def _ok(body: bytes = b"{}") -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode() + body)


def test_a_request_with_a_body_and_one_without() -> None:
    sent: list[bytes] = []
    relay = RelayHttp("http://kbs.test:8080", lambda raw: sent.append(raw) or _ok())
    relay.request("POST", "/kbs/v0/auth", {"a": 1, "b": [2]})
    relay.request("GET", "/kbs/v0/resource/x")
    assert sent == [
        b"POST /kbs/v0/auth HTTP/1.1\r\nhost: kbs.test:8080\r\nconnection: close\r\n"
        b"accept: application/json\r\ncontent-type: application/json\r\n"
        b'content-length: 15\r\n\r\n{"a":1,"b":[2]}',
        b"GET /kbs/v0/resource/x HTTP/1.1\r\nhost: kbs.test:8080\r\nconnection: close\r\n"
        b"accept: application/json\r\ncontent-length: 0\r\n\r\n",
    ]


@pytest.mark.parametrize(("url", "target"), [("http://h:1/apiX/", "/apiX/kbs"),
                                             ("http://h:1/base", "/base/kbs"),
                                             ("http://h:1", "/kbs")])
def test_the_urls_path_prefixes_every_request(url: str, target: str) -> None:
    sent: list[bytes] = []
    RelayHttp(url, lambda raw: sent.append(raw) or _ok()).request("GET", "/kbs")
    assert sent[0].startswith(f"GET {target} HTTP/1.1\r\n".encode())


def test_no_cookie_before_the_server_sets_one() -> None:
    sent: list[bytes] = []
    RelayHttp("http://h:1", lambda raw: sent.append(raw) or _ok()).request("GET", "/x")
    assert b"cookie" not in sent[0]


def test_a_url_that_is_not_plain_http_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match=r"^--kbs 'https://h:1': expected http://HOST:PORT$"):
        RelayHttp("https://h:1", lambda raw: b"")


def test_an_answer_of_the_limit_is_read_and_one_byte_more_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "

    def answer(total: int) -> bytes:
        for digits in range(1, 9):
            body_size = total - len(head) - digits - 4
            if len(str(body_size)) == digits:
                body = b'{"a":"' + b"x" * (body_size - 8) + b'"}'
                return head + str(body_size).encode() + b"\r\n\r\n" + body
        raise AssertionError(total)

    exact = answer(MAX_RESPONSE_BYTES)
    assert len(exact) == MAX_RESPONSE_BYTES
    status, document = RelayHttp("http://h:1", lambda raw: exact).request("GET", "/x")
    assert status == 200 and len(document["a"]) > 1000
    over = answer(MAX_RESPONSE_BYTES + 1)
    with pytest.raises(FormatError, match=rf"^the broker's answer exceeds {MAX_RESPONSE_BYTES} "
                                          r"bytes$"):
        RelayHttp("http://h:1", lambda raw: over).request("GET", "/x")


@pytest.mark.parametrize(("answer", "message"), [
    (b"", "the broker closed the connection without an answer"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", "the broker's answer is cut short"),
])
def test_unusable_answers_are_named_exactly(answer: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=f"^{message}$"):
        RelayHttp("http://h:1", lambda raw: answer).request("GET", "/x")
