"""The memory encryption engine and sparse DRAM."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import StateError, UsageError
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE, Dram
from cvm.hardware.vm import Mode
from cvm.host.vmm import Hypervisor

MIB = 1 << 20
GIB = 1 << 30


def test_a_64_gib_host_allocates_only_what_is_written() -> None:
    dram = Dram(64 * GIB)
    assert dram.read(63 * GIB, 16) == bytes(16)
    dram.write(40 * GIB + 5, b"hello")
    assert dram.read(40 * GIB + 5, 5) == b"hello"
    assert dram.allocated_bytes == 2 * MIB


def test_dram_refuses_addresses_outside_it() -> None:
    with pytest.raises(UsageError, match="outside DRAM"):
        Dram(4 * MIB).read(4 * MIB - 2, 4)
    with pytest.raises(UsageError, match="multiple"):
        Dram(12345)


def test_same_plaintext_at_two_addresses_gives_different_ciphertext() -> None:
    machine = Machine(8 * MIB)
    machine.engine.activate(1)
    page = b"\x42" * PAGE_SIZE
    machine.engine.write(1, 0x10000, page)
    machine.engine.write(1, 0x11000, page)
    one, two = machine.host_read(0x10000, PAGE_SIZE), machine.host_read(0x11000, PAGE_SIZE)
    assert one != two
    # Identical blocks within one page differ too: the tweak covers every 16-byte block.
    assert len({one[i : i + 16] for i in range(0, PAGE_SIZE, 16)}) == PAGE_SIZE // 16


def test_ciphertext_moved_to_another_address_decrypts_to_garbage() -> None:
    machine = Machine(8 * MIB)
    machine.engine.activate(1)
    machine.engine.write(1, 0x10000, b"A" * PAGE_SIZE)
    machine.dram.write(0x20000, machine.host_read(0x10000, PAGE_SIZE))
    moved = machine.engine.read(1, 0x20000, PAGE_SIZE)
    assert moved != b"A" * PAGE_SIZE
    assert machine.engine.read(1, 0x10000, PAGE_SIZE) == b"A" * PAGE_SIZE


def test_another_asid_reads_garbage_and_keys_die_with_the_guest() -> None:
    machine = Machine(8 * MIB)
    machine.engine.activate(1)
    machine.engine.activate(2)
    machine.engine.write(1, 0x10000, b"secret" * 10)
    assert machine.engine.read(2, 0x10000, 60) != b"secret" * 10
    machine.engine.deactivate(1)
    with pytest.raises(StateError, match="ASID 1"):
        machine.engine.read(1, 0x10000, 60)
    with pytest.raises(StateError, match="ASID 2"):
        machine.engine.activate(2)
    with pytest.raises(UsageError, match="ASID 0"):
        machine.engine.activate(0)


def test_partial_writes_keep_the_rest_of_the_page() -> None:
    machine = Machine(8 * MIB)
    machine.engine.activate(5)
    machine.engine.write(5, 0x30000, bytes(range(256)) * 32)
    machine.engine.write(5, 0x30FF0, b"x" * 0x20)  # crosses into the next page
    data = machine.engine.read(5, 0x30000, 2 * PAGE_SIZE)
    assert data[:0xFF0] == (bytes(range(256)) * 32)[:0xFF0]
    assert data[0xFF0:0x1010] == b"x" * 0x20


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from([Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP]),
    asid=st.integers(1, 509),
    offset=st.integers(0, 8 * PAGE_SIZE - 1),
    data=st.binary(min_size=16, max_size=3 * PAGE_SIZE),
)
def test_guest_reads_back_what_it_wrote_and_the_host_never_sees_it(
    mode: Mode, asid: int, offset: int, data: bytes
) -> None:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(mode, 12 * PAGE_SIZE, asid=None if mode is Mode.PLAIN else asid)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 12 * PAGE_SIZE)
    data = data[: 12 * PAGE_SIZE - offset]
    kernel.cpu.write(offset, data)
    assert kernel.cpu.read(offset, len(data)) == data
    first = offset - offset % PAGE_SIZE
    dram = b"".join(
        host.machine.host_read(host.spa_of(guest, gpa), PAGE_SIZE)
        for gpa in range(first, offset + len(data), PAGE_SIZE)
    )
    if mode is Mode.PLAIN:
        assert data in dram
    elif len(set(data)) > 1:
        assert data not in dram
        assert all(data[i : i + 16] not in dram for i in range(0, len(data) - 15, 16))


def test_dram_reads_and_writes_across_a_chunk_boundary() -> None:
    dram = Dram(8 * MIB)
    data = bytes(range(256)) * 40  # 10240 bytes across the 2 MiB boundary
    start = 2 * MIB - 5000
    dram.write(start, data)
    assert dram.read(start, len(data)) == data
    assert dram.read(2 * MIB - 3, 6) == data[4997:5003]
    assert dram.read(6 * MIB - 3, 6) == bytes(6)  # an unwritten chunk reads as zeros
    assert dram.read(2 * MIB - 3, 0) == b""
    dram.write(6 * MIB, b"")
    assert dram.allocated_bytes == 4 * MIB  # an empty write allocates nothing


def test_private_accesses_across_a_chunk_boundary_equal_page_by_page_ones() -> None:
    machine = Machine(8 * MIB)
    machine.engine.activate(1)
    data = bytes(range(256)) * 48  # 3 pages: the last of chunk 0, two of chunk 1
    start = 2 * MIB - PAGE_SIZE
    machine.engine.write(1, start, data)
    assert machine.engine.read(1, start, len(data)) == data
    for page in range(3):
        spa = start + page * PAGE_SIZE
        assert machine.engine.read_pages(1, spa, 1) == data[page * PAGE_SIZE:][:PAGE_SIZE]
    machine.engine.write(1, 2 * MIB - 10, b"\xaa" * 20)  # a partial write over the boundary
    expected = data[:PAGE_SIZE - 10] + b"\xaa" * 20 + data[PAGE_SIZE + 10:]
    assert machine.engine.read(1, start, len(data)) == expected
    assert machine.host_read(start, len(data)) != expected  # ciphertext in DRAM
