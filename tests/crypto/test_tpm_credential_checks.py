"""The refusals and edge cases of TPM credential protection that the known answers do not reach:
an EK with a non-default public exponent, an empty credential, a blob too short to hold its
fields and a blob whose HMAC is right but whose plaintext is not a TPM2B_DIGEST."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cvm.crypto.tpm_credential import activate_credential, make_credential
from cvm.crypto.tpm_kdf import aes_cfb_encrypt, hmac, kdfa
from cvm.errors import IntegrityError

NAME = b"\x00\x0b" + hashlib.sha256(b"an AK").digest()
SEED = bytes(range(32))


def _blob(plain: bytes) -> bytes:
    """A TPM2B_ID_OBJECT for ``SEED`` and ``NAME`` whose encIdentity decrypts to ``plain``."""
    enc_identity = aes_cfb_encrypt(kdfa("sha256", SEED, b"STORAGE", NAME, b"", bits=128),
                                   bytes(16), plain)
    integrity = hmac("sha256", kdfa("sha256", SEED, b"INTEGRITY", b"", b"", bits=256),
                     enc_identity, NAME)
    return b"\x00\x20" + integrity + enc_identity


def test_the_seed_is_encrypted_with_the_eks_own_exponent() -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=2048)
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    blob, secret = make_credential(modulus, 3, "sha256", 128, NAME, b"credential",
                                   lambda size: SEED[:size])
    seed = key.decrypt(secret, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(),
                                            b"IDENTITY\x00"))
    assert seed == SEED
    assert activate_credential(seed, "sha256", 128, NAME, blob) == b"credential"


def test_an_empty_credential_round_trips() -> None:
    blob, _ = make_credential(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        .public_numbers().n.to_bytes(256, "big"), 65537, "sha256", 128, NAME, b"",
        lambda size: SEED[:size])
    assert blob == _blob(b"\x00\x00") and len(blob) == 2 + 32 + 2
    assert activate_credential(SEED, "sha256", 128, NAME, blob) == b""


@pytest.mark.parametrize("length", [0, 1, 2, 33, 34, 35])
def test_a_blob_without_room_for_its_fields_is_too_short(length: int) -> None:
    blob = _blob(b"\x00\x00")[:length]
    with pytest.raises(IntegrityError, match=r"^credential blob is too short$"):
        activate_credential(SEED, "sha256", 128, NAME, blob)


def test_an_integrity_size_beyond_the_blob_is_too_short() -> None:
    blob = b"\xff\xff" + os.urandom(40)
    with pytest.raises(IntegrityError, match=r"^credential blob is too short$"):
        activate_credential(SEED, "sha256", 128, NAME, blob)


@pytest.mark.parametrize("plain", [b"\x00\x05abc", b"\x00\x01abc", b"\x01\x03abc"])
def test_a_plaintext_that_is_not_a_tpm2b_digest_is_refused(plain: bytes) -> None:
    blob = _blob(plain)
    with pytest.raises(IntegrityError,
                       match=r"^credential does not decrypt to a TPM2B_DIGEST$"):
        activate_credential(SEED, "sha256", 128, NAME, blob)


def test_a_well_formed_plaintext_opens() -> None:
    assert activate_credential(SEED, "sha256", 128, NAME, _blob(b"\x00\x03abc")) == b"abc"
