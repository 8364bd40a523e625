"""HTTP/1.1 from inside the guest, carried by the host as opaque bytes.

The emulated guest has no network card: like a real CVM's virtio-net, its connection goes
through the host, which forwards the bytes and cannot read the secrets in them (the key
broker's answer is a JWE to a key that never leaves guest pages). :class:`RelayHttp` writes one
request per connection (``Connection: close``), hands the bytes to ``exchange`` (the host's
network: bytes in, bytes out) and reads the answer strictly (:mod:`cvm.formats.http1`, as the
guest OS's attestation agent does); it keeps the ``kbs-session-id`` cookie the broker sets, as an
HTTP client's cookie jar would.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from cvm.errors import FormatError, UsageError
from cvm.formats import http1

Exchange = Callable[[bytes], bytes]
MAX_RESPONSE_BYTES = 1 << 20
SESSION_COOKIE = "kbs-session-id"


class RelayHttp:
    """Requests to the server at ``url`` (``http://host:port``), over the host's ``exchange``."""

    def __init__(self, url: str, exchange: Exchange) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"--kbs {url!r}: expected http://HOST:PORT")
        self.host = parts.netloc
        self.prefix = parts.path.rstrip("/")
        self.exchange = exchange
        self.cookie: str | None = None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None
                ) -> tuple[int, dict[str, Any]]:
        """Send one request; (status, JSON body). FormatError if the answer is not HTTP+JSON."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = [("host", self.host), ("connection", "close"), ("accept", "application/json")]
        if body is not None:
            headers.append(("content-type", "application/json"))
        if self.cookie is not None:
            headers.append(("cookie", f"{SESSION_COOKIE}={self.cookie}"))
        return self._parse(self.exchange(http1.request(method, self.prefix + path, headers,
                                                       payload)))

    def _parse(self, answer: bytes) -> tuple[int, dict[str, Any]]:
        if not answer:
            raise FormatError("the broker closed the connection without an answer")
        if len(answer) > MAX_RESPONSE_BYTES:
            raise FormatError(f"the broker's answer exceeds {MAX_RESPONSE_BYTES} bytes")
        stream = io.BytesIO(answer)
        try:
            response = http1.read_response(stream.readline, stream.read, MAX_RESPONSE_BYTES)
        except http1.CutShortError:
            raise FormatError("the broker's answer is cut short") from None
        except FormatError as error:
            raise FormatError(f"the broker's answer is not HTTP/1.1 ({error})") from None
        for header in response.all("set-cookie"):
            value = http1.cookie_value(header, SESSION_COOKIE)
            if value is not None:
                self.cookie = value or None
        status = response.status
        try:
            document = json.loads(response.body)
        except (ValueError, UnicodeDecodeError):
            raise FormatError(f"the broker's answer ({status}) is not JSON") from None
        if not isinstance(document, dict):
            raise FormatError(f"the broker's answer ({status}) is not a JSON object")
        return status, document
