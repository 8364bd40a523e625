"""HTTP/1.1 messages on the wire (RFC 9112), as an attestation agent's client writes and reads
them: one request in one buffer, one response read strictly from a buffered stream.

A response is its status line (``HTTP/1.1`` or ``HTTP/1.0``, three digits), at most
:data:`MAX_HEADERS` header lines of at most :data:`MAX_LINE` bytes (no obsolete line folding), and
a body framed by ``Transfer-Encoding: chunked``, by ``Content-Length``, or — when neither is
given — by the end of the connection. A message that frames its body both ways, a length that is
not one decimal number, a transfer coding other than ``chunked``, an interim (1xx) answer, or a
body over the caller's limit (:class:`TooLargeError`) is refused with
:class:`~cvm.errors.FormatError`; a stream that ends early raises :class:`CutShortError`
(:class:`NoAnswerError` before the answer's first byte).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cvm.errors import FormatError

MAX_LINE = 16 << 10
MAX_HEADERS = 100
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")
_TARGET = re.compile(r"[!-~]+")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?")


class CutShortError(ConnectionError):
    """The stream ended before the message did."""


class NoAnswerError(CutShortError):
    """The stream ended before the first byte of an answer (a server closing an idle
    keep-alive connection does so)."""


class TooLargeError(FormatError):
    """The body is over the caller's limit."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]  # names in lower case, in the order received
    body: bytes
    keep_alive: bool  # the connection may carry the next request

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def cookie_value(set_cookie: str, name: str) -> str | None:
    """The value a ``Set-Cookie`` header gives cookie ``name`` (RFC 6265 section 5.2: the first
    ``name=value`` pair, attributes after ``;``), or None when it sets another cookie."""
    found, _, rest = set_cookie.partition("=")
    if found.strip() != name:
        return None
    return rest.split(";", 1)[0].strip()


def _is_field_value(value: str) -> bool:
    """Whether ``value`` is a field value (RFC 9110 section 5.5) as the request writes it,
    in latin-1: no control character but HTAB, and nothing latin-1 cannot encode."""
    try:
        return _FIELD_VALUE.fullmatch(value.encode("latin-1")) is not None
    except UnicodeEncodeError:
        return False


def request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """One request: request line, ``headers`` and a ``Content-Length``, then ``body``."""
    if not _TOKEN.fullmatch(method.encode()) or not _TARGET.fullmatch(target):
        raise FormatError(f"not an HTTP request line: {method!r} {target!r}")
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name.encode()) or not _is_field_value(value):
            raise FormatError(f"not an HTTP header: {name!r}")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _line(readline: Callable[[int], bytes], what: str) -> bytes:
    line = readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise FormatError(f"the {what} is longer than {MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        raise CutShortError(f"the answer ends inside its {what}")
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


def _exactly(read: Callable[[int], bytes], size: int) -> bytes:
    data = read(size)
    if len(data) != size:
        raise CutShortError("the answer's body is cut short")
    return data


def _chunked(readline: Callable[[int], bytes], read: Callable[[int], bytes],
             limit: int) -> bytes:
    body = bytearray()
    while True:
        found = _CHUNK_SIZE.fullmatch(_line(readline, "chunk size"))
        if found is None:
            raise FormatError("a chunk size is not hexadecimal")
        size = int(found.group(1), 16)
        if size == 0:
            break
        if len(body) + size > limit:
            raise TooLargeError(f"the answer exceeds {limit} bytes")
        body += _exactly(read, size)
        if _exactly(read, 2) != b"\r\n":
            raise FormatError("a chunk does not end with CRLF")
    for _ in range(MAX_HEADERS + 1):  # up to MAX_HEADERS trailer fields, then the empty line
        if not _line(readline, "trailer"):
            return bytes(body)
    raise FormatError(f"more than {MAX_HEADERS} trailer fields")


def read_response(readline: Callable[[int], bytes], read: Callable[[int], bytes],
                  limit: int, *, head: bool = False) -> Response:
    """Read one response from a buffered stream (``readline(limit)``, ``read(size)``, as a
    binary file has them); ``head`` for the answer to a HEAD request (no body)."""
    first = readline(MAX_LINE + 1)
    if not first:
        raise NoAnswerError("the connection closed before an answer")
    status_line = _line(lambda _size: first, "status line")
    matched = _STATUS.fullmatch(status_line)
    if matched is None:
        raise FormatError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    minor, status = int(matched.group(1)), int(matched.group(2))
    if status < 200:
        raise FormatError(f"an interim answer ({status}) where a final one was expected")
    headers: list[tuple[str, str]] = []
    while True:
        line = _line(readline, "header")
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise FormatError(f"not an HTTP header line: {line[:80]!r}")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise FormatError(f"header {name.decode()!r} holds a control character")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
        if len(headers) > MAX_HEADERS:
            raise FormatError(f"more than {MAX_HEADERS} header fields")
    found = {name for name, _ in headers}
    connection = {token.strip().lower() for name, value in headers if name == "connection"
                  for token in value.split(",")}
    keep_alive = "close" not in connection and (minor == 1 or "keep-alive" in connection)
    lengths = {value.strip() for name, value in headers if name == "content-length"}
    if "transfer-encoding" in found and lengths:
        raise FormatError("the answer frames its body both by length and by transfer coding")
    if head or status in (204, 304):
        return Response(status, tuple(headers), b"", keep_alive)
    if "transfer-encoding" in found:
        codings = [token.strip().lower() for name, value in headers
                   if name == "transfer-encoding" for token in value.split(",")]
        if codings != ["chunked"]:
            raise FormatError(f"unsupported transfer coding {', '.join(codings)!r}")
        return Response(status, tuple(headers), _chunked(readline, read, limit), keep_alive)
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit() \
                or not next(iter(lengths)).isascii():
            raise FormatError("the answer's Content-Length is not one decimal number")
        digits = next(iter(lengths)).lstrip("0") or "0"
        if len(digits) > len(str(limit)) or int(digits) > limit:  # int() refuses 4301 digits
            raise TooLargeError(f"the answer exceeds {limit} bytes")
        size = int(digits)
        return Response(status, tuple(headers), _exactly(read, size), keep_alive)
    body = read(limit + 1)  # framed by the end of the connection
    if len(body) > limit:
        raise TooLargeError(f"the answer exceeds {limit} bytes")
    return Response(status, tuple(headers), body, False)
