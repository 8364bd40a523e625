"""The Debian packages a ``--target qemu`` image is built from, fetched by ``apt-get download``.

Each package is downloaded once into the cache folder (default
``$XDG_CACHE_HOME/cvm/debian``) and extracted with ``dpkg-deb -x`` into ``x-PACKAGE/``, which
holds a ``.complete`` marker once the extraction finished (an interrupted one is redone). The
layout is the one the test suite's cache uses, so one cache serves both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cvm.errors import ExternalToolError, FormatError

KERNEL_META = "linux-image-amd64"
SHIM = ("shim-signed", "usr/lib/shim/shimx64.efi.signed")
GRUB = ("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
BUSYBOX = ("busybox-static", "bin/busybox")
STUB = ("systemd-boot-efi", "usr/lib/systemd/boot/efi/linuxx64.efi.stub")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cvm" / "debian"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ExternalToolError(f"{name} is not installed (needed to fetch Debian packages)")
    return found


def fetch(cache: Path, package: str) -> Path:
    """The extracted files of ``package`` (downloaded and extracted once)."""
    cache.mkdir(parents=True, exist_ok=True)
    extracted = cache / f"x-{package}"
    if (extracted / ".complete").exists():
        return extracted
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        done = subprocess.run([_tool("apt-get"), "download", package], cwd=cache,
                              capture_output=True, text=True, check=False)
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if done.returncode or not debs:
            raise ExternalToolError(f"apt-get download {package} failed: "
                                    f"{done.stderr.strip()[-300:]}")
    staging = cache / f".x-{package}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    done = subprocess.run([_tool("dpkg-deb"), "-x", str(debs[-1]), str(staging)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise ExternalToolError(f"dpkg-deb -x {debs[-1].name}: {done.stderr.strip()}")
    (staging / ".complete").write_text(debs[-1].name)
    shutil.rmtree(extracted, ignore_errors=True)
    try:
        staging.rename(extracted)
    except OSError:  # a parallel fetch finished first
        shutil.rmtree(staging, ignore_errors=True)
    return extracted


def _version_key(name: str) -> list[tuple[int, str]]:
    """Numbers compare as numbers: 6.1.0-56 sorts after 6.1.0-9."""
    return [(int(part), "") if part.isdigit() else (-1, part)
            for part in re.split(r"(\d+)", name)]


def kernel_package(cache: Path) -> str:
    """The kernel package: one already extracted in the cache, else the one
    ``linux-image-amd64`` depends on."""
    present = sorted((p.name[2:] for p in cache.glob("x-linux-image-*-amd64")
                      if (p / ".complete").exists()), key=_version_key)
    if present:
        return present[-1]
    done = subprocess.run([_tool("apt-cache"), "depends", KERNEL_META], capture_output=True,
                          text=True, check=False)
    for line in done.stdout.splitlines():
        name = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise ExternalToolError(f"apt-cache depends {KERNEL_META}: no kernel package found")


def member(root: Path, path: str) -> bytes:
    try:
        return (root / path).read_bytes()
    except OSError:
        raise FormatError(f"{root.name}: the package holds no {path}") from None


@dataclass(frozen=True)
class BootInputs:
    """Debian's signed boot binaries, the kernel's modules and busybox (and the UKI stub)."""

    shim: bytes
    grub: bytes
    kernel: bytes
    modules: Path  # the kernel package's lib/modules
    busybox: bytes
    stub: bytes | None

    @classmethod
    def fetch(cls, cache: Path, with_stub: bool) -> BootInputs:
        kernel_root = fetch(cache, kernel_package(cache))
        kernels = sorted((kernel_root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise FormatError(f"{kernel_root.name}: the package holds no boot/vmlinuz-*")
        return cls(
            member(fetch(cache, SHIM[0]), SHIM[1]), member(fetch(cache, GRUB[0]), GRUB[1]),
            kernels[-1].read_bytes(), kernel_root / "lib" / "modules",
            member(fetch(cache, BUSYBOX[0]), BUSYBOX[1]),
            member(fetch(cache, STUB[0]), STUB[1]) if with_stub else None,
        )
