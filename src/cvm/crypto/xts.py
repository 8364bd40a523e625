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
are computed with numpy (see :meth:`_Workspace.expand`), and the data is one block-cipher call
with ``K1`` (in place in the output) between two XORs. Every block-cipher call stays in
``cryptography``. That bulk call is AES-ECB written as an XTS call whose tweak chain is all
zero: with the tweak input ``D_K2(0)``, ``T_0 = E_K2(D_K2(0)) = 0`` and so every ``T_j = 0``
and ``C_j = E_K1(P_j)``, exactly ECB (OpenSSL's XTS code path is the faster one).

The tweaks of a sector are built in rows of :data:`ROW_BLOCKS`: ``T_{8a+f} = S_a * x^f`` with
row starts ``S_a = T_0 * x^(8a)``. For ``f < 8`` only the top seven bits of each 64-bit word
cross into the other word, so a row is its start repeated, each word shifted left by ``f``,
XORed with one row looked up by the top bits of both words (the carry into the high word,
and the reduction ``* (x^7 + x^2 + x + 1)`` of the bits shifted out of the top, folded into
the low word). Every full-size numpy pass is then contiguous. The work buffers of a batch of
:data:`BATCH_SIZE` bytes (measured best between 1 and 4 MiB) are reused from a small pool
instead of being allocated (and page-faulted) per batch. The block-cipher calls and the
numpy passes release the GIL, so batches may run on a thread pool (``threads``, kept for the
process: starting one per call costs more than a batch).
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cvm.errors import UsageError

IV_UNIT_SIZE = 512
BLOCK_SIZE = 16
BATCH_SIZE = 2 << 20
MAX_CONTIGUOUS_SIZE = 1 << 24
ROW_BLOCKS = 8
_SPILL_BITS = ROW_BLOCKS - 1
_WORDS_PER_ROW = 2 * ROW_BLOCKS
_BATCH_BLOCKS = BATCH_SIZE // BLOCK_SIZE
_POOL_DEPTH = 4
_THREAD_PREFIX = "cvm-xts"
_U64 = np.uint64
_BLOCK = np.dtype("V16")

Words = np.ndarray[Any, np.dtype[np.uint64]]


@functools.cache
def _row_tables() -> tuple[Words, Words]:
    """What shifting a start by ``f = 0..7`` spills, per value of the top bits of its words.

    Row ``(h << 7) | l`` of the first table is for a start whose high word's top seven bits
    are ``h`` and whose low word's are ``l``; for each of the eight blocks of a row it holds,
    in the low-word slot, the bits shifted out of the high word reduced by x^128 = x^7 + x^2 +
    x + 1 (IEEE 1619 section 5.2), and in the high-word slot the bits carried up from the low
    word. The second table is the shift amount of each word of a row."""
    top = np.arange(1 << _SPILL_BITS, dtype=_U64)[:, None]
    amount = np.arange(ROW_BLOCKS, dtype=_U64)[None, :]
    spill = top >> (_U64(_SPILL_BITS) - amount)
    fold = spill ^ (spill << _U64(1)) ^ (spill << _U64(2)) ^ (spill << _U64(7))
    rows = np.zeros((1 << _SPILL_BITS, 1 << _SPILL_BITS, ROW_BLOCKS, 2), dtype=_U64)
    rows[:, :, :, 0] = fold[:, None, :]
    rows[:, :, :, 1] = spill[None, :, :]
    shifts = np.repeat(np.arange(ROW_BLOCKS, dtype=_U64), 2)
    return rows.reshape(-1, _WORDS_PER_ROW), np.tile(shifts, (_BATCH_BLOCKS // ROW_BLOCKS, 1))


@functools.cache
def _head_tables(span: int) -> tuple[Words, Words]:
    """Shift amounts ``8, 16, .., 8*(span-1)`` (and ``64`` minus them) for every row start
    after the first of each group, for as many groups as a batch may hold."""
    amounts = np.tile(np.arange(8, 8 * span, 8, dtype=_U64), BATCH_SIZE // IV_UNIT_SIZE)
    return amounts, _U64(64) - amounts


def _shift_into(lo: Words, hi: Words, amount: Words, back: Words, out_lo: Words,
                out_hi: Words) -> None:
    """``(out_lo, out_hi) = (lo, hi) * x**amount`` in GF(2^128), ``back = 64 - amount``,
    ``1 <= amount <= 56``: the bits shifted out of the top are folded back with the
    reduction polynomial (x^7 + x^2 + x + 1 = 0x87) and fit in the low word."""
    overflow = hi >> back
    np.left_shift(hi, amount, out=out_hi)
    out_hi |= lo >> back
    np.left_shift(lo, amount, out=out_lo)
    fold = overflow << _U64(1)
    fold ^= overflow
    fold ^= overflow << _U64(2)
    fold ^= overflow << _U64(7)
    out_lo ^= fold


def _times_x64(lo: Words, hi: Words) -> tuple[Words, Words]:
    """Multiply (lo, hi) by x^64: ``hi * x^128`` folds to ``hi * 0x87`` (71 bits)."""
    new_lo = hi << _U64(1)
    new_lo ^= hi
    new_lo ^= hi << _U64(2)
    new_lo ^= hi << _U64(7)
    new_hi = hi >> _U64(63)
    new_hi ^= hi >> _U64(62)
    new_hi ^= hi >> _U64(57)
    new_hi ^= lo
    return new_lo, new_hi


def _row_starts(first: Words, starts: Words) -> None:
    """Fill ``starts[k, a] = first[k] * x^(8a)`` (shape (count, rows, 2), rows in 4..32):
    groups of eight starts from ``first * x^(64g)``, then the rest of each group at once."""
    count, rows = starts.shape[0], starts.shape[1]
    span = min(rows, ROW_BLOCKS)
    groups = rows // span
    grouped = starts.reshape(count, groups, span, 2)
    grouped[:, 0, 0] = first
    lo, hi = first[:, 0], first[:, 1]
    for group in range(1, groups):
        lo, hi = _times_x64(lo, hi)
        grouped[:, group, 0, 0] = lo
        grouped[:, group, 0, 1] = hi
    amounts, backs = _head_tables(span)
    size = count * groups * (span - 1)
    rest = np.empty((size, 2), dtype=_U64)
    _shift_into(np.repeat(grouped[:, :, 0, 0], span - 1), np.repeat(grouped[:, :, 0, 1], span - 1),
                amounts[:size], backs[:size], rest[:, 0], rest[:, 1])
    grouped[:, :, 1:] = rest.reshape(count, groups, span - 1, 2)


class _Workspace:
    """Buffers for one batch of up to :data:`BATCH_SIZE` bytes, reused across batches."""

    def __init__(self) -> None:
        rows = _BATCH_BLOCKS // ROW_BLOCKS
        self.starts: Words = np.empty((rows, 2), dtype=_U64)
        self.spill: Words = np.empty((rows, _WORDS_PER_ROW), dtype=_U64)
        self.index = np.empty(rows, dtype=np.int64)
        self.low: Words = np.empty(rows, dtype=_U64)
        sectors = BATCH_SIZE // IV_UNIT_SIZE
        self.ivs: Words = np.zeros((sectors, 2), dtype=_U64)
        self.numbers: Words = np.arange(sectors, dtype=_U64)

    def first_tweaks(self, key2: bytes, first_iv: int, count: int, step: int) -> Words:
        """``T_0 = E_K2(iv)`` for ``count`` sectors from ``first_iv``, ``step`` apart."""
        ivs = self.ivs[:count]
        np.multiply(self.numbers[:count], _U64(step), out=ivs[:, 0])
        ivs[:, 0] += _U64(first_iv)
        encryptor = Cipher(algorithms.AES(key2), modes.ECB()).encryptor()
        return np.frombuffer(encryptor.update(ivs.tobytes()), dtype=_U64).reshape(count, 2)

    def expand(self, first: Words, blocks_per_sector: int) -> Words:
        """All tweaks ``T_j = T_0 * x^j`` of every sector, flattened to u64 words (lo, hi):
        each row start repeated eight times, shifted by 0..7, XORed with its spill row."""
        count = first.shape[0]
        rows = count * (blocks_per_sector // ROW_BLOCKS)
        starts = self.starts[:rows]
        _row_starts(first, starts.reshape(count, -1, 2))
        repeated = np.repeat(starts.view(_BLOCK).reshape(-1), ROW_BLOCKS)
        tweaks: Words = repeated.view(_U64).reshape(rows, _WORDS_PER_ROW)
        spill_rows, row_shifts = _row_tables()
        np.left_shift(tweaks, row_shifts[:rows], out=tweaks)
        index, low = self.index[:rows], self.low[:rows]
        np.right_shift(starts[:, 1], _U64(64 - _SPILL_BITS), out=index.view(_U64))
        np.left_shift(index.view(_U64), _U64(_SPILL_BITS), out=index.view(_U64))
        np.right_shift(starts[:, 0], _U64(64 - _SPILL_BITS), out=low)
        np.bitwise_or(index.view(_U64), low, out=index.view(_U64))
        spill = self.spill[:rows]
        np.take(spill_rows, index, axis=0, out=spill, mode="clip")
        tweaks ^= spill
        return tweaks.reshape(-1)


_POOL: list[_Workspace] = []
_POOL_LOCK = threading.Lock()
_EXECUTORS: dict[int, ThreadPoolExecutor] = {}


def _forget_after_fork() -> None:
    """A forked child has none of its parent's worker threads: start its own pools and lock."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    _EXECUTORS.clear()
    _POOL.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _executor(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` workers kept for the process; jobs on it run nested calls inline."""
    with _POOL_LOCK:
        pool = _EXECUTORS.get(threads)
        if pool is None:
            pool = ThreadPoolExecutor(threads, thread_name_prefix=_THREAD_PREFIX)
            _EXECUTORS[threads] = pool
        return pool


def _acquire() -> _Workspace:
    with _POOL_LOCK:
        if _POOL:
            return _POOL.pop()
    return _Workspace()


def _release(workspace: _Workspace) -> None:
    with _POOL_LOCK:
        if len(_POOL) < _POOL_DEPTH:
            _POOL.append(workspace)


class XtsCipher:
    """AES-XTS with plain64 tweaks over whole sectors; see the module docstring."""

    def __init__(self, key: bytes, threads: int = 1) -> None:
        self._key1, self._key2 = _split_key(bytes(key))
        self._threads = max(1, threads)
        decryptor = Cipher(algorithms.AES(self._key2), modes.ECB()).decryptor()
        self._null_tweak = decryptor.update(bytes(BLOCK_SIZE))

    def _batch(self, data: memoryview, first_iv: int, sector_size: int, encrypt: bool,
               out: bytearray, offset: int) -> None:
        """Process one batch into ``out[offset:]`` (which has 16 spare bytes after it)."""
        workspace = _acquire()
        try:
            count = len(data) // sector_size
            first = workspace.first_tweaks(self._key2, first_iv, count,
                                           sector_size // IV_UNIT_SIZE)
            tweaks = workspace.expand(first, sector_size // BLOCK_SIZE)
            words = np.frombuffer(out, dtype=_U64, count=len(data) // 8, offset=offset)
            np.bitwise_xor(np.frombuffer(data, dtype=_U64), tweaks, out=words)
            cipher = Cipher(algorithms.AES(self._key1 + self._key2), modes.XTS(self._null_tweak))
            context = cipher.encryptor() if encrypt else cipher.decryptor()
            with memoryview(out) as whole:
                target = whole[offset : offset + len(data) + BLOCK_SIZE]
                context.update_into(target[: len(data)], target)
                target.release()
            words ^= tweaks
        finally:
            _release(workspace)

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

        nested = threading.current_thread().name.startswith(_THREAD_PREFIX)
        if self._threads == 1 or len(offsets) == 1 or nested:
            for offset in offsets:
                job(offset)
        else:
            list(_executor(self._threads).map(job, offsets))
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
