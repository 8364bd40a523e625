"""AF merge's limits: the smallest key and stripe count, and what it refuses, by name."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.anti_forensic import af_merge, af_size, af_split

SHORT = r"^AF merge: key material shorter than key_size \* stripes$"


def test_a_one_byte_key_in_one_stripe_is_the_key() -> None:
    assert af_split(b"\x5a", 1, "sha256", lambda n: b"") == b"\x5a"
    assert af_merge(b"\x5a", 1, 1, "sha256") == b"\x5a"
    material = af_split(b"\x5a", 3, "sha1", lambda n: bytes(range(7, 7 + n)))
    assert af_merge(material, 1, 3, "sha1") == b"\x5a"


@pytest.mark.parametrize(("material", "key_size", "stripes"), [
    (bytes(31), 32, 1), (bytes(32 * 4000 - 1), 32, 4000), (bytes(64), 0, 1),
    (bytes(64), 32, 0), (bytes(64), -1, 1), (bytes(64), 32, -1), (b"", 0, 0),
])
def test_impossible_merges_are_named(material: bytes, key_size: int, stripes: int) -> None:
    with pytest.raises(FormatError, match=SHORT):
        af_merge(material, key_size, stripes, "sha256")


def test_longer_material_is_read_up_to_its_stripes() -> None:
    key = bytes(range(32))
    material = af_split(key, 4, "sha512", bytes)
    assert af_merge(material + b"\xff" * 100, 32, 4, "sha512") == key


def test_unknown_hashes_and_empty_splits_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"^unsupported AF hash 'md5'$"):
        af_merge(bytes(64), 32, 2, "md5")
    with pytest.raises(UsageError, match=r"^unsupported AF hash 'sha384'$"):
        af_split(bytes(32), 2, "sha384", bytes)
    with pytest.raises(UsageError, match=r"^AF split needs a key and at least one stripe$"):
        af_split(b"", 2, "sha256", bytes)
    with pytest.raises(UsageError, match=r"^AF split needs a key and at least one stripe$"):
        af_split(bytes(32), 0, "sha256", bytes)
    with pytest.raises(UsageError, match=r"^AF split: the random source returned the wrong "):
        af_split(bytes(32), 2, "sha256", lambda n: bytes(n + 1))


def test_sizes_round_up_to_whole_sectors() -> None:
    assert af_size(1, 1) == 512
    assert af_size(512, 1) == 512
    assert af_size(513, 1) == 1024
    assert af_size(64, 8) == 512
