"""The vTPM state's rollback counter at a key broker: the release plaintext and the advance
messages (cvm's own; docs/kbs.md, "The rollback counter in the broker").

**Release.** A ``<repository>/vtpm/<tag>`` resource is still a JWE (Trustee's wire format), but
its plaintext is this layout (little-endian), not the bare key:

======  ====  =================================================================
offset  size  field
======  ====  =================================================================
0x00    8     magic "CVMKBSVK"
0x08    8     rollback counter (the broker's value when it released the key)
0x10    32    the vTPM state key
0x30    2     length of the resource path
0x32    n     the resource path, ASCII (``<repository>/vtpm/<tag>``, at most 400 bytes)
======  ====  =================================================================

**Advance.** ``POST /kbs/v0/counter/<repository>/vtpm/<tag>`` with ``{"old", "new", "nonce",
"mac"}`` (nonce and mac base64url); the answer ``{"value", "mac"}``. Both MACs are HMAC-SHA256
under ``KDFa(SHA-256, state key, "cvm kbs rollback counter", "", "", 256)``, over the messages
:func:`request_message` and :func:`answer_message` build: a label (request and answer differ, so
one is never taken for the other), then length-prefixed fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvm.errors import FormatError
from cvm.formats.kbs.json_fields import b64url_decode, b64url_encode, integer, only_keys
from cvm.wire import Layout, raw, u16, u64

RELEASE_MAGIC = b"CVMKBSVK"
RELEASE_HEADER_SIZE = 0x32
RELEASE_LAYOUT = Layout("vTPM key release", RELEASE_HEADER_SIZE, [
    raw("magic", 0x00, 8), u64("counter", 0x08), raw("key", 0x10, 32), u16("path_size", 0x30)])
STATE_KEY_SIZE = 32
MAX_PATH_SIZE = 400
MAC_KEY_LABEL = b"cvm kbs rollback counter"
REQUEST_LABEL = b"cvm kbs counter advance request v1"
ANSWER_LABEL = b"cvm kbs counter advance answer v1"
MAC_SIZE = 32
MIN_NONCE, MAX_NONCE = 16, 64
MAX_COUNTER = (1 << 63) - 1  # a signed 64-bit column holds it on every backend


@dataclass(frozen=True)
class KeyRelease:
    """What a vtpm resource's JWE carries: the state key, the counter, the path it is for."""

    key: bytes
    counter: int
    path: str

    def to_bytes(self) -> bytes:
        if not self.path.isascii():
            raise FormatError("the resource path is not ASCII")
        path = self.path.encode("ascii")
        if len(self.key) != STATE_KEY_SIZE:
            raise FormatError(f"a vTPM state key is {STATE_KEY_SIZE} bytes, not {len(self.key)}")
        if len(path) > MAX_PATH_SIZE:
            raise FormatError(f"resource path longer than {MAX_PATH_SIZE} bytes")
        return RELEASE_LAYOUT.pack({"magic": RELEASE_MAGIC, "counter": self.counter,
                                    "key": self.key, "path_size": len(path)}) + path

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRelease:
        if len(data) < RELEASE_HEADER_SIZE or data[:8] != RELEASE_MAGIC:
            raise FormatError("the released vTPM key is not a cvm key release (bad magic or "
                              "truncated)")
        fields = RELEASE_LAYOUT.unpack(data[:RELEASE_HEADER_SIZE])
        size = int(fields["path_size"])
        if len(data) != RELEASE_HEADER_SIZE + size:
            raise FormatError(f"the released vTPM key's path is {len(data) - RELEASE_HEADER_SIZE}"
                              f" bytes, its header says {size}")
        try:
            path = data[RELEASE_HEADER_SIZE:].decode("ascii")
        except UnicodeDecodeError:
            raise FormatError("the released vTPM key's path is not ASCII") from None
        return cls(bytes(fields["key"]), int(fields["counter"]), path)


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "little") + data


def request_message(path: str, old: int, new: int, nonce: bytes) -> bytes:
    """The bytes the SVSM's advance request MAC covers."""
    return (_field(REQUEST_LABEL) + _field(path.encode()) + old.to_bytes(8, "little")
            + new.to_bytes(8, "little") + _field(nonce))


def answer_message(path: str, value: int, nonce: bytes) -> bytes:
    """The bytes the broker's answer MAC covers (the SVSM's nonce makes it this request's)."""
    return (_field(ANSWER_LABEL) + _field(path.encode()) + value.to_bytes(8, "little")
            + _field(nonce))


def _counter(document: dict[str, Any], key: str, where: str) -> int:
    value = integer(document, key, where)
    if not 0 <= value <= MAX_COUNTER:
        raise FormatError(f"{where}.{key}: {value} is not between 0 and {MAX_COUNTER}")
    return value


@dataclass(frozen=True)
class AdvanceRequest:
    old: int
    new: int
    nonce: bytes
    mac: bytes

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "nonce": b64url_encode(self.nonce),
                "mac": b64url_encode(self.mac)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> AdvanceRequest:
        where = "advance"
        only_keys(document, where, {"old", "new", "nonce", "mac"})
        nonce = b64url_decode(document["nonce"], f"{where}.nonce", MAX_NONCE)
        if not MIN_NONCE <= len(nonce) <= MAX_NONCE:
            raise FormatError(f"{where}.nonce: {len(nonce)} bytes, expected {MIN_NONCE} to "
                              f"{MAX_NONCE}")
        return cls(_counter(document, "old", where), _counter(document, "new", where), nonce,
                   _mac(document, where))


@dataclass(frozen=True)
class AdvanceAnswer:
    value: int
    mac: bytes

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "mac": b64url_encode(self.mac)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> AdvanceAnswer:
        only_keys(document, "answer", {"value", "mac"})
        return cls(_counter(document, "value", "answer"), _mac(document, "answer"))


def _mac(document: dict[str, Any], where: str) -> bytes:
    mac = b64url_decode(document["mac"], f"{where}.mac", MAC_SIZE)
    if len(mac) != MAC_SIZE:
        raise FormatError(f"{where}.mac: {len(mac)} bytes, expected {MAC_SIZE}")
    return mac
