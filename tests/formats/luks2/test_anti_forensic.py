"""AF splitter (LUKS1 spec v1.2.3 section 2.4): merge inverts split; a known answer."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.luks2.anti_forensic import af_merge, af_size, af_split


@settings(deadline=None, max_examples=30)
@given(st.binary(min_size=16, max_size=64), st.integers(1, 50),
       st.sampled_from(["sha1", "sha256", "sha512"]))
def test_merge_inverts_split(key: bytes, stripes: int, hash_name: str) -> None:
    material = af_split(key, stripes, hash_name, os.urandom)
    assert len(material) == len(key) * stripes
    assert af_merge(material, len(key), stripes, hash_name) == key


def test_two_stripes_by_hand() -> None:
    key, noise = bytes(range(32)), bytes(range(100, 132))
    material = af_split(key, 2, "sha256", lambda n: noise[:n])
    diffused = hashlib.sha256(b"\0\0\0\0" + noise).digest()
    assert material == noise + bytes(a ^ b for a, b in zip(diffused, key, strict=True))


def test_sizes_and_short_material() -> None:
    assert af_size(64, 4000) == 256000
    assert af_size(32, 4000) == 128000
    with pytest.raises(FormatError):
        af_merge(b"\0" * 10, 32, 4000, "sha256")


def _reference_split(key: bytes, noise: bytes, stripes: int, hash_name: str) -> bytes:
    """LUKS1 spec 2.4, written out block by block: H hashes be32(i) || block i of each
    digest-sized block (the last one cut short) and keeps the digest's first bytes."""
    size = len(key)
    width = hashlib.new(hash_name).digest_size

    def diffuse(buffer: bytes) -> bytes:
        out = b""
        for i in range((size + width - 1) // width):
            block = buffer[i * width : (i + 1) * width]
            out += hashlib.new(hash_name, i.to_bytes(4, "big") + block).digest()[: len(block)]
        return out

    digest = bytes(size)
    for k in range(stripes - 1):
        stripe = noise[k * size : (k + 1) * size]
        digest = diffuse(bytes(a ^ b for a, b in zip(digest, stripe, strict=True)))
    return noise + bytes(a ^ b for a, b in zip(digest, key, strict=True))


@pytest.mark.parametrize(("size", "hash_name"), [
    (64, "sha256"), (40, "sha256"), (32, "sha1"), (40, "sha1"), (65, "sha512"), (64, "sha512"),
    (7, "sha1"), (128, "sha512"), (60, "sha1"), (96, "sha256"), (32, "sha256"), (20, "sha1"),
])
def test_keys_of_several_digest_blocks_split_as_the_spec_writes_it(size: int,
                                                                   hash_name: str) -> None:
    key = bytes((7 * i + 3) % 256 for i in range(size))
    noise = bytes((11 * i + 5) % 256 for i in range(size * 4))
    material = af_split(key, 5, hash_name, lambda n: noise[:n])
    assert material == _reference_split(key, noise, 5, hash_name)
    assert af_merge(material, size, 5, hash_name) == key
