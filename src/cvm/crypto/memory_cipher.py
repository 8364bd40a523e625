"""The cipher of the memory encryption engine: AES-128 in XEX mode with a physical-address tweak.

SEV encrypts guest memory in the memory controller with a per-ASID AES-128 key and a tweak
derived from the **system physical address** of each 16-byte block (AMD SEV whitepaper; the
engine's exact tweak function is not published). cvm uses the structure public analyses
describe for Zen 2 and later: the tweak of address ``pa`` is the XOR of one secret 128-bit
value per set address bit, ``T(pa) = XOR{ t_i : bit i of pa is 1 }`` for bits 4..51, and a
block is ``C = E_K(P xor T) xor T``. The same plaintext at two addresses therefore yields
different ciphertext, and ciphertext moved to another address decrypts to garbage.

The tweak of a block is the XOR of two parts: the in-page part (address bits 4..11, plus a secret
base so that address 0 has a non-zero tweak) is one precomputed 4 KiB table of 128-bit values;
the page part (bits 12..51) is a 64-bit secret per set bit, folded into both halves of the
block. A run of pages therefore costs one ECB call and three contiguous vectorised XORs however
many blocks it holds. A single page's tweaks are kept once computed (up to
:data:`TWEAK_CACHE_PAGES` pages, the oldest forgotten first), as a memory controller derives them
in its pipeline rather than per access: a guest's page-at-a-time traffic then costs two XORs and
one ECB call per page.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from cvm.errors import UsageError

BLOCK_SIZE = 16
PAGE_SIZE = 0x1000
BLOCKS_PER_PAGE = PAGE_SIZE // BLOCK_SIZE
KEY_SIZE = 16
ADDRESS_BITS = 52
_FRAME_BITS = ADDRESS_BITS - 12  # bits 12..51 of the address
_FRAME_BYTES = (_FRAME_BITS + 7) // 8
_WORDS_PER_PAGE = PAGE_SIZE // 8
_WORD = np.dtype(np.uint64)
_NO_WORDS = np.empty(0, dtype=np.uint64)
TWEAK_CACHE_PAGES = 1024  # 4 MiB of tweaks per key at most


class XexMemoryCipher:
    """AES-128-XEX keyed per ASID; works on whole pages at a system physical page address."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise UsageError(f"memory encryption key must be {KEY_SIZE} bytes, got {len(key)}")
        aes = Cipher(algorithms.AES(key), modes.ECB())
        self._encryptor = aes.encryptor()
        self._decryptor = aes.decryptor()
        # Tweak secrets: encryptions of distinct constants under a key derived from the data
        # key, so they are as secret as the key itself.
        tweak_key = self._encryptor.update(b"cvm-xex-tweakkey")
        tweak_aes = Cipher(algorithms.AES(tweak_key), modes.ECB()).encryptor()
        count = 1 + 8 + _FRAME_BITS
        secrets = tweak_aes.update(b"".join(i.to_bytes(BLOCK_SIZE, "little") for i in range(count)))
        blocks = np.frombuffer(secrets, dtype=np.uint8).reshape(count, BLOCK_SIZE)
        base, offset_bits = blocks[0], blocks[1:9]
        offset_table = _xor_table(offset_bits) ^ base
        self._offset_words = offset_table.ravel().view(np.uint64).copy()
        # one 8-bit table per byte of the frame number (bits 12..19, 20..27, ...)
        frame_bits = np.ascontiguousarray(blocks[9:, :8]).view("<u8").ravel()
        self._frame_tables = [_xor_words(row) for row in frame_bits.reshape(_FRAME_BYTES, 8)]
        self._frame_ints = [table.tolist() for table in self._frame_tables]
        self._page_tweaks: dict[int, np.ndarray] = {}
        self._page_mixed = np.empty(_WORDS_PER_PAGE, dtype=np.uint64)
        self._page_mixed_bytes = self._page_mixed.view(np.uint8).data
        page_out = np.empty(PAGE_SIZE + BLOCK_SIZE, dtype=np.uint8)
        self._page_out = page_out.data
        self._page_out_words = page_out[:PAGE_SIZE].view(np.uint64)
        # a run's buffers, grown by _grow before their first use
        self._tweak = self._mixed = _NO_WORDS
        self._ecb_out = _NO_WORDS.view(np.uint8)

    def _grow(self, words: int) -> None:
        if self._tweak.size < words:
            self._tweak = np.empty(words, dtype=np.uint64)
            self._mixed = np.empty(words, dtype=np.uint64)
            self._ecb_out = np.empty(words * 8 + BLOCK_SIZE, dtype=np.uint8)

    def frame_tweak(self, frame: int) -> int:
        """The 64-bit page part of the tweak for page frame number ``frame``."""
        value = 0
        for i, table in enumerate(self._frame_ints):
            value ^= table[(frame >> (8 * i)) & 0xFF]
        return value

    def tweaks(self, page_address: int, pages: int) -> np.ndarray:
        """The tweak of every 16-byte block of ``pages`` pages from ``page_address`` (uint64 pairs).

        For one page the result is that page's cached, read-only tweaks; for a run it is a view
        into a reused buffer, valid until the next call.
        """
        first = page_address >> 12
        if pages == 1:
            return self._page_tweak(first)
        self._grow(pages * _WORDS_PER_PAGE)
        out = self._tweak[: pages * _WORDS_PER_PAGE]
        frames = np.arange(first, first + pages, dtype=np.uint64)
        page_part = np.zeros(pages, dtype=np.uint64)
        for i, table in enumerate(self._frame_tables):
            page_part ^= table[((frames >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.intp)]
        np.bitwise_xor(
            self._offset_words[None, :],
            page_part[:, None],
            out=out.reshape(pages, _WORDS_PER_PAGE),
        )
        return out

    def _page_tweak(self, frame: int) -> np.ndarray:
        """The tweaks of one page (read-only), from the cache or computed and cached."""
        tweak = self._page_tweaks.get(frame)
        if tweak is None:
            tweak = self._offset_words ^ np.uint64(self.frame_tweak(frame))
            tweak.flags.writeable = False
            if len(self._page_tweaks) >= TWEAK_CACHE_PAGES:
                del self._page_tweaks[next(iter(self._page_tweaks))]
            self._page_tweaks[frame] = tweak
        return tweak

    def encrypt(self, page_address: int, plaintext: bytes) -> bytes:
        """Encrypt whole pages of ``plaintext`` that live at system physical ``page_address``."""
        return self._apply(self._encryptor, page_address, plaintext)

    def decrypt(self, page_address: int, ciphertext: bytes) -> bytes:
        """Decrypt whole pages of ``ciphertext`` read at system physical ``page_address``."""
        return self._apply(self._decryptor, page_address, ciphertext)

    def encrypt_into(self, page_address: int, source: np.ndarray, target: np.ndarray) -> None:
        """Encrypt ``source`` (uint8, whole pages) into ``target`` (may be the same array)."""
        self._apply_into(self._encryptor, page_address, source, target)

    def decrypt_into(self, page_address: int, source: np.ndarray, target: np.ndarray) -> None:
        """Decrypt ``source`` (uint8, whole pages) into ``target`` (may be the same array)."""
        self._apply_into(self._decryptor, page_address, source, target)

    def encrypt_page(
        self, page_address: int, plaintext: bytes | bytearray, target: np.ndarray
    ) -> None:
        """Encrypt one page of ``plaintext`` (4 KiB) into ``target`` (a 4 KiB uint8
        array, DRAM's view of the page): a guest's store of a whole page."""
        _check_page(page_address, len(plaintext))
        self._one_page(self._encryptor, page_address, np.frombuffer(plaintext, _WORD),
                       target.view(_WORD))

    def decrypt_page(self, page_address: int, ciphertext: np.ndarray) -> bytes:
        """Decrypt one stored page (a 4 KiB uint8 array): a guest's load, as bytes."""
        _check_page(page_address, ciphertext.size)
        self._one_page(self._decryptor, page_address, ciphertext.view(_WORD), self._page_mixed)
        return self._page_mixed.tobytes()

    def _one_page(self, context: CipherContext, page_address: int, source: np.ndarray,
                  target: np.ndarray) -> None:
        """XEX over one page of 64-bit words with the page's cached tweaks, through the fixed
        one-page buffers (``target`` may be the source or the mixing buffer)."""
        tweak = self._page_tweak(page_address >> 12)
        np.bitwise_xor(source, tweak, out=self._page_mixed)
        context.update_into(self._page_mixed_bytes, self._page_out)
        np.bitwise_xor(self._page_out_words, tweak, out=target)

    def _apply(self, context: CipherContext, page_address: int, data: bytes) -> bytes:
        source = np.frombuffer(data, dtype=np.uint8)
        target = np.empty(len(source), dtype=np.uint8)
        self._apply_into(context, page_address, source, target)
        return target.tobytes()

    def _apply_into(
        self, context: CipherContext, page_address: int, source: np.ndarray, target: np.ndarray
    ) -> None:
        size = len(source)
        if page_address % PAGE_SIZE or size % PAGE_SIZE or page_address < 0:
            raise UsageError(
                f"memory cipher works on whole pages: address {page_address:#x}, size {size:#x}"
            )
        if len(target) != size:
            raise UsageError(f"target holds {len(target)} bytes, source {size}")
        if size == PAGE_SIZE:
            self._one_page(context, page_address, source.view(_WORD), target.view(_WORD))
            return
        tweak = self.tweaks(page_address, size // PAGE_SIZE)
        self._grow(tweak.size)
        mixed = self._mixed[: tweak.size]
        np.bitwise_xor(source.view(np.uint64), tweak, out=mixed)
        ecb_out = self._ecb_out[: size + BLOCK_SIZE]
        context.update_into(mixed.view(np.uint8).data, ecb_out.data)
        np.bitwise_xor(ecb_out[:size].view(np.uint64), tweak, out=target.view(np.uint64))


def _check_page(page_address: int, size: int) -> None:
    if page_address % PAGE_SIZE or page_address < 0 or size != PAGE_SIZE:
        raise UsageError(
            f"a page operation needs one whole page: address {page_address:#x}, size {size:#x}"
        )


def _xor_table(bit_values: np.ndarray) -> np.ndarray:
    """For n in 0..2**len(bit_values)-1, the XOR of ``bit_values[i]`` (16-byte rows) over the
    set bits i of n."""
    table = np.zeros((1 << len(bit_values), BLOCK_SIZE), dtype=np.uint8)
    for bit, value in enumerate(bit_values):
        step = 1 << bit
        table[step : 2 * step] = table[:step] ^ value
    return table


def _xor_words(bit_values: np.ndarray) -> np.ndarray:
    """For n in 0..2**len(bit_values)-1, the XOR of ``bit_values[i]`` (64-bit words) over the
    set bits i of n."""
    table = np.zeros(1 << len(bit_values), dtype=np.uint64)
    for bit, value in enumerate(bit_values):
        step = 1 << bit
        table[step : 2 * step] = table[:step] ^ value
    return table
