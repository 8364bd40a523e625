"""Seeded RSA key generation and RSASSA-PSS (RFC 8017) checked by ``cryptography``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cvm.crypto.drbg import SeededRandom
from cvm.crypto.rsa_pss import (
    generate_private_key,
    new_private_key,
    private_key_from_pem,
    private_key_to_pem,
    public_key_der,
    public_key_from_der,
    sign_pss,
    verify_pss,
)
from cvm.errors import FormatError, SignatureError, UsageError


def test_seeded_generation_is_reproducible_and_seed_dependent() -> None:
    first = generate_private_key(b"seed-a", "test", 2048)
    generate_private_key.cache_clear()
    again = generate_private_key(b"seed-a", "test", 2048)
    other = generate_private_key(b"seed-b", "test", 2048)
    assert first.private_numbers() == again.private_numbers()
    assert first.public_key().public_numbers() != other.public_key().public_numbers()
    assert first.key_size == 2048 and first.public_key().public_numbers().e == 65537


def test_pss_signature_verifies_with_cryptography() -> None:
    key = generate_private_key(b"seed-a", "test", 2048)
    salt = SeededRandom(b"salt")(48)
    signature = sign_pss(key, b"tbs", salt)
    assert signature == sign_pss(key, b"tbs", salt)
    verify_pss(key.public_key(), b"tbs", signature)
    with pytest.raises(SignatureError):
        verify_pss(key.public_key(), b"tbs!", signature)
    with pytest.raises(UsageError):
        sign_pss(key, b"tbs", bytes(32))


def test_public_key_der_round_trip() -> None:
    key = generate_private_key(b"seed-a", "test", 2048).public_key()
    assert public_key_from_der(public_key_der(key)).public_numbers() == key.public_numbers()
    with pytest.raises(FormatError):
        public_key_from_der(b"\x30\x00")
    with pytest.raises(UsageError):
        generate_private_key(b"x", "y", 1000)


def test_seeded_random_streams() -> None:
    stream = SeededRandom(b"s")
    assert stream(16) != stream(16)
    assert SeededRandom(b"s")(16) == SeededRandom(b"s")(16)
    assert SeededRandom(b"s").fork(b"a")(16) != SeededRandom(b"s").fork(b"b")(16)


def test_new_keys_and_their_pem() -> None:
    key = new_private_key(2048)
    other = new_private_key(2048)
    assert key.key_size == 2048 and key.public_key().public_numbers().e == 65537
    assert key.private_numbers() != other.private_numbers()
    again = private_key_from_pem(private_key_to_pem(key))
    assert again.private_numbers() == key.private_numbers()
    assert private_key_to_pem(key).startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(UsageError):
        new_private_key(1000)
    with pytest.raises(FormatError, match="not an unencrypted PEM"):
        private_key_from_pem(b"junk")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(FormatError, match="not an RSA key"):
        private_key_from_pem(ec_pem)
