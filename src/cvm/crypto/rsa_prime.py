"""Probable primes and RSA private keys assembled from primes, for keys derived from a seed.

FIPS 186-5 appendix B.3 (generation of probable primes) with the Miller-Rabin test of FIPS
186-5 appendix B.3.1 / FIPS 186-4 appendix C.3.1, and RFC 8017 section 3.2 (the private key in
its CRT form: ``dP``, ``dQ``, ``qInv``). Two places in cvm derive RSA keys reproducibly — the
emulated vendor's ARK/ASK (:mod:`cvm.crypto.rsa_pss`) and TPM primary objects
(:mod:`cvm.crypto.tpm_keys`); they differ in where candidates and Miller-Rabin bases come
from, and share the pieces here.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric import rsa

from cvm.crypto.drbg import SeededRandom

SIEVE_WINDOW = 1 << 15
"""Odd candidates examined per seeded start by :func:`seeded_prime`."""


def odd_primes_below(bound: int) -> tuple[int, ...]:
    """Odd primes below ``bound`` (sieve of Eratosthenes)."""
    flags = bytearray([1]) * bound
    flags[0:2] = b"\x00\x00"
    for n in range(2, int(bound**0.5) + 1):
        if flags[n]:
            flags[n * n :: n] = bytes(len(range(n * n, bound, n)))
    return tuple(n for n in range(3, bound) if flags[n])


SIEVE_PRIMES = odd_primes_below(1 << 18)


def composites_window(start: int, window: int) -> bytearray:
    """For the odd ``start``, ``sieve[i]`` is nonzero when ``start + 2*i`` has a factor among
    :data:`SIEVE_PRIMES` (so is composite, for a start above them), zero otherwise."""
    sieve = bytearray(window)
    for p in SIEVE_PRIMES:
        first = (-start * ((p + 1) // 2)) % p  # (p + 1) / 2 is the inverse of 2 mod p
        if first < window:
            sieve[first::p] = b"\x01" * len(range(first, window, p))
    return sieve


def miller_rabin(candidate: int, bases: Iterable[int]) -> bool:
    """Whether the odd ``candidate`` (> 3) passes one Miller-Rabin round for every base.

    ``bases`` is consumed lazily, in order, and not beyond the first base that witnesses
    compositeness, so a seeded stream of bases is drawn exactly as far as the test needs.
    """
    d = candidate - 1
    shifts = 0
    while d % 2 == 0:
        d //= 2
        shifts += 1
    for base in bases:
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


def seeded_prime(
    bits: int, stream: SeededRandom, witnesses: SeededRandom, exponent: int, rounds: int
) -> int:
    """The first probable prime at or after a seeded odd start (sieved window search).

    Starts come from ``stream``, Miller-Rabin bases (``rounds`` per candidate) from
    ``witnesses``; the top two bits are set so that a product of two such primes has exactly
    ``2 * bits`` bits, and ``p - 1`` is never a multiple of ``exponent``.
    """
    while True:
        start = int.from_bytes(stream(bits // 8), "big")
        start |= (3 << (bits - 2)) | 1
        sieve = composites_window(start, SIEVE_WINDOW)
        for index in range(SIEVE_WINDOW):
            if sieve[index]:
                continue
            candidate = start + 2 * index
            if candidate.bit_length() != bits:
                break
            if (candidate - 1) % exponent == 0:
                continue
            size = (candidate.bit_length() + 7) // 8
            bases = (
                int.from_bytes(witnesses(size), "big") % (candidate - 3) + 2
                for _ in range(rounds)
            )
            if miller_rabin(candidate, bases):
                return candidate


def private_key_from_primes(p: int, q: int, exponent: int) -> rsa.RSAPrivateKey:
    """The RSA private key with primes ``p``, ``q`` and public exponent ``exponent``
    (RFC 8017 section 3.2, second representation)."""
    d = pow(exponent, -1, (p - 1) * (q - 1))
    return rsa.RSAPrivateNumbers(
        p=p, q=q, d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q), iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(exponent, p * q),
    ).private_key()
