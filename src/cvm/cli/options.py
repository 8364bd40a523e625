"""Options that apply only to some uses of a command: given elsewhere, they are refused.

A command whose options depend on its target, backend or mode refuses the ones the chosen use
does not read, instead of ignoring them silently — a user who gave one believed it would act.
"""

from __future__ import annotations

from cvm.errors import UsageError


def refuse_unused(context: str, given: dict[str, bool]) -> None:
    """Raise a one-line :class:`UsageError` naming every option of ``given`` that was given
    (True) and that ``context`` (``--target qemu``, ``--backend emulated``…) does not read."""
    names = [name for name, present in given.items() if present]
    if names:
        raise UsageError(f"{', '.join(names)}: not for {context}")


MAX_WORKERS = 64


def check_workers(count: int) -> int:
    """``--workers``: a number of processes, 1 to 64 (0 or fewer would run nothing in parallel
    while the user believed it did)."""
    if not 1 <= count <= MAX_WORKERS:
        raise UsageError(f"--workers: {count} is not between 1 and {MAX_WORKERS}")
    return count
