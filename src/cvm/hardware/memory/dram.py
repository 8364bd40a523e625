"""Sparse DRAM: system physical memory, allocated in 2 MiB chunks only where written.

A host with a 64 GiB address space costs nothing until pages are written; reading an unwritten
page gives zeros, as freshly scrubbed memory does. The DRAM also knows which pages were ever
written (or handed out writable): zeroing a range touches only those, the rest is zero already.
"""

from __future__ import annotations

import numpy as np

from cvm.errors import UsageError

PAGE_SIZE = 0x1000
CHUNK_SIZE = 0x20_0000
_PAGES_PER_CHUNK = CHUNK_SIZE // PAGE_SIZE
_BYTES = np.dtype(np.uint8)  # a dtype object passed positionally: the cheapest form of the call


class Dram:
    """Byte-addressed system physical memory of ``size_bytes``, sparse."""

    def __init__(self, size_bytes: int) -> None:
        if size_bytes <= 0 or size_bytes % CHUNK_SIZE:
            raise UsageError(
                f"DRAM size must be a positive multiple of {CHUNK_SIZE:#x} bytes, "
                f"got {size_bytes:#x}"
            )
        self.size_bytes = size_bytes
        self.frames = size_bytes // PAGE_SIZE
        self._chunks: dict[int, np.ndarray] = {}
        self._pages: dict[int, np.ndarray] = {}  # page number -> its view, once made
        self._written: set[int] = set()  # page numbers that may hold a non-zero byte

    def _mark(self, spa: int, size: int) -> None:
        """Pages ``spa``..``spa+size`` may hold non-zero bytes from now on."""
        if size <= 0:
            return
        first, last = spa >> 12, (spa + size - 1) >> 12
        if first == last:
            self._written.add(first)
        else:
            self._written.update(range(first, last + 1))

    @property
    def allocated_bytes(self) -> int:
        return len(self._chunks) * CHUNK_SIZE

    def chunks(self) -> list[tuple[int, np.ndarray]]:
        """Every populated chunk as (system address, read-only view), in address order: what a
        dump of the DRAM chips holds (the rest reads as zeros)."""
        out = []
        for index in sorted(self._chunks):
            view = self._chunks[index].view()
            view.flags.writeable = False
            out.append((index * CHUNK_SIZE, view))
        return out

    def check(self, spa: int, size: int) -> None:
        if spa < 0 or size < 0 or spa + size > self.size_bytes:
            raise UsageError(
                f"system physical address {spa:#x}+{size:#x} is outside DRAM "
                f"(0..{self.size_bytes:#x})"
            )

    def _chunk(self, index: int, allocate: bool) -> np.ndarray | None:
        chunk = self._chunks.get(index)
        if chunk is None and allocate:
            chunk = np.zeros(CHUNK_SIZE, dtype=np.uint8)
            self._chunks[index] = chunk
        return chunk

    def span(self, spa: int, size: int) -> np.ndarray:
        """A writable view of ``size`` bytes at ``spa``; the range must lie in one 2 MiB chunk."""
        self.check(spa, size)
        index, offset = divmod(spa, CHUNK_SIZE)
        if offset + size > CHUNK_SIZE:
            raise UsageError(f"span {spa:#x}+{size:#x} crosses a {CHUNK_SIZE:#x}-byte chunk")
        chunk = self._chunk(index, allocate=True)
        assert chunk is not None
        self._mark(spa, size)
        return chunk[offset : offset + size]

    def page(self, frame: int) -> np.ndarray:
        """A writable view of page number ``frame`` (the page at ``frame << 12``): the one
        check a page-granular access needs, then the view (made once per page: chunks are
        never freed, so a view stays valid)."""
        view = self._pages.get(frame)
        if view is not None:
            return view
        if not 0 <= frame < self.frames:
            raise UsageError(
                f"system page {frame:#x} is outside DRAM (0..{self.frames:#x} pages)"
            )
        index, page = divmod(frame, _PAGES_PER_CHUNK)
        chunk = self._chunk(index, allocate=True)
        assert chunk is not None
        view = self._pages[frame] = chunk[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
        self._written.add(frame)
        return view

    def read(self, spa: int, size: int) -> bytes:
        self.check(spa, size)
        index, offset = divmod(spa, CHUNK_SIZE)
        if offset + size <= CHUNK_SIZE:  # within one chunk: one copy
            chunk = self._chunks.get(index)
            return bytes(size) if chunk is None else chunk[offset : offset + size].tobytes()
        out = bytearray()
        while size:
            index, offset = divmod(spa, CHUNK_SIZE)
            part = min(size, CHUNK_SIZE - offset)
            chunk = self._chunk(index, allocate=False)
            out += bytes(part) if chunk is None else chunk[offset : offset + part].tobytes()
            spa, size = spa + part, size - part
        return bytes(out)

    def write(self, spa: int, data: bytes) -> None:
        self.check(spa, len(data))
        self._mark(spa, len(data))
        index, offset = divmod(spa, CHUNK_SIZE)
        if data and offset + len(data) <= CHUNK_SIZE:  # within one chunk: one copy
            chunk = self._chunk(index, allocate=True)
            assert chunk is not None
            chunk[offset : offset + len(data)] = np.frombuffer(data, _BYTES)
            return
        view = np.frombuffer(data, _BYTES)
        while view.size:
            index, offset = divmod(spa, CHUNK_SIZE)
            part = min(view.size, CHUNK_SIZE - offset)
            chunk = self._chunk(index, allocate=True)
            assert chunk is not None
            chunk[offset : offset + part] = view[:part]
            spa, view = spa + part, view[part:]

    def zero(self, spa: int, size: int) -> None:
        """Write ``size`` zero bytes at ``spa``: only the pages ever written are touched (the
        others, allocated or not, hold zeros already)."""
        self.check(spa, size)
        end = spa + size
        frames = range(spa >> 12, (end + PAGE_SIZE - 1) >> 12)
        written = self._written
        if len(written) < len(frames):
            hits = [frame for frame in written if frame in frames]
        else:
            hits = [frame for frame in frames if frame in written]
        for frame in hits:
            low, high = max(spa, frame * PAGE_SIZE), min(end, (frame + 1) * PAGE_SIZE)
            index, offset = divmod(low, CHUNK_SIZE)
            self._chunks[index][offset : offset + high - low] = 0
