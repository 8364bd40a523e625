"""ECDSA P-384 with SHA-384 in AMD's encoding: R and S as 72-byte little-endian integers.

SEV Secure Nested Paging Firmware ABI Specification (AMD 56860), "SIGNATURE"
structure (R at 0x00, S at 0x48, each 72 bytes little-endian, the bytes above the 48-byte
P-384 order zero) and the ECDSA public key structure (QX, QY 72-byte little-endian). Reports,
ID blocks and ID auth structures all use this encoding; standard libraries want DER, so the
conversion lives here and nowhere else.

Signing is deterministic (RFC 6979) so that a run with the same keys and inputs reproduces
the same bytes.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from cvm.errors import FormatError, SignatureError, UsageError

COMPONENT_SIZE = 72
P384_SIZE = 48
# Order of the P-384 group (FIPS 186-4, D.1.2.4).
P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
    "581a0db248b0a77aecec196accc52973",
    16,
)

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


def encode_component(value: int) -> bytes:
    """An integer as AMD writes R, S, QX and QY: 72 bytes, little-endian."""
    if not 0 <= value < 1 << (8 * P384_SIZE):
        raise UsageError("ECDSA component does not fit in 48 bytes")
    return value.to_bytes(COMPONENT_SIZE, "little")


def decode_component(data: bytes, name: str = "component") -> int:
    """A 72-byte little-endian component; bytes 48..71 must be zero."""
    if len(data) != COMPONENT_SIZE:
        raise FormatError(f"ECDSA {name}: expected 72 bytes, got {len(data)}")
    if any(data[P384_SIZE:]):
        raise FormatError(f"ECDSA {name}: bytes 48..71 of the little-endian value are not zero")
    return int.from_bytes(data, "little")


def generate_private_key() -> PrivateKey:
    """A fresh random P-384 key (from the operating system's generator)."""
    return ec.generate_private_key(ec.SECP384R1())


def private_key_from_scalar(scalar: int) -> PrivateKey:
    """The P-384 key with private scalar ``scalar`` (1 <= scalar < n)."""
    if not 1 <= scalar < P384_ORDER:
        raise UsageError("P-384 private scalar out of range")
    return ec.derive_private_key(scalar, ec.SECP384R1())


def sign(private_key: PrivateKey, message: bytes) -> tuple[bytes, bytes]:
    """Sign SHA-384(``message``); returns (R, S), each 72 bytes little-endian."""
    if not isinstance(private_key.curve, ec.SECP384R1):
        raise UsageError("AMD signatures use P-384 keys")
    algorithm = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
    r, s = decode_dss_signature(private_key.sign(message, algorithm))
    return encode_component(r), encode_component(s)


def verify(public_key: PublicKey, message: bytes, r: bytes, s: bytes) -> None:
    """Check an AMD-encoded ECDSA P-384/SHA-384 signature; raise SignatureError if bad."""
    if not isinstance(public_key.curve, ec.SECP384R1):
        raise SignatureError("the signing key is not a P-384 key")
    try:
        r_value = decode_component(r, "R")
        s_value = decode_component(s, "S")
    except FormatError as error:
        raise SignatureError(f"malformed signature: {error}") from None
    if not (0 < r_value < P384_ORDER and 0 < s_value < P384_ORDER):
        raise SignatureError("signature R or S is out of range")
    try:
        public_key.verify(
            encode_dss_signature(r_value, s_value), message, ec.ECDSA(hashes.SHA384())
        )
    except InvalidSignature:
        raise SignatureError("ECDSA P-384 signature does not verify") from None


def verify_der(public_key: PublicKey, message: bytes, signature: bytes) -> None:
    """Check a DER-encoded ECDSA/SHA-384 signature (the baseline for benchmarks)."""
    try:
        public_key.verify(signature, message, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise SignatureError("ECDSA P-384 signature does not verify") from None


def public_key_coordinates(public_key: PublicKey) -> tuple[int, int]:
    numbers = public_key.public_numbers()
    return numbers.x, numbers.y


def public_key_from_coordinates(x: int, y: int) -> PublicKey:
    """A P-384 public key from its affine coordinates; the point must be on the curve."""
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
    except ValueError:
        raise FormatError("the point is not on the P-384 curve") from None


def public_key_der(public_key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of a P-384 key (named curve secp384r1)."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_from_pem(data: bytes) -> PublicKey:
    """A P-384 public key from PEM (SubjectPublicKeyInfo) or a PEM private key's public half."""
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise FormatError("not a PEM public or private key") from None
        key = private.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise FormatError("the key is not an EC P-384 key")
    return key


def private_key_from_pem(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise FormatError("not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise FormatError("the key is not an EC P-384 private key")
    return key
