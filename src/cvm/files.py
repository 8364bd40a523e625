"""Files cvm writes for its users: whole or not at all.

A file is written beside its final name, flushed to the disk, then renamed over it (and the
rename flushed too), so a failure at any point — a full disk, an interrupted process — leaves
either the previous file or the new one, never a part of either, and no temporary behind.
Secrets (keys, tokens, unsealed data) are created readable by their owner alone. An OS error
names the file the user asked for, never the temporary.

:func:`write_atomically` / :func:`write_output` write bytes held in memory; :func:`staged` gives
a large output (a disk image) a temporary name to be streamed into; :func:`write_new` creates a
file that must not exist yet (a key made on first start).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType
from typing import NoReturn

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644  # less the process's umask


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _sync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder whose entries changed) to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _named(error: OSError, path: Path, temporary: Path) -> OSError:
    """``error`` naming ``path`` where it named the temporary or no file (a write's ENOSPC);
    an error about another file (an input read along the way) is kept as it is."""
    if error.filename not in (None, str(temporary)):
        return error
    return OSError(error.errno, error.strerror or str(error), str(path))


def _check_target(path: Path) -> None:
    """A device, a pipe or a socket is not a file to be replaced (renaming over ``/dev/sdb``
    would put a file in its place)."""
    try:
        kind = path.stat().st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):  # a folder: the OS error of the rename
        raise OSError(errno.EINVAL, "Not a regular file (cvm writes its outputs as files)",
                      str(path))


def _raise_named(error: OSError, path: Path, temporary: Path) -> NoReturn:
    named = _named(error, path, temporary)
    if named is error:
        raise error
    raise named from error


class Staging:
    """A temporary file beside ``path`` (``with`` gives its name): on a clean exit flushed and
    renamed over ``path`` (or linked to it, ``replace=False``: a new file only), on an error
    removed; an OS error then names ``path``. A class, not a generator, so that every step
    is plain code."""

    def __init__(self, path: Path, mode: int, *, replace: bool) -> None:
        self.path = path
        self.mode = mode
        self.replace = replace
        self.temporary = _temporary(path)

    def __enter__(self) -> Path:
        try:
            os.close(os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode))
        except OSError as error:  # a name taken is someone else's file: left alone
            _raise_named(error, self.path, self.temporary)
        return self.temporary

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if error is None:
                self._commit()
            elif isinstance(error, OSError):
                _raise_named(error, self.path, self.temporary)
        finally:
            self.temporary.unlink(missing_ok=True)

    def _commit(self) -> None:
        try:
            _sync(self.temporary)
            if self.replace:
                os.replace(self.temporary, self.path)
            else:  # FileExistsError if it exists: then it is not touched
                os.link(self.temporary, self.path)
            _sync(self.path.parent)  # the new name itself
        except OSError as error:
            _raise_named(error, self.path, self.temporary)


def staged(path: Path, mode: int = SECRET_MODE) -> Staging:
    """A new empty file beside ``path`` (created with ``mode`` less the umask) for a large
    output to be written into by name: ``with staged(out) as new: ...``. When the block ends
    it is flushed and renamed over ``path``; when the block raises, it is removed and ``path``
    is as it was."""
    _check_target(path)
    return Staging(path, mode, replace=True)


def write_atomically(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Replace ``path`` by ``data`` so a crash leaves either the old file or the new one; the
    new file has ``mode`` (less the umask) whatever the old one had."""
    with staged(path, mode) as temporary, temporary.open("wb") as handle:
        handle.write(data)


def write_output(path: Path, data: bytes, *, secret: bool = False) -> None:
    """An output file the user named: written whole (:func:`write_atomically`), private when
    ``secret``."""
    write_atomically(path, data, SECRET_MODE if secret else PUBLIC_MODE)


def write_new(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Create ``path`` holding ``data``, whole or not at all; if it exists already (another
    process made it first), :class:`FileExistsError` and the file is left as it is."""
    with Staging(path, mode, replace=False) as temporary, temporary.open("wb") as handle:
        handle.write(data)
