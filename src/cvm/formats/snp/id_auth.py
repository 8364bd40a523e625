"""ID_AUTH_INFO and the SNP public-key and signature structures it carries.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860): §8.18 SNP_LAUNCH_FINISH,
Table 76 "ID_AUTH_INFO Structure" (4 KiB); Table 24 "SIGNATURE Structure" (0x200 bytes: R
and S as 72-byte little-endian integers); Table 25/26 "ECDSA Public Key" (0x404 bytes: u32
curve, QX and QY as 72-byte little-endian integers). The ID key signs the ID block; the
optional author key signs the ID key structure. Algorithm 1 is ECDSA P-384 with SHA-384,
curve 2 is P-384. The report's ID_KEY_DIGEST / AUTHOR_KEY_DIGEST are SHA-384 of the 0x404-byte
key structures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, reserved, u32

ALGO_ECDSA_P384_SHA384 = 1
CURVE_P384 = 2
COMPONENT_SIZE = 72
SCALAR_SIZE = 48
PUBLIC_KEY_SIZE = 0x404
SIGNATURE_SIZE = 0x200
ID_AUTH_INFO_SIZE = 0x1000

PUBLIC_KEY_LAYOUT = Layout(
    "SNP ECDSA public key",
    PUBLIC_KEY_SIZE,
    [
        u32("curve", 0x0),
        raw("qx", 0x4, COMPONENT_SIZE),
        raw("qy", 0x4C, COMPONENT_SIZE),
        reserved(0x94, PUBLIC_KEY_SIZE - 0x94),
    ],
)
SIGNATURE_LAYOUT = Layout(
    "SNP signature",
    SIGNATURE_SIZE,
    [
        raw("r", 0x0, COMPONENT_SIZE),
        raw("s", 0x48, COMPONENT_SIZE),
        reserved(0x90, SIGNATURE_SIZE - 0x90),
    ],
)
ID_AUTH_INFO_LAYOUT = Layout(
    "ID_AUTH_INFO",
    ID_AUTH_INFO_SIZE,
    [
        u32("id_key_algo", 0x000),
        u32("auth_key_algo", 0x004),
        reserved(0x008, 0x38),
        raw("id_block_sig", 0x040, SIGNATURE_SIZE),
        raw("id_key", 0x240, PUBLIC_KEY_SIZE),
        reserved(0x644, 0x3C),
        raw("id_key_sig", 0x680, SIGNATURE_SIZE),
        raw("author_key", 0x880, PUBLIC_KEY_SIZE),
        reserved(0xC84, ID_AUTH_INFO_SIZE - 0xC84),
    ],
)


def _check_component(value: int, name: str) -> None:
    if not 0 <= value < 1 << (8 * SCALAR_SIZE):
        raise UsageError(f"{name} does not fit in 48 bytes")


def _le(value: int) -> bytes:
    """A component checked by ``__post_init__`` (the structures are frozen) as 72 LE bytes."""
    return value.to_bytes(COMPONENT_SIZE, "little")


def _scalar(data: int | bytes, what: str) -> int:
    if not isinstance(data, bytes) or any(data[SCALAR_SIZE:]):
        raise FormatError(f"{what}: bytes 48..71 of a 72-byte little-endian value are not zero")
    return int.from_bytes(data, "little")


@dataclass(frozen=True)
class SnpPublicKey:
    """An ECDSA P-384 public key as the firmware stores it."""

    qx: int
    qy: int
    curve: int = CURVE_P384

    def __post_init__(self) -> None:
        _check_component(self.qx, "QX")
        _check_component(self.qy, "QY")

    @classmethod
    def from_bytes(cls, data: bytes) -> SnpPublicKey:
        values = PUBLIC_KEY_LAYOUT.unpack(data)
        if values["curve"] != CURVE_P384:
            raise FormatError(f"SNP public key: unsupported curve {values['curve']!r}")
        return cls(_scalar(values["qx"], "QX"), _scalar(values["qy"], "QY"))

    def to_bytes(self) -> bytes:
        return PUBLIC_KEY_LAYOUT.pack({"curve": self.curve, "qx": _le(self.qx), "qy": _le(self.qy)})

    def digest(self) -> bytes:
        """SHA-384 of the 0x404-byte structure (the report's ID_KEY/AUTHOR_KEY_DIGEST)."""
        return hashlib.sha384(self.to_bytes()).digest()


@dataclass(frozen=True)
class SnpSignature:
    """An ECDSA signature as the firmware stores it (R, S little-endian)."""

    r: int
    s: int

    def __post_init__(self) -> None:
        _check_component(self.r, "R")
        _check_component(self.s, "S")

    @classmethod
    def from_bytes(cls, data: bytes) -> SnpSignature:
        values = SIGNATURE_LAYOUT.unpack(data)
        return cls(_scalar(values["r"], "R"), _scalar(values["s"], "S"))

    def to_bytes(self) -> bytes:
        return SIGNATURE_LAYOUT.pack({"r": self.r_bytes, "s": self.s_bytes})

    @property
    def r_bytes(self) -> bytes:
        return _le(self.r)

    @property
    def s_bytes(self) -> bytes:
        return _le(self.s)


@dataclass(frozen=True)
class IdAuthInfo:
    """The ID key's signature over the ID block; optionally the author key's over the ID key."""

    id_block_sig: SnpSignature
    id_key: SnpPublicKey
    id_key_sig: SnpSignature | None = None
    author_key: SnpPublicKey | None = None

    def __post_init__(self) -> None:
        if (self.id_key_sig is None) != (self.author_key is None):
            raise UsageError("ID auth: an author key needs its signature over the ID key, and back")

    @classmethod
    def from_bytes(cls, data: bytes) -> IdAuthInfo:
        values = ID_AUTH_INFO_LAYOUT.unpack(data)
        blobs = {k: v for k, v in values.items() if isinstance(v, bytes)}
        if values["id_key_algo"] != ALGO_ECDSA_P384_SHA384:
            raise FormatError(f"ID_AUTH_INFO: unsupported ID_KEY_ALGO {values['id_key_algo']!r}")
        author = values["auth_key_algo"]
        if author == 0:
            if any(blobs["id_key_sig"]) or any(blobs["author_key"]):
                raise FormatError("ID_AUTH_INFO: author key fields set but AUTH_KEY_ALGO is 0")
            return cls(
                SnpSignature.from_bytes(blobs["id_block_sig"]),
                SnpPublicKey.from_bytes(blobs["id_key"]),
            )
        if author != ALGO_ECDSA_P384_SHA384:
            raise FormatError(f"ID_AUTH_INFO: unsupported AUTH_KEY_ALGO {author!r}")
        return cls(
            SnpSignature.from_bytes(blobs["id_block_sig"]),
            SnpPublicKey.from_bytes(blobs["id_key"]),
            SnpSignature.from_bytes(blobs["id_key_sig"]),
            SnpPublicKey.from_bytes(blobs["author_key"]),
        )

    def to_bytes(self) -> bytes:
        has_author = self.author_key is not None  # with its signature: see __post_init__
        return ID_AUTH_INFO_LAYOUT.pack(
            {
                "id_key_algo": ALGO_ECDSA_P384_SHA384,
                "auth_key_algo": ALGO_ECDSA_P384_SHA384 if has_author else 0,
                "id_block_sig": self.id_block_sig.to_bytes(),
                "id_key": self.id_key.to_bytes(),
                "id_key_sig": self.id_key_sig.to_bytes()
                if self.id_key_sig
                else bytes(SIGNATURE_SIZE),
                "author_key": self.author_key.to_bytes()
                if self.author_key
                else bytes(PUBLIC_KEY_SIZE),
            }
        )
