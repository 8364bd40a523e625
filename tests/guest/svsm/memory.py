"""A guest OS's memory as the SVSM's protocols see it, for their unit tests: byte ranges the
SVSM may read or write (anything else is "not there": None / False), every access recorded."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GuestMemory:
    """``readable`` and ``writable`` are [start, end) ranges; ``data`` the bytes at addresses."""

    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)
    data: dict[int, int] = field(default_factory=dict)
    reads: list[tuple[int, int]] = field(default_factory=list)
    writes: list[tuple[int, bytes]] = field(default_factory=list)

    @staticmethod
    def _inside(ranges: list[tuple[int, int]], gpa: int, size: int) -> bool:
        return any(start <= gpa and gpa + size <= end for start, end in ranges)

    def put(self, gpa: int, data: bytes) -> None:
        """Place ``data`` (the guest OS's own write) and make it readable and writable."""
        self.data.update((gpa + i, byte) for i, byte in enumerate(data))
        self.readable.append((gpa, gpa + len(data)))
        self.writable.append((gpa, gpa + len(data)))

    def get(self, gpa: int, size: int) -> bytes:
        return bytes(self.data.get(gpa + i, 0) for i in range(size))

    def read(self, gpa: int, size: int) -> bytes | None:
        self.reads.append((gpa, size))
        if not self._inside(self.readable, gpa, size):
            return None
        return self.get(gpa, size)

    def write(self, gpa: int, data: bytes) -> bool:
        if not self._inside(self.writable, gpa, len(data)):
            return False
        self.writes.append((gpa, bytes(data)))
        self.data.update((gpa + i, byte) for i, byte in enumerate(data))
        return True
