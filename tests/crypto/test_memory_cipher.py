"""The XEX memory cipher: tweak per 16-byte block, bulk equals page by page."""

from __future__ import annotations

import numpy as np
import pytest

from cvm.crypto.memory_cipher import PAGE_SIZE, XexMemoryCipher
from cvm.errors import UsageError


def test_bulk_equals_page_by_page_and_round_trips() -> None:
    cipher = XexMemoryCipher(bytes(range(16)))
    plain = np.random.default_rng(1).integers(0, 256, 5 * PAGE_SIZE, dtype=np.uint8)
    bulk = cipher.encrypt(0x7_0000_0000, plain.tobytes())
    pages = [plain[i * PAGE_SIZE : (i + 1) * PAGE_SIZE].tobytes() for i in range(5)]
    paged = b"".join(
        cipher.encrypt(0x7_0000_0000 + i * PAGE_SIZE, page) for i, page in enumerate(pages)
    )
    assert bulk == paged
    assert cipher.decrypt(0x7_0000_0000, bulk) == plain.tobytes()


def test_tweak_depends_on_every_address_bit() -> None:
    cipher = XexMemoryCipher(b"k" * 16)
    base = cipher.tweaks(0, 1).copy().reshape(-1, 2)
    assert len({tuple(row) for row in base}) == PAGE_SIZE // 16
    for bit in range(12, 52):
        moved = cipher.tweaks(1 << bit, 1).reshape(-1, 2)
        assert not np.array_equal(moved, base)


def test_other_key_gives_other_ciphertext() -> None:
    page = bytes(PAGE_SIZE)
    one, two = XexMemoryCipher(b"a" * 16), XexMemoryCipher(b"b" * 16)
    assert one.encrypt(0, page) != two.encrypt(0, page)


def test_misuse_is_refused() -> None:
    with pytest.raises(UsageError, match="16 bytes"):
        XexMemoryCipher(b"short")
    with pytest.raises(UsageError, match="whole pages"):
        XexMemoryCipher(b"k" * 16).encrypt(0x800, bytes(PAGE_SIZE))
