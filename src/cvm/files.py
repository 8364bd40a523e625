"""Files cvm writes for its users: whole or not at all.

A file is written beside its final name, flushed to the disk, then renamed over it, so a
failure at any point — a full disk, an interrupted process — leaves either the previous file or
the new one, never a part of either. Secrets (keys, unsealed data) are created readable by their
owner alone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644  # less the process's umask


def write_atomically(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Replace ``path`` by ``data`` so a crash leaves either the old file or the new one; the
    new file has ``mode`` (less the umask) whatever the old one had."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_output(path: Path, data: bytes, *, secret: bool = False) -> None:
    """An output file the user named: written whole (:func:`write_atomically`), private when
    ``secret``."""
    write_atomically(path, data, SECRET_MODE if secret else PUBLIC_MODE)
