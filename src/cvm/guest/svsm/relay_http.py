"""HTTP/1.1 from inside the guest, carried by the host as opaque bytes.

The emulated guest has no network card: like a real CVM's virtio-net, its connection goes
through the host, which forwards the bytes and cannot read the secrets in them (the key
broker's answer is a JWE to a key that never leaves guest pages). :class:`RelayHttp` writes one
request per connection (``Connection: close``) with ``h11``, hands the bytes to ``exchange``
(the host's network: bytes in, bytes out) and parses the answer strictly; it keeps the
``kbs-session-id`` cookie the broker sets, as an HTTP client's cookie jar would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import h11

from cvm.errors import FormatError, UsageError

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
        headers = [("host", self.host), ("connection", "close"),
                   ("accept", "application/json"), ("content-length", str(len(payload)))]
        if body is not None:
            headers.append(("content-type", "application/json"))
        if self.cookie is not None:
            headers.append(("cookie", f"{SESSION_COOKIE}={self.cookie}"))
        client = h11.Connection(h11.CLIENT)
        wire = client.send(h11.Request(method=method, target=self.prefix + path,
                                       headers=headers)) or b""
        wire += (client.send(h11.Data(data=payload)) or b"") if payload else b""
        wire += client.send(h11.EndOfMessage()) or b""
        return self._parse(client, self.exchange(wire))

    def _parse(self, client: h11.Connection, answer: bytes) -> tuple[int, dict[str, Any]]:
        if not answer:
            raise FormatError("the broker closed the connection without an answer")
        if len(answer) > MAX_RESPONSE_BYTES:
            raise FormatError(f"the broker's answer exceeds {MAX_RESPONSE_BYTES} bytes")
        client.receive_data(answer)
        client.receive_data(b"")
        status, content = 0, b""
        try:
            while True:
                event = client.next_event()
                if isinstance(event, h11.Response):
                    status = event.status_code
                    for name, value in event.headers:
                        if name == b"set-cookie":
                            self._keep_cookie(value.decode("latin-1"))
                elif isinstance(event, h11.Data):
                    content += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    raise FormatError("the broker's answer is cut short")
        except h11.RemoteProtocolError as error:
            raise FormatError(f"the broker's answer is not HTTP/1.1 ({error})") from None
        try:
            document = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            raise FormatError(f"the broker's answer ({status}) is not JSON") from None
        if not isinstance(document, dict):
            raise FormatError(f"the broker's answer ({status}) is not a JSON object")
        return status, document

    def _keep_cookie(self, header: str) -> None:
        name, _, rest = header.partition("=")
        if name.strip() == SESSION_COOKIE:
            self.cookie = rest.split(";", 1)[0].strip() or None
