"""AES-256-GCM (crypto/aead.py) against NIST SP 800-38D / McGrew-Viega test case 14 and
detail-free failures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.crypto import aead
from cvm.errors import IntegrityError, UsageError


def test_gcm_spec_test_case_14() -> None:
    # "The Galois/Counter Mode of Operation (GCM)", McGrew & Viega, Test Case 14 (AES-256).
    key, iv = bytes(32), bytes(12)
    ciphertext, tag = aead.encrypt(key, iv, bytes(16), b"")
    assert ciphertext.hex() == "cea7403d4d606b6e074ec5d3baf39d18"
    assert tag.hex() == "d0d1c8a799996bf0265b98b5d48ab919"
    assert aead.decrypt(key, iv, ciphertext, tag, b"") == bytes(16)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200), st.binary(max_size=64))
def test_round_trip_and_tamper(key: bytes, plaintext: bytes, aad: bytes) -> None:
    iv = (7).to_bytes(8, "little") + bytes(4)
    ciphertext, tag = aead.encrypt(key, iv, plaintext, aad)
    assert len(ciphertext) == len(plaintext) and len(tag) == 16
    assert aead.decrypt(key, iv, ciphertext, tag, aad) == plaintext
    with pytest.raises(IntegrityError):
        aead.decrypt(key, iv, ciphertext, tag, aad + b"x")
    with pytest.raises(IntegrityError):
        aead.decrypt(key, iv, ciphertext, bytes(a ^ 1 for a in tag), aad)


def test_bad_sizes() -> None:
    with pytest.raises(UsageError):
        aead.encrypt(bytes(16), bytes(12), b"", b"")
    with pytest.raises(UsageError):
        aead.encrypt(bytes(32), bytes(16), b"", b"")
    with pytest.raises(IntegrityError):
        aead.decrypt(bytes(32), bytes(12), b"", bytes(8), b"")
