"""The canary scan's edges: where a window of a secret can hide from a scanner that is almost
right. Each test places a window where one off-by-one (or one early exit) would miss it:
haystacks shorter than two pages, exactly one window long, ending in a window; windows that
start on the last byte of a cache block or of a busy page; leaks after a page of zeros, after a
cleared block or after a large artifact. Then what a hit says (its secret, window, place) on
every path, and the block cache: used, bounded, never answering for other secrets.

Every test starts from an empty block cache (the cache is per process: another test's scan of
the same bytes must not answer for this one)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest

from cvm.errors import UsageError
from cvm.hardware.memory.dram import PAGE_SIZE, Dram
from cvm.host.adversary import canary
from cvm.host.adversary.canary import (
    CACHE_BLOCK_BYTES,
    CACHE_FROM_BYTES,
    WINDOW_BYTES,
    CanaryScan,
    Leak,
)


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(canary, "_CACHE", {})
    yield


def _random(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _hits(leaks: list[Leak]) -> list[tuple[str, int, str, int]]:
    return [(leak.secret, leak.secret_offset, leak.where, leak.offset) for leak in leaks]


# ---- the secrets ------------------------------------------------------------------------------
def test_a_secret_of_exactly_eight_bytes_is_one_window() -> None:
    secret = _random(1, 8)
    scan = CanaryScan({"pin block": secret})
    assert len(scan) == 1
    assert _hits(scan.scan("log", b"\x01" * 10 + secret)) == [("pin block", 0, "log", 10)]


def test_a_secret_shorter_than_a_window_is_refused_by_name() -> None:
    with pytest.raises(UsageError) as refused:
        CanaryScan({"good": bytes(range(1, 9)), "pin": b"1234567"})
    assert str(refused.value) == "secret 'pin' is shorter than 8 bytes"


def test_the_needles_are_the_windows_of_the_secret_and_nothing_shorter() -> None:
    """A secret's tail shorter than eight bytes is no window: its last seven bytes followed by
    a zero (what a shorter window would read as, little-endian) are not a leak."""
    secret = _random(2, 24)
    scan = CanaryScan({"key": secret})
    assert len(scan) == 17
    for tail in range(1, WINDOW_BYTES):
        hay = bytes(64) + secret[-tail:] + bytes(64)
        assert scan.scan("hay", hay) == [], tail


def test_all_zero_windows_are_no_needles_and_names_keep_their_order() -> None:
    scan = CanaryScan({"zeros": bytes(16), "key": bytes(7) + b"\x01"})
    assert len(scan) == 1 and scan.names == ("zeros", "key")
    assert scan.scan("hay", bytes(4 * PAGE_SIZE) + b"\x05") == []
    assert CanaryScan({"zeros": bytes(16)}).scan("hay", b"\x01" * 100) == []


def test_a_leak_reads_as_the_secret_its_window_and_its_place() -> None:
    assert str(Leak("volume key", 8, "GHCB of vCPU 0", 0x10)) == (
        "volume key[8:16] in GHCB of vCPU 0 at 0x10")


# ---- small haystacks --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [WINDOW_BYTES, 100, PAGE_SIZE, 2 * PAGE_SIZE - 1])
def test_haystacks_shorter_than_two_pages_are_scanned_whole(size: int) -> None:
    """A GHCB page, a register dump, a log line: the window at the start and the one that
    ends at the last byte are both found, at their offsets."""
    secret = _random(3, 32)
    scan = CanaryScan({"key": secret})
    hay = bytearray(size)
    hay[:WINDOW_BYTES] = secret[4:12]
    if size >= 2 * WINDOW_BYTES:
        hay[-WINDOW_BYTES:] = secret[20:28]
    found = _hits(scan.scan("GHCB", bytes(hay)))
    expected = [("key", 4, "GHCB", 0)]
    if size >= 2 * WINDOW_BYTES:
        expected.append(("key", 20, "GHCB", size - WINDOW_BYTES))
    assert found == expected


@pytest.mark.parametrize("pages", [1, 2, 3, 5])
def test_a_window_that_ends_at_the_end_of_the_haystack_is_found(pages: int) -> None:
    secret = _random(4, 16)
    hay = _random(5, pages * PAGE_SIZE - WINDOW_BYTES) + secret[8:16]
    found = _hits(CanaryScan({"key": secret}).scan("h", hay))
    assert ("key", 8, "h", len(hay) - WINDOW_BYTES) in found


def test_a_candidate_past_the_last_needle_is_no_hit() -> None:
    """One needle; a word that shares its first four bytes and sorts after it (its binary
    search lands past the end) is no hit and no error."""
    secret = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    scan = CanaryScan({"key": secret})
    hay = secret[:4] + b"\xff" * 4 + secret[:4] + b"\x00" * 4 + secret
    assert _hits(scan.scan("h", hay)) == [("key", 0, "h", 16)]


# ---- pages of zeros ---------------------------------------------------------------------------
def test_the_tail_after_the_last_whole_page_is_scanned() -> None:
    secret = _random(6, 16)
    hay = bytes(2 * PAGE_SIZE) + bytes(50) + secret[:8] + bytes(40)
    assert _hits(CanaryScan({"key": secret}).scan("h", hay)) == [
        ("key", 0, "h", 2 * PAGE_SIZE + 50)]
    only_tail_zero = _random(7, 3 * PAGE_SIZE) + bytes(100)
    assert CanaryScan({"key": secret}).scan("h", only_tail_zero) == []


def test_every_run_of_busy_pages_is_scanned() -> None:
    """Busy, zero, busy, zero, zero, busy pages: a leak in each busy run."""
    secret = _random(8, 40)
    hay = bytearray(6 * PAGE_SIZE)
    places = [(100, 0), (2 * PAGE_SIZE + 7, 16), (5 * PAGE_SIZE + 300, 32)]
    for offset, start in places:
        hay[offset : offset + WINDOW_BYTES] = secret[start : start + WINDOW_BYTES]
    found = _hits(CanaryScan({"key": secret}).scan("h", bytes(hay)))
    assert found == [("key", start, "h", offset) for offset, start in places]


def test_a_window_from_the_last_byte_of_a_busy_page_into_a_zero_page_is_found() -> None:
    secret = b"\xa5" + bytes(7) + _random(9, 16)
    hay = bytearray(4 * PAGE_SIZE)
    hay[2 * PAGE_SIZE - 1] = 0xA5  # its other seven bytes are the zeros of the next page
    found = _hits(CanaryScan({"key": secret}).scan("h", bytes(hay)))
    assert ("key", 0, "h", 2 * PAGE_SIZE - 1) in found


@pytest.mark.parametrize("zeros", range(1, WINDOW_BYTES))
def test_a_window_that_begins_in_a_page_of_zeros_is_found(zeros: int) -> None:
    """The window's first bytes are zeros, the last bytes of a page of zeros; its other bytes
    begin the next page, the only busy one (a register's worth of a key written across a page
    boundary). The scan once started each run of busy pages at its first page and missed it."""
    secret = bytes(zeros) + _random(25, 24)
    hay = bytearray(3 * PAGE_SIZE)
    hay[PAGE_SIZE : PAGE_SIZE + WINDOW_BYTES - zeros] = secret[zeros:WINDOW_BYTES]
    found = _hits(CanaryScan({"key": secret}).scan("h", bytes(hay)))
    assert found == [("key", 0, "h", PAGE_SIZE - zeros)]


def test_a_window_that_begins_in_the_zeros_at_the_end_of_a_block_is_found() -> None:
    secret = bytes(4) + _random(26, 12)
    hay = bytearray(2 * CACHE_BLOCK_BYTES)
    hay[CACHE_BLOCK_BYTES : CACHE_BLOCK_BYTES + 4] = secret[4:8]
    found = _hits(CanaryScan({"key": secret}).scan("disk", bytes(hay)))
    assert found == [("key", 0, "disk", CACHE_BLOCK_BYTES - 4)]


# ---- cache blocks -----------------------------------------------------------------------------
def test_a_window_from_the_last_byte_of_a_block_is_found() -> None:
    secret = _random(10, 16)
    hay = bytearray(2 * CACHE_BLOCK_BYTES)
    hay[CACHE_BLOCK_BYTES - 1 : CACHE_BLOCK_BYTES + 7] = secret[:8]
    found = _hits(CanaryScan({"key": secret}).scan("disk", bytes(hay)))
    assert found == [("key", 0, "disk", CACHE_BLOCK_BYTES - 1)]


def test_blocks_after_a_block_of_zeros_are_scanned() -> None:
    secret = _random(11, 16)
    hay = bytearray(3 * CACHE_BLOCK_BYTES)
    hay[2 * CACHE_BLOCK_BYTES + 5 : 2 * CACHE_BLOCK_BYTES + 13] = secret[8:16]
    found = _hits(CanaryScan({"key": secret}).scan("disk", bytes(hay)))
    assert found == [("key", 8, "disk", 2 * CACHE_BLOCK_BYTES + 5)]


def test_cached_and_scanned_hits_name_their_secret_and_haystack() -> None:
    secrets = {"volume key": _random(12, 32), "state key": _random(13, 32)}
    scan = CanaryScan(secrets)
    hay = bytearray(_random(14, CACHE_FROM_BYTES))
    hay[10:18] = secrets["state key"][3:11]
    hay[1000:1008] = secrets["volume key"][0:8]
    expected = [("state key", 3, "first", 10), ("volume key", 0, "first", 1000)]
    assert _hits(scan.scan("first", bytes(hay))) == expected
    assert len(canary._CACHE) == 1  # a haystack of exactly 64 KiB is cached
    again = [(s, o, "second", at) for s, o, _, at in expected]
    assert _hits(scan.scan("second", bytes(hay))) == again


def test_a_block_scanned_before_is_answered_from_the_cache(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    secret = _random(15, 32)
    scan = CanaryScan({"key": secret})
    hay = bytearray(_random(16, CACHE_BLOCK_BYTES + PAGE_SIZE))
    hay[CACHE_BLOCK_BYTES + 9 : CACHE_BLOCK_BYTES + 17] = secret[1:9]
    first = _hits(scan.scan("disk", bytes(hay)))
    assert ("key", 1, "disk", CACHE_BLOCK_BYTES + 9) in first
    assert len(canary._CACHE) == 2

    def unscanned(*_: object) -> list[canary.Hit]:
        raise AssertionError("a cached block was scanned again")

    monkeypatch.setattr(scan, "_scan_run", unscanned)
    assert _hits(scan.scan("disk", bytes(hay))) == first
    small = bytes(hay[: CACHE_FROM_BYTES - 1])  # below 64 KiB: never cached, always scanned
    with pytest.raises(AssertionError, match="scanned again"):
        scan.scan("small", small)
    assert len(canary._CACHE) == 2


def test_haystacks_below_64_kib_leave_the_cache_alone() -> None:
    secret = _random(27, 16)
    scan = CanaryScan({"key": secret})
    assert _hits(scan.scan("log", _random(28, CACHE_FROM_BYTES - 9) + secret[:8])) == [
        ("key", 0, "log", CACHE_FROM_BYTES - 9)]
    assert _hits(scan.scan_all([("line", b"\x01" + secret[:8])])) == [("key", 0, "line", 1)]
    assert canary._CACHE == {}


def test_the_cache_is_emptied_when_it_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(canary, "CACHE_ENTRIES", 2)
    scan = CanaryScan({"key": _random(17, 16)})
    sizes = []
    for seed in range(5):
        scan.scan("disk", _random(100 + seed, CACHE_FROM_BYTES))
        sizes.append(len(canary._CACHE))
    assert sizes == [1, 2, 1, 2, 1]


# ---- scan_all and scan_dram -------------------------------------------------------------------
def test_artifacts_after_a_large_one_are_scanned() -> None:
    secret = _random(18, 32)
    scan = CanaryScan({"key": secret})
    artifacts = [("small 1", b"\x01" * 50 + secret[0:8]), ("disk", _random(19, CACHE_FROM_BYTES)),
                 ("small 2", secret[8:16] + b"\x02" * 50), ("disk 2", bytes(CACHE_FROM_BYTES)),
                 ("small 3", b"\x03" + secret[16:24])]
    assert _hits(scan.scan_all(artifacts)) == [
        ("key", 0, "small 1", 50), ("key", 8, "small 2", 0), ("key", 16, "small 3", 1)]


def test_small_artifacts_are_joined_a_megabyte_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch is scanned once it holds a megabyte or more, then a new one starts."""
    secret = _random(20, 32)
    scan = CanaryScan({"key": secret})
    batches: list[int] = []
    joined = scan._scan_joined

    def recorded(batch: list[tuple[str, bytes]]) -> list[Leak]:
        batches.append(sum(len(data) for _, data in batch))
        return joined(batch)

    monkeypatch.setattr(scan, "_scan_joined", recorded)
    one_megabyte = [32768] * 31 + [32767, 1]
    artifacts = [(f"view {n}", b"\x07" * size)
                 for n, size in enumerate(one_megabyte + one_megabyte + [10])]
    artifacts[40] = ("view 40", secret[24:32] + b"\x07" * (32768 - 8))
    artifacts.insert(20, ("64 KiB", secret[0:8] + bytes(CACHE_FROM_BYTES - 8)))  # alone
    leaks = scan.scan_all(artifacts)
    assert batches == [CACHE_BLOCK_BYTES, CACHE_BLOCK_BYTES, 10]
    assert _hits(leaks) == [("key", 0, "64 KiB", 0), ("key", 24, "view 40", 0)]


def test_joined_hits_keep_their_secret() -> None:
    scan = CanaryScan({"a": _random(21, 16), "b": _random(22, 16)})
    artifacts = [("one", b"\x01" + _random(22, 16)[4:12]), ("two", _random(21, 16)[:8])]
    assert _hits(scan.scan_all(artifacts)) == [("b", 4, "one", 1), ("a", 0, "two", 0)]


def test_dram_hits_are_named_dram_and_carry_their_secret() -> None:
    secret = _random(23, 32)
    dram = Dram(4 << 20)
    dram.write(0x20_0ff9, secret[9:17])  # across a page boundary
    scan = CanaryScan({"workload data": secret})
    assert _hits(scan.scan_dram(dram)) == [("workload data", 9, "DRAM", 0x20_0FF9)]
    assert _hits(scan.scan_dram(dram, "guest DRAM")) == [
        ("workload data", 9, "guest DRAM", 0x20_0FF9)]


def test_a_numpy_haystack_of_one_page_is_scanned_in_place() -> None:
    secret = _random(24, 16)
    hay = np.zeros(PAGE_SIZE, dtype=np.uint8)
    hay[PAGE_SIZE - WINDOW_BYTES :] = np.frombuffer(secret[:8], dtype=np.uint8)
    assert _hits(CanaryScan({"k": secret}).scan("page", hay)) == [
        ("k", 0, "page", PAGE_SIZE - WINDOW_BYTES)]
