"""RSA for the AMD root keys: key generation, storage and RSASSA-PSS (SHA-384, salt 48).

AMD's ARK and ASK are RSA-4096 keys that sign with RSASSA-PSS, SHA-384, MGF1-SHA-384 and a
48-byte salt (AMD 57230; RFC 8017 sections 8.1 and 9.1).

* :func:`new_private_key` makes a fresh key with ``cryptography`` (the operating system's
  generator): what the emulated vendor's roots use, in well under a second for RSA-4096;
  :func:`private_key_to_pem` / :func:`private_key_from_pem` keep it (PKCS #8, unencrypted:
  the file's permissions protect it, as a local CA's key);
* :func:`generate_private_key` (cached) and :func:`derive_private_key` (not cached: also the
  owner's keys of a seeded image build, :mod:`cvm.image.keys`) derive a key reproducibly from
  a seed (incremental search from a seeded odd start, trial division by small primes, then
  Miller-Rabin with seeded bases; FIPS 186-5 B.3.1 style, with the caller's seed as the
  entropy source; the search itself is :func:`cvm.crypto.rsa_prime.seeded_prime`);
* :func:`sign_pss` takes the salt as an argument (EMSA-PSS encoding of RFC 8017 9.1.1, then
  the RSA private operation) so the caller's random source decides it.

Verification always goes through ``cryptography`` (:func:`verify_pss`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.crypto.drbg import SeededRandom
from cvm.crypto.rsa_prime import private_key_from_primes, seeded_prime
from cvm.errors import FormatError, SignatureError, UsageError

PUBLIC_EXPONENT = 65537
SALT_SIZE = 48
HASH_SIZE = 48
MILLER_RABIN_ROUNDS = 8  # 2048-bit candidates: error far below 2**-100

RsaPrivateKey = rsa.RSAPrivateKey
RsaPublicKey = rsa.RSAPublicKey


@lru_cache(maxsize=32)
def generate_private_key(seed: bytes, label: str, bits: int = 4096) -> RsaPrivateKey:
    """The RSA key (e = 65537) derived from ``seed`` and ``label``; cached per process."""
    return derive_private_key(seed, label, bits)


def derive_private_key(seed: bytes, label: str, bits: int) -> RsaPrivateKey:
    """The uncached derivation behind :func:`generate_private_key` (a plain function, so
    the mutation tests reach its checks)."""
    if bits % 16 or bits < 2048:
        raise UsageError("RSA key size must be a multiple of 16 and at least 2048 bits")
    # Starts and Miller-Rabin bases come from separate streams, so the primes depend only on
    # the seed and label, not on how many candidates the sieve let through.
    stream = SeededRandom(seed, b"rsa/" + label.encode())
    witnesses = stream.fork(b"miller-rabin")
    while True:
        p = seeded_prime(bits // 2, stream, witnesses, PUBLIC_EXPONENT, MILLER_RABIN_ROUNDS)
        q = seeded_prime(bits // 2, stream, witnesses, PUBLIC_EXPONENT, MILLER_RABIN_ROUNDS)
        if p != q and (p * q).bit_length() == bits:
            break
    if p < q:
        p, q = q, p
    return private_key_from_primes(p, q, PUBLIC_EXPONENT)


def new_private_key(bits: int = 4096) -> RsaPrivateKey:
    """A fresh RSA key (e = 65537) from the operating system's generator."""
    if bits % 16 or bits < 2048:
        raise UsageError("RSA key size must be a multiple of 16 and at least 2048 bits")
    return rsa.generate_private_key(PUBLIC_EXPONENT, bits)


def private_key_to_pem(key: RsaPrivateKey) -> bytes:
    """The key as unencrypted PKCS #8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes) -> RsaPrivateKey:
    """An RSA private key from PEM; raise FormatError if it is not one."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FormatError("not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError("the private key is not an RSA key")
    return key


def _mgf1_sha384(seed: bytes, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def sign_pss(private_key: RsaPrivateKey, message: bytes, salt: bytes) -> bytes:
    """RSASSA-PSS-SIGN (RFC 8017 8.1.1) with SHA-384, MGF1-SHA-384 and the given salt."""
    if len(salt) != SALT_SIZE:
        raise UsageError("the PSS salt must be 48 bytes")
    numbers = private_key.private_numbers()
    modulus = numbers.public_numbers.n
    em_bits = modulus.bit_length() - 1
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.sha384(message).digest()
    h = hashlib.sha384(bytes(8) + m_hash + salt).digest()
    db = bytes(em_len - SALT_SIZE - HASH_SIZE - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1_sha384(h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    em = int.from_bytes(bytes(masked) + h + b"\xbc", "big")
    # RSA private operation with the Chinese remainder theorem (RFC 8017 5.1.2).
    m1 = pow(em, numbers.dmp1, numbers.p)
    m2 = pow(em, numbers.dmq1, numbers.q)
    signature = m2 + numbers.q * ((numbers.iqmp * (m1 - m2)) % numbers.p)
    return signature.to_bytes((modulus.bit_length() + 7) // 8, "big")


def verify_pss(public_key: RsaPublicKey, message: bytes, signature: bytes) -> None:
    """RSASSA-PSS-VERIFY with SHA-384, MGF1-SHA-384, salt 48; raise SignatureError."""
    try:
        public_key.verify(
            signature,
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=SALT_SIZE),
            hashes.SHA384(),
        )
    except InvalidSignature:
        raise SignatureError("RSA-PSS signature does not verify") from None


def public_key_der(public_key: RsaPublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of ``public_key``."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_der(spki: bytes) -> RsaPublicKey:
    try:
        key = serialization.load_der_public_key(spki)
    except ValueError:
        raise FormatError("not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise FormatError("the key is not an RSA key")
    return key
