"""The memory encryption engine: one AES-128 key per ASID, generated here and never exported.

Accesses marked private (C-bit set) by a guest of ASID ``n`` are encrypted on write and decrypted
on read with ASID ``n``'s key and a tweak from the system physical address
(:mod:`cvm.crypto.memory_cipher`); shared accesses and the host's own go to DRAM as they are.
The engine works on whole pages internally: a partial write is a read-modify-write of the
pages it touches, as the real engine's cache-line granularity implies.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cvm.crypto.memory_cipher import KEY_SIZE, XexMemoryCipher
from cvm.errors import StateError, UsageError
from cvm.hardware.memory.dram import CHUNK_SIZE, PAGE_SIZE, Dram

MAX_ASID = 509  # EPYC Milan: CPUID 0x8000001F ECX


class MemoryEncryptionEngine:
    """Encrypts and decrypts private guest accesses; holds one key per active ASID."""

    def __init__(self, dram: Dram, random_bytes: Callable[[int], bytes]) -> None:
        self._dram = dram
        self._random_bytes = random_bytes
        self._ciphers: dict[int, XexMemoryCipher] = {}

    def activate(self, asid: int) -> None:
        """Generate a fresh key for ``asid`` (ACTIVATE); refuses an ASID that is still live."""
        if not 1 <= asid <= MAX_ASID:
            raise UsageError(f"ASID {asid} is out of range 1..{MAX_ASID}")
        if asid in self._ciphers:
            raise StateError(f"ASID {asid} is already in use by a live guest")
        self._ciphers[asid] = XexMemoryCipher(self._random_bytes(KEY_SIZE))

    def deactivate(self, asid: int) -> None:
        """Forget the key of ``asid`` (DEACTIVATE + DF_FLUSH): its pages become unreadable."""
        if self._ciphers.pop(asid, None) is None:
            raise StateError(f"ASID {asid} is not active")

    def is_active(self, asid: int) -> bool:
        return asid in self._ciphers

    def _cipher(self, asid: int) -> XexMemoryCipher:
        cipher = self._ciphers.get(asid)
        if cipher is None:
            raise StateError(f"ASID {asid} has no key: the guest is not active")
        return cipher

    def read(self, asid: int | None, spa: int, size: int) -> bytes:
        """Read ``size`` bytes at ``spa``; decrypted with ``asid``'s key unless ``asid`` is None."""
        if asid is None:
            return self._dram.read(spa, size)
        first = spa - spa % PAGE_SIZE
        pages = (spa + size - first + PAGE_SIZE - 1) // PAGE_SIZE
        plain = np.empty(pages * PAGE_SIZE, dtype=np.uint8)
        self.read_pages_into(asid, first, plain)
        return plain[spa - first : spa - first + size].tobytes()

    def write(self, asid: int | None, spa: int, data: bytes) -> None:
        """Write ``data`` at ``spa``; encrypted with ``asid``'s key unless ``asid`` is None."""
        if asid is None:
            self._dram.write(spa, data)
            return
        first = spa - spa % PAGE_SIZE
        pages = (spa + len(data) - first + PAGE_SIZE - 1) // PAGE_SIZE
        if spa == first and len(data) == pages * PAGE_SIZE:
            self.write_pages(asid, first, data)
            return
        plain = np.empty(pages * PAGE_SIZE, dtype=np.uint8)
        self.read_pages_into(asid, first, plain)
        plain[spa - first : spa - first + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.write_pages_from(asid, first, plain)

    def access_page(
        self, asid: int, frame: int, offset: int, size: int, data: bytes | None
    ) -> bytes:
        """A private access within one page, as a guest's load or store reaches the engine:
        read ``size`` bytes at ``offset`` of system page ``frame`` with ``asid``'s key
        (``data`` None), or write ``data`` there (a partial write re-encrypts the whole page).
        The caller keeps ``offset + size`` within the page."""
        cipher = self._ciphers.get(asid)
        if cipher is None:
            raise StateError(f"ASID {asid} has no key: the guest is not active")
        stored = self._dram.page(frame)
        spa = frame * PAGE_SIZE
        if data is None:
            plain = cipher.decrypt_page(spa, stored)
            return plain if size == PAGE_SIZE else plain[offset : offset + size]
        if offset == 0 and len(data) == PAGE_SIZE:
            cipher.encrypt_page(spa, data, stored)
            return b""
        page = bytearray(cipher.decrypt_page(spa, stored))
        page[offset : offset + len(data)] = data
        cipher.encrypt_page(spa, page, stored)
        return b""

    def read_pages(self, asid: int, spa: int, pages: int) -> bytes:
        """Decrypt ``pages`` whole pages at page-aligned ``spa``."""
        out = np.empty(pages * PAGE_SIZE, dtype=np.uint8)
        self.read_pages_into(asid, spa, out)
        return out.tobytes()

    def read_pages_into(self, asid: int, spa: int, target: np.ndarray) -> None:
        """Decrypt whole pages at page-aligned ``spa`` into ``target`` (bulk path, no copies)."""
        cipher = self._cipher(asid)
        if target.size == PAGE_SIZE:  # one page: its view
            _check_aligned(spa, PAGE_SIZE)
            cipher.decrypt_into(spa, self._dram.page(spa // PAGE_SIZE), target)
            return
        if spa // CHUNK_SIZE == (spa + target.size - 1) // CHUNK_SIZE:  # one chunk: one call
            _check_aligned(spa, target.size)  # the span checks the range
            cipher.decrypt_into(spa, self._dram.span(spa, target.size), target)
            return
        self._check_pages(spa, target.size)
        for offset, part in _chunk_runs(spa, target.size):
            source = self._dram.span(spa + offset, part)
            cipher.decrypt_into(spa + offset, source, target[offset : offset + part])

    def write_pages(self, asid: int, spa: int, data: bytes) -> None:
        """Encrypt whole pages of ``data`` to page-aligned ``spa``."""
        self.write_pages_from(asid, spa, np.frombuffer(data, dtype=np.uint8))

    def write_pages_from(self, asid: int, spa: int, source: np.ndarray) -> None:
        """Encrypt whole pages from ``source`` to page-aligned ``spa`` (bulk path, no copies)."""
        cipher = self._cipher(asid)
        if source.size == PAGE_SIZE:  # one page: its view
            _check_aligned(spa, PAGE_SIZE)
            cipher.encrypt_into(spa, source, self._dram.page(spa // PAGE_SIZE))
            return
        if spa // CHUNK_SIZE == (spa + source.size - 1) // CHUNK_SIZE:  # one chunk: one call
            _check_aligned(spa, source.size)  # the span checks the range
            cipher.encrypt_into(spa, source, self._dram.span(spa, source.size))
            return
        self._check_pages(spa, source.size)
        for offset, part in _chunk_runs(spa, source.size):
            target = self._dram.span(spa + offset, part)
            cipher.encrypt_into(spa + offset, source[offset : offset + part], target)

    def _check_pages(self, spa: int, size: int) -> None:
        _check_aligned(spa, size)
        self._dram.check(spa, size)


def _check_aligned(spa: int, size: int) -> None:
    if spa % PAGE_SIZE or size % PAGE_SIZE:
        raise UsageError(f"page operation at {spa:#x}+{size:#x} is not page-aligned")


def _chunk_runs(spa: int, size: int) -> list[tuple[int, int]]:
    """Split ``spa``..``spa+size`` into (offset, length) runs that stay within one DRAM chunk."""
    runs = []
    offset = 0
    while offset < size:
        part = min(size - offset, CHUNK_SIZE - (spa + offset) % CHUNK_SIZE)
        runs.append((offset, part))
        offset += part
    return runs
