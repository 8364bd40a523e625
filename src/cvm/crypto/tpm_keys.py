"""Asymmetric keys of TPM objects: ECC (NIST P-256/P-384) and RSA, random or seed-derived.

TCG "TPM 2.0 Library, Part 1: Architecture", revision 1.59, section 11.4.9 (primary objects
are derived from a hierarchy's primary seed: same seed and template give the same key) and
Part 2 Table 224 (TPMT_SENSITIVE holds the ECC private scalar, or the first RSA prime ``p``;
``q = n / p``). Keys travel across this module's boundary as integers and byte strings only,
so the TPM engine never holds a ``cryptography`` object.

Signatures: ECDSA over a caller-supplied digest (returns ``r, s``), RSASSA-PKCS1-v1_5 and
RSASSA-PSS (salt length = digest length, as a TPM uses) over a digest. Verification raises
:class:`~cvm.errors.SignatureError`.
"""

from __future__ import annotations

import math

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from cvm.crypto.rsa_prime import composites_window, miller_rabin, private_key_from_primes
from cvm.crypto.tpm_kdf import hash_algorithm, kdfa
from cvm.errors import FormatError, IntegrityError, SignatureError, UsageError

_CURVES: dict[str, type[ec.EllipticCurve]] = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}
_CURVE_BYTES = {"p256": 32, "p384": 48}
_CURVE_ORDERS = {
    "p256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "p384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}
_WINDOW = 4096
"""Odd values examined per KDFa candidate."""
_MILLER_RABIN_BASES = (2, 3, 5, 7, 11, 13, 17, 19)
RSA_DEFAULT_EXPONENT = 65537


def _curve(curve: str) -> ec.EllipticCurve:
    try:
        return _CURVES[curve]()
    except KeyError:
        raise UsageError(f"unsupported curve {curve!r}") from None


def ecc_point(curve: str, scalar: bytes) -> tuple[bytes, bytes]:
    """The public point (x, y) of the private ``scalar`` on ``curve``."""
    key = ec.derive_private_key(int.from_bytes(scalar, "big"), _curve(curve))
    numbers = key.public_key().public_numbers()
    size = _CURVE_BYTES[curve]
    return numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")


def ecc_generate(curve: str) -> bytes:
    """A random private scalar on ``curve``."""
    key = ec.generate_private_key(_curve(curve))
    return key.private_numbers().private_value.to_bytes(_CURVE_BYTES[curve], "big")


def ecc_from_seed(curve: str, seed: bytes, context: bytes) -> bytes:
    """A private scalar derived from ``seed`` and ``context`` (deterministic)."""
    order = _CURVE_ORDERS[curve]
    size = _CURVE_BYTES[curve]
    stream = kdfa("sha256", seed, b"ECC", context, b"", bits=(size + 8) * 8)
    value = int.from_bytes(stream, "big") % (order - 1) + 1
    return value.to_bytes(size, "big")


def ecdsa_sign(curve: str, scalar: bytes, digest: bytes, hash_name: str) -> tuple[bytes, bytes]:
    """ECDSA over ``digest``; returns (r, s) each of the curve's size."""
    key = ec.derive_private_key(int.from_bytes(scalar, "big"), _curve(curve))
    der = key.sign(digest, ec.ECDSA(utils.Prehashed(hash_algorithm(hash_name))))
    r, s = utils.decode_dss_signature(der)
    size = _CURVE_BYTES[curve]
    return r.to_bytes(size, "big"), s.to_bytes(size, "big")


def ecdsa_verify(
    curve: str, point: tuple[bytes, bytes], digest: bytes, r: bytes, s: bytes, *, hash_name: str
) -> None:
    """Raise :class:`SignatureError` unless (r, s) is an ECDSA signature of ``digest``."""
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(point[0], "big"), int.from_bytes(point[1], "big"), _curve(curve)
        )
        key = numbers.public_key()
        der = utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
        key.verify(der, digest, ec.ECDSA(utils.Prehashed(hash_algorithm(hash_name))))
    except (InvalidSignature, ValueError):
        raise SignatureError("ECDSA signature does not verify") from None


def ecdh_x(curve: str, scalar: bytes, point: tuple[bytes, bytes]) -> bytes:
    """The x coordinate of ``scalar * point`` (the ECDH shared secret Z); IntegrityError for a
    point off the curve."""
    try:
        peer = ec.EllipticCurvePublicNumbers(
            int.from_bytes(point[0], "big"), int.from_bytes(point[1], "big"), _curve(curve)
        ).public_key()
    except ValueError:
        raise IntegrityError("ECC point is not on the curve") from None
    key = ec.derive_private_key(int.from_bytes(scalar, "big"), _curve(curve))
    return key.exchange(ec.ECDH(), peer)


def rsa_generate(bits: int, exponent: int) -> tuple[bytes, bytes]:
    """A random RSA key: (modulus n, prime p)."""
    key = rsa.generate_private_key(exponent or RSA_DEFAULT_EXPONENT, bits)
    numbers = key.private_numbers()
    size = bits // 8
    return numbers.public_numbers.n.to_bytes(size, "big"), numbers.p.to_bytes(size // 2, "big")


def _prime_from_seed(seed: bytes, context: bytes, label: bytes, bits: int, exponent: int) -> int:
    """The first value ``candidate + 2i`` (i < 4096) of the first KDFa candidate window that
    holds one, with ``gcd(e, value - 1) = 1`` and passing Miller-Rabin.

    The window is sieved first by the odd primes below 2^18: a value with a small factor is
    composite, so the sieve changes which values reach Miller-Rabin, never which one is found.
    """
    counter = 0
    while True:
        counter += 1
        block = kdfa("sha256", seed, label, context, counter.to_bytes(4, "big"), bits=bits)
        candidate = int.from_bytes(block, "big") | (3 << (bits - 2)) | 1
        sieve = composites_window(candidate, _WINDOW)
        for index in range(_WINDOW):
            if sieve[index]:
                continue
            value = candidate + 2 * index
            if math.gcd(exponent, value - 1) == 1 and miller_rabin(value, _MILLER_RABIN_BASES):
                return value


def rsa_from_seed(seed: bytes, context: bytes, bits: int, exponent: int) -> tuple[bytes, bytes]:
    """An RSA key derived from ``seed`` and ``context`` (deterministic): (n, p).

    Deliberately not cached: a process-wide cache would keep seed-derived private primes
    outside the TPM's state (outside the SVSM's guest pages) between commands."""
    e = exponent or RSA_DEFAULT_EXPONENT
    p = _prime_from_seed(seed, context, b"RSA p", bits // 2, e)
    q = _prime_from_seed(seed, context, b"RSA q", bits // 2, e)
    if p == q:
        raise UsageError("seed-derived RSA primes collided")
    p, q = max(p, q), min(p, q)
    size = bits // 8
    return (p * q).to_bytes(size, "big"), p.to_bytes(size // 2, "big")


def _rsa_private(modulus: bytes, exponent: int, prime: bytes) -> rsa.RSAPrivateKey:
    n = int.from_bytes(modulus, "big")
    p = int.from_bytes(prime, "big")
    e = exponent or RSA_DEFAULT_EXPONENT
    if p <= 1 or n % p:
        raise FormatError("RSA private prime does not divide the modulus")
    return private_key_from_primes(p, n // p, e)


def _padding(scheme: str, hash_name: str) -> padding.AsymmetricPadding:
    if scheme == "rsassa":
        return padding.PKCS1v15()
    if scheme == "rsapss":
        return padding.PSS(padding.MGF1(hash_algorithm(hash_name)), padding.PSS.DIGEST_LENGTH)
    raise UsageError(f"unsupported RSA signature scheme {scheme!r}")


def rsa_sign(
    modulus: bytes, exponent: int, prime: bytes, digest: bytes, *, hash_name: str, scheme: str
) -> bytes:
    """RSASSA-PKCS1-v1_5 (``scheme="rsassa"``) or RSASSA-PSS over ``digest``."""
    key = _rsa_private(modulus, exponent, prime)
    return key.sign(digest, _padding(scheme, hash_name), utils.Prehashed(hash_algorithm(hash_name)))


def rsa_verify(
    modulus: bytes, exponent: int, digest: bytes, signature: bytes, *, hash_name: str, scheme: str
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` signs ``digest``."""
    try:
        key = rsa.RSAPublicNumbers(
            exponent or RSA_DEFAULT_EXPONENT, int.from_bytes(modulus, "big")
        ).public_key()
        key.verify(
            signature, digest, _padding(scheme, hash_name),
            utils.Prehashed(hash_algorithm(hash_name)),
        )
    except (InvalidSignature, ValueError):
        raise SignatureError("RSA signature does not verify") from None


def rsa_oaep_encrypt(modulus: bytes, exponent: int, plaintext: bytes, *, hash_name: str,
                     label: bytes) -> bytes:
    """RSAES-OAEP (MGF1 with the same hash) to the public key (n, e)."""
    key = rsa.RSAPublicNumbers(exponent or RSA_DEFAULT_EXPONENT,
                               int.from_bytes(modulus, "big")).public_key()
    algorithm = hash_algorithm(hash_name)
    return key.encrypt(plaintext, padding.OAEP(padding.MGF1(algorithm), algorithm, label))


def rsa_oaep_decrypt(modulus: bytes, exponent: int, prime: bytes, ciphertext: bytes, *,
                     hash_name: str, label: bytes) -> bytes:
    """RSAES-OAEP decryption; a bad ciphertext raises a detail-free IntegrityError."""
    algorithm = hash_algorithm(hash_name)
    try:
        return _rsa_private(modulus, exponent, prime).decrypt(
            ciphertext, padding.OAEP(padding.MGF1(algorithm), algorithm, label)
        )
    except ValueError:
        raise IntegrityError("RSA-OAEP decryption failed") from None


def public_key_pem(kind: str, first: bytes, second: bytes | int, curve: str = "p256") -> bytes:
    """PEM SubjectPublicKeyInfo of an RSA (n, e) or ECC (x, y) public key."""
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == "rsa":
        e = int(second) if isinstance(second, int) else int.from_bytes(second, "big")
        n = int.from_bytes(first, "big")
        key = rsa.RSAPublicNumbers(e or RSA_DEFAULT_EXPONENT, n).public_key()
    else:
        y = second if isinstance(second, bytes) else second.to_bytes(_CURVE_BYTES[curve], "big")
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(first, "big"), int.from_bytes(y, "big"), _curve(curve)
        ).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_fingerprint(data: bytes) -> bytes:
    """SHA-256 of a PEM public key in OpenSSL's ``i2d_PublicKey`` form — PKCS#1
    ``RSAPublicKey`` for RSA, the uncompressed point for ECC — as systemd fingerprints the key
    of a signed PCR policy (a ``.pcrsig`` entry's ``pkfp``)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise FormatError("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        encoded = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        encoded = key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)
    else:
        raise FormatError("public key is neither RSA nor ECC")
    digest = hashes.Hash(hashes.SHA256())
    digest.update(encoded)
    return digest.finalize()


def load_public_pem(data: bytes) -> tuple[str, bytes, int | bytes, str]:
    """Parse a PEM public key: ("rsa", n, e, "") or ("ecc", x, y, curve)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise FormatError("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return "rsa", numbers.n.to_bytes((key.key_size + 7) // 8, "big"), numbers.e, ""
    if isinstance(key, ec.EllipticCurvePublicKey):
        for name, size in _CURVE_BYTES.items():
            if key.curve.name == _curve(name).name:
                point = key.public_numbers()
                return "ecc", point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big"), name
    raise FormatError("public key is neither RSA nor NIST P-256/P-384")
