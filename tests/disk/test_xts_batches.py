"""Batched AES-XTS (IEEE 1619 section 5) equals one ``cryptography`` call per sector."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.crypto.xts import XtsCipher, encrypt_contiguous, encrypt_one_sector
from cvm.errors import UsageError


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([32, 64]), st.sampled_from([512, 1024, 2048, 4096]),
       st.integers(0, 40), st.integers(0, 2**63), st.sampled_from([1, 2]))
def test_batches_equal_per_sector_calls(key_size: int, sector_size: int, count: int,
                                        first_iv: int, threads: int) -> None:
    key = os.urandom(key_size)
    data = os.urandom(count * sector_size)
    cipher = XtsCipher(key, threads=threads)
    out = cipher.encrypt_sectors(data, first_iv, sector_size)
    step = sector_size // 512
    expected = b"".join(
        encrypt_one_sector(key, first_iv + i * step, data[i * sector_size :][:sector_size])
        for i in range(count))
    assert out == expected
    assert cipher.decrypt_sectors(out, first_iv, sector_size) == data


def test_many_batches_with_threads() -> None:
    key = os.urandom(64)
    data = os.urandom(3 << 20)
    one = XtsCipher(key).encrypt_sectors(data, 7, 4096)
    two = XtsCipher(key, threads=2).encrypt_sectors(data, 7, 4096)
    assert one == two
    at = (2 << 20) + 4096
    assert one[at : at + 4096] == encrypt_one_sector(key, 7 + at // 512, data[at : at + 4096])


def test_known_answer_ieee1619_vector_4() -> None:
    # IEEE 1619-2007 Annex B, XTS-AES-128 vector 4: data unit 0, 512 bytes of 00..ff twice.
    key = bytes.fromhex("27182818284590452353602874713526" "31415926535897932384626433832795")
    plain = bytes(range(256)) * 2
    out = XtsCipher(key).encrypt_sectors(plain, 0, 512)
    assert out[:16].hex() == "27a7479befa1d476489f308cd4cfa6e2"


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        XtsCipher(b"\0" * 64)
    with pytest.raises(UsageError):
        XtsCipher(os.urandom(48))
    with pytest.raises(UsageError):
        XtsCipher(os.urandom(64)).encrypt_sectors(b"\0" * 100, 0, 512)
    with pytest.raises(UsageError):
        encrypt_contiguous(os.urandom(64), b"\0" * ((1 << 24) + 16))
