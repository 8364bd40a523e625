"""A seeded deterministic random byte source, so that runs are reproducible with a seed.

Output block ``i`` is SHAKE-256(label || 0x00 || u64be(i) || seed) (FIPS 202), truncated to the
requested size. It is an emulator's injectable randomness for key generation, salts and
report IDs; it is not a replacement for the operating system's generator where secrecy
against a real attacker matters. ``OsRandom`` is that one.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol


class RandomSource(Protocol):
    """Anything that returns ``size`` random bytes when called."""

    def __call__(self, size: int) -> bytes: ...


class SeededRandom:
    """Deterministic bytes from a seed and a label; every call continues the stream."""

    def __init__(self, seed: bytes, label: bytes = b"") -> None:
        self.seed = bytes(seed)
        self.label = bytes(label)
        self.counter = 0

    def __call__(self, size: int) -> bytes:
        self.counter += 1
        block = self.label + b"\x00" + self.counter.to_bytes(8, "big") + self.seed
        return hashlib.shake_256(block).digest(size)

    def fork(self, label: bytes) -> SeededRandom:
        """An independent stream for a sub-purpose, still determined by the seed."""
        return SeededRandom(self.seed, self.label + b"/" + label)


class OsRandom:
    """The operating system's generator, with the same calling convention."""

    def __call__(self, size: int) -> bytes:
        return os.urandom(size)
