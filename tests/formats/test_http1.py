"""HTTP/1.1 on the wire: the request a client writes, the responses it accepts and refuses."""

from __future__ import annotations

import io

import pytest

from cvm.errors import FormatError
from cvm.formats.http1 import (
    MAX_HEADERS,
    MAX_LINE,
    CutShortError,
    NoAnswerError,
    Response,
    TooLargeError,
    cookie_value,
    read_response,
    request,
)


def _read(data: bytes, limit: int = 1000, head: bool = False) -> Response:
    stream = io.BytesIO(data)
    return read_response(stream.readline, stream.read, limit, head=head)


def test_the_request_is_one_buffer() -> None:
    assert request("POST", "/kbs/v0/auth", [("host", "h:1"), ("cookie", "a=b")], b"{}") == (
        b"POST /kbs/v0/auth HTTP/1.1\r\nhost: h:1\r\ncookie: a=b\r\ncontent-length: 2\r\n\r\n{}")
    for method, target, headers in (("GET X", "/", []), ("GET", "/a b", []),
                                    ("GET", "/", [("x", "a\r\nInjected: 1")]),
                                    ("GET", "/", [("bad name", "v")]), ("GET", "", [])):
        with pytest.raises(FormatError):
            request(method, target, headers, b"")


def test_a_length_framed_answer_keeps_the_connection() -> None:
    answer = _read(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: a=1\r\n"
                   b"set-cookie: b=2\r\nContent-Length: 2\r\n\r\n{}next")
    assert (answer.status, answer.body, answer.keep_alive) == (200, b"{}", True)
    assert answer.all("set-cookie") == ["a=1", "b=2"]
    closing = _read(b"HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
    assert (closing.status, closing.keep_alive) == (401, False)
    old = _read(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert not old.keep_alive
    assert _read(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n"
                 ).keep_alive
    assert _read(b"HTTP/1.1 200\nContent-Length: 1\n\nx").body == b"x"  # bare LF, no reason


def test_chunked_and_close_framed_bodies() -> None:
    chunked = _read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n")
    assert chunked.body == b"abc0123456789" and chunked.keep_alive
    until_close = _read(b"HTTP/1.1 200 OK\r\n\r\nto the end")
    assert (until_close.body, until_close.keep_alive) == (b"to the end", False)
    assert until_close.headers == () and until_close.all("x") == []
    assert _read(b"HTTP/1.1 204 No Content\r\n\r\nignored").body == b""
    assert _read(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", head=True).body == b""


@pytest.mark.parametrize("data", [
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: \xd9\xa3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * (MAX_HEADERS + 1) + b"\r\n",
    b"HTTP/1.1 200 OK\r\nx: " + b"y" * MAX_LINE + b"\r\n\r\n",
])
def test_what_is_refused(data: bytes) -> None:
    with pytest.raises(FormatError):
        _read(data)


def test_the_body_limit() -> None:
    assert _read(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd", limit=4).body == b"abcd"
    for data in (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabcde",
                 b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
                 b"0\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n\r\nabcde"):
        with pytest.raises(TooLargeError, match="exceeds 4 bytes"):
            _read(data, limit=4)


def test_a_stream_that_ends_early() -> None:
    with pytest.raises(NoAnswerError):
        _read(b"")
    for data in (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc", b"HTTP/1.1 200 OK\r\nx: y",
                 b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
                 b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n", b"HTTP/1.1 200"):
        with pytest.raises(CutShortError) as cut:
            _read(data)
        assert not isinstance(cut.value, NoAnswerError)


def test_the_cookie_a_set_cookie_header_sets() -> None:
    assert cookie_value("kbs-session-id=ab12; HttpOnly; Path=/kbs/v0", "kbs-session-id") == "ab12"
    assert cookie_value(" kbs-session-id = x ", "kbs-session-id") == "x"
    assert cookie_value("kbs-session-id=", "kbs-session-id") == ""
    assert cookie_value("other=1; kbs-session-id=2", "kbs-session-id") is None


def test_the_bounds_are_inclusive() -> None:
    line = b"x: " + b"y" * (MAX_LINE - 5) + b"\r\n"  # exactly MAX_LINE bytes
    assert len(line) == MAX_LINE
    assert _read(b"HTTP/1.1 200 OK\r\n" + line + b"content-length: 0\r\n\r\n").status == 200
    with pytest.raises(FormatError, match="longer than"):
        _read(b"HTTP/1.1 200 OK\r\nx: y" + line + b"\r\n")
    status = b"HTTP/1.1 200 " + b"K" * (MAX_LINE - 15) + b"\r\n"
    assert len(status) == MAX_LINE
    assert _read(status + b"content-length: 0\r\n\r\n").status == 200
    with pytest.raises(FormatError, match="longer than"):
        _read(status[:-2] + b"K\r\n\r\n")
    many = b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * (MAX_HEADERS - 1) + b"content-length: 0\r\n\r\n"
    assert len(_read(many).headers) == MAX_HEADERS
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")
    assert _read(chunked, limit=4).body == b"abcd"
    assert _read(b"HTTP/1.1 201 Created\r\n\r\nabcd", limit=4).status == 201


def test_header_values_and_names() -> None:
    answer = _read(b"HTTP/1.1 200 OK\r\nLocation: http://h:1/p\r\ncontent-length: 0\r\n\r\n")
    assert answer.headers[0] == ("location", "http://h:1/p")
    with pytest.raises(FormatError, match="not an HTTP header line"):
        _read(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n")


def test_bodiless_answers_and_two_answers_in_one_stream() -> None:
    for status in (204, 304):
        answer = _read(b"HTTP/1.1 %d X\r\ncontent-length: 5\r\n\r\n" % status)
        assert (answer.status, answer.body, answer.keep_alive) == (status, b"", True)
    head = _read(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", head=True)
    assert (head.status, head.headers) == (200, (("content-length", "5"),))
    stream = io.BytesIO(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"10\r\n0123456789abcdef\r\n0\r\nT1: a\r\nT2: b\r\n\r\n"
                        b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
    first = read_response(stream.readline, stream.read, 100)
    assert first.body == b"0123456789abcdef"
    second = read_response(stream.readline, stream.read, 100)
    assert (second.status, second.body) == (202, b"ok")
