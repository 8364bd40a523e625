"""The memory encryption engine's own decisions, each pinned: the ASID range and lifecycle,
the host's unencrypted path, unaligned accesses against a plain byte model, runs over DRAM
chunks, and what a write returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import StateError, UsageError
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import CHUNK_SIZE, PAGE_SIZE
from cvm.hardware.memory.engine import MAX_ASID

MIB = 1 << 20


def test_the_asid_range_is_one_to_max_asid() -> None:
    engine = Machine(4 * MIB).engine
    engine.activate(1)
    engine.activate(MAX_ASID)
    assert engine.is_active(MAX_ASID)
    for asid in (0, MAX_ASID + 1):
        with pytest.raises(UsageError, match=f"ASID {asid} is out of range 1..{MAX_ASID}"):
            engine.activate(asid)


def test_deactivating_twice_is_refused_and_the_key_is_gone() -> None:
    machine = Machine(4 * MIB)
    machine.engine.activate(7)
    machine.engine.write(7, 0x2000, b"secret")
    machine.engine.deactivate(7)
    assert not machine.engine.is_active(7)
    with pytest.raises(StateError, match=r"^ASID 7 is not active$"):
        machine.engine.deactivate(7)
    with pytest.raises(StateError, match="ASID 7 has no key"):
        machine.engine.read(7, 0x2000, 6)
    with pytest.raises(StateError, match="ASID 7 has no key"):
        machine.engine.access_page(7, 2, 0, 6, None)


def test_without_an_asid_the_engine_passes_bytes_through_to_dram() -> None:
    machine = Machine(4 * MIB)
    machine.engine.write(None, 0x3005, b"plain")
    assert machine.dram.read(0x3005, 5) == b"plain"
    machine.dram.write(0x4007, b"host")
    assert machine.engine.read(None, 0x4007, 4) == b"host"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * PAGE_SIZE - 1), st.integers(1, 2 * PAGE_SIZE),
                          st.booleans()), min_size=1, max_size=12))
def test_unaligned_private_accesses_match_a_byte_model(
    operations: list[tuple[int, int, bool]],
) -> None:
    machine = Machine(4 * MIB)
    machine.engine.activate(1)
    base = 0x10000
    model = bytearray(5 * PAGE_SIZE)
    machine.engine.write(1, base, bytes(model))
    for number, (offset, size, write) in enumerate(operations):
        if write:
            data = bytes((number + i) % 251 for i in range(size))
            machine.engine.write(1, base + offset, data)
            model[offset : offset + size] = data
        else:
            assert machine.engine.read(1, base + offset, size) == bytes(model[offset:offset + size])
    assert machine.engine.read(1, base, len(model)) == bytes(model)


def test_a_run_over_three_chunks_from_inside_one() -> None:
    machine = Machine(8 * MIB)
    machine.engine.activate(1)
    start = CHUNK_SIZE - 3 * PAGE_SIZE  # three pages before the first boundary
    size = 2 * CHUNK_SIZE + 2 * PAGE_SIZE  # through the second boundary into a third chunk
    data = np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8)
    machine.engine.write_pages_from(1, start, data)
    back = np.empty(size, dtype=np.uint8)
    machine.engine.read_pages_into(1, start, back)
    assert np.array_equal(back, data)
    for page in (0, 3, 515, size // PAGE_SIZE - 1):  # page by page, the same plaintext
        got = machine.engine.read_pages(1, start + page * PAGE_SIZE, 1)
        assert got == data[page * PAGE_SIZE : (page + 1) * PAGE_SIZE].tobytes()


def test_a_write_through_the_page_path_returns_nothing() -> None:
    machine = Machine(4 * MIB)
    machine.engine.activate(1)
    machine.engine.write(1, 0x5000, bytes(PAGE_SIZE))
    assert machine.engine.access_page(1, 5, 10, 3, b"abc") == b""
    assert machine.engine.access_page(1, 5, 0, PAGE_SIZE, b"\x01" * PAGE_SIZE) == b""
    assert machine.engine.access_page(1, 5, 4093, 3, None) == b"\x01" * 3


@pytest.mark.parametrize(("offset", "size"), [(0, PAGE_SIZE), (100, PAGE_SIZE - 100),
                                              (-8, PAGE_SIZE + 8)])
def test_private_accesses_reach_the_last_byte_of_dram_and_no_further(offset: int,
                                                                      size: int) -> None:
    machine = Machine(4 * MIB)
    machine.engine.activate(1)
    spa = 4 * MIB - PAGE_SIZE + offset
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    machine.engine.write(1, spa, data)  # only the pages the bytes touch
    assert machine.engine.read(1, spa, size) == data
    with pytest.raises(UsageError, match="outside DRAM"):
        machine.engine.read(1, spa + 1, size)


def test_a_write_one_byte_into_the_next_page() -> None:
    machine = Machine(4 * MIB)
    machine.engine.activate(1)
    machine.engine.write(1, 0x6000, bytes(2 * PAGE_SIZE))
    data = b"\x5a" * (PAGE_SIZE + 1)
    machine.engine.write(1, 0x6000, data)
    assert machine.engine.read(1, 0x6000, PAGE_SIZE + 2) == data + b"\x00"
