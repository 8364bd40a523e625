"""Options several commands share, checked the same way everywhere.

A command whose options depend on its target, backend or mode refuses the ones the chosen use
does not read, instead of ignoring them silently — a user who gave one believed it would act.
``--workers`` is a count from 1 to 64; a file an option names is refused with the option and
the file in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cvm.errors import FormatError, UsageError

T = TypeVar("T")


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


def parse_file(path: Path, option: str, parse: Callable[[bytes], T]) -> T:
    """The file ``option`` names, parsed; what is wrong with it named with the option and the
    file (a file that cannot be read is the OS error, exit 74)."""
    data = path.read_bytes()
    try:
        return parse(data)
    except FormatError as error:
        raise FormatError(f"{option} {path}: {error}") from None
