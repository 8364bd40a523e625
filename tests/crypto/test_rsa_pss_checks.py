"""The AMD root keys' RSA: key-size refusals, the seeded derivation pinned, RSASSA-PSS
(SHA-384, salt 48) checked by ``cryptography`` for moduli of every bit-length remainder."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cvm.crypto.rsa_prime import private_key_from_primes
from cvm.crypto.rsa_pss import (
    derive_private_key,
    new_private_key,
    private_key_from_pem,
    public_key_der,
    public_key_from_der,
    sign_pss,
    verify_pss,
)
from cvm.errors import FormatError, SignatureError, UsageError

SIZE_MESSAGE = "^" + re.escape("RSA key size must be a multiple of 16 and at least 2048 bits") + "$"
PSS_48 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


@pytest.mark.parametrize("bits", [2032, 2040, 2047, 2056, 1024 + 8, 0])
def test_a_key_size_off_the_rule_is_refused(bits: int) -> None:
    with pytest.raises(UsageError, match=SIZE_MESSAGE):
        derive_private_key(b"seed", "test", bits)
    with pytest.raises(UsageError, match=SIZE_MESSAGE):
        new_private_key(bits)


def test_the_seeded_key_is_pinned_and_depends_on_the_label() -> None:
    """Known answer of this derivation (the emulated vendor's keys are reproducible)."""
    key = derive_private_key(b"seed-a", "test", 2048)
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    assert hashlib.sha256(n.to_bytes(256, "big")).hexdigest() == (
        "63e48c4499ff2a16339a726f6d304876f8d8481f861c6888acf59bab1235c1c0")
    assert n.bit_length() == 2048 and numbers.public_numbers.e == 65537
    assert numbers.p > numbers.q and numbers.p * numbers.q == n
    other = derive_private_key(b"seed-a", "other", 2048).public_key().public_numbers().n
    assert hashlib.sha256(other.to_bytes(256, "big")).hexdigest() == (
        "c676b8ed4e46ae80eb0b1c95f9b75259dcd160517731b51fa038fe5a7e926e9d")


@pytest.fixture(scope="module", params=[2048, 2049, 2050])
def odd_key(request: pytest.FixtureRequest) -> rsa.RSAPrivateKey:
    """Moduli of 2048, 2049 and 2050 bits: the top bits of the encoding that must be cleared
    are one, none and seven (RFC 8017 9.1.1 step 11). OpenSSL makes only even sizes, so the
    2049-bit key joins a 1025-bit and a 1024-bit prime."""
    if request.param != 2049:
        return rsa.generate_private_key(65537, request.param)
    while True:
        p = rsa.generate_private_key(65537, 2050).private_numbers().p
        q = rsa.generate_private_key(65537, 2048).private_numbers().q
        if (p * q).bit_length() == 2049:
            return private_key_from_primes(p, q, 65537)


def test_pss_signatures_verify_for_every_modulus_width(odd_key: rsa.RSAPrivateKey) -> None:
    public = odd_key.public_key()
    for index in range(6):
        salt = hashlib.sha384(bytes([index])).digest()
        signature = sign_pss(odd_key, b"to be signed", salt)
        assert len(signature) == (odd_key.key_size + 7) // 8
        public.verify(signature, b"to be signed", PSS_48, hashes.SHA384())
        verify_pss(public, b"to be signed", signature)
    assert sign_pss(odd_key, b"m", bytes(48)) != sign_pss(odd_key, b"m", b"\x01" * 48)


def test_the_salt_given_is_the_salt_signed() -> None:
    """Recover EM with the public key and read the salt out of it (RFC 8017 9.1.2)."""
    key = rsa.generate_private_key(65537, 2048)
    salt = bytes(range(48))
    signature = sign_pss(key, b"m", salt)
    numbers = key.public_key().public_numbers()
    em = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(256, "big")
    assert em[-1] == 0xBC
    masked, h = em[: 256 - 49], em[256 - 49:-1]
    mask, counter = b"", 0
    while len(mask) < len(masked):
        mask += hashlib.sha384(h + counter.to_bytes(4, "big")).digest()
        counter += 1
    db = bytes(a ^ b for a, b in zip(masked, mask, strict=False))
    db = bytes([db[0] & 0x7F]) + db[1:]
    assert db[-49:] == b"\x01" + salt and not any(db[:-49])
    assert h == hashlib.sha384(bytes(8) + hashlib.sha384(b"m").digest() + salt).digest()


@pytest.mark.parametrize("size", [0, 32, 47, 49, 64])
def test_a_salt_of_another_size_is_refused(size: int) -> None:
    key = rsa.generate_private_key(65537, 2048)
    with pytest.raises(UsageError, match="^" + re.escape("the PSS salt must be 48 bytes") + "$"):
        sign_pss(key, b"m", bytes(size))


def test_verification_refuses_other_messages_salts_and_hashes() -> None:
    key = rsa.generate_private_key(65537, 2048)
    public = key.public_key()
    message = "^" + re.escape("RSA-PSS signature does not verify") + "$"
    good = sign_pss(key, b"m", bytes(48))
    short_salt = key.sign(b"m", padding.PSS(padding.MGF1(hashes.SHA384()), 32), hashes.SHA384())
    sha256 = key.sign(b"m", padding.PSS(padding.MGF1(hashes.SHA256()), 48), hashes.SHA256())
    pkcs1 = key.sign(b"m", padding.PKCS1v15(), hashes.SHA384())
    for signed, signature in ((b"n", good), (b"m", short_salt), (b"m", sha256),
                              (b"m", pkcs1), (b"m", good[:-1] + bytes([good[-1] ^ 1]))):
        with pytest.raises(SignatureError, match=message):
            verify_pss(public, signed, signature)
    other = rsa.generate_private_key(65537, 2048).public_key()
    with pytest.raises(SignatureError, match=message):
        verify_pss(other, b"m", good)
    with pytest.raises(InvalidSignature):
        public.verify(good, b"m", padding.PSS(padding.MGF1(hashes.SHA384()), 32),
                      hashes.SHA384())


def test_pem_and_der_refusals_say_what_is_wrong() -> None:
    key = rsa.generate_private_key(65537, 2048)
    encrypted = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"pass"))
    with pytest.raises(FormatError, match=r"^not an unencrypted PEM private key$"):
        private_key_from_pem(encrypted)
    with pytest.raises(FormatError, match=r"^not an unencrypted PEM private key$"):
        private_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    ec_public = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(FormatError, match=r"^the key is not an RSA key$"):
        public_key_from_der(ec_public)
    with pytest.raises(FormatError, match=r"^not a DER SubjectPublicKeyInfo$"):
        public_key_from_der(b"\x30\x00")
    spki = public_key_der(key.public_key())
    assert spki == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_an_ec_private_key_is_refused_by_its_exact_message() -> None:
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(FormatError, match=r"^the private key is not an RSA key$"):
        private_key_from_pem(pem)


def test_a_fresh_key_is_rsa_4096_by_default() -> None:
    """AMD's ARK and ASK are RSA-4096: the emulated vendor's roots take the default."""
    assert new_private_key().key_size == 4096
