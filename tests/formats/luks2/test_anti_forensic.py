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
