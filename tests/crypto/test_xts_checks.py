"""AES-XTS against ``cryptography``'s own XTS (OpenSSL) and IEEE 1619 known answers: the
64-bit sector range at its edges, every refusal by its message, the one-call helpers, and
where the batches run (inline, on the kept pool, inline again when nested in it)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cvm.crypto import xts
from cvm.crypto.xts import (
    BATCH_SIZE,
    MAX_CONTIGUOUS_SIZE,
    XtsCipher,
    decrypt_one_sector,
    encrypt_contiguous,
    encrypt_one_sector,
)
from cvm.errors import UsageError

KEY = bytes(range(64))
TOP = 1 << 64


def _oracle(key: bytes, tweak: int, data: bytes) -> bytes:
    """One data unit through ``cryptography``'s XTS, tweak little-endian (plain64)."""
    return Cipher(algorithms.AES(key), modes.XTS(tweak.to_bytes(16, "little"))) \
        .encryptor().update(data)


def _sectors(key: bytes, first_iv: int, data: bytes, sector_size: int) -> bytes:
    step = sector_size // 512
    return b"".join(_oracle(key, first_iv + k * step, data[at : at + sector_size])
                    for k, at in enumerate(range(0, len(data), sector_size)))


def _refused(message: str) -> pytest.RaisesContext[UsageError]:
    return pytest.raises(UsageError, match=f"^{re.escape(message)}$")


# ---- known answers ---------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "cipher"), [
    # IEEE 1619-2007 Annex B, XTS-AES-128 vectors 2 and 3: data unit 0x3333333333, 32 bytes 0x44.
    (bytes([0x11]) * 16 + bytes([0x22]) * 16,
     "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0"),
    (bytes(range(0xFF, 0xEF, -1)) + bytes([0x22]) * 16,
     "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89"),
])
def test_one_sector_known_answers(key: bytes, cipher: str) -> None:
    plain = bytes([0x44]) * 32
    assert encrypt_one_sector(key, 0x3333333333, plain).hex() == cipher
    assert decrypt_one_sector(key, 0x3333333333, bytes.fromhex(cipher)) == plain


def test_the_one_call_helpers_refuse_a_bad_key() -> None:
    for helper in (encrypt_one_sector, decrypt_one_sector):
        with _refused("AES-XTS key halves must differ (IEEE 1619 section 5.1)"):
            helper(bytes(32), 0, bytes(32))
        with _refused("AES-XTS key must be 32 or 64 bytes, got 48"):
            helper(bytes(range(48)), 0, bytes(32))


def test_contiguous_is_one_data_unit_with_tweak_zero() -> None:
    data = os.urandom(1 << 20)
    assert encrypt_contiguous(KEY, data) == _oracle(KEY, 0, data)
    assert encrypt_contiguous(KEY, memoryview(data)[:4096]) == _oracle(KEY, 0, data[:4096])
    whole = bytes(MAX_CONTIGUOUS_SIZE)  # exactly the limit is one unit
    assert encrypt_contiguous(KEY, whole)[-32:] == _oracle(KEY, 0, whole)[-32:]
    with _refused(f"one XTS data unit holds at most {MAX_CONTIGUOUS_SIZE} bytes"):
        encrypt_contiguous(KEY, whole + bytes(16))


# ---- the sectors: defaults, range, refusals ---------------------------------------------------
def test_the_default_sector_size_is_512() -> None:
    data = os.urandom(4096)
    cipher = XtsCipher(KEY)
    assert cipher.encrypt_sectors(data, 5) == _sectors(KEY, 5, data, 512)
    assert cipher.decrypt_sectors(_sectors(KEY, 5, data, 512), 5) == data


@pytest.mark.parametrize(("sector_size", "last"), [(512, TOP - 1), (4096, TOP - 8)])
def test_the_last_sector_of_the_64_bit_range(sector_size: int, last: int) -> None:
    """A run may end at tweak 2^64 - 1 (counted in 512-byte units), not one unit further:
    the tweaks would wrap to sector 0's."""
    cipher = XtsCipher(KEY)
    data = os.urandom(2 * sector_size)
    assert cipher.encrypt_sectors(data[:sector_size], last, sector_size) == _sectors(
        KEY, last, data[:sector_size], sector_size)
    two = last - sector_size // 512
    assert cipher.encrypt_sectors(data, two, sector_size) == _sectors(KEY, two, data,
                                                                      sector_size)
    for first_iv in (last + 1, two + 1, TOP, TOP + 5, 2 * TOP, 4 * TOP):
        size = sector_size if first_iv > last else 2 * sector_size
        with _refused(f"sector number {first_iv} is out of the 64-bit range"):
            cipher.encrypt_sectors(data[:size], first_iv, sector_size)
        with _refused(f"sector number {first_iv} is out of the 64-bit range"):
            cipher.decrypt_sectors(data[:size], first_iv, sector_size)


def test_a_negative_sector_number_is_refused() -> None:
    for first_iv in (-1, -(1 << 70)):
        with _refused(f"sector number {first_iv} is out of the 64-bit range"):
            XtsCipher(KEY).encrypt_sectors(bytes(512), first_iv)


def test_each_refusal_is_named() -> None:
    with _refused("AES-XTS key must be 32 or 64 bytes, got 48"):
        XtsCipher(bytes(range(48)))
    with _refused("AES-XTS key halves must differ (IEEE 1619 section 5.1)"):
        XtsCipher(bytes(range(32)) * 2)
    cipher = XtsCipher(KEY)
    for size in (0, 256, 520, 8192):
        with _refused(f"sector size must be 512, 1024, 2048 or 4096, got {size}"):
            cipher.encrypt_sectors(bytes(8192), 0, size)
    with _refused("data of 1536 bytes is not whole 1024-byte sectors"):
        cipher.decrypt_sectors(bytes(1536), 0, 1024)
    assert cipher.encrypt_sectors(b"", 0) == bytearray() == cipher.decrypt_sectors(b"", TOP)


# ---- where the batches run --------------------------------------------------------------------
@pytest.fixture
def batch_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.Thread]]:
    """The thread each batch of every call runs on."""
    seen: list[threading.Thread] = []
    original = XtsCipher._batch

    def recording(self: XtsCipher, *args: object) -> None:
        seen.append(threading.current_thread())
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(XtsCipher, "_batch", recording)
    yield seen


def _run(cipher: XtsCipher, batches: int) -> None:
    data = os.urandom(BATCH_SIZE * (batches - 1) + 3 * 4096)
    assert cipher.encrypt_sectors(data, 64, 4096) == _sectors(KEY, 64, data, 4096)


def test_one_thread_runs_every_batch_inline(batch_threads: list[threading.Thread]) -> None:
    for cipher in (XtsCipher(KEY), XtsCipher(KEY, threads=1), XtsCipher(KEY, threads=0),
                   XtsCipher(KEY, threads=-3)):
        _run(cipher, 3)
    assert len(batch_threads) == 12 and set(batch_threads) == {threading.current_thread()}


def test_a_single_batch_runs_inline(batch_threads: list[threading.Thread]) -> None:
    _run(XtsCipher(KEY, threads=2), 1)
    assert batch_threads == [threading.current_thread()]


def test_batches_run_on_the_kept_pool(batch_threads: list[threading.Thread]) -> None:
    cipher = XtsCipher(KEY, threads=2)
    _run(cipher, 2)
    _run(XtsCipher(KEY, threads=2), 4)
    assert len(batch_threads) == 6 and threading.current_thread() not in batch_threads
    assert all(thread.name.startswith("cvm-xts") for thread in batch_threads)
    assert len(set(batch_threads)) <= 2  # one pool of two workers for both calls
    pool = xts._executor(2)
    assert pool is xts._executor(2) and pool._max_workers == 2
    assert xts._executor(3)._max_workers == 3


def test_a_call_nested_in_the_pool_runs_inline(batch_threads: list[threading.Thread]) -> None:
    """A batch job that itself encrypts (several batches, threads=2) must not wait for a
    worker of the pool it occupies."""
    cipher = XtsCipher(KEY, threads=2)
    job = xts._executor(2).submit(lambda: (_run(cipher, 3), threading.current_thread())[1])
    worker = job.result(timeout=120)
    assert worker.name.startswith("cvm-xts") and batch_threads == [worker] * 3


def test_the_workspace_pool_keeps_at_most_four() -> None:
    taken = [xts._acquire() for _ in range(6)]
    assert len({id(workspace) for workspace in taken}) == 6 and xts._POOL == []
    for workspace in taken:
        xts._release(workspace)
    assert taken[:4] == xts._POOL
    assert xts._acquire() is taken[3]


def test_a_forked_child_starts_its_own_lock_and_pools() -> None:
    """The state a child inherits from a parent in the middle of a call (the lock held, the
    parent's workers, its workspaces) is dropped when the child starts."""
    XtsCipher(KEY, threads=2).encrypt_sectors(bytes(BATCH_SIZE * 2), 0, 4096)
    parents = dict(xts._EXECUTORS)
    held = xts._POOL_LOCK
    assert parents and xts._POOL
    with held:  # a parent's thread held the lock when the process forked
        xts._forget_after_fork()
        assert xts._POOL_LOCK is not held and not xts._POOL_LOCK.locked()
        assert xts._EXECUTORS == {} and xts._POOL == []
        data = os.urandom(BATCH_SIZE * 2)
        assert XtsCipher(KEY, threads=2).encrypt_sectors(data, 0, 4096) == _sectors(
            KEY, 0, data, 4096)
        assert xts._EXECUTORS[2] is not parents[2]
    for pool in parents.values():
        pool.shutdown()
