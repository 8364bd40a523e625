"""The XEX memory cipher: tweak per 16-byte block, bulk equals page by page."""

from __future__ import annotations

import numpy as np
import pytest

from cvm.crypto import memory_cipher
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


def test_cached_page_tweaks_equal_the_computed_ones_across_eviction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory_cipher, "TWEAK_CACHE_PAGES", 4)
    cipher = XexMemoryCipher(b"t" * 16)
    fresh = XexMemoryCipher(b"t" * 16)
    frames = [0, 1, 0x12345, (1 << 40) - 1, 7, 8, 0, 1]  # more frames than the cache holds
    for frame in frames:
        one = cipher.tweaks(frame * PAGE_SIZE, 1)
        # the run path computes the same page's tweaks without the cache
        run = fresh.tweaks(frame * PAGE_SIZE, 2)[: PAGE_SIZE // 8]
        assert np.array_equal(one, run)
        assert not one.flags.writeable
    assert len(cipher._page_tweaks) == 4


def test_one_page_in_place_round_trips() -> None:
    cipher = XexMemoryCipher(b"p" * 16)
    plain = np.random.default_rng(2).integers(0, 256, PAGE_SIZE, dtype=np.uint8)
    page = plain.copy()
    cipher.encrypt_into(0x5000, page, page)
    assert not np.array_equal(page, plain)
    assert page.tobytes() == cipher.encrypt(0x5000, plain.tobytes())
    cipher.decrypt_into(0x5000, page, page)
    assert np.array_equal(page, plain)


def test_one_page_operations_equal_the_general_ones() -> None:
    cipher = XexMemoryCipher(b"q" * 16)
    plain = np.random.default_rng(3).integers(0, 256, PAGE_SIZE, dtype=np.uint8).tobytes()
    stored = np.zeros(PAGE_SIZE, dtype=np.uint8)
    cipher.encrypt_page(0x9000, plain, stored)
    assert stored.tobytes() == cipher.encrypt(0x9000, plain)
    assert cipher.decrypt_page(0x9000, stored) == plain
    cipher.encrypt_page(0x9000, bytearray(plain), stored)  # a bytearray as well
    assert cipher.decrypt_page(0x9000, stored) == plain
    assert cipher.decrypt_page(0xA000, stored) != plain  # moved: garbage


@pytest.mark.parametrize(("address", "size"), [(0x800, PAGE_SIZE), (0x1000, PAGE_SIZE - 8),
                                                (0x1000, 2 * PAGE_SIZE), (-PAGE_SIZE, PAGE_SIZE)])
def test_one_page_operations_refuse_anything_but_one_page(address: int, size: int) -> None:
    cipher = XexMemoryCipher(b"q" * 16)
    with pytest.raises(UsageError, match="one whole page"):
        cipher.encrypt_page(address, bytes(size), np.zeros(PAGE_SIZE, dtype=np.uint8))
    with pytest.raises(UsageError, match="one whole page"):
        cipher.decrypt_page(address, np.zeros(size, dtype=np.uint8))
