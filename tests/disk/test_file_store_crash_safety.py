"""A power cut at every write of the file store leaves every file wholly old or wholly new.

The crash model of ``tests/disk/conftest.py``: the n-th write fails having written nothing, a
tenth, half, or all but the last byte of its bytes. Each operation is run once per write it
makes and per way of tearing that write; the store must then open holding exactly the files
(names and bytes) the write order promises, with the free space its entries leave, and take a
further write that leaves those files as they are. A write of a file makes two writes: its data
to blocks no entry names, then the header to the copy that does not hold the newest generation;
a rename or a removal makes one, the header.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.disk.file_store import BLOCK_SIZE, FileStore, MemoryDevice
from cvm.disk.file_store_header import FIRST_DATA_BLOCK, parse_copy
from cvm.errors import FormatError, StateError

TORN = (0.0, 0.1, 0.5, 0.999)
State = dict[str, bytes] | None  # the files of the store; None: no store opens
Change = Callable[[Any], object]


def _state(device: Any) -> State:
    try:
        store = FileStore.open(device)
    except FormatError:
        return None
    return {name: store.read(name) for name in store.names()}


def _copy(device: Any) -> MemoryDevice:
    copy = MemoryDevice(0)
    copy.data = bytearray(device.data)
    return copy


def _sound(device: Any, state: State) -> None:
    """The store opens as ``state``, its free space is what its entries leave, and it takes
    one more write without touching the other files (refuses it, changing nothing, if it is
    full)."""
    assert state is not None
    device = _copy(device)
    store = FileStore.open(device)
    used = sum(entry.capacity for entry in store.entries)
    assert sum(count for _, count in store.free()) == store.blocks - FIRST_DATA_BLOCK - used
    if not store.free():  # full: a further write is refused and changes nothing
        before = bytes(device.data)
        with pytest.raises(StateError, match="no room"):
            store.write("/after-the-crash", b"written after")
        assert bytes(device.data) == before and _state(device) == state
        return
    store.write("/after-the-crash", b"written after")
    again = FileStore.open(device)
    assert again.read("/after-the-crash") == b"written after"
    assert {name: again.read(name) for name in state} == state


def _check(base: bytearray, crashing: Callable[..., Any], crash: type[Exception],
           change: Change, expected: list[State], final: State, fresh: bool = False) -> None:
    """``change`` writes ``len(expected)`` times; a crash at write ``n`` leaves
    ``expected[n]``, or the state after write ``n`` if the torn write happened to leave all
    its bytes; without a crash it ends as ``final``. ``fresh``: ``change`` takes the device."""
    after = [*expected[1:], final]
    for crash_at in range(len(expected)):
        for torn in TORN:
            device = crashing(base, crash_at, torn)
            with pytest.raises(crash):
                change(device if fresh else FileStore.open(device))
            state = after[crash_at] if device.complete else expected[crash_at]
            assert torn or not device.complete
            assert _state(device) == state, (crash_at, torn)
            if state is not None:
                _sound(device, state)
    device = crashing(base, len(expected), 0.0)
    change(device if fresh else FileStore.open(device))
    assert device.writes == len(expected)
    assert _state(device) == final
    _sound(device, final)


OLD = {"/etc/hostname": b"cvm\n", "/srv/data/log": bytes([1]) * (2 * BLOCK_SIZE + 7),
       "/srv/data/db": bytes([2]) * BLOCK_SIZE}


def _base(blocks: int = 16) -> bytearray:
    """A store holding OLD whose first free block the older header copy still names (the
    log's block before its last rewrite), so a write reuses it."""
    device = MemoryDevice(blocks * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/srv/data/log", b"first")
    store.write("/etc/hostname", OLD["/etc/hostname"])
    store.write("/srv/data/log", b"second")
    store.write("/srv/data/db", OLD["/srv/data/db"])
    store.write("/srv/data/log", OLD["/srv/data/log"])
    older = (store.generation - 1) % 2
    named = parse_copy(bytes(device.data[older * BLOCK_SIZE : (older + 1) * BLOCK_SIZE]),
                       older, len(device.data)).entries
    assert any(e.first_block == store.free()[0][0] for e in named)
    return device.data


def test_format(crashing_storage: Any, crash_type: Any) -> None:
    """Writes: block 0 (generation 0), block 1 (generation 1)."""
    _check(bytearray(8 * BLOCK_SIZE), crashing_storage, crash_type, FileStore.format,
           [None, {}], {}, fresh=True)


def test_format_over_a_store(crashing_storage: Any, crash_type: Any) -> None:
    """Writes: the generation after the store's newest, then the one after that."""
    _check(_base(), crashing_storage, crash_type, FileStore.format, [OLD, {}], {}, fresh=True)


def test_format_over_a_version_1_store(crashing_storage: Any, crash_type: Any) -> None:
    """Writes: block 0 (generation 0), block 1 (generation 1). A cut before block 0 changes
    leaves the version-1 store; once it has changed, the new empty store opens."""
    device = MemoryDevice(8 * BLOCK_SIZE)
    device.data[:16] = b"CVMFS001" + (1).to_bytes(4, "little") + BLOCK_SIZE.to_bytes(4, "little")
    device.data[16:32] = (8).to_bytes(8, "little") + (1).to_bytes(8, "little")
    for crash_at in (0, 1):
        for torn in TORN:
            crashed = crashing_storage(device.data, crash_at, torn)
            with pytest.raises(crash_type):
                FileStore.format(crashed)
            store = FileStore.open(crashed)
            assert (store.version, store.names()) == (1 if crash_at == torn == 0 else 2, [])
            if store.version == 2:
                _sound(crashed, {})


@pytest.mark.parametrize("data", [
    b"", b"new", bytes([9]) * BLOCK_SIZE, bytes([9]) * (3 * BLOCK_SIZE + 1)])
def test_create(crashing_storage: Any, crash_type: Any, data: bytes) -> None:
    _check(_base(), crashing_storage, crash_type, lambda s: s.write("/srv/data/new", data),
           [OLD, OLD], {**OLD, "/srv/data/new": data})


@pytest.mark.parametrize(("name", "data"), [
    ("/srv/data/log", bytes([3]) * (2 * BLOCK_SIZE + 7)),  # the same size
    ("/srv/data/log", bytes([3]) * 100),  # smaller
    ("/srv/data/log", b""),  # empty
    ("/etc/hostname", bytes([3]) * (2 * BLOCK_SIZE + 1)),  # larger
    ("/srv/data/db", bytes([3]) * (4 * BLOCK_SIZE)),  # larger, past the blocks it had
])
def test_rewrite(crashing_storage: Any, crash_type: Any, name: str, data: bytes) -> None:
    _check(_base(), crashing_storage, crash_type, lambda s: s.write(name, data),
           [OLD, OLD], {**OLD, name: data})


def test_remove(crashing_storage: Any, crash_type: Any) -> None:
    rest = {k: v for k, v in OLD.items() if k != "/srv/data/log"}
    _check(_base(), crashing_storage, crash_type, lambda s: s.remove("/srv/data/log"),
           [OLD], rest)


def test_rename(crashing_storage: Any, crash_type: Any) -> None:
    moved = {k: v for k, v in OLD.items() if k != "/srv/data/log"}
    moved["/srv/data/log.1"] = OLD["/srv/data/log"]
    _check(_base(), crashing_storage, crash_type,
           lambda s: s.rename("/srv/data/log", "/srv/data/log.1"), [OLD], moved)


def test_rename_over_another_file(crashing_storage: Any, crash_type: Any) -> None:
    replaced = {"/etc/hostname": OLD["/etc/hostname"], "/srv/data/db": OLD["/srv/data/log"]}
    _check(_base(), crashing_storage, crash_type,
           lambda s: s.rename("/srv/data/log", "/srv/data/db"), [OLD], replaced)


def _scattered() -> tuple[bytearray, dict[str, bytes]]:
    """Twelve data blocks, five one-block files at 4, 7, 10, 11 and 13; free 2-3, 5-6, 8-9
    and 12: seven blocks free, in runs of at most two."""
    device = MemoryDevice(14 * BLOCK_SIZE)
    store = FileStore.format(device)
    for name, blocks in (("/a", 1), ("/b", 2), ("/c", 1), ("/d", 2), ("/e", 1), ("/f", 2),
                         ("/g", 1), ("/h", 1)):
        store.write(name, name.encode() * (blocks * BLOCK_SIZE // 2 - 3))
    for name in ("/b", "/d", "/f"):
        store.remove(name)
    assert [e.first_block for e in store.entries] == [13, 4, 7, 10, 11]
    assert store.free() == [(2, 2), (5, 2), (8, 2), (12, 1)]
    return device.data, {name: store.read(name) for name in store.names()}


def test_a_write_that_compacts(crashing_storage: Any, crash_type: Any) -> None:
    """Writes: /c copied to 12, its commit; /e copied to 8, its commit; the data to 2-7, the
    commit. A cut anywhere leaves every file whole, moved or not."""
    base, files = _scattered()
    data = bytes([9]) * (6 * BLOCK_SIZE)
    _check(base, crashing_storage, crash_type, lambda s: s.write("/new", data), [files] * 6,
           {**files, "/new": data})


def test_a_rewrite_that_moves_the_file_it_rewrites(crashing_storage: Any,
                                                   crash_type: Any) -> None:
    """Writes: /c (old data) copied to 12, its commit; /c's new data to 2-6, the commit."""
    base, files = _scattered()
    data = bytes([9]) * (5 * BLOCK_SIZE - 1)
    _check(base, crashing_storage, crash_type, lambda s: s.write("/c", data), [files] * 4,
           {**files, "/c": data})


def test_a_write_whose_moves_only_the_search_finds(crashing_storage: Any,
                                                  crash_type: Any) -> None:
    """Two blocks (/a) at 3, three (/b) at 5, free 2 and 8-10. Writes: /a copied to 9-10, its
    commit; /b copied to 2-4, its commit; four blocks of data to 5-8, the commit."""
    from tests.disk.test_file_store_compaction import laid_out

    files = {"/a": bytes([1]) * (2 * BLOCK_SIZE), "/b": bytes([2]) * (3 * BLOCK_SIZE - 9)}
    device = laid_out(11, {"/a": (3, files["/a"]), "/b": (5, files["/b"])})
    data = bytes([9]) * (4 * BLOCK_SIZE)
    _check(device.data, crashing_storage, crash_type, lambda s: s.write("/new", data),
           [files] * 6, {**files, "/new": data})


def test_ten_thousand_rewrites_in_room_for_twice_the_file() -> None:
    """Blocks a rewrite leaves are reused: room for two copies of the file is enough."""
    device = MemoryDevice((FIRST_DATA_BLOCK + 2 * 4) * BLOCK_SIZE)  # 8 blocks, 2 files' worth
    store = FileStore.format(device)
    sizes = random.Random(7).choices(range(4 * BLOCK_SIZE + 1), k=10_000)
    sizes[:4] = [4 * BLOCK_SIZE, 3 * BLOCK_SIZE, 3 * BLOCK_SIZE, 4 * BLOCK_SIZE]
    for round_, size in enumerate(sizes):
        data = bytes([round_ % 251]) * size
        store.write("/srv/data/counter", data)
        if round_ % 1000 == 0:
            assert FileStore.open(device).read("/srv/data/counter") == data
    assert FileStore.open(device).read("/srv/data/counter") == data
    assert store.generation == 1 + 10_000


def test_a_full_store_refuses_a_write_and_keeps_the_previous_content() -> None:
    """Six data blocks: the log takes three, the hostname one; two are free. Rewriting the
    log needs three more while its old three are named: refused, nothing written, before
    any move (too few blocks are free)."""
    device = MemoryDevice((FIRST_DATA_BLOCK + 6) * BLOCK_SIZE)
    store = FileStore.format(device)
    files = {"/srv/data/log": bytes([1]) * (3 * BLOCK_SIZE), "/etc/hostname": b"cvm\n"}
    for name, data in files.items():
        store.write(name, data)
    assert store.free() == [(3, 2)]
    before = bytes(device.data)
    for name in ("/srv/data/log", "/srv/data/new"):
        with pytest.raises(StateError, match=f"no room for {2 * BLOCK_SIZE + 1} bytes"):
            store.write(name, bytes(2 * BLOCK_SIZE + 1))
    assert bytes(device.data) == before and _state(device) == files
    store.write("/srv/data/log", bytes([2]) * (2 * BLOCK_SIZE))  # what fits still fits
    assert _state(device) == {**files, "/srv/data/log": bytes([2]) * (2 * BLOCK_SIZE)}


OPERATION = st.tuples(st.sampled_from(("write", "remove", "rename")), st.integers(0, 3),
                      st.integers(0, 3), st.integers(0, 3 * BLOCK_SIZE))


@settings(max_examples=60, deadline=None)
@given(st.lists(OPERATION, max_size=12), st.integers(0, 30), st.sampled_from(TORN))
def test_any_sequence_cut_at_any_write_leaves_the_state_before_or_after_its_operation(
        operations: list[tuple[str, int, int, int]], crash_at: int, torn: float) -> None:
    base = MemoryDevice((FIRST_DATA_BLOCK + 12) * BLOCK_SIZE)
    FileStore.format(base)
    _cut_sequence(base.data, {}, operations, crash_at, torn)


SCATTERED_OPERATION = st.tuples(
    st.sampled_from(("write", "write", "remove", "rename")), st.integers(0, 5),
    st.integers(0, 5), st.sampled_from((1, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 1,
                                        5 * BLOCK_SIZE)))


@settings(max_examples=150, deadline=None)
@given(st.lists(SCATTERED_OPERATION, max_size=8), st.integers(0, 30), st.sampled_from(TORN))
def test_any_sequence_from_scattered_free_space_cut_at_any_write_moves_included(
        operations: list[tuple[str, int, int, int]], crash_at: int, torn: float) -> None:
    """From :func:`_scattered` (names /a, /c, /e, /g, /h among /a to /f): writes of three or
    more blocks must move files first; a cut in a move leaves the state before the write."""
    base, files = _scattered()
    _cut_sequence(base, files, operations, crash_at, torn, names="abcdef")


def _cut_sequence(base: bytearray, files: dict[str, bytes],
                  operations: list[tuple[str, int, int, int]], crash_at: int, torn: float,
                  names: str = "0123") -> None:
    from tests.disk.conftest import CrashError, CrashingStorage

    device = CrashingStorage(base, crash_at, torn)
    store = FileStore.open(device)
    model = dict(files)
    for kind, one, other, size in operations:
        name, new_name = f"/{names[one % len(names)]}", f"/{names[other % len(names)]}"
        data = bytes([one + 1]) * size
        after = dict(model)
        if kind == "write":
            after[name] = data
        elif name in after:
            moved = after.pop(name)
            if kind == "rename":
                after[new_name] = moved
        try:
            if kind == "write":
                store.write(name, data)
            elif kind == "remove":
                store.remove(name)
            else:
                store.rename(name, new_name)
        except StateError:  # no such file, or no room: refused, nothing written
            assert _state(device) == model
            continue
        except CrashError:
            state = _state(device)
            assert state == model or (device.complete and state == after), (kind, state)
            _sound(device, state)
            return
        model = after
        assert _state(device) == model
