"""Options several commands share, checked the same way everywhere.

A command whose options depend on its target, backend or mode refuses the ones the chosen use
does not read, instead of ignoring them silently — a user who gave one believed it would act.
``--workers`` is a count from 1 to 64; a file an option names is refused with the option and
the file in the message (:func:`parse_file`, :func:`reading`): the one error line says which of
a command's inputs is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cvm.errors import CvmError, UsageError

T = TypeVar("T")


def refuse_unused(context: str, given: dict[str, bool]) -> None:
    """Raise a one-line :class:`UsageError` naming every option of ``given`` that was given
    (True) and that ``context`` (``--target qemu``, ``--backend emulated``…) does not read."""
    names = [name for name, present in given.items() if present]
    if names:
        raise UsageError(f"{', '.join(names)}: not for {context}")


MAX_WORKERS = 64


def given_time(option: str, at: str | None) -> datetime:
    """The time ``option`` gives (ISO 8601; one without an offset is UTC), or now."""
    if at is None:
        return datetime.now(UTC)
    try:
        given = datetime.fromisoformat(at)
    except ValueError:
        raise UsageError(f"{option} {at!r} is not an ISO 8601 time") from None
    return given if given.tzinfo else given.replace(tzinfo=UTC)


def check_workers(count: int) -> int:
    """``--workers``: a number of processes, 1 to 64 (0 or fewer would run nothing in parallel
    while the user believed it did)."""
    if not 1 <= count <= MAX_WORKERS:
        raise UsageError(f"--workers: {count} is not between 1 and {MAX_WORKERS}")
    return count


def named(error: CvmError, path: Path, option: str = "") -> CvmError:
    """``error``, its class (and so its exit code) kept, its message led by ``option`` and
    ``path`` — unless the message names the file already."""
    message = str(error)
    if str(path) not in message:
        where = f"{option} {path}" if option else str(path)
        error.args = (f"{where}: {message}",)
    return error


@contextmanager
def reading(path: Path, option: str = "") -> Iterator[None]:
    """Every project error raised in the block (the parse of the file at ``path``) named with
    ``option`` and the file (:func:`named`)."""
    try:
        yield
    except CvmError as error:
        raise named(error, path, option) from None


def parse_file(path: Path, option: str, parse: Callable[[bytes], T]) -> T:
    """The file ``option`` names (a positional file: ``""``), parsed; what is wrong with it
    named with the option and the file (a file that cannot be read is the OS error, exit 74)."""
    data = path.read_bytes()
    with reading(path, option):
        return parse(data)
