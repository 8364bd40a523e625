"""An image folder built whole or not at all.

``cvm image build OUT`` (the bundle, and ``--target qemu``) writes every file of the image into a
hidden staging folder beside ``OUT`` (``.OUT.building-…``, mode 0700) and renames it to ``OUT``
only once the build is complete. A build that fails at any step — a full disk, an interrupted
process, a refusal — removes its staging folder and leaves ``OUT`` as it was: absent, empty, or
the earlier image byte for byte. An earlier image is moved aside (``.OUT.old-…``) and removed
only once the new one is in place; a folder that holds anything but an image of the same kind is
refused, never written into or replaced.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cvm.errors import UsageError

T = TypeVar("T")


def check_out(out: Path, manifest: str, what: str) -> None:
    """Refuse ``out`` unless it is new, an empty folder or a folder whose ``manifest`` is a
    file (an earlier image of this kind, which the build replaces whole)."""
    if out.exists() and not (out.is_dir() and (not any(out.iterdir())
                                               or (out / manifest).is_file())):
        raise UsageError(f"{out}: holds files that are not {what}; give a new or empty folder")


def make_staging(out: Path, what: str) -> Path:
    """A new hidden folder beside ``out`` (its parents made); an error names ``out`` as the
    user gave it, not the hidden folder."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as error:
        raise OSError(error.errno, f"cannot create {what} ({error.strerror})",
                      str(out)) from None


def build_in_place(out: Path, build: Callable[[Path], T], manifest: str, what: str,
                   created: str) -> T:
    """``build(staging)`` in a staging folder beside ``out``, renamed to ``out`` when it
    returns; removed (and ``out`` untouched) when it raises. ``manifest`` names the file that
    marks an earlier image of this kind, ``what`` the kind in a refusal, ``created`` in an error
    creating the staging folder."""
    check_out(out, manifest, what)
    staging = make_staging(out, created)
    try:
        built = build(staging)
        put_in_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return built


def put_in_place(staging: Path, out: Path) -> None:
    """Rename the complete image ``staging`` to ``out``; an earlier image there is moved aside
    first and removed only once the new one is in place."""
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    out.rename(old / "bundle")
    try:
        staging.rename(out)
    except OSError:
        (old / "bundle").rename(out)  # put the earlier image back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
