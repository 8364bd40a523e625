"""The SVSM's HTTP through the host: the request it hands over, the answers it accepts."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.guest.svsm.relay_http import RelayHttp

ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
          b"set-cookie: kbs-session-id=s1; HttpOnly\r\ncontent-length: 13\r\n\r\n{\"nonce\":\"n\"}")


def test_one_request_per_connection_and_the_cookie_kept() -> None:
    sent: list[bytes] = []

    def exchange(wire: bytes) -> bytes:
        sent.append(wire)
        return ANSWER

    http = RelayHttp("http://kbs:8080/base", exchange)
    assert http.request("POST", "/kbs/v0/auth", {"a": 1}) == (200, {"nonce": "n"})
    assert http.cookie == "s1"
    http.request("GET", "/kbs/v0/resource/a/b/c")
    assert sent[0].startswith(b"POST /base/kbs/v0/auth HTTP/1.1\r\nhost: kbs:8080\r\n"
                              b"connection: close\r\n")
    assert sent[0].endswith(b'content-length: 7\r\n\r\n{"a":1}')
    assert b"cookie: kbs-session-id=s1\r\n" in sent[1] and b"content-type" not in sent[1]


@pytest.mark.parametrize(("answer", "message"), [
    (b"", "without an answer"),
    (ANSWER[:-3], "cut short"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
     "not HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]", "not a JSON object"),
    (b"HTTP/1.1 500 Oops\r\ncontent-length: 2\r\n\r\nno", r"\(500\) is not JSON"),
])
def test_answers_refused(answer: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        RelayHttp("http://kbs:8080", lambda _wire: answer).request("GET", "/x")


def test_only_plain_http_urls() -> None:
    for url in ("https://kbs", "kbs:80", "http://"):
        with pytest.raises(UsageError):
            RelayHttp(url, lambda wire: wire)
