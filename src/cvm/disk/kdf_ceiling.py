"""The most key-derivation work cvm spends on a header's word: the KDF cost ceiling.

A LUKS2 header states the cost of each keyslot's KDF and of the volume-key digest (LUKS2
On-Disk Format Specification v1.1.4, sections 3.2.1 and 3.4), and whoever wrote the header
chose it: PBKDF2 up to 2^31 - 1 iterations, or Argon2 with gigabytes of memory, is hours of
work for one wrong guess. cryptsetup obeys the header up to its own hard limits (Argon2 at most
4 GiB of memory, ``crypt_pbkdf_get_limits``); cvm also refuses to spend more than a ceiling of
work per keyslot try unless the user raises it.

The cost of a try is counted in work units, deterministic and machine-independent:

- PBKDF2: one unit per iteration (about a microsecond of one core for SHA-256);
- Argon2: passes x memory in KiB (each pass fills every 1 KiB block once, of the same order);
- plus the PBKDF2 iterations of the digest that checks the candidate volume key.

The default ceiling, 2^26 units, admits Argon2 at cryptsetup's 4 GiB maximum with 16 passes and
PBKDF2 with 67 million iterations (over ten times what cryptsetup calibrates for 2 s on a fast
machine); a hostile header cannot hold cvm for hours.

Public API: :func:`kdf_cost`, :func:`describe_kdf`, :class:`KdfCeiling` (``max_cost``,
``max_memory_kib``; :meth:`~KdfCeiling.refusal` gives the reason a cost is refused, or ``""``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.luks2.metadata import Argon2Kdf, Kdf

DEFAULT_MAX_KDF_COST = 1 << 26
ARGON2_MAX_MEMORY_KIB = 4 << 20


def kdf_cost(kdf: Kdf) -> int:
    """Work units of one derivation (see the module docstring)."""
    if isinstance(kdf, Argon2Kdf):
        return kdf.time * kdf.memory
    return kdf.iterations


def describe_kdf(kdf: Kdf) -> str:
    """What the header asks for, in words: ``argon2id, 4 passes, 1048576 KiB, 4 threads``."""
    if isinstance(kdf, Argon2Kdf):
        return f"{kdf.type}, {kdf.time} passes, {kdf.memory} KiB, {kdf.cpus} threads"
    return f"pbkdf2-{kdf.hash}, {kdf.iterations} iterations"


@dataclass(frozen=True)
class KdfCeiling:
    """The most work (units) and Argon2 memory (KiB) cvm spends on one keyslot try."""

    max_cost: int = DEFAULT_MAX_KDF_COST
    max_memory_kib: int = ARGON2_MAX_MEMORY_KIB

    def __post_init__(self) -> None:
        if self.max_cost < 1:
            raise UsageError(f"--max-kdf-cost must be at least 1, not {self.max_cost}")
        if self.max_memory_kib < 1:
            raise UsageError(f"the Argon2 memory ceiling must be positive, not "
                             f"{self.max_memory_kib} KiB")

    def refusal(self, kdf: Kdf | None, digest_iterations: int) -> str:
        """Why a try costing ``kdf`` plus the digest is refused; ``""`` if it is within bounds."""
        cost = digest_iterations + (kdf_cost(kdf) if kdf is not None else 0)
        if isinstance(kdf, Argon2Kdf) and kdf.memory > self.max_memory_kib:
            return (f"{kdf.memory} KiB of Argon2 memory, above the limit of "
                    f"{self.max_memory_kib} KiB")
        if cost > self.max_cost:
            return f"a KDF cost of {cost}, above the ceiling of {self.max_cost} (--max-kdf-cost)"
        return ""
