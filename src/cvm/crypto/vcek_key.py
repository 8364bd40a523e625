"""Derivation of the VCEK private key from the chip secret and a TCB version.

AMD 57230 ("VCEK Certificate and KDS Interface Specification", VCEK section) says the
Versioned Chip Endorsement Key is derived inside the AMD Secure Processor from chip-unique
secrets and the TCB version, so a different TCB gives an unrelated key and an old firmware
cannot sign as a new one. The real function is AMD-internal; cvm's emulated PSP and its
emulated key distribution service share this one instead:

    okm    = HKDF-SHA-384(IKM = chip_secret, salt = "cvm emulated VCEK v1",
                          info = product || 0x00 || TCB_VERSION (8 bytes LE), L = 64)
    scalar = (okm mod (n - 1)) + 1                    (n = order of P-384)

HKDF is RFC 5869; reducing 64 bytes modulo n - 1 has negligible bias (FIPS 186-5 A.2.1).
Both sides call :func:`derive_vcek_private_key`, so the key the PSP signs with is the key
the KDS certifies.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from cvm.crypto.amd_ecdsa import P384_ORDER, PrivateKey, private_key_from_scalar
from cvm.errors import UsageError

SALT = b"cvm emulated VCEK v1"
OKM_SIZE = 64
MIN_CHIP_SECRET_SIZE = 32


class TcbEncoding(Protocol):
    """Anything that encodes as the 8-byte TCB_VERSION (e.g. a ``TcbVersion``)."""

    def to_bytes(self) -> bytes: ...


def hkdf_sha384(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) with SHA-384."""
    prk = hmac.new(salt, ikm, hashlib.sha384).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha384).digest()
        out += block
        counter += 1
    return out[:length]


def derive_vcek_scalar(chip_secret: bytes, tcb: TcbEncoding, product: str) -> int:
    if len(chip_secret) < MIN_CHIP_SECRET_SIZE:
        raise UsageError("the chip secret must be at least 32 bytes")
    tcb_bytes = tcb.to_bytes()
    if len(tcb_bytes) != 8:
        raise UsageError("TCB_VERSION must encode as 8 bytes")
    info = product.encode() + b"\x00" + tcb_bytes
    okm = hkdf_sha384(chip_secret, SALT, info, OKM_SIZE)
    return int.from_bytes(okm, "big") % (P384_ORDER - 1) + 1


def derive_vcek_private_key(chip_secret: bytes, tcb: TcbEncoding, product: str) -> PrivateKey:
    """The VCEK (ECDSA P-384) of the chip with ``chip_secret`` at ``tcb`` for ``product``."""
    return private_key_from_scalar(derive_vcek_scalar(chip_secret, tcb, product))
