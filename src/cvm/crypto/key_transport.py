"""Releasing a key to an attested VM: ECDH-ES on P-384, KDFe, AES-256-GCM.

The VM (the SVSM at VMPL0) makes an ephemeral P-384 key pair and binds its public point into
the attestation report: ``REPORT_DATA = SHA-512(nonce ‖ x ‖ y)`` (SEV-SNP ABI 56860,
MSG_REPORT_REQ, Table 20: 64 bytes the guest chooses). The relying party, once the report is
appraised, makes its own ephemeral pair, computes Z = the x coordinate of the ECDH product
(NIST SP 800-56A r3 §5.7.1.2), derives a 256-bit key with KDFe (TPM 2.0 Part 1 §11.4.10.3,
SHA-384, label ``CVM KEY RELEASE``, PartyUInfo = its own x, PartyVInfo = the VM's x) and
encrypts the secret with AES-256-GCM (NIST SP 800-38D). The blob (cvm's own, little-endian):

======  ====  ===========================================
offset  size  field
======  ====  ===========================================
0x00    8     magic ``CVMKREL1``
0x08    2     curve: 0x0004 (TPM_ECC_NIST_P384)
0x0A    2     secret size
0x0C    48    sender's x
0x3C    48    sender's y
0x6C    12    AES-GCM IV
0x78    16    AES-GCM tag
======  ====  ===========================================

then the ciphertext. The AAD is the header without the tag (0x00..0x77). Only the holder of
the VM's private scalar can open it; a flipped bit anywhere is an IntegrityError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cvm.crypto import aead
from cvm.crypto.tpm_kdf import kdfe
from cvm.crypto.tpm_keys import ecc_generate, ecc_point, ecdh_x
from cvm.errors import FormatError, UsageError
from cvm.wire import Layout, raw, u16

CURVE = "p384"
TPM_ECC_NIST_P384 = 0x0004
COORDINATE_SIZE = 48
KEY_RELEASE_MAGIC = b"CVMKREL1"
KDF_LABEL = b"CVM KEY RELEASE"
HEADER_SIZE = 0x88
AAD_END = 0x78
HEADER_LAYOUT = Layout("key release header", HEADER_SIZE, [
    raw("magic", 0x00, 8), u16("curve", 0x08), u16("size", 0x0A), raw("x", 0x0C, 48),
    raw("y", 0x3C, 48), raw("iv", 0x6C, 12), raw("tag", 0x78, 16),
])
REPORT_DATA_SIZE = 64
Point = tuple[bytes, bytes]


def ephemeral_scalar() -> bytes:
    """A fresh P-384 private scalar (48 bytes, big-endian)."""
    return ecc_generate(CURVE)


def public_point(scalar: bytes) -> Point:
    """The public point (x, y) of ``scalar``, 48 bytes each."""
    return ecc_point(CURVE, scalar)


def report_data(nonce: bytes, point: Point) -> bytes:
    """The 64 bytes of REPORT_DATA that bind ``nonce`` and the public ``point``."""
    x, y = point
    if len(x) != COORDINATE_SIZE or len(y) != COORDINATE_SIZE:
        raise UsageError("a P-384 point has two 48-byte coordinates")
    return hashlib.sha512(nonce + x + y).digest()


def _key(z: bytes, sender_x: bytes, recipient_x: bytes) -> bytes:
    return kdfe("sha384", z, KDF_LABEL, sender_x, recipient_x, bits=256)


def wrap(recipient: Point, secret: bytes, random: Callable[[int], bytes]) -> bytes:
    """``secret`` encrypted so that only the holder of ``recipient``'s scalar can open it."""
    if not 0 < len(secret) <= 0xFFFF:
        raise UsageError("a released secret is 1..65535 bytes")
    scalar = ecc_generate(CURVE)
    sender = ecc_point(CURVE, scalar)
    key = _key(ecdh_x(CURVE, scalar, recipient), sender[0], recipient[0])
    header: dict[str, int | bytes] = {
        "magic": KEY_RELEASE_MAGIC, "curve": TPM_ECC_NIST_P384, "size": len(secret),
        "x": sender[0], "y": sender[1], "iv": random(aead.IV_SIZE), "tag": bytes(16),
    }
    aad = HEADER_LAYOUT.pack(header)[:AAD_END]
    ciphertext, tag = aead.encrypt(key, bytes(header["iv"]), secret, aad)
    header["tag"] = tag
    return HEADER_LAYOUT.pack(header) + ciphertext


def unwrap(scalar: bytes, blob: bytes) -> bytes:
    """Open a blob made by :func:`wrap` for the point of ``scalar``."""
    if len(blob) < HEADER_SIZE:
        raise FormatError(f"key release blob: {len(blob)} bytes, header needs {HEADER_SIZE}")
    header = HEADER_LAYOUT.unpack(blob[:HEADER_SIZE])
    if header["magic"] != KEY_RELEASE_MAGIC or header["curve"] != TPM_ECC_NIST_P384:
        raise FormatError("key release blob: bad magic or curve")
    if len(blob) != HEADER_SIZE + int(header["size"]):
        raise FormatError(f"key release blob: {len(blob) - HEADER_SIZE} ciphertext bytes, "
                          f"header says {int(header['size'])}")
    sender = (bytes(header["x"]), bytes(header["y"]))
    recipient = ecc_point(CURVE, scalar)
    key = _key(ecdh_x(CURVE, scalar, sender), sender[0], recipient[0])
    return aead.decrypt(key, bytes(header["iv"]), blob[HEADER_SIZE:], bytes(header["tag"]),
                        blob[:AAD_END])
