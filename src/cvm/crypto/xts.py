"""AES-XTS over runs of sectors, as dm-crypt's ``aes-xts-plain64`` applies it.

IEEE Std 1619-2018 (XTS-AES), section 5: every data unit (a *sector* here) is encrypted with
``C_j = E_K1(P_j xor T_j) xor T_j`` where ``T_0 = E_K2(i)`` for the data unit's tweak ``i`` and
``T_{j+1} = T_j * alpha`` in GF(2^128) (reduction polynomial x^128 + x^7 + x^2 + x + 1, the
bytes of ``T`` little-endian). ``plain64`` (Linux ``Documentation/admin-guide/device-mapper/
dm-crypt.rst``) makes ``i`` the 64-bit little-endian sector number zero-padded to 16 bytes;
LUKS2 (on-disk format v1.1.4, section 3.3) counts it in 512-byte units even for 4096-byte sectors.

Public API
==========
``XtsCipher(key, threads=1)``
    ``key`` is 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS), ``K1 || K2``.
``XtsCipher.encrypt_sectors(data, first_iv, sector_size) -> bytearray`` (and ``decrypt_sectors``)
    ``data`` holds whole sectors; sector ``k`` gets tweak ``first_iv + k * sector_size // 512``;
    the result is written in place, batch by batch, with no final copy.
``encrypt_one_sector(key, iv, data)`` (and ``decrypt_one_sector``)
    the plain one-call-per-sector way (the benchmark's naive baseline, and a test oracle).
``encrypt_contiguous(key, data)``
    one XTS call over a buffer of up to 16 MiB (the benchmark's speed-of-light baseline).

Batching: one call per sector pays Python and OpenSSL set-up costs that exceed the AES work.
Here the tweaks ``T_0`` of a whole batch are one ECB call with ``K2``, their powers of alpha
are computed with numpy (32 shifts at a time, see :func:`_expand_tweaks`), and the data is one
ECB call with ``K1`` between two XORs. Batches of :data:`BATCH_SIZE` bytes are large enough to
amortise numpy and small enough to stay in cache; both ECB calls release the GIL, so batches
may run on a thread pool (``threads``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cvm.errors import UsageError

IV_UNIT_SIZE = 512
BLOCK_SIZE = 16
BATCH_SIZE = 1 << 20
MAX_CONTIGUOUS_SIZE = 1 << 24
_SHIFT_SPAN = 32
_U64 = np.uint64


def _split_key(key: bytes) -> tuple[bytes, bytes]:
    if len(key) not in (32, 64):
        raise UsageError(f"AES-XTS key must be 32 or 64 bytes, got {len(key)}")
    half = len(key) // 2
    if key[:half] == key[half:]:
        raise UsageError("AES-XTS key halves must differ (IEEE 1619 section 5.1)")
    return key[:half], key[half:]


def _check_sector_size(sector_size: int) -> None:
    if sector_size not in (512, 1024, 2048, 4096):
        raise UsageError(f"sector size must be 512, 1024, 2048 or 4096, got {sector_size}")


def _shift(lo: np.ndarray, hi: np.ndarray, amount: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiply 128-bit values (lo, hi) by x**amount in GF(2^128); 1 <= amount <= 56.

    The bits shifted out of the top are folded back with the reduction polynomial
    (x^7 + x^2 + x + 1 = 0x87); for ``amount`` up to 56 the fold fits in the low word.
    """
    back = _U64(64) - amount
    overflow = hi >> back
    new_hi = hi << amount
    new_hi |= lo >> back
    new_lo = lo << amount
    new_lo ^= overflow
    new_lo ^= overflow << _U64(1)
    new_lo ^= overflow << _U64(2)
    new_lo ^= overflow << _U64(7)
    return new_lo, new_hi


def _expand_tweaks(first: np.ndarray, blocks_per_sector: int) -> np.ndarray:
    """All tweaks ``T_j = T_0 * alpha**j`` of every sector, flattened to u64 words (lo, hi)."""
    count = first.shape[0]
    span = min(blocks_per_sector, _SHIFT_SPAN)
    groups = blocks_per_sector // span
    starts = np.empty((count, groups, 2), dtype=_U64)
    lo = first[:, 0].copy()
    hi = first[:, 1].copy()
    for group in range(groups):
        starts[:, group, 0] = lo
        starts[:, group, 1] = hi
        if group + 1 < groups:
            lo, hi = _shift(lo, hi, np.full(count, span, dtype=_U64))
    tweaks = np.empty((count * groups, span, 2), dtype=_U64)
    start_lo = starts[:, :, 0].reshape(-1, 1)
    start_hi = starts[:, :, 1].reshape(-1, 1)
    tweaks[:, 0:1, 0] = start_lo
    tweaks[:, 0:1, 1] = start_hi
    if span > 1:
        amounts = np.arange(1, span, dtype=_U64)[None, :]
        new_lo, new_hi = _shift(start_lo, start_hi, amounts)
        tweaks[:, 1:, 0] = new_lo
        tweaks[:, 1:, 1] = new_hi
    return tweaks.reshape(-1)


class XtsCipher:
    """AES-XTS with plain64 tweaks over whole sectors; see the module docstring."""

    def __init__(self, key: bytes, threads: int = 1) -> None:
        self._key1, self._key2 = _split_key(bytes(key))
        self._threads = max(1, threads)

    def _batch(self, data: memoryview, first_iv: int, sector_size: int, encrypt: bool,
               out: bytearray, offset: int) -> None:
        """Process one batch into ``out[offset:]`` (which has 16 spare bytes after it)."""
        count = len(data) // sector_size
        ivs = np.zeros((count, 2), dtype=_U64)
        step = sector_size // IV_UNIT_SIZE
        ivs[:, 0] = np.arange(count, dtype=_U64) * _U64(step) + _U64(first_iv)
        tweak_cipher = Cipher(algorithms.AES(self._key2), modes.ECB()).encryptor()
        first = np.frombuffer(tweak_cipher.update(ivs.tobytes()), dtype=_U64).reshape(count, 2)
        tweaks = _expand_tweaks(first, sector_size // BLOCK_SIZE)
        mixed = np.frombuffer(data, dtype=_U64) ^ tweaks
        cipher = Cipher(algorithms.AES(self._key1), modes.ECB())
        context = cipher.encryptor() if encrypt else cipher.decryptor()
        target = memoryview(out)[offset : offset + len(data) + BLOCK_SIZE]
        written = context.update_into(mixed.data.cast("B"), target)
        target.release()
        result = np.frombuffer(out, dtype=_U64, count=written // 8, offset=offset)
        result ^= tweaks

    def _run(self, data: bytes | bytearray | memoryview, first_iv: int, sector_size: int,
             encrypt: bool) -> bytearray:
        _check_sector_size(sector_size)
        view = memoryview(data).cast("B")
        if len(view) % sector_size:
            raise UsageError(f"data of {len(view)} bytes is not whole {sector_size}-byte sectors")
        if first_iv < 0 or first_iv + len(view) // IV_UNIT_SIZE > 1 << 64:
            raise UsageError(f"sector number {first_iv} is out of the 64-bit range")
        if not view:
            return bytearray()
        batch = max(sector_size, BATCH_SIZE - BATCH_SIZE % sector_size)
        out = bytearray(len(view) + BLOCK_SIZE)
        offsets = range(0, len(view), batch)

        def job(offset: int) -> None:
            self._batch(view[offset : offset + batch], first_iv + offset // IV_UNIT_SIZE,
                        sector_size, encrypt, out, offset)

        if self._threads == 1 or len(offsets) == 1:
            for offset in offsets:
                job(offset)
        else:
            with ThreadPoolExecutor(self._threads) as pool:
                list(pool.map(job, offsets))
        del out[len(view) :]
        return out

    def encrypt_sectors(
        self, data: bytes | bytearray | memoryview, first_iv: int, sector_size: int = 512
    ) -> bytearray:
        """Encrypt whole sectors; sector ``k`` uses tweak ``first_iv + k*sector_size/512``."""
        return self._run(data, first_iv, sector_size, encrypt=True)

    def decrypt_sectors(
        self, data: bytes | bytearray | memoryview, first_iv: int, sector_size: int = 512
    ) -> bytearray:
        """Decrypt whole sectors; the inverse of :meth:`encrypt_sectors`."""
        return self._run(data, first_iv, sector_size, encrypt=False)


def _tweak(iv: int) -> modes.XTS:
    return modes.XTS(iv.to_bytes(BLOCK_SIZE, "little"))


def encrypt_one_sector(key: bytes, iv: int, data: bytes | memoryview) -> bytes:
    """One sector through one ``cryptography`` XTS call (the naive way; a test oracle)."""
    _split_key(bytes(key))
    return Cipher(algorithms.AES(bytes(key)), _tweak(iv)).encryptor().update(data)


def decrypt_one_sector(key: bytes, iv: int, data: bytes | memoryview) -> bytes:
    """The inverse of :func:`encrypt_one_sector`."""
    _split_key(bytes(key))
    return Cipher(algorithms.AES(bytes(key)), _tweak(iv)).decryptor().update(data)


def encrypt_contiguous(key: bytes, data: bytes | memoryview) -> bytes:
    """``data`` as one XTS data unit with tweak 0 (at most 16 MiB: OpenSSL's unit limit)."""
    if len(data) > MAX_CONTIGUOUS_SIZE:
        raise UsageError(f"one XTS data unit holds at most {MAX_CONTIGUOUS_SIZE} bytes")
    return encrypt_one_sector(key, 0, data)
