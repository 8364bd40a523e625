"""Sparse DRAM (:mod:`cvm.hardware.memory.dram`): its size rule, bounds, chunk edges, what a dump
of the chips holds, and its record of written pages — zeroing must clear every byte ever written
in its range, nothing outside it, and never touch a chunk that was never allocated."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cvm.errors import UsageError
from cvm.hardware.memory.dram import CHUNK_SIZE, PAGE_SIZE, Dram

MIB = 1 << 20


@pytest.mark.parametrize("size", [0, -CHUNK_SIZE, CHUNK_SIZE + PAGE_SIZE, PAGE_SIZE])
def test_a_size_off_the_chunk_rule_is_refused(size: int) -> None:
    with pytest.raises(UsageError, match=re.escape(
            f"DRAM size must be a positive multiple of 0x200000 bytes, got {size:#x}")):
        Dram(size)


def test_the_size_sets_the_frames() -> None:
    dram = Dram(2 * CHUNK_SIZE)
    assert (dram.size_bytes, dram.frames, dram.allocated_bytes) == (4 * MIB, 1024, 0)


@pytest.mark.parametrize(("spa", "size"), [
    (-1, 1), (0, -1), (4 * MIB, 1), (4 * MIB - 1, 2), (-PAGE_SIZE, 2 * PAGE_SIZE)])
def test_every_access_outside_dram_is_refused(spa: int, size: int) -> None:
    dram = Dram(4 * MIB)
    message = "^" + re.escape(f"system physical address {spa:#x}+{size:#x} is outside DRAM "
                              "(0..0x400000)") + "$"
    accesses = [lambda: dram.read(spa, size), lambda: dram.zero(spa, size),
                lambda: dram.span(spa, size)]
    if size >= 0:
        accesses.append(lambda: dram.write(spa, bytes(size)))
    for access in accesses:
        with pytest.raises(UsageError, match=message):
            access()
    assert dram.allocated_bytes == 0


def test_the_edges_of_dram_are_inside_it() -> None:
    dram = Dram(4 * MIB)
    dram.write(0, b"first")
    dram.write(4 * MIB - 4, b"last")
    assert dram.read(0, 5) == b"first" and dram.read(4 * MIB - 4, 4) == b"last"
    assert dram.read(4 * MIB, 0) == b"" and dram.read(0, 4 * MIB)[-4:] == b"last"
    dram.zero(0, 4 * MIB)
    assert dram.read(0, 4 * MIB) == bytes(4 * MIB)


def test_a_span_must_lie_in_one_chunk() -> None:
    dram = Dram(4 * MIB)
    view = dram.span(CHUNK_SIZE - 8, 8)
    assert view.size == 8
    view[:] = 7
    assert dram.read(CHUNK_SIZE - 8, 8) == b"\x07" * 8
    with pytest.raises(UsageError, match=re.escape(
            "span 0x1ffffc+0x8 crosses a 0x200000-byte chunk")):
        dram.span(CHUNK_SIZE - 4, 8)
    assert dram.allocated_bytes == CHUNK_SIZE


def test_page_views_are_each_page_for_every_frame_in_dram() -> None:
    dram = Dram(4 * MIB)
    for frame in (0, 1, 0x1FF, 0x200, 0x3FF):
        dram.page(frame)[:] = frame & 0xFF
    for frame in (0, 1, 0x1FF, 0x200, 0x3FF):
        assert dram.read(frame * PAGE_SIZE, PAGE_SIZE) == bytes([frame & 0xFF]) * PAGE_SIZE
    assert dram.read(2 * PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
    for frame in (0x400, 0x401, -1):
        with pytest.raises(UsageError, match="^" + re.escape(
                f"system page {frame:#x} is outside DRAM (0..0x400 pages)") + "$"):
            dram.page(frame)


def test_reads_and_writes_across_chunks() -> None:
    dram = Dram(6 * MIB)
    data = bytes(range(256)) * 64
    dram.write(CHUNK_SIZE - 100, data)  # chunks 0 and 1
    assert dram.read(CHUNK_SIZE - 100, len(data)) == data
    assert dram.read(CHUNK_SIZE - 100, 2 * CHUNK_SIZE)[: len(data)] == data
    assert dram.read(2 * CHUNK_SIZE - 10, 20) == bytes(20)  # into the unallocated chunk 2
    assert dram.allocated_bytes == 2 * CHUNK_SIZE
    dram.write(3 * CHUNK_SIZE - 3, b"")  # nothing written: nothing allocated
    assert dram.allocated_bytes == 2 * CHUNK_SIZE


def test_a_dump_holds_every_allocated_chunk_in_address_order_read_only() -> None:
    dram = Dram(8 * MIB)
    dram.write(3 * CHUNK_SIZE + 5, b"three")
    dram.write(CHUNK_SIZE + 7, b"one")
    chunks = dram.chunks()
    assert [base for base, _ in chunks] == [CHUNK_SIZE, 3 * CHUNK_SIZE]
    assert all(view.size == CHUNK_SIZE for _, view in chunks)
    assert bytes(chunks[0][1][7:10]) == b"one" and bytes(chunks[1][1][5:10]) == b"three"
    with pytest.raises(ValueError, match="read-only"):
        chunks[0][1][0] = 1
    dram.write(CHUNK_SIZE + 7, b"ONE")  # the dump is a view of the chips
    assert bytes(chunks[0][1][7:10]) == b"ONE"
    assert Dram(2 * MIB).chunks() == []


@pytest.mark.parametrize("write", ["write", "span", "page"])
@pytest.mark.parametrize(("spa", "size"), [
    (0x5000, 1), (0x5FFF, 1), (0x5000, PAGE_SIZE), (0x5800, PAGE_SIZE), (0x5001, 2 * PAGE_SIZE),
    (CHUNK_SIZE - 1, 1), (CHUNK_SIZE + 0x3000, 3 * PAGE_SIZE + 1)])
def test_zeroing_clears_every_written_byte_however_small(write: str, spa: int, size: int) -> None:
    """Each byte written by each way of writing is found by the zeroing, which never meets a
    chunk that was never allocated (the record of written pages stays inside the chunks)."""
    dram = Dram(8 * MIB)
    if write == "write":
        dram.write(spa, b"\xa5" * size)
    elif write == "span":  # every range above lies in one chunk, as a span must
        dram.span(spa, size)[:] = 0xA5
    else:
        for frame in range(spa >> 12, (spa + size - 1 >> 12) + 1):
            dram.page(frame)[:] = 0xA5
    allocated = dram.allocated_bytes
    dram.zero(0, 8 * MIB)
    assert dram.read(0, 8 * MIB) == bytes(8 * MIB)
    assert dram.allocated_bytes == allocated
    dram.write(spa, b"\x5a" * size)
    dram.zero(spa, size)  # exactly the range
    assert dram.read(spa, size) == bytes(size)


def test_an_empty_write_marks_nothing() -> None:
    dram = Dram(4 * MIB)
    dram.write(0x1001, b"")
    dram.span(CHUNK_SIZE + 0x1001, 0)  # allocates chunk 1, marks nothing in it
    dram.zero(0, 4 * MIB)  # chunk 0 was never allocated: nothing to touch there
    assert dram.allocated_bytes == CHUNK_SIZE


def test_a_write_in_a_high_chunk_marks_no_lower_page() -> None:
    dram = Dram(8 * MIB)
    dram.write(3 * CHUNK_SIZE + 0x4000, b"\x11" * (2 * PAGE_SIZE))
    dram.write(2 * CHUNK_SIZE + 0x4000, b"\x22")
    dram.zero(0, 8 * MIB)
    assert dram.allocated_bytes == 2 * CHUNK_SIZE
    assert dram.read(2 * CHUNK_SIZE, 2 * CHUNK_SIZE) == bytes(2 * CHUNK_SIZE)


def test_a_write_ending_at_a_chunk_end_marks_nothing_past_it() -> None:
    dram = Dram(4 * MIB)
    for spa, size in ((CHUNK_SIZE - 2, 1), (CHUNK_SIZE - 2, 2), (CHUNK_SIZE - 3 * PAGE_SIZE,
                                                                 3 * PAGE_SIZE)):
        dram.write(spa, b"\x33" * size)
        dram.zero(0, 4 * MIB)
        assert dram.allocated_bytes == CHUNK_SIZE


@pytest.mark.parametrize(("spa", "size"), [
    (0x1000, 0x1001), (0x1FFF, 1), (0x1800, 0x1000), (0x2000, 0xFFF), (0x1000, 0x2000)])
def test_zeroing_clears_exactly_its_range(spa: int, size: int) -> None:
    dram = Dram(4 * MIB)
    pattern = bytes(range(1, 256)) * (0x5000 // 255 + 1)
    dram.write(0, pattern[:0x5000])
    dram.zero(spa, size)
    expected = bytearray(pattern[:0x5000])
    expected[spa : spa + size] = bytes(size)
    assert dram.read(0, 0x5000) == bytes(expected)


@pytest.mark.parametrize("few_written", [True, False])
def test_zeroing_in_one_chunk_leaves_written_pages_of_other_chunks(few_written: bool) -> None:
    """Pages written in a lower or higher chunk are outside the range: zeroing must not reach
    into them or, through them, into the chunk being zeroed."""
    dram = Dram(8 * MIB)
    keep = {0x1F0000: b"low chunk", CHUNK_SIZE + 0x5000: b"same chunk, after",
            2 * CHUNK_SIZE: b"next chunk, first page", CHUNK_SIZE - PAGE_SIZE: b"chunk 0 end"}
    for spa, data in keep.items():
        dram.write(spa, data)
    if not few_written:  # more written pages than the range has: the other search order
        dram.write(3 * CHUNK_SIZE, b"\x44" * (64 * PAGE_SIZE))
    for spa, size in ((CHUNK_SIZE + 0x1000, 0x10), (CHUNK_SIZE + 0x1000, 0x3000),
                      (2 * CHUNK_SIZE - PAGE_SIZE, PAGE_SIZE - 1), (0x10, 0x10),
                      (2 * CHUNK_SIZE - PAGE_SIZE, PAGE_SIZE)):
        dram.zero(spa, size)
        for where, data in keep.items():
            assert dram.read(where, len(data)) == data, (hex(spa), hex(size), hex(where))
    if not few_written:
        assert dram.read(3 * CHUNK_SIZE, 64 * PAGE_SIZE) == b"\x44" * (64 * PAGE_SIZE)


def test_a_page_view_is_made_once_and_stays_the_page() -> None:
    dram = Dram(4 * MIB)
    first = dram.page(0x203)
    first[:] = np.frombuffer(b"\x99" * PAGE_SIZE, dtype=np.uint8)
    assert dram.page(0x203) is first
    dram.write(0x203000, b"new")
    assert bytes(first[:3]) == b"new"
    dram.zero(0x203000, PAGE_SIZE)
    assert not first.any()
