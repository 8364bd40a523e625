"""The plan of a file store's compaction: which files to move where so that a write fits.

A file's data is one run of blocks, so free space split into runs smaller than a file refuses
it although the free total is larger. :func:`plan_moves` looks for a sequence of moves after
which the store has a free run of the blocks asked for. Each move is one the store can make
safely (:meth:`cvm.disk.file_store.FileStore.write` makes it): the whole file is copied into
blocks no entry names, never onto its own blocks, then the header naming the new place is
committed, so a power cut at any write leaves every file's data whole at its old place or at
its new one.

A move puts a file at either end of a free run that holds it (never inside one: that would
split the rest of the run in two). The plan is searched best first: of the layouts reached so
far, the moves from the one with the largest free run (the fewest moves among those) are tried
next, each layout once; the first layout with a free run of ``needed`` blocks ends the search. Which
files can be moved depends on the runs earlier moves free, and making room is bin packing
(the files of a run's span into the other runs) in general, so the search is bounded by
``limit`` layouts; ``Plan.exhausted`` says whether every layout those moves reach was tried
(then no sequence of such moves makes room) or the search stopped at the bound.

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


def plan_moves(places: Sequence[int], sizes: Sequence[int], first: int, end: int,
               needed: int, limit: int = SEARCH_LIMIT_LAYOUTS) -> Plan:
    """The moves after which the files (entry ``i`` at block ``places[i]``, ``sizes[i]``
    blocks) leave a free run of ``needed`` blocks in ``[first, end)``, trying at most
    ``limit`` layouts; no moves if there is such a run already."""
    start = tuple(places)
    runs = free_runs(start, sizes, first, end)
    if largest(runs) >= needed:
        return Plan((), exhausted=False)
    if sum(size for _, size in runs) < needed:  # no move changes the free total
        return Plan(None, exhausted=True)
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
