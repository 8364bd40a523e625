"""Sparse DRAM: system physical memory, allocated in 2 MiB chunks only where written.

A host with a 64 GiB address space costs nothing until pages are written; reading an unwritten
page gives zeros, as freshly scrubbed memory does.
"""

from __future__ import annotations

import numpy as np

from cvm.errors import UsageError

PAGE_SIZE = 0x1000
CHUNK_SIZE = 0x20_0000


class Dram:
    """Byte-addressed system physical memory of ``size_bytes``, sparse."""

    def __init__(self, size_bytes: int) -> None:
        if size_bytes <= 0 or size_bytes % CHUNK_SIZE:
            raise UsageError(
                f"DRAM size must be a positive multiple of {CHUNK_SIZE:#x} bytes, "
                f"got {size_bytes:#x}"
            )
        self.size_bytes = size_bytes
        self._chunks: dict[int, np.ndarray] = {}

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
        return chunk[offset : offset + size]

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
        index, offset = divmod(spa, CHUNK_SIZE)
        if data and offset + len(data) <= CHUNK_SIZE:  # within one chunk: one copy
            chunk = self._chunk(index, allocate=True)
            assert chunk is not None
            chunk[offset : offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
            return
        view = np.frombuffer(data, dtype=np.uint8)
        while view.size:
            index, offset = divmod(spa, CHUNK_SIZE)
            part = min(view.size, CHUNK_SIZE - offset)
            chunk = self._chunk(index, allocate=True)
            assert chunk is not None
            chunk[offset : offset + part] = view[:part]
            spa, view = spa + part, view[part:]
