"""RSA for the AMD root keys: seeded key generation and RSASSA-PSS (SHA-384, salt 48).

AMD's ARK and ASK are RSA-4096 keys that sign with RSASSA-PSS, SHA-384, MGF1-SHA-384 and a
48-byte salt (AMD 57230; RFC 8017 sections 8.1 and 9.1). The emulated vendor must
be reproducible from a seed, so:

* :func:`generate_private_key` derives the primes from SHAKE-256(seed) (incremental search
  from a seeded odd start, trial division by small primes, then Miller-Rabin with seeded
  bases; FIPS 186-5 B.3.1 style, with the caller's seed as the entropy source);
* :func:`sign_pss` takes the salt as an argument (EMSA-PSS encoding of RFC 8017 9.1.1, then
  the RSA private operation) so the caller's random source decides it.

Verification always goes through ``cryptography`` (:func:`verify_pss`).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.crypto.drbg import SeededRandom
from cvm.errors import FormatError, SignatureError, UsageError

PUBLIC_EXPONENT = 65537
SALT_SIZE = 48
HASH_SIZE = 48
MILLER_RABIN_ROUNDS = 8  # 2048-bit candidates: error far below 2**-100
_WINDOW = 1 << 15
_SIEVE_BOUND = 1 << 18


def _odd_primes_below(bound: int) -> tuple[int, ...]:
    """Odd primes below ``bound`` (sieve of Eratosthenes)."""
    flags = bytearray([1]) * bound
    flags[0:2] = b"\x00\x00"
    for n in range(2, int(bound**0.5) + 1):
        if flags[n]:
            flags[n * n :: n] = bytes(len(range(n * n, bound, n)))
    return tuple(n for n in range(3, bound) if flags[n])


_SMALL_PRIMES = _odd_primes_below(_SIEVE_BOUND)

RsaPrivateKey = rsa.RSAPrivateKey
RsaPublicKey = rsa.RSAPublicKey


def _is_probable_prime(candidate: int, stream: SeededRandom) -> bool:
    d = candidate - 1
    shifts = 0
    while d % 2 == 0:
        d //= 2
        shifts += 1
    size = (candidate.bit_length() + 7) // 8
    for _ in range(MILLER_RABIN_ROUNDS):
        base = int.from_bytes(stream(size), "big") % (candidate - 3) + 2
        x = pow(base, d, candidate)
        if x in (1, candidate - 1):
            continue
        for _ in range(shifts - 1):
            x = pow(x, 2, candidate)
            if x == candidate - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, stream: SeededRandom, witnesses: SeededRandom) -> int:
    """The first probable prime at or after a seeded odd start (sieved window search)."""
    while True:
        start = int.from_bytes(stream(bits // 8), "big")
        start |= (3 << (bits - 2)) | 1  # top two bits: the product has exactly 2*bits bits
        # sieve[i] is zero when start + 2*i has no factor among the small primes.
        sieve = bytearray(_WINDOW)
        for p in _SMALL_PRIMES:
            first = (-start * ((p + 1) // 2)) % p  # (p + 1) / 2 is the inverse of 2 mod p
            if first < _WINDOW:
                sieve[first::p] = b"\x01" * len(range(first, _WINDOW, p))
        for index in range(_WINDOW):
            if sieve[index]:
                continue
            candidate = start + 2 * index
            if candidate.bit_length() != bits:
                break
            if (candidate - 1) % PUBLIC_EXPONENT == 0:
                continue
            if _is_probable_prime(candidate, witnesses):
                return candidate


@lru_cache(maxsize=32)
def generate_private_key(seed: bytes, label: str, bits: int = 4096) -> RsaPrivateKey:
    """The RSA key (e = 65537) derived from ``seed`` and ``label``; cached per process."""
    if bits % 16 or bits < 2048:
        raise UsageError("RSA key size must be a multiple of 16 and at least 2048 bits")
    # Starts and Miller-Rabin bases come from separate streams, so the primes depend only on
    # the seed and label, not on how many candidates the sieve let through.
    stream = SeededRandom(seed, b"rsa/" + label.encode())
    witnesses = stream.fork(b"miller-rabin")
    while True:
        p = _prime(bits // 2, stream, witnesses)
        q = _prime(bits // 2, stream, witnesses)
        if p != q and (p * q).bit_length() == bits:
            break
    if p < q:
        p, q = q, p
    d = pow(PUBLIC_EXPONENT, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q), iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(PUBLIC_EXPONENT, p * q),
    )
    return numbers.private_key()


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
