"""The plan of a file store's compaction: which files to move where so that a write fits.

A file's data is one run of blocks, so free space split into runs smaller than a file refuses
it although the free total is larger. :func:`plan_moves` looks for a sequence of moves after
which the store has a free run of the blocks asked for. Each move is one the store can make
safely (:meth:`cvm.disk.file_store.FileStore.write` makes it): the whole file is copied into
blocks no entry names, never onto its own blocks, then the header naming the new place is
committed, so a power cut at any write leaves every file's data whole at its old place or at
its new one.

Two ways are tried, in order:

1. Clearing a window (:func:`evacuation`): the files that overlap ``needed`` blocks, largest
   first, each to the smallest free run outside them that holds it; of the windows that start
   or end where a file or a free run does, the one that moves the fewest blocks. When no
   window can be cleared so, the largest file that fits the lowest free run below it moves
   to that run's start (:func:`fill_move`, which gathers the free space upwards), and the
   windows are tried again, until no file fits a run below it.
2. A best-first search (:func:`search_moves`) over the layouts reached by moving a file to
   either end of a free run that holds it (never inside one: that would split the rest of
   the run in two): of the layouts reached so far, the moves from the one with the largest
   free run (the fewest moves among those) are tried next, each layout once. Making room is
   bin packing in general (the files of a window into the runs outside it), so the search is
   bounded by ``limit`` layouts; ``Plan.exhausted`` says whether every layout those moves
   reach was tried (then no sequence of such moves makes room) or the search stopped at the
   bound.

Public API: :func:`plan_moves`, :class:`Move`, :class:`Plan`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

SEARCH_LIMIT_LAYOUTS = 20_000
Extent = tuple[int, int]  # first block, number of blocks


@dataclass(frozen=True)
class Move:
    """Move the file of entry ``index`` so that it starts at block ``first_block``."""

    index: int
    first_block: int


@dataclass(frozen=True)
class Plan:
    """The moves that make room (None: none found) and whether the search tried every layout
    the moves reach."""

    moves: tuple[Move, ...] | None
    exhausted: bool


def free_runs(places: Sequence[int], sizes: Sequence[int], first: int, end: int
              ) -> list[Extent]:
    """The runs of blocks in ``[first, end)`` that no file (at ``places``, of ``sizes``)
    covers, in order; the files never overlap."""
    runs = []
    position = first
    for start, size in sorted(zip(places, sizes, strict=True)):
        if start > position:
            runs.append((position, start - position))
        position = start + size
    if end > position:
        runs.append((position, end - position))
    return runs


def largest(runs: Sequence[Extent]) -> int:
    """The size of the largest run (0 if there is none)."""
    return max((size for _, size in runs), default=0)


def moves_from(sizes: Sequence[int], runs: Sequence[Extent]) -> list[Move]:
    """Every move the layout allows: each file to either end of each free run that holds it."""
    moves = []
    for index, size in enumerate(sizes):
        for start, length in runs:
            if length >= size:
                moves.append(Move(index, start))
                if length > size:
                    moves.append(Move(index, start + length - size))
    return moves


def clear_window(places: Sequence[int], sizes: Sequence[int], runs: Sequence[Extent],
                 low: int, high: int) -> list[Move] | None:
    """Moves that leave ``[low, high)`` free: the files overlapping it, largest first, each
    to the start of the smallest free run outside it that holds it; None if one fits none."""
    outside = []  # [start, length] of the free runs less the window, carved as files go in
    for start, length in runs:
        if start < low:
            outside.append([start, min(start + length, low) - start])
        if start + length > high:
            after = max(start, high)
            outside.append([after, start + length - after])
    inside = [i for i, (place, size) in enumerate(zip(places, sizes, strict=True))
              if place < high and place + size > low]
    moves = []
    for index in sorted(inside, key=lambda i: -sizes[i]):
        fits = [run for run in outside if run[1] >= sizes[index]]
        if not fits:
            return None
        run = min(fits, key=lambda r: r[1])
        moves.append(Move(index, run[0]))
        run[0] += sizes[index]
        run[1] -= sizes[index]
    return moves


def evacuation(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
               needed: int) -> list[Move] | None:
    """The moves that clear a window of ``needed`` blocks in ``[first, end)`` (see the
    module docstring), moving the fewest blocks (the lowest such window); no moves if a free
    run holds them already; None if no window can be cleared."""
    runs = free_runs(places, sizes, first, end)
    edges = [*(start for start, _ in runs), *places]
    edges += [stop - needed for stop in (*(s + n for s, n in runs),
                                         *(p + c for p, c in zip(places, sizes, strict=True)))]
    cleared = [moves for low in sorted(set(edges)) if first <= low <= end - needed
               if (moves := clear_window(places, sizes, runs, low, low + needed)) is not None]
    return min(cleared, key=lambda moves: sum(sizes[m.index] for m in moves), default=None)


def fill_move(places: Sequence[int], sizes: Sequence[int], runs: Sequence[Extent]
              ) -> Move | None:
    """The largest file (the highest of equals) that fits the lowest free run below it, to
    that run's start; None if no file fits a free run below it."""
    for start, length in runs:
        above = [i for i, (place, size) in enumerate(zip(places, sizes, strict=True))
                 if place > start and size <= length]
        if above:
            index = max(above, key=lambda i: (sizes[i], places[i]))
            return Move(index, start)
    return None


def gather_and_clear(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
                     needed: int) -> tuple[Move, ...] | None:
    """Way 1 of the module docstring: fill moves until a window can be cleared."""
    layout = list(places)
    moves: list[Move] = []
    while True:
        cleared = evacuation(layout, sizes, first, end, needed)
        if cleared is not None:
            return (*moves, *cleared)
        move = fill_move(layout, sizes, free_runs(layout, sizes, first, end))
        if move is None:
            return None
        layout[move.index] = move.first_block
        moves.append(move)


def plan_moves(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
               needed: int, limit: int = SEARCH_LIMIT_LAYOUTS) -> Plan:
    """The moves after which the files (entry ``i`` at block ``places[i]``, ``sizes[i]``
    blocks) leave a free run of ``needed`` blocks in ``[first, end)``; no moves if there is
    such a run already, the search trying at most ``limit`` layouts."""
    if sum(size for _, size in free_runs(places, sizes, first, end)) < needed:
        return Plan(None, exhausted=True)  # no move changes the free total
    gathered = gather_and_clear(places, sizes, first, end, needed)
    if gathered is not None:
        return Plan(gathered, exhausted=False)
    return search_moves(places, sizes, first, end, needed, limit)


def search_moves(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
                 needed: int, limit: int = SEARCH_LIMIT_LAYOUTS) -> Plan:
    """Way 2 of the module docstring, from a layout without the run."""
    start = tuple(places)
    order = count()
    frontier: list[tuple[int, int, int, tuple[int, ...], tuple[Move, ...]]] = [
        (0, 0, next(order), start, ())]
    seen = {start}
    while frontier:
        _, _, _, layout, path = heapq.heappop(frontier)
        for move in moves_from(sizes, free_runs(layout, sizes, first, end)):
            after = (*layout[: move.index], move.first_block, *layout[move.index + 1 :])
            if after in seen:
                continue
            if len(seen) >= limit:
                return Plan(None, exhausted=False)
            seen.add(after)
            gained = largest(free_runs(after, sizes, first, end))
            if gained >= needed:
                return Plan((*path, move), exhausted=False)
            heapq.heappush(frontier, (-gained, len(path) + 1, next(order), after,
                                      (*path, move)))
    return Plan(None, exhausted=True)
