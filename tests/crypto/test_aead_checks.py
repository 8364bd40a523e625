"""AES-256-GCM (crypto/aead.py): each refusal with its error class and its exact message.

The key and IV sizes are the caller's mistakes (UsageError naming the size given); a tag of
the wrong length and a failed authentication are both IntegrityErrors that say nothing about
the key or the plaintext. Found by the mutation run of docs/mutation/crypto.md.
"""

from __future__ import annotations

import pytest

from cvm.crypto import aead
from cvm.errors import IntegrityError, UsageError


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_a_key_of_another_size_is_a_usage_error_naming_it(size: int) -> None:
    with pytest.raises(UsageError, match=rf"^AES-256-GCM needs a 32-byte key, got {size}$"):
        aead.encrypt(bytes(size), bytes(12), b"", b"")
    with pytest.raises(UsageError, match=rf"^AES-256-GCM needs a 32-byte key, got {size}$"):
        aead.decrypt(bytes(size), bytes(12), b"", bytes(16), b"")


@pytest.mark.parametrize("size", [0, 8, 11, 13, 16])
def test_an_iv_of_another_size_is_a_usage_error_naming_it(size: int) -> None:
    with pytest.raises(UsageError, match=rf"^AES-256-GCM here uses a 12-byte IV, got {size}$"):
        aead.encrypt(bytes(32), bytes(size), b"", b"")


@pytest.mark.parametrize("size", [0, 12, 15, 17])
def test_a_tag_of_another_length_is_an_integrity_error(size: int) -> None:
    ciphertext, _ = aead.encrypt(bytes(32), bytes(12), b"secret", b"")
    with pytest.raises(IntegrityError, match=r"^AES-256-GCM tag has the wrong length$"):
        aead.decrypt(bytes(32), bytes(12), ciphertext, bytes(size), b"")


def test_a_failed_authentication_says_only_that() -> None:
    ciphertext, tag = aead.encrypt(bytes(32), bytes(12), b"secret", b"aad")
    for key, iv, body, aad in ((b"\x01" * 32, bytes(12), ciphertext, b"aad"),
                               (bytes(32), b"\x01" * 12, ciphertext, b"aad"),
                               (bytes(32), bytes(12), ciphertext[:-1], b"aad"),
                               (bytes(32), bytes(12), ciphertext, b"aaD")):
        with pytest.raises(IntegrityError, match=r"^AES-256-GCM authentication failed$"):
            aead.decrypt(key, iv, body, tag, aad)
