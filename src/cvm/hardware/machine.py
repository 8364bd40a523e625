"""One physical machine: DRAM, the memory encryption engine, the RMP and the fault log.

The host reaches memory only through :meth:`Machine.host_read` / :meth:`Machine.host_write`,
which see DRAM as it is (ciphertext for private pages) and, with SNP enabled, are refused by
the RMP for pages a guest or the firmware owns. The engine's keys never leave the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cvm.errors import UsageError
from cvm.hardware.fault import Fault, FaultRaised
from cvm.hardware.memory.dram import PAGE_SIZE, Dram
from cvm.hardware.memory.engine import MemoryEncryptionEngine
from cvm.hardware.memory.rmp import Rmp

GIB = 1 << 30


class Machine:
    """The silicon a host runs on. ``random_bytes`` is injectable for reproducible runs."""

    def __init__(
        self,
        dram_bytes: int = 4 * GIB,
        *,
        snp_enabled: bool = True,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.dram = Dram(dram_bytes)
        self.engine = MemoryEncryptionEngine(self.dram, random_bytes)
        self.rmp = Rmp()
        self.snp_enabled = snp_enabled
        self.random_bytes = random_bytes
        self.faults: list[Fault] = []

    def raise_fault(self, fault: Fault) -> FaultRaised:
        """Log ``fault`` and return the exception that abandons the faulting access."""
        self.faults.append(fault)
        return FaultRaised(fault)

    def host_read(self, spa: int, size: int) -> bytes:
        """The host reads DRAM as it is: ciphertext wherever a guest wrote privately."""
        return self.dram.read(spa, size)

    def host_write(self, spa: int, data: bytes) -> None:
        """The host writes DRAM; with SNP, the RMP refuses writes to guest or firmware pages."""
        self._check_host_write(spa, len(data))
        self.dram.write(spa, data)

    def host_zero(self, spa: int, size: int) -> None:
        """The host writes ``size`` zero bytes at ``spa`` (its scrub of pages it hands out):
        :meth:`host_write` of zeros, without building them."""
        self._check_host_write(spa, size)
        self.dram.zero(spa, size)

    def _check_host_write(self, spa: int, size: int) -> None:
        self.dram.check(spa, size)
        if self.snp_enabled:
            fault = self.rmp.check_host_writes(spa, size)
            if fault is not None:
                raise self.raise_fault(fault)

    def check_page(self, spa: int) -> None:
        if spa % PAGE_SIZE:
            raise UsageError(f"address {spa:#x} is not page-aligned")
        self.dram.check(spa, PAGE_SIZE)
