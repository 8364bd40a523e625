"""AES-256-GCM, the AEAD of the SNP guest-message channel.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), §7 "Guest Messages": each
message is encrypted and authenticated with AES-256-GCM (NIST SP 800-38D) under a VMPCK, with a
96-bit IV and a 128-bit tag. The tag travels separately from the ciphertext (AUTHTAG in the
message header), so this door takes and returns them apart. A wrong key, IV, tag or additional
data gives one detail-free :class:`~cvm.errors.IntegrityError`.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cvm.errors import IntegrityError, UsageError

KEY_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16


def _aead(key: bytes, iv: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise UsageError(f"AES-256-GCM needs a {KEY_SIZE}-byte key, got {len(key)}")
    if len(iv) != IV_SIZE:
        raise UsageError(f"AES-256-GCM here uses a {IV_SIZE}-byte IV, got {len(iv)}")
    return AESGCM(key)


def encrypt(key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext``; returns (ciphertext of the same length, 16-byte tag)."""
    sealed = _aead(key, iv).encrypt(iv, plaintext, aad)
    return sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]


def decrypt(key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
    """Check ``tag`` over ``aad`` and ``ciphertext`` and decrypt; IntegrityError if it fails."""
    if len(tag) != TAG_SIZE:
        raise IntegrityError("AES-256-GCM tag has the wrong length")
    try:
        return _aead(key, iv).decrypt(iv, ciphertext + tag, aad)
    except InvalidTag:
        raise IntegrityError("AES-256-GCM authentication failed") from None
