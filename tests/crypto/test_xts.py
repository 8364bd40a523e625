"""Batched AES-XTS (IEEE 1619-2018 section 5) against one ``cryptography`` XTS call per sector,
and its tweak expansion against GF(2^128) arithmetic on Python integers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.crypto.xts import (
    BATCH_SIZE,
    XtsCipher,
    _Workspace,
    decrypt_one_sector,
    encrypt_one_sector,
)

SECTOR_SIZES = [512, 1024, 2048, 4096]
GF_MODULUS = (1 << 128) | 0x87


def _per_sector(key: bytes, data: bytes, first_iv: int, sector_size: int) -> bytes:
    step = sector_size // 512
    return b"".join(
        encrypt_one_sector(key, first_iv + i * step, data[i * sector_size :][:sector_size])
        for i in range(len(data) // sector_size))


def _times_x(value: int) -> int:
    value <<= 1
    return value ^ GF_MODULUS if value >> 128 else value


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=64, max_size=64) | st.binary(min_size=32, max_size=32),
       sector_size=st.sampled_from(SECTOR_SIZES), count=st.integers(1, 24),
       first_iv=st.integers(0, 2**64 - 1 - 24 * 8), threads=st.sampled_from([1, 2]),
       seed=st.binary(min_size=8, max_size=8))
def test_sectors_equal_one_call_per_sector(key: bytes, sector_size: int, count: int,
                                           first_iv: int, threads: int, seed: bytes) -> None:
    if key[: len(key) // 2] == key[len(key) // 2 :]:
        key = bytes([key[0] ^ 1]) + key[1:]
    data = (seed * (count * sector_size // 8 + 1))[: count * sector_size]
    data = bytes(b ^ (i * 131 % 251) for i, b in enumerate(data))
    cipher = XtsCipher(key, threads=threads)
    out = cipher.encrypt_sectors(data, first_iv, sector_size)
    assert out == _per_sector(key, data, first_iv, sector_size)
    assert cipher.decrypt_sectors(out, first_iv, sector_size) == data
    assert decrypt_one_sector(key, first_iv, out[:sector_size]) == data[:sector_size]


@settings(max_examples=40, deadline=None)
@given(firsts=st.lists(st.integers(0, 2**128 - 1), min_size=1, max_size=6),
       sector_size=st.sampled_from(SECTOR_SIZES))
def test_expansion_is_powers_of_alpha(firsts: list[int], sector_size: int) -> None:
    first = np.array([[v & (2**64 - 1), v >> 64] for v in firsts], dtype=np.uint64)
    blocks = sector_size // 16
    words = _Workspace().expand(first, blocks).reshape(len(firsts), blocks, 2)
    for row, start in zip(words, firsts, strict=True):
        tweak = start
        for j in range(blocks):
            assert int(row[j, 0]) | int(row[j, 1]) << 64 == tweak
            tweak = _times_x(tweak)


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_runs_longer_than_a_batch(sector_size: int) -> None:
    key = os.urandom(64)
    data = os.urandom(BATCH_SIZE * 2 + 3 * sector_size)
    first_iv = 2**64 - len(data) // 512
    expected = _per_sector(key, data, first_iv, sector_size)
    for threads in (1, 2):
        cipher = XtsCipher(key, threads=threads)
        out = cipher.encrypt_sectors(memoryview(data), first_iv, sector_size)
        assert out == expected
        assert cipher.decrypt_sectors(out, first_iv, sector_size) == data


def test_concurrent_callers_share_workspaces() -> None:
    key = os.urandom(32)
    pieces = [os.urandom(BATCH_SIZE + 4096 * k) for k in range(1, 5)]
    cipher = XtsCipher(key, threads=2)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda p: cipher.encrypt_sectors(p, 9, 4096), pieces))
    for piece, out in zip(pieces, outs, strict=True):
        assert out == _per_sector(key, piece, 9, 4096)


def test_a_forked_child_encrypts_on_threads_of_its_own() -> None:
    """The attack matrix forks workers after the parent used the pool: a child must not wait
    on the parent's threads (they do not exist in it) or on a lock held when it forked."""
    import os
    import time
    import warnings

    key = bytes(range(64))
    data = bytes(8 << 20)
    expected = XtsCipher(key, threads=2).encrypt_sectors(data, 0, 4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        status = 2  # an exception in the child must end it, not run pytest on in it
        try:
            status = 0 if XtsCipher(key, threads=2).encrypt_sectors(data, 0, 4096) == expected \
                else 1
        finally:
            os._exit(status)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(child, 9)
    os.waitpid(child, 0)
    raise AssertionError("the forked child hung on the parent's thread pool")
