"""The EFI System Partition: a FAT32 file system holding the boot chain, in the clear.

UEFI Specification 2.10, section 13.3 (FAT32 for the system partition) and 3.5.1.1 (the
removable-media default ``\\EFI\\BOOT\\BOOTX64.EFI``). The file system is made by Debian's
``mtools`` directly inside the disk image at the partition's byte offset (``-i IMAGE@@OFFSET``):
``mformat -F`` (FAT32, hidden sectors = partition start, 32 reserved sectors cleared first:
mformat writes only its own fields of them), then ``mmd``/``mcopy`` for every
directory and file of the boot-chain tree, which mirrors the ESP (``EFI/BOOT/BOOTX64.EFI``,
``EFI/debian/grubx64.efi``, ...).

cvm shells out only where writing a file system itself would be a second, unproven
implementation: FAT32 here, and ext4 (``mkfs.ext4 -d``) for a root tree in
:mod:`cvm.disk.disk_image`. Tools are looked up on ``PATH`` and in ``/usr/sbin`` and ``/sbin``.

Reproducible: given ``serial`` and ``epoch``, :func:`write_esp` writes the same bytes for the
same files — ``mformat -N`` sets the volume serial (else mtools chooses one), and mtools stamps
every directory entry with ``SOURCE_DATE_EPOCH`` (mtools 4.0.19 and later) instead of the
clock, in UTC (``TZ=UTC0``: FAT time stamps are local time).

Public API: :func:`write_esp` and :func:`list_esp`; :data:`MIN_ESP_SIZE` (FAT32 needs at least
65525 clusters); :func:`find_tool` and :func:`run_tool` (raise
:class:`~cvm.errors.ExternalToolError` with the tool's first error line).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from cvm.errors import ExternalToolError, UsageError

LBA_SIZE = 512
MIN_ESP_SIZE = 33 << 20
RESERVED_SECTORS = 32  # boot sector, FSINFO, backup boot sector and its FSINFO (FAT32)
DEFAULT_LOADER = Path("EFI/BOOT/BOOTX64.EFI")
MAX_VOLUME_SERIAL = 0xFFFFFFFF  # BS_VolID (FAT32 boot sector offset 0x43): 4 bytes

_EXTRA_DIRS = ("/usr/sbin", "/sbin")


def find_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ExternalToolError(f"the tool {name} is not installed (Debian: mtools, dosfstools, "
                            "e2fsprogs)")


def run_tool(name: str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run ``name args...`` (with ``env`` added to the environment); return its stdout, or
    raise with its first error line."""
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C", **(env or {})}
    # stdin is empty: a tool that would ask a question (mtools on a name clash) fails instead
    # of waiting for an answer
    result = subprocess.run([find_tool(name), *args], capture_output=True, text=True,
                            env=env, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[0] if lines else f"exit code {result.returncode}"
        raise ExternalToolError(f"{name} failed: {detail}")
    return result.stdout


def _target(image: Path, offset: int) -> str:
    return f"{image}@@{offset}"


def boot_files(boot_dir: Path) -> list[Path]:
    """Files of the boot-chain tree, relative to it; it must hold the default loader."""
    if not boot_dir.is_dir():
        code = errno.ENOTDIR if boot_dir.exists() else errno.ENOENT
        raise OSError(code, f"{os.strerror(code)} (the boot-chain directory)", str(boot_dir))
    files = sorted(p.relative_to(boot_dir) for p in boot_dir.rglob("*") if p.is_file())
    if not any(str(f).upper() == str(DEFAULT_LOADER) for f in files):
        raise FileNotFoundError(errno.ENOENT, f"No {DEFAULT_LOADER} (the removable-media "
                                f"loader) in the boot-chain directory", str(boot_dir))
    return files


def _clear_reserved(image: Path, offset: int, size: int) -> None:
    """Zero the reserved sectors of the ESP at ``offset``, which the image must hold whole."""
    with image.open("r+b") as target:
        held = target.seek(0, os.SEEK_END)
        if held < offset + size:
            raise UsageError(f"the image {image} holds {held:#x} bytes, the ESP at {offset:#x} "
                             f"needs {offset + size:#x}")
        target.seek(offset)
        target.write(bytes(RESERVED_SECTORS * LBA_SIZE))


def fixed_time(epoch: int | None) -> dict[str, str]:
    """The environment that makes mtools stamp ``epoch`` (seconds since 1970, UTC) rather than
    the clock; empty for ``None``."""
    if epoch is None:
        return {}
    return {"SOURCE_DATE_EPOCH": str(epoch), "TZ": "UTC0"}


def serial_options(serial: int | None) -> list[str]:
    """``mformat``'s ``-N`` for the volume serial ``serial`` (8 hex digits); none for ``None``."""
    if serial is None:
        return []
    if not 0 <= serial <= MAX_VOLUME_SERIAL:
        raise UsageError(f"the ESP's volume serial {serial:#x} does not fit 4 bytes")
    return ["-N", f"{serial:08x}"]


def write_esp(image: Path, offset: int, size: int, boot_dir: Path, label: str = "ESP",
              progress: Callable[[str], None] | None = None, serial: int | None = None,
              epoch: int | None = None) -> list[Path]:
    """Format ``size`` bytes at ``offset`` of ``image`` as FAT32 and copy ``boot_dir`` in; the
    image must already hold those bytes. ``serial`` is the volume serial (``None``: mtools
    chooses), ``epoch`` the time of every directory entry (``None``: the clock)."""
    if size < MIN_ESP_SIZE or offset % LBA_SIZE or size % LBA_SIZE:
        raise UsageError(f"the ESP needs at least {MIN_ESP_SIZE >> 20} MiB on sector bounds")
    files = boot_files(boot_dir)
    options = serial_options(serial)
    env = fixed_time(epoch)
    _clear_reserved(image, offset, size)
    target = _target(image, offset)
    run_tool("mformat", "-i", target, "-F", "-R", str(RESERVED_SECTORS),
             "-T", str(size // LBA_SIZE), "-H", str(offset // LBA_SIZE), *options,
             "-v", label[:11], "::", env=env)
    made: set[Path] = set()
    for relative in files:
        for parent in reversed(relative.parents[:-1]):
            if parent not in made:
                run_tool("mmd", "-i", target, f"::/{parent.as_posix()}", env=env)
                made.add(parent)
        run_tool("mcopy", "-i", target, str(boot_dir / relative), f"::/{relative.as_posix()}",
                 env=env)
        if progress is not None:
            progress(relative.as_posix())
    return files


def list_esp(image: Path, offset: int) -> list[str]:
    """Paths of the files in the ESP at ``offset`` (``mdir -/ -b``)."""
    out = run_tool("mdir", "-i", _target(image, offset), "-/", "-b", "::/")
    lines = (line.strip() for line in out.splitlines())
    return [line.removeprefix("::") for line in lines if line and not line.endswith("/")]
