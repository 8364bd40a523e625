"""Shared fixtures: the vectors folder and real external tools.

A missing vector folder or tool skips a test on a developer's machine and fails it in CI
(``CI=true``), where .ci/run installs everything the tests need.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VECTORS = PROJECT_ROOT.parent / "shared" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing in CI; .ci/run must provide it")
    pytest.skip(f"{what} is not available on this machine")


@pytest.fixture(scope="session")
def vectors() -> Path:
    """``../shared/vectors`` from the project root (real data with provenance)."""
    if not VECTORS.is_dir():
        _missing(f"the vectors folder {VECTORS}")
    return VECTORS


def find_tool(name: str) -> str:
    """The path of a real tool, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )
    if path is None:
        _missing(f"the tool {name}")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="session")
def require_tool() -> object:
    """``require_tool("cryptsetup")`` gives the tool's path, or skips (fails in CI)."""
    return find_tool


DEBIAN_CACHE = (
    Path(os.environ.get("CVM_TEST_CACHE", Path.home() / ".cache" / "cvm-tests")) / "debian"
)
# The package versions of the real boot in ../shared/vectors/realboot/inputs.json; when one is no
# longer served, the current version of the same package is used instead.
DEBIAN_BOOT_PACKAGES = {
    "shim-signed": ("1.51~1+deb12u1+16.1-2~deb12u1", "usr/lib/shim/shimx64.efi.signed"),
    "grub-efi-amd64-signed": (
        "1+2.06+13+deb12u2", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    ),
    "linux-image-6.1.0-56-amd64": ("6.1.192-2", "boot/vmlinuz-6.1.0-56-amd64"),
}


def _current_kernel_package(apt: str) -> str:
    """The signed kernel package ``linux-image-amd64`` currently depends on."""
    import subprocess

    cache = str(Path(apt).with_name("apt-cache"))
    done = subprocess.run([cache, "depends", "linux-image-amd64"], capture_output=True,
                          text=True, check=False)
    for line in done.stdout.splitlines():
        name = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    return "linux-image-amd64"


def _fetch_debian_package(package: str, version: str) -> Path:
    """``apt-get download`` ``package`` (``version`` first) into the cache, extracted once."""
    import subprocess

    DEBIAN_CACHE.mkdir(parents=True, exist_ok=True)
    extracted = DEBIAN_CACHE / f"x-{package}"
    marker = extracted / ".complete"
    if marker.exists():
        return extracted
    apt = find_tool("apt-get")
    debs = sorted(DEBIAN_CACHE.glob(f"{package}_*.deb"))
    if not debs:
        specs = [f"{package}={version}", package]
        if package.startswith("linux-image-"):
            specs.append(_current_kernel_package(apt))
        for spec in specs:
            done = subprocess.run(
                [apt, "download", spec], cwd=DEBIAN_CACHE, capture_output=True, text=True,
                check=False,
            )
            if done.returncode == 0:
                break
        debs = sorted(DEBIAN_CACHE.glob(f"{package}_*.deb")) or sorted(
            DEBIAN_CACHE.glob("linux-image-*-amd64_*.deb") if package.startswith("linux-") else []
        )
    if not debs:
        _missing(f"the Debian package {package} (apt-get download failed)")
    preferred = [d for d in debs if version.replace(":", "%3a") in d.name]
    chosen = (preferred or debs)[-1]
    staging = DEBIAN_CACHE / f".x-{package}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run([find_tool("dpkg-deb"), "-x", str(chosen), str(staging)], check=True)
    (staging / ".complete").write_text(chosen.name)
    if extracted.exists() and not marker.exists():
        shutil.rmtree(extracted, ignore_errors=True)  # an interrupted earlier extraction
    try:
        staging.rename(extracted)  # atomic: a parallel run sees all or nothing
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not marker.exists():
            raise
    return extracted


@pytest.fixture(scope="session")
def debian_boot_binaries() -> dict[str, Path]:
    """Debian's signed shim, GRUB and kernel: ``{"shim": ..., "grub": ..., "kernel": ...}``.

    Downloaded with ``apt-get download`` into ``~/.cache/cvm-tests/debian`` (reused across runs)
    and extracted with ``dpkg-deb -x``; the versions of the real boot are tried first.
    """
    paths: dict[str, Path] = {}
    for role, package in zip(("shim", "grub", "kernel"), DEBIAN_BOOT_PACKAGES, strict=True):
        version, member = DEBIAN_BOOT_PACKAGES[package]
        root = _fetch_debian_package(package, version)
        path = root / member
        if not path.exists() and role == "kernel":
            path = next(iter(sorted((root / "boot").glob("vmlinuz-*"))), path)
        if not path.exists():
            _missing(f"{member} in the Debian package {package}")
        paths[role] = path
    return paths
