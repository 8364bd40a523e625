"""HTTP/1.1 responses read strictly: each refusal by its whole message, how far into the stream
a refused line or body is read, the field values kept byte for byte, the connection's tokens,
the trailer bound and a Content-Length of any number of digits."""

from __future__ import annotations

import io
import re

import pytest

from cvm.errors import FormatError
from cvm.formats.http1 import (
    MAX_HEADERS,
    MAX_LINE,
    CutShortError,
    NoAnswerError,
    Response,
    TooLargeError,
    read_response,
    request,
)

OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"transfer-encoding: chunked\r\n\r\n"


def _read(data: bytes, limit: int = 1000) -> Response:
    stream = io.BytesIO(data)
    return read_response(stream.readline, stream.read, limit)


def _refused(data: bytes, kind: type[Exception], message: str, limit: int = 1000) -> None:
    with pytest.raises(kind, match=f"^{re.escape(message)}$"):
        _read(data, limit)


def test_each_refused_request_is_named() -> None:
    with pytest.raises(FormatError, match=r"^not an HTTP request line: 'GET X' '/'$"):
        request("GET X", "/", [], b"")
    with pytest.raises(FormatError, match=r"^not an HTTP header: 'bad name'$"):
        request("GET", "/", [("bad name", "v")], b"")
    for value in ("\u2603", "a\x7fb", "a\nb", "\x00"):  # not latin-1, or a control character
        with pytest.raises(FormatError, match=r"^not an HTTP header: 'x'$"):
            request("GET", "/", [("x", value)], b"")
    assert request("GET", "/", [("x", "\tv\xff")], b"").startswith(b"GET / HTTP/1.1\r\n"
                                                                 b"x: \tv\xff\r\n")
    assert request("PUT", "/r", [("x", "caf\u00e9")], b"\xff") == (
        b"PUT /r HTTP/1.1\r\nx: caf\xe9\r\ncontent-length: 1\r\n\r\n\xff")


@pytest.mark.parametrize(("data", "message"), [
    (b"HTTP/1.1 200", "the answer ends inside its status line"),
    (OK + b"x: y", "the answer ends inside its header"),
    (CHUNKED + b"5", "the answer ends inside its chunk size"),
    (CHUNKED + b"0\r\nT: x", "the answer ends inside its trailer"),
    (OK + b"content-length: 5\r\n\r\nabc", "the answer's body is cut short"),
    (CHUNKED + b"3\r\nab", "the answer's body is cut short"),
])
def test_each_early_end_is_named(data: bytes, message: str) -> None:
    _refused(data, CutShortError, message)


def test_no_answer_at_all() -> None:
    _refused(b"", NoAnswerError, "the connection closed before an answer")


@pytest.mark.parametrize(("data", "message"), [
    (b"HTTP/1.1 200 " + b"K" * MAX_LINE + b"\r\n\r\n",
     f"the status line is longer than {MAX_LINE} bytes"),
    (OK + b"x: " + b"y" * MAX_LINE + b"\r\n\r\n", f"the header is longer than {MAX_LINE} bytes"),
    (CHUNKED + b"1" + b"0" * MAX_LINE + b"\r\n", f"the chunk size is longer than {MAX_LINE} bytes"),
    (CHUNKED + b"0\r\nT: " + b"y" * MAX_LINE + b"\r\n\r\n",
     f"the trailer is longer than {MAX_LINE} bytes"),
    (CHUNKED + b"zz\r\n", "a chunk size is not hexadecimal"),
    (CHUNKED + b"1\r\nab\r\n0\r\n\r\n", "a chunk does not end with CRLF"),
    (b"HTTP/2 200 " + b"x" * 200 + b"\r\n\r\n",
     "not an HTTP/1.x status line: b'HTTP/2 200 " + "x" * 69 + "'"),
    (b"HTTP/1.1 103 Early Hints\r\n\r\n",
     "an interim answer (103) where a final one was expected"),
    (OK + b"no colon " + b"x" * 200 + b"\r\n\r\n",
     "not an HTTP header line: b'no colon " + "x" * 71 + "'"),
    (OK + b"X-Thing: a\x01b\r\n\r\n", "header 'X-Thing' holds a control character"),
    (OK + b"x: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", f"more than {MAX_HEADERS} header fields"),
    (OK + b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
     "the answer frames its body both by length and by transfer coding"),
    (OK + b"transfer-encoding: GZIP,chunked\r\n\r\n",
     "unsupported transfer coding 'gzip, chunked'"),
    (OK + b"content-length: 1\r\ncontent-length: 2\r\n\r\nab",
     "the answer's Content-Length is not one decimal number"),
])
def test_each_refusal_is_named(data: bytes, message: str) -> None:
    _refused(data, FormatError, message)


def test_a_refused_line_is_read_no_further_than_its_bound() -> None:
    """An endless line from the host costs the reader its bound, not the host's stream."""
    for head in (b"HTTP/1.1 200 ", OK + b"x: "):
        stream = io.BytesIO(head + b"y" * (4 * MAX_LINE) + b"\r\n\r\n")
        with pytest.raises(FormatError, match="longer than"):
            read_response(stream.readline, stream.read, 1000)
        assert stream.tell() <= len(head) - len(head.rsplit(b"\n", 1)[-1]) + MAX_LINE + 1


def test_a_body_to_the_end_is_read_no_further_than_its_limit() -> None:
    stream = io.BytesIO(OK + b"\r\n" + b"z" * 100_000)
    with pytest.raises(TooLargeError, match=r"^the answer exceeds 1000 bytes$"):
        read_response(stream.readline, stream.read, 1000)
    assert stream.tell() <= len(OK) + 2 + 1001


def test_field_values_lose_only_spaces_and_tabs_around_them() -> None:
    answer = _read(OK + b"Server: \t XcvmX\xe9 \t\r\ncontent-length: 0\r\n\r\n")
    assert answer.headers == (("server", "XcvmX\u00e9"), ("content-length", "0"))
    for value in (b"a\x0b", b"a\x0c", b"a\r", b"\x0ba"):
        _refused(OK + b"x: " + value + b"\r\ncontent-length: 0\r\n\r\n", FormatError,
                 "header 'x' holds a control character")


def test_the_connection_tokens_are_split_at_commas() -> None:
    assert not _read(OK + b"connection: close,upgrade\r\ncontent-length: 0\r\n\r\n").keep_alive
    assert not _read(OK + b"connection: upgrade, Close\r\ncontent-length: 0\r\n\r\n").keep_alive
    assert _read(b"HTTP/1.0 200 OK\r\nconnection: upgrade,keep-alive\r\ncontent-length: 0\r\n"
                 b"\r\n").keep_alive
    assert not _read(b"HTTP/1.0 200 OK\r\nconnection: upgrade\r\ncontent-length: 0\r\n\r\n"
                     ).keep_alive


def test_up_to_max_headers_trailer_fields() -> None:
    trailers = b"T: x\r\n" * MAX_HEADERS
    assert _read(CHUNKED + b"2\r\nab\r\n0\r\n" + trailers + b"\r\n").body == b"ab"
    _refused(CHUNKED + b"0\r\n" + trailers + b"T: x\r\n\r\n", FormatError,
             f"more than {MAX_HEADERS} trailer fields")


def test_a_content_length_of_any_number_of_digits() -> None:
    """Python's int() refuses strings of over 4300 digits; a hostile length must still be
    read as a number (or as over the limit), never end in another error."""
    zeros = b"0" * 5000
    assert _read(OK + b"content-length: " + zeros + b"5\r\n\r\nabcde").body == b"abcde"
    assert _read(OK + b"content-length: " + zeros + b"\r\n\r\n").body == b""
    assert _read(OK + b"content-length: 1000\r\n\r\n" + b"a" * 1000).body == b"a" * 1000
    for length in (b"1001", b"9999", b"10000", b"1" * 30, b"9" * 5000, zeros + b"1001"):
        _refused(OK + b"content-length: " + length + b"\r\n\r\n" + b"a" * 2000, TooLargeError,
                 "the answer exceeds 1000 bytes")
