"""The host's network as the guest sees it: bytes out to a server, bytes back — read, never
understood.

A real CVM's traffic leaves through the host's virtual NIC; the host can log, delay, drop or
edit every packet. :class:`NetworkRelay` is that for the emulated guest: it takes the HTTP
request bytes the guest wrote, opens a TCP connection to the key broker's address, sends them,
reads the answer until the server closes, and hands the bytes back — keeping a transcript of
both directions, which is everything the host learns (the tests scan it for the released key).
An unreachable broker is an ExternalToolError naming the address.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from cvm.errors import ExternalToolError, UsageError

TIMEOUT_SECONDS = 30.0
MAX_ANSWER_BYTES = 2 << 20
CHUNK_BYTES = 1 << 16


class NetworkRelay:
    """Forwards the guest's connections to ``url`` (``http://host:port``); ``transcript`` (a
    list of the caller's, e.g. the host's log) receives every byte that went out and came
    back, in order."""

    def __init__(self, url: str, transcript: list[bytes] | None = None,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"--kbs {url!r}: expected http://HOST:PORT")
        self.address = (parts.hostname, parts.port or 80)
        self.timeout = timeout
        self.transcript = [] if transcript is None else transcript

    def exchange(self, request: bytes) -> bytes:
        """One connection: send ``request``, return all the server answered until it closed."""
        self.transcript.append(request)
        answer = bytearray()
        try:
            with socket.create_connection(self.address, timeout=self.timeout) as connection:
                connection.sendall(request)  # the request says Connection: close
                while chunk := connection.recv(CHUNK_BYTES):
                    answer += chunk
                    if len(answer) > MAX_ANSWER_BYTES:
                        break
        except OSError as error:
            host, port = self.address
            raise ExternalToolError(f"cannot reach the key broker at {host}:{port} "
                                    f"({error.strerror or error})") from None
        self.transcript.append(bytes(answer))
        return bytes(answer)

    def bytes_seen(self) -> bytes:
        """The whole transcript, joined (what a scan of the host's view reads)."""
        return b"".join(self.transcript)
