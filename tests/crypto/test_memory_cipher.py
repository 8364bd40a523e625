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


def _reference_encrypt(key: bytes, page_address: int, plaintext: bytes) -> bytes:
    """The documented construction, block by block: secrets from the tweak key, the tweak of
    each 16-byte block the XOR of the base and one secret per set address bit (bits 4..11 whole,
    bits 12..51 as a 64-bit value in both halves), ``C = E_K(P xor T) xor T``."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    tweak_aes = Cipher(algorithms.AES(ecb.update(b"cvm-xex-tweakkey")), modes.ECB()).encryptor()
    secrets = [int.from_bytes(tweak_aes.update(i.to_bytes(16, "little")), "little")
               for i in range(1 + 8 + 40)]
    out = bytearray()
    for index in range(PAGE_SIZE // 16):
        address = page_address + 16 * index
        tweak = secrets[0]
        for bit in range(4, 52):
            if address >> bit & 1:
                secret = secrets[1 + bit - 4]
                if bit >= 12:
                    secret &= (1 << 64) - 1
                    secret |= secret << 64
                tweak ^= secret
        mixed = int.from_bytes(plaintext[16 * index : 16 * index + 16], "little") ^ tweak
        cipher = int.from_bytes(ecb.update(mixed.to_bytes(16, "little")), "little") ^ tweak
        out += cipher.to_bytes(16, "little")
    return bytes(out)


@pytest.mark.parametrize("page_address", [0, 0x1000, 0x7_1234_5000, (1 << 52) - PAGE_SIZE])
def test_the_cipher_is_the_documented_construction(page_address: int) -> None:
    key = bytes(range(16, 32))
    plain = np.random.default_rng(page_address % 97).integers(0, 256, PAGE_SIZE, dtype=np.uint8)
    expected = _reference_encrypt(key, page_address, plain.tobytes())
    cipher = XexMemoryCipher(key)
    assert cipher.encrypt(page_address, plain.tobytes()) == expected
    stored = np.zeros(PAGE_SIZE, dtype=np.uint8)
    cipher.encrypt_page(page_address, plain.tobytes(), stored)
    assert stored.tobytes() == expected
    if page_address:  # the run path computes the same tweaks
        run = cipher.encrypt(page_address - PAGE_SIZE, bytes(PAGE_SIZE) + plain.tobytes())
        assert run[PAGE_SIZE:] == expected


def test_a_pages_tweaks_are_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cipher = XexMemoryCipher(b"c" * 16)
    calls: list[int] = []
    original = cipher.frame_tweak
    monkeypatch.setattr(cipher, "frame_tweak", lambda frame: calls.append(frame) or original(frame))
    stored = np.zeros(PAGE_SIZE, dtype=np.uint8)
    for _ in range(3):
        cipher.encrypt_page(0x3000, bytes(PAGE_SIZE), stored)
        cipher.decrypt_page(0x3000, stored)
    assert calls == [3]


def test_the_general_operations_refuse_what_is_not_whole_pages() -> None:
    cipher = XexMemoryCipher(b"r" * 16)
    with pytest.raises(UsageError, match="whole pages: address -0x1000"):
        cipher.encrypt(-PAGE_SIZE, bytes(PAGE_SIZE))
    source = np.zeros(PAGE_SIZE, dtype=np.uint8)
    with pytest.raises(UsageError, match="target holds 8192 bytes, source 4096"):
        cipher.encrypt_into(0, source, np.zeros(2 * PAGE_SIZE, dtype=np.uint8))


def test_page_zero_is_a_page_like_any_other() -> None:
    cipher = XexMemoryCipher(b"z" * 16)
    stored = np.zeros(PAGE_SIZE, dtype=np.uint8)
    cipher.encrypt_page(0, b"\x01" * PAGE_SIZE, stored)
    assert cipher.decrypt_page(0, stored) == b"\x01" * PAGE_SIZE
