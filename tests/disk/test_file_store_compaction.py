"""The file store's compaction: the plan of moves (against a search of every move a file can
make, at any free place) and the writes that carry it out."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.disk.file_store import BLOCK_SIZE, FileEntry, FileStore, MemoryDevice
from cvm.disk.file_store_compaction import (
    SEARCH_LIMIT_LAYOUTS,
    Move,
    Plan,
    clear_window,
    evacuation,
    fill_move,
    free_runs,
    gather_and_clear,
    largest,
    moves_from,
    plan_moves,
    search_moves,
)
from cvm.disk.file_store_header import StoreHeader, blocks_for
from cvm.errors import StateError


def _apply(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
           moves: Sequence[Move]) -> tuple[int, ...]:
    """The layout after ``moves``, each checked to be safe where it is made: the file's new
    blocks inside the store and free (no file, itself included, holds any of them)."""
    layout = list(places)
    for move in moves:
        new = set(range(move.first_block, move.first_block + sizes[move.index]))
        held = {b for place, size in zip(layout, sizes, strict=True)
                for b in range(place, place + size)}
        assert new <= set(range(first, end)) and not new & held, move
        layout[move.index] = move.first_block
    return tuple(layout)


def _any_room(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
              needed: int) -> bool:
    """Whether any sequence of safe moves, each file to any free place at all (not only the
    ends of a run), leaves a free run of ``needed`` blocks: every reachable layout tried."""
    start = tuple(places)
    seen, queue = {start}, deque([start])
    while queue:
        layout = queue.popleft()
        if largest(free_runs(layout, sizes, first, end)) >= needed:
            return True
        for index, size in enumerate(sizes):
            for run_start, run_size in free_runs(layout, sizes, first, end):
                for place in range(run_start, run_start + run_size - size + 1):
                    after = (*layout[:index], place, *layout[index + 1 :])
                    if after not in seen:
                        seen.add(after)
                        queue.append(after)
    return False


def test_free_runs_are_the_gaps_between_files_and_the_ends() -> None:
    assert free_runs([5, 2], [2, 1], 2, 10) == [(3, 2), (7, 3)]
    assert free_runs([2, 8], [6, 2], 2, 10) == []
    assert free_runs([], [], 2, 4) == [(2, 2)]
    assert free_runs([3], [1], 2, 4) == [(2, 1)]
    assert largest([(2, 1), (7, 3), (11, 2)]) == 3 and largest([]) == 0


def test_a_file_moves_to_either_end_of_each_run_that_holds_it() -> None:
    # files of 1 and 2 blocks at 4 and 7; runs (2, 2), (5, 2), (9, 1)
    assert moves_from([1, 2], [(2, 2), (5, 2), (9, 1)]) == [
        Move(0, 2), Move(0, 3), Move(0, 5), Move(0, 6), Move(0, 9),
        Move(1, 2), Move(1, 5)]
    assert moves_from([3], [(2, 2)]) == []


def test_no_moves_when_a_run_holds_the_blocks_already() -> None:
    assert plan_moves([4], [1], 2, 8, 3) == Plan((), exhausted=False)
    # blocks 2-3 and 5-7 free: the file leaves the window 2-5 for the smallest run outside
    assert plan_moves([4], [1], 2, 8, 4) == Plan((Move(0, 6),), exhausted=False)


def test_a_window_is_cleared_into_the_smallest_runs_outside_it() -> None:
    # one-block files at 4, 7, 10, 11; runs (2, 2), (5, 2), (8, 2)
    places, sizes = [11, 4, 7, 10], [1, 1, 1, 1]
    assert evacuation(places, sizes, 2, 12, 3) == [Move(1, 5)]  # window 2-4: the file at 4
    plan = plan_moves(places, sizes, 2, 12, 6)  # window 2-7: the files at 4 and 7, to 8, 9
    assert plan == Plan((Move(1, 8), Move(2, 9)), exhausted=False)
    assert plan.moves is not None
    assert largest(free_runs(_apply(places, sizes, 2, 12, plan.moves), sizes, 2, 12)) == 6


def test_the_window_moving_the_fewest_blocks_is_taken() -> None:
    # three blocks at 2 and one at 6; runs (5, 1), (7, 3): the window 5-8 moves one block
    # (the file at 6, to 9), the window 6-9 moves it too but was found later, 2-5 three
    assert evacuation([2, 6], [3, 1], 2, 10, 4) == [Move(1, 9)]



def test_a_window_may_end_where_a_run_or_a_file_ends() -> None:
    # two blocks at 5, free 2-4 and 7: only the window 4-7 (ending where the last run ends)
    # leaves a run outside for the file (2-3)
    assert evacuation([5], [2], 2, 8, 4) == [Move(0, 2)]
    # one block at 7, two at 5, free 2-4 and 8: the windows 4-7 (ending where the one-block
    # file ends) and 5-8 both move three blocks; the lower is taken
    assert evacuation([7, 5], [1, 2], 2, 9, 4) == [Move(1, 2), Move(0, 8)]


def test_a_window_s_files_go_largest_first_to_the_smallest_run_that_holds_each() -> None:
    # two blocks at 2, one at 4, two at 5; free 7-9 and 14-15 (a wall of four at 10-13)
    places, sizes, runs = [2, 4, 5, 10], [2, 1, 2, 4], [(7, 3), (14, 2)]
    assert clear_window(places, sizes, runs, 2, 7) == [Move(0, 14), Move(2, 7), Move(1, 9)]
    # smallest first would have put the one-block file in 14-15 and left no room for both
    # two-block files; a window with the wall in it cannot be cleared
    assert clear_window(places, sizes, runs, 9, 14) is None


def test_a_window_stays_inside_the_store() -> None:
    # a file at 2 (two blocks), runs (4, 3): the windows 1-4 and 4-7 ... only inside [2, 7)
    assert evacuation([2], [2], 2, 7, 3) == []
    assert evacuation([4], [2], 2, 7, 3) == [Move(0, 2)]
    assert evacuation([3], [2], 2, 6, 3) is None  # no window of three outside 3-4 fits


def test_a_fill_move_takes_the_largest_file_above_the_lowest_run_it_fits() -> None:
    # files: two blocks at 3 and 6, one at 8; runs (2, 1), (5, 1), (9, 1)
    places, sizes = [3, 6, 8], [2, 2, 1]
    assert fill_move(places, sizes, free_runs(places, sizes, 2, 10)) == Move(2, 2)
    # of equal sizes, the highest: one block at 4, 6 and 8 over run (2, 2)
    assert fill_move([4, 6, 8], [1, 1, 1], [(2, 2), (5, 1), (7, 1)]) == Move(2, 2)
    assert fill_move([4, 6], [2, 1], [(2, 2), (7, 3)]) == Move(0, 2)  # the larger one
    assert fill_move([2], [1], [(3, 2)]) is None  # nothing above the run
    assert fill_move([2, 5], [2, 2], [(4, 1), (7, 1)]) is None  # nothing fits


def test_fill_moves_gather_free_space_until_a_window_can_be_cleared() -> None:
    places, sizes = [3, 6, 8], [2, 2, 1]  # runs (2, 1), (5, 1), (9, 1); three wanted
    assert evacuation(places, sizes, 2, 10, 3) is None
    assert gather_and_clear(places, sizes, 2, 10, 3) == (Move(2, 2), Move(0, 8))
    assert plan_moves(places, sizes, 2, 10, 3) == Plan((Move(2, 2), Move(0, 8)),
                                                       exhausted=False)


def test_the_search_finds_what_gathering_cannot() -> None:
    # two blocks at 3, three at 5; runs (2, 1), (8, 3); four wanted: the two-block file to
    # the end of the last run, then the three-block one to the front
    assert gather_and_clear([3, 5], [2, 3], 2, 11, 4) is None
    assert plan_moves([3, 5], [2, 3], 2, 11, 4) == Plan((Move(0, 9), Move(1, 2)),
                                                        exhausted=False)


def test_files_larger_than_every_run_cannot_move() -> None:
    # three blocks, two free, three, two free: four free blocks, no run over two
    assert plan_moves([2, 7], [3, 3], 2, 12, 4) == Plan(None, exhausted=True)
    assert plan_moves([2, 7], [3, 3], 2, 12, 5) == Plan(None, exhausted=True)  # four free


def test_the_search_stops_at_its_limit() -> None:
    places, sizes = [3, 5], [2, 3]
    for limit in range(1, 40):
        if search_moves(places, sizes, 2, 11, 4, limit).moves is not None:
            break
    assert search_moves(places, sizes, 2, 11, 4, limit - 1) == Plan(None, exhausted=False)
    assert plan_moves(places, sizes, 2, 11, 4, limit - 1) == Plan(None, exhausted=False)
    assert limit == 7  # the plan's layout is the seventh the search reaches, the start counted
    assert SEARCH_LIMIT_LAYOUTS == 20_000


def test_the_search_goes_on_from_the_layout_with_the_largest_run() -> None:
    # one block at 5 and 4, free 2-3 and 6-7, four wanted: the tenth layout (the start
    # counted) is the plan; taking the smallest run first would need thirteen
    assert search_moves([5, 4], [1, 1], 2, 8, 4, 10) == Plan((Move(0, 2), Move(1, 3)),
                                                             exhausted=False)
    assert search_moves([5, 4], [1, 1], 2, 8, 4, 9) == Plan(None, exhausted=False)


LAYOUT = st.integers(3, 11).flatmap(lambda end: st.tuples(
    st.just(end), st.lists(st.integers(1, 3), max_size=4), st.randoms(use_true_random=False),
    st.integers(1, end - 2)))


@settings(max_examples=300, deadline=None)
@given(LAYOUT)
def test_a_plan_is_found_exactly_when_some_sequence_of_moves_makes_room(
        case: tuple[int, list[int], object, int]) -> None:
    """Against every sequence of safe moves to any free place: a found plan is safe and makes
    room; a search that tried every layout finds none only when no sequence does."""
    end, wanted, rng, needed = case
    places: list[int] = []
    sizes: list[int] = []
    for size in wanted:  # scatter the files at random free places
        runs = [(s, n) for s, n in free_runs(places, sizes, 2, end) if n >= size]
        if runs:
            start, length = rng.choice(runs)  # type: ignore[attr-defined]
            places.append(start + rng.randrange(length - size + 1))  # type: ignore[attr-defined]
            sizes.append(size)
    plan = plan_moves(places, sizes, 2, end, needed)
    possible = _any_room(places, sizes, 2, end, needed)
    if plan.moves is not None:
        after = _apply(places, sizes, 2, end, plan.moves)
        assert largest(free_runs(after, sizes, 2, end)) >= needed
    assert plan.exhausted == (plan.moves is None)  # these small stores are searched whole
    assert (plan.moves is not None) == possible, (places, sizes, needed)


def _scattered() -> tuple[MemoryDevice, FileStore]:
    """Ten data blocks: /a in 11, /c in 4, /e in 7, /g in 10; free 2-3, 5-6, 8-9."""
    device = MemoryDevice(12 * BLOCK_SIZE)
    store = FileStore.format(device)
    for name, blocks in (("/a", 1), ("/b", 2), ("/c", 1), ("/d", 2), ("/e", 1), ("/f", 2),
                         ("/g", 1)):
        store.write(name, name.encode() * (blocks * BLOCK_SIZE // 2 - 1))
    for name in ("/b", "/d", "/f"):
        store.remove(name)
    assert [(e.name, e.first_block) for e in store.entries] == [
        ("/a", 11), ("/c", 4), ("/e", 7), ("/g", 10)]
    return device, store


def _files(device: MemoryDevice) -> dict[str, bytes]:
    store = FileStore.open(device)
    return {name: store.read(name) for name in store.names()}


def test_a_write_moves_files_until_a_run_holds_it() -> None:
    device, store = _scattered()
    before, generation = _files(device), store.generation
    data = bytes([7]) * (5 * BLOCK_SIZE + 1)
    store.write("/new", data)
    assert [(e.name, e.first_block) for e in store.entries] == [
        ("/a", 11), ("/c", 8), ("/e", 9), ("/g", 10), ("/new", 2)]
    assert store.generation == generation + 3  # two moves, then the write
    assert _files(device) == {**before, "/new": data}
    assert store.free() == []


def test_a_move_copies_the_whole_blocks() -> None:
    device, store = _scattered()
    device.data[5 * BLOCK_SIZE - 1] = 0xEE  # a byte past the end of /c in its block
    store.write("/new", bytes(3 * BLOCK_SIZE))  # /c from 4 to 5: 2-4 free
    assert store.entries[1] == FileEntry("/c", 5, BLOCK_SIZE - 2, 1)
    assert device.data[6 * BLOCK_SIZE - 1] == 0xEE


def test_the_file_rewritten_may_itself_move() -> None:
    device, store = _scattered()
    before = _files(device)
    store.write("/c", bytes([3]) * (5 * BLOCK_SIZE))  # /c to 8 first, then 2-6
    assert [(e.name, e.first_block, e.capacity) for e in store.entries] == [
        ("/a", 11, 1), ("/c", 2, 5), ("/e", 7, 1), ("/g", 10, 1)]
    assert _files(device) == {**before, "/c": bytes([3]) * (5 * BLOCK_SIZE)}


def test_too_few_free_blocks_are_refused_before_any_move() -> None:
    device, store = _scattered()
    before = bytes(device.data)
    with pytest.raises(StateError) as refused:
        store.write("/new", bytes(6 * BLOCK_SIZE + 1))
    assert str(refused.value) == (f"file store: no room for {6 * BLOCK_SIZE + 1} bytes of "
                                  "/new (7 blocks, 6 free)")
    assert bytes(device.data) == before


def test_files_no_move_can_shift_are_refused_with_the_runs_named() -> None:
    device = MemoryDevice(12 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/a", bytes([1]) * (3 * BLOCK_SIZE))  # 9-11 (the run reached the end)
    store.write("/b", bytes([2]) * (2 * BLOCK_SIZE))  # 2-3
    store.write("/c", bytes([3]) * (3 * BLOCK_SIZE))  # 4-6
    store.remove("/b")
    assert store.free() == [(2, 2), (7, 2)]
    before = bytes(device.data)
    with pytest.raises(StateError) as refused:
        store.write("/new", bytes(3 * BLOCK_SIZE))
    assert str(refused.value) == (
        f"file store: no room for {3 * BLOCK_SIZE} bytes of /new (3 blocks; 4 are free, in "
        "runs of at most 2, and no sequence of file moves joins them)")
    assert bytes(device.data) == before


def laid_out(blocks: int, files: dict[str, tuple[int, bytes]]) -> MemoryDevice:
    """A store of ``blocks`` blocks holding ``files`` (name: first block, data) where they
    are said to be, committed as generation 2 (after format's 0 and 1)."""
    device = MemoryDevice(blocks * BLOCK_SIZE)
    FileStore.format(device)
    entries = []
    for name, (first, data) in files.items():
        device.write(first * BLOCK_SIZE, data)
        entries.append(FileEntry(name, first, len(data), blocks_for(len(data))))
    device.write(0, StoreHeader(2, blocks, 2, tuple(entries)).to_bytes())
    return device


def test_a_search_that_stops_at_its_limit_says_so_and_writes_nothing() -> None:
    """Two blocks at 3, three at 5, free 2 and 8-10: only the search makes four free."""
    files = {"/a": (3, bytes([1]) * (2 * BLOCK_SIZE)), "/b": (5, bytes([2]) * (3 * BLOCK_SIZE))}
    device = laid_out(11, files)
    store = FileStore.open(device)
    store.search_limit = 6
    before = bytes(device.data)
    with pytest.raises(StateError) as refused:
        store.write("/new", bytes(4 * BLOCK_SIZE))
    assert str(refused.value) == (
        f"file store: no room for {4 * BLOCK_SIZE} bytes of /new (4 blocks; 4 are free, in "
        "runs of at most 3, and no sequence of file moves joining them found in 6 layouts)")
    assert bytes(device.data) == before
    store.search_limit = 7
    store.write("/new", bytes([3]) * (4 * BLOCK_SIZE))
    assert [(e.name, e.first_block) for e in store.entries] == [
        ("/a", 9), ("/b", 2), ("/new", 5)]
    assert _files(device) == {"/a": files["/a"][1], "/b": files["/b"][1],
                              "/new": bytes([3]) * (4 * BLOCK_SIZE)}
