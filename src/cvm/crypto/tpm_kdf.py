"""The TPM 2.0 symmetric primitives: KDFa, KDFe, AES-CFB and HMAC.

TCG "TPM 2.0 Library, Part 1: Architecture", revision 1.59, section 11.4.10.2 (KDFa: SP
800-108 KDF in counter mode with HMAC, ``K_i = HMAC(key, u32 i ‖ label ‖ 00 ‖ contextU ‖
contextV ‖ u32 bits)``, the label's terminating zero added only when the label lacks one),
section 11.4.10.3 (KDFe: SP 800-56A concatenation KDF, ``K_i = H(u32 i ‖ Z ‖ label ‖ 00 ‖
partyUInfo ‖ partyVInfo)``), section 11.4.6 (CFB with a full-block feedback, the mode every
TPM parent uses) and section 11.4.3 (HMAC). Hash algorithms are named as :mod:`hashlib`
names them ("sha256").

Errors are detail-free: a bad MAC raises :class:`~cvm.errors.IntegrityError` only.
"""

from __future__ import annotations

import hmac as std_hmac

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from cvm.errors import IntegrityError, UsageError

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
AES_BLOCK_SIZE = 16


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash object for a hashlib-style name."""
    try:
        return _HASHES[name]()
    except KeyError:
        raise UsageError(f"unsupported hash algorithm {name!r}") from None


def hmac(hash_name: str, key: bytes, *parts: bytes) -> bytes:
    """HMAC_hash(key, part_0 ‖ part_1 ‖ …)."""
    mac = crypto_hmac.HMAC(key, hash_algorithm(hash_name))
    for part in parts:
        mac.update(part)
    return mac.finalize()


def verify_hmac(hash_name: str, key: bytes, expected: bytes, *parts: bytes) -> None:
    """Raise :class:`IntegrityError` unless ``expected`` is HMAC(key, parts) (constant time)."""
    if not std_hmac.compare_digest(hmac(hash_name, key, *parts), expected):
        raise IntegrityError("HMAC does not match")


def _label(label: bytes) -> bytes:
    return label if label.endswith(b"\x00") else label + b"\x00"


def kdfa(
    hash_name: str, key: bytes, label: bytes, context_u: bytes, context_v: bytes, *, bits: int
) -> bytes:
    """KDFa (Part 1 section 11.4.10.2): ``bits`` bits from ``key`` for ``label``."""
    if bits <= 0 or bits > 0xFFFF * 8:
        raise UsageError(f"KDFa: {bits} bits is out of range")
    out = bytearray()
    counter = 1
    suffix = _label(label) + context_u + context_v + bits.to_bytes(4, "big")
    while len(out) * 8 < bits:
        out += hmac(hash_name, key, counter.to_bytes(4, "big"), suffix)
        counter += 1
    return _truncate(bytes(out), bits)


def kdfe(
    hash_name: str, z: bytes, label: bytes, party_u: bytes, party_v: bytes, *, bits: int
) -> bytes:
    """KDFe (Part 1 section 11.4.10.3): the SP 800-56A concatenation KDF over shared ``z``."""
    if bits <= 0 or bits > 0xFFFF * 8:
        raise UsageError(f"KDFe: {bits} bits is out of range")
    out = bytearray()
    counter = 1
    while len(out) * 8 < bits:
        digest = hashes.Hash(hash_algorithm(hash_name))
        for part in (counter.to_bytes(4, "big"), z, _label(label), party_u, party_v):
            digest.update(part)
        out += digest.finalize()
        counter += 1
    return _truncate(bytes(out), bits)


def _truncate(data: bytes, bits: int) -> bytes:
    size = (bits + 7) // 8
    value = bytearray(data[:size])
    if bits % 8:
        value[0] &= (1 << (bits % 8)) - 1
    return bytes(value)


def _cfb(key: bytes, iv: bytes) -> Cipher[CFB]:
    if len(key) not in (16, 24, 32) or len(iv) != AES_BLOCK_SIZE:
        raise UsageError("AES-CFB needs a 128/192/256-bit key and a 16-byte IV")
    return Cipher(algorithms.AES(key), CFB(iv))


def aes_cfb_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-CFB encryption (full-block feedback, no padding)."""
    encryptor = _cfb(key, iv).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def aes_cfb_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-CFB decryption."""
    decryptor = _cfb(key, iv).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()
