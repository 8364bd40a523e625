"""The canary scan: does ANY 8-byte run of ANY secret appear in anything the host can read?

The needles are every 8-byte window of every secret (volume key, vTPM seeds, workload data,
state key, VMPCKs ...), kept as a sorted array of little-endian 64-bit words. At every byte offset
of a haystack the first two bytes are looked up in a 64 Ki-entry table of the windows' first two
bytes (vectorised, two aligned 16-bit views), the survivors' next two bytes in a second such
table of the windows' bytes 2–3; only the few offsets that pass both are read as 64-bit
words and looked up in the needles with one binary search. Pages that are all zeros are
skipped (no window of a secret worth the name is all zeros; such windows are dropped), but
not the seven bytes either side of a busy page: a window may begin or end in zeros.

Eight bytes, not sixteen: a register is eight bytes wide, so one register's worth of a key copied
into a GHCB is a leak the scan must see.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from cvm.errors import UsageError
from cvm.hardware.memory.dram import PAGE_SIZE, Dram

WINDOW_BYTES = 8
CACHE_BLOCK_BYTES = 1 << 20
CACHE_FROM_BYTES = 1 << 16  # smaller haystacks are scanned faster than they are hashed
CACHE_ENTRIES = 1 << 14
WORD = np.dtype("<u8")
PAIR = np.dtype("<u2")


# A hit in a haystack: (secret, secret offset, offset in the haystack)
Hit = tuple[str, int, int]
# (needles fingerprint, block digest) -> the block's hits, offsets in the block
_CACHE: dict[tuple[bytes, bytes], tuple[Hit, ...]] = {}


@dataclass(frozen=True)
class Leak:
    """One hit: ``secret[secret_offset : secret_offset + 8]`` found at ``where`` + ``offset``."""

    secret: str
    secret_offset: int
    where: str
    offset: int

    def __str__(self) -> str:
        return (
            f"{self.secret}[{self.secret_offset}:{self.secret_offset + WINDOW_BYTES}] "
            f"in {self.where} at {self.offset:#x}"
        )


class CanaryScan:
    """A scanner for every 8-byte window of ``secrets`` (name -> bytes, each >= 8 bytes)."""

    def __init__(self, secrets: Mapping[str, bytes]) -> None:
        words: dict[int, tuple[str, int]] = {}
        for name, secret in secrets.items():
            if len(secret) < WINDOW_BYTES:
                raise UsageError(f"secret {name!r} is shorter than {WINDOW_BYTES} bytes")
            for offset in range(len(secret) - WINDOW_BYTES + 1):
                value = int.from_bytes(secret[offset : offset + WINDOW_BYTES], "little")
                if value:
                    words.setdefault(value, (name, offset))
        self.names = tuple(secrets)
        self._needles = np.array(sorted(words), dtype=WORD)
        self._origin = words
        self._fingerprint = hashlib.blake2b(self._needles.tobytes(), digest_size=16).digest()
        self._prefix = np.zeros(1 << 16, dtype=bool)
        self._prefix[(self._needles & 0xFFFF).astype(np.intp)] = True
        self._second = np.zeros(1 << 16, dtype=bool)
        self._second[(self._needles >> 16 & 0xFFFF).astype(np.intp)] = True

    def __len__(self) -> int:
        return len(self._needles)

    def scan(self, where: str, data: bytes | bytearray | memoryview | np.ndarray) -> list[Leak]:
        """Every window of a secret in ``data``; offsets are relative to ``data``.

        Large haystacks are scanned in blocks (each with the seven bytes that follow it); a
        block of a haystack of 64 KiB or more whose bytes were already scanned for the same
        secrets is answered from a cache keyed by its BLAKE2 digest, so a disk image scanned
        after every attack costs a hash."""
        buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
        leaks: list[Leak] = []
        for block in range(0, len(buffer), CACHE_BLOCK_BYTES):
            part = buffer[block : block + CACHE_BLOCK_BYTES + WINDOW_BYTES - 1]
            if not part.any():
                continue
            key = None
            if len(buffer) >= CACHE_FROM_BYTES:
                key = (self._fingerprint, hashlib.blake2b(part.data, digest_size=16).digest())
                cached = _CACHE.get(key)
                if cached is not None:
                    leaks.extend(Leak(n, o, where, block + at) for n, o, at in cached)
                    continue
            found = [hit for start, run in _nonzero_runs(part)
                     for hit in self._scan_run(start, run)]
            if key is not None:
                if len(_CACHE) >= CACHE_ENTRIES:
                    _CACHE.clear()
                _CACHE[key] = tuple(found)
            leaks.extend(Leak(n, o, where, block + at) for n, o, at in found)
        unique = {(leak.offset, leak.secret, leak.secret_offset): leak for leak in leaks}
        return sorted(unique.values(), key=lambda leak: leak.offset)

    def scan_dram(self, dram: Dram, where: str = "DRAM") -> list[Leak]:
        """Every populated chunk of DRAM; offsets are system physical addresses."""
        leaks: list[Leak] = []
        for base, chunk in dram.chunks():
            leaks.extend(
                Leak(hit.secret, hit.secret_offset, hit.where, base + hit.offset)
                for hit in self.scan(where, chunk)
            )
        return leaks

    def scan_all(self, artifacts: Iterable[tuple[str, bytes]]) -> list[Leak]:
        """Every leak in every artifact. Small artifacts (exit views, log lines) are scanned
        together, joined up to a megabyte at a time, each hit given back to the artifact that
        holds all of it (a window across two artifacts is in neither)."""
        leaks: list[Leak] = []
        batch: list[tuple[str, bytes]] = []
        size = 0
        for where, data in artifacts:
            if len(data) >= CACHE_FROM_BYTES:
                leaks.extend(self.scan(where, data))
                continue
            batch.append((where, bytes(data)))
            size += len(data)
            if size >= CACHE_BLOCK_BYTES:
                leaks.extend(self._scan_joined(batch))
                batch, size = [], 0
        leaks.extend(self._scan_joined(batch))
        return leaks

    def _scan_joined(self, batch: list[tuple[str, bytes]]) -> list[Leak]:
        if not batch:
            return []
        starts = list(itertools.accumulate((len(data) for _, data in batch), initial=0))
        leaks = []
        for hit in self.scan("joined", b"".join(data for _, data in batch)):
            index = bisect.bisect_right(starts, hit.offset) - 1
            if hit.offset + WINDOW_BYTES <= starts[index + 1]:
                where = batch[index][0]
                leaks.append(Leak(hit.secret, hit.secret_offset, where, hit.offset - starts[index]))
        return leaks

    def _scan_run(self, start: int, run: np.ndarray) -> list[Hit]:
        """The hits in ``run``, which starts at ``start`` of the haystack."""
        needles = self._needles
        if not len(needles) or len(run) < WINDOW_BYTES:
            return []
        # Candidates: offsets whose first two bytes begin some window (one table lookup per
        # byte offset, even offsets and odd ones as two aligned 16-bit views).
        candidates = []
        for phase in (0, 1):
            count = (len(run) - phase) // 2
            pairs = run[phase : phase + count * 2].view(PAIR)
            candidates.append(np.flatnonzero(self._prefix[pairs]) * 2 + phase)
        offsets = np.concatenate(candidates)
        offsets = offsets[offsets <= len(run) - WINDOW_BYTES]
        # Of those, the offsets whose next two bytes continue some window (a second table).
        following = run[offsets + 2].astype(np.intp) | run[offsets + 3].astype(np.intp) << 8
        offsets = offsets[self._second[following]]
        if not len(offsets):
            return []
        windows = np.lib.stride_tricks.sliding_window_view(run, WINDOW_BYTES)[offsets]
        words = np.ascontiguousarray(windows).view(WORD).ravel()
        slots = np.searchsorted(needles, words)
        slots[slots == len(needles)] = 0
        hits = []
        for index in np.flatnonzero(needles[slots] == words):
            name, secret_offset = self._origin[int(words[index])]
            hits.append((name, secret_offset, start + int(offsets[index])))
        return hits


def _nonzero_runs(buffer: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The stretches of ``buffer`` made of pages that are not all zeros, each extended by seven
    bytes into the page before and the page after, so that no window across a page boundary
    is missed (a window may begin with zeros in a page of zeros and end in a busy page)."""
    size = len(buffer)
    pages = size // PAGE_SIZE
    if pages < 2:
        return [(0, buffer)] if buffer.any() else []
    body = buffer[: pages * PAGE_SIZE].reshape(pages, PAGE_SIZE)
    busy = body.any(axis=1)
    if size % PAGE_SIZE:
        busy = np.append(busy, buffer[pages * PAGE_SIZE :].any())
    runs: list[tuple[int, np.ndarray]] = []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], busy.view(np.int8), [0]))))
    for first, last in zip(edges[::2], edges[1::2], strict=True):
        begin = max(0, int(first) * PAGE_SIZE - WINDOW_BYTES + 1)
        end = min(size, int(last) * PAGE_SIZE + WINDOW_BYTES - 1)
        runs.append((begin, buffer[begin:end]))
    return runs
