"""Every host attack, in one table: the families' declarations, in the order they are shown."""

from __future__ import annotations

from cvm.errors import UsageError
from cvm.host.adversary import boot_files, cpu, evidence, launch, memory, registers, state
from cvm.host.adversary.threat import Attack

ATTACKS: tuple[Attack, ...] = (
    *memory.ATTACKS,
    *registers.ATTACKS,
    *cpu.ATTACKS,
    *launch.ATTACKS,
    *evidence.ATTACKS,
    *boot_files.ATTACKS,
    *state.ATTACKS,
)


def by_name(name: str) -> Attack:
    """The attack called ``name``; UsageError listing the names if there is none."""
    for candidate in ATTACKS:
        if candidate.name == name:
            return candidate
    names = ", ".join(a.name for a in ATTACKS)
    raise UsageError(f"no attack named {name!r} (choose from {names})")
