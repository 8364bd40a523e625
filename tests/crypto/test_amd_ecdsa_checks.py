"""AMD-encoded ECDSA P-384: every refusal at its exact boundary, with its error class and message.

Each test pins one check of ``cvm.crypto.amd_ecdsa`` (R/S as 72-byte little-endian integers
whose bytes 48..71 are zero, 0 < R, S < n, a P-384 key only); the mutation run of
docs/mutation/crypto.md found these boundaries untested.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cvm.crypto import amd_ecdsa
from cvm.errors import FormatError, SignatureError, UsageError

ORDER = amd_ecdsa.P384_ORDER


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return amd_ecdsa.private_key_from_scalar(0x1234_5678_9ABC_DEF0)


def test_components_are_72_bytes_little_endian_up_to_two_to_the_384() -> None:
    assert amd_ecdsa.encode_component(0) == bytes(72)
    assert amd_ecdsa.encode_component(0x0102) == b"\x02\x01" + bytes(70)
    top = (1 << 384) - 1
    assert amd_ecdsa.encode_component(top) == b"\xff" * 48 + bytes(24)
    with pytest.raises(UsageError, match=r"^ECDSA component does not fit in 48 bytes$"):
        amd_ecdsa.encode_component(1 << 384)
    with pytest.raises(UsageError, match=r"^ECDSA component does not fit in 48 bytes$"):
        amd_ecdsa.encode_component(-1)


def test_a_component_is_read_little_endian_and_its_upper_24_bytes_must_be_zero() -> None:
    assert amd_ecdsa.decode_component(b"\x02\x01" + bytes(70)) == 0x0102
    assert amd_ecdsa.decode_component(b"\xff" * 48 + bytes(24)) == (1 << 384) - 1
    for position in (48, 60, 71):
        data = bytearray(72)
        data[position] = 1
        with pytest.raises(FormatError, match=r"^ECDSA R: bytes 48\.\.71 of the little-endian "
                                              r"value are not zero$"):
            amd_ecdsa.decode_component(bytes(data), "R")
    for size in (71, 73, 0):
        with pytest.raises(FormatError, match=rf"^ECDSA S: expected 72 bytes, got {size}$"):
            amd_ecdsa.decode_component(bytes(size), "S")
    with pytest.raises(FormatError, match=r"^ECDSA component: expected 72 bytes, got 1$"):
        amd_ecdsa.decode_component(bytes(1))


def test_a_private_scalar_is_1_to_n_minus_1() -> None:
    assert amd_ecdsa.private_key_from_scalar(1).private_numbers().private_value == 1
    top = amd_ecdsa.private_key_from_scalar(ORDER - 1)
    assert top.private_numbers().private_value == ORDER - 1
    for scalar in (0, ORDER, -1):
        with pytest.raises(UsageError, match=r"^P-384 private scalar out of range$"):
            amd_ecdsa.private_key_from_scalar(scalar)


def test_only_p384_keys_sign_or_verify(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.derive_private_key(5, ec.SECP256R1())
    with pytest.raises(UsageError, match=r"^AMD signatures use P-384 keys$"):
        amd_ecdsa.sign(other, b"m")
    r, s = amd_ecdsa.sign(key, b"m")
    with pytest.raises(SignatureError, match=r"^the signing key is not a P-384 key$"):
        amd_ecdsa.verify(other.public_key(), b"m", r, s)


def test_the_signature_is_over_sha384_of_the_message(key: ec.EllipticCurvePrivateKey) -> None:
    r, s = amd_ecdsa.sign(key, b"report")
    der = encode_dss_signature(amd_ecdsa.decode_component(r), amd_ecdsa.decode_component(s))
    # The standard DER form of the same (r, s) verifies under ECDSA with SHA-384, so the
    # components are the real ones, in little-endian order.
    key.public_key().verify(der, b"report", ec.ECDSA(hashes.SHA384()))
    amd_ecdsa.verify_der(key.public_key(), b"report", der)
    with pytest.raises(SignatureError, match=r"^ECDSA P-384 signature does not verify$"):
        amd_ecdsa.verify_der(key.public_key(), b"other", der)


@pytest.mark.parametrize("which", ["R", "S"])
def test_a_nonzero_upper_byte_in_r_or_s_is_a_malformed_signature(
    key: ec.EllipticCurvePrivateKey, which: str
) -> None:
    r, s = amd_ecdsa.sign(key, b"m")
    bad = bytearray(r if which == "R" else s)
    bad[71] = 0x80
    args = (bytes(bad), s) if which == "R" else (r, bytes(bad))
    with pytest.raises(SignatureError, match=rf"^malformed signature: ECDSA {which}: bytes 48"):
        amd_ecdsa.verify(key.public_key(), b"m", *args)
    with pytest.raises(SignatureError, match=rf"^malformed signature: ECDSA {which}: expected 72"):
        short = (bytes(bad[:71]), s) if which == "R" else (r, bytes(bad[:71]))
        amd_ecdsa.verify(key.public_key(), b"m", *short)


@pytest.mark.parametrize("which", ["R", "S"])
@pytest.mark.parametrize("value", [0, ORDER, ORDER + 1, (1 << 384) - 1])
def test_r_and_s_must_lie_strictly_between_0_and_n(
    key: ec.EllipticCurvePrivateKey, which: str, value: int
) -> None:
    r, s = amd_ecdsa.sign(key, b"m")
    component = amd_ecdsa.encode_component(value)
    args = (component, s) if which == "R" else (r, component)
    with pytest.raises(SignatureError, match=r"^signature R or S is out of range$"):
        amd_ecdsa.verify(key.public_key(), b"m", *args)


@pytest.mark.parametrize("which", ["R", "S"])
def test_a_component_of_1_is_in_range_and_fails_only_the_signature_check(
    key: ec.EllipticCurvePrivateKey, which: str
) -> None:
    r, s = amd_ecdsa.sign(key, b"m")
    one = amd_ecdsa.encode_component(1)
    args = (one, s) if which == "R" else (r, one)
    with pytest.raises(SignatureError, match=r"^ECDSA P-384 signature does not verify$"):
        amd_ecdsa.verify(key.public_key(), b"m", *args)


def test_s_and_n_minus_s_both_verify_as_ecdsa_allows(key: ec.EllipticCurvePrivateKey) -> None:
    # ECDSA (SEC 1 §4.1.4) accepts (r, s) and (r, n - s); AMD's firmware does not normalise s,
    # so both forms are valid and the range check must let n - 1 >= s through.
    r, s = amd_ecdsa.sign(key, b"m")
    flipped = amd_ecdsa.encode_component(ORDER - amd_ecdsa.decode_component(s))
    amd_ecdsa.verify(key.public_key(), b"m", r, flipped)


def test_the_key_helpers_take_p384_only() -> None:
    p384 = amd_ecdsa.private_key_from_scalar(3)
    x, y = amd_ecdsa.public_key_coordinates(p384.public_key())
    assert (x, y) == (p384.public_key().public_numbers().x, p384.public_key().public_numbers().y)
    with pytest.raises(FormatError, match=r"^the point is not on the P-384 curve$"):
        amd_ecdsa.public_key_from_coordinates(x + 1, y)
    spki = amd_ecdsa.public_key_der(p384.public_key())
    assert serialization.load_der_public_key(spki) == p384.public_key()
    public_pem = p384.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_pem = p384.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    assert amd_ecdsa.public_key_from_pem(public_pem) == p384.public_key()
    assert amd_ecdsa.public_key_from_pem(private_pem) == p384.public_key()
    loaded = amd_ecdsa.private_key_from_pem(private_pem)
    assert loaded.private_numbers().private_value == 3
    with pytest.raises(FormatError, match=r"^not a PEM public or private key$"):
        amd_ecdsa.public_key_from_pem(b"junk")
    with pytest.raises(FormatError, match=r"^not an unencrypted PEM private key$"):
        amd_ecdsa.private_key_from_pem(public_pem)
    p256 = ec.derive_private_key(3, ec.SECP256R1())
    p256_public = p256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    p256_private = p256.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    with pytest.raises(FormatError, match=r"^the key is not an EC P-384 key$"):
        amd_ecdsa.public_key_from_pem(p256_public)
    with pytest.raises(FormatError, match=r"^the key is not an EC P-384 private key$"):
        amd_ecdsa.private_key_from_pem(p256_private)
    ed = serialization.load_pem_private_key(_ed25519_pem(), password=None)
    ed_public = ed.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(FormatError, match=r"^the key is not an EC P-384 key$"):
        amd_ecdsa.public_key_from_pem(ed_public)
    with pytest.raises(FormatError, match=r"^the key is not an EC P-384 private key$"):
        amd_ecdsa.private_key_from_pem(_ed25519_pem())


def _ed25519_pem() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def test_a_fresh_key_is_p384() -> None:
    assert isinstance(amd_ecdsa.generate_private_key().curve, ec.SECP384R1)
