"""The Debian packages a ``--target qemu`` image is built from, fetched by ``apt-get download``.

Each package is downloaded into the cache folder (default ``$XDG_CACHE_HOME/cvm/debian``) as
``PACKAGE_VERSION_ARCH.deb`` and extracted with ``dpkg-deb -x`` into ``x-PACKAGE/``. The layout
is the one the test suite's cache uses, so one cache serves both.

Nothing in the cache is trusted because it is there: its files become the boot chain of an
image, and anyone who can write the folder could otherwise swap them. Every use checks:

* The ``.deb``: its SHA256 must be one that apt's package index gives for that package, version
  and architecture (``apt-cache show PACKAGE=VERSION``, ``SHA256:``). apt verified the index's
  signature chain when ``apt-get update`` fetched it, and the index lives outside the cache.
  A ``.deb`` whose digest differs is **removed and downloaded again**, then checked again; a
  second difference is refused (:class:`~cvm.errors.IntegrityError`). Downloading again rather
  than refusing at once: the cache holds nothing that cannot be fetched again, a torn or damaged
  download heals itself, and a planted file gains its author nothing, as what replaces it is
  checked the same way.
* A ``.deb`` whose version the index does not list (the lists were updated since it was
  downloaded, or it never came from apt) cannot be checked, so it is refused
  (:class:`~cvm.errors.VerificationError`) and left in place for the user to remove; it is not
  replaced silently by another version of the boot chain.
* ``x-PACKAGE/`` is reused only if its marker ``.complete`` records the SHA256 and the name of
  the checked ``.deb`` it came from, and its files are exactly those the ``.deb``'s own
  ``md5sums`` lists, with those digests (no file more, none less, no symbolic link). The
  marker is written into a staging folder after a complete extraction, and the staging folder
  is renamed to ``x-PACKAGE`` in one step, so a reader sees all of it or none. MD5 is the
  package's own list: matching it needs a second preimage of a file Debian built, which no
  known attack gives. Otherwise the ``.deb`` is extracted again.

The files are checked when fetched; whoever can write the cache while an image is being built
can still change them after the check.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from cvm.errors import ExternalToolError, FormatError, IntegrityError, VerificationError

KERNEL_META = "linux-image-amd64"
SHIM = ("shim-signed", "usr/lib/shim/shimx64.efi.signed")
GRUB = ("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
BUSYBOX = ("busybox-static", "bin/busybox")
STUB = ("systemd-boot-efi", "usr/lib/systemd/boot/efi/linuxx64.efi.stub")
MARKER = ".complete"
MD5_HEX_SIZE = 32


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cvm" / "debian"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ExternalToolError(f"{name} is not installed (needed to fetch Debian packages)")
    return found


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool(argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True,
                          check=False)


@dataclass(frozen=True)
class CachedDeb:
    """A ``PACKAGE_VERSION_ARCH.deb`` in the cache (the name ``apt-get download`` gives it)."""

    path: Path
    package: str
    version: str
    architecture: str


def cached_debs(cache: Path, package: str) -> list[CachedDeb]:
    """The cache's ``.deb`` files of ``package``, oldest version first."""
    found = []
    for path in cache.glob(f"{package}_*.deb"):
        version, _, architecture = path.name[len(package) + 1:-len(".deb")].rpartition("_")
        if version and architecture:
            found.append(CachedDeb(path, package, unquote(version), architecture))
    return sorted(found, key=lambda deb: _version_key(deb.version))


def stanzas(text: str) -> list[dict[str, str]]:
    """The fields of each stanza of an apt index text (continuation lines left out)."""
    found = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            name, colon, value = line.partition(":")
            if colon and not line[0].isspace():
                fields[name] = value.strip()
        if fields:
            found.append(fields)
    return found


def index_sha256(package: str, version: str, architecture: str) -> set[str]:
    """The SHA256 digests apt's package index gives for ``package`` ``version``
    (``architecture``); empty when it lists no such package."""
    done = _run(["apt-cache", "show", f"{package}={version}"])
    return {fields["SHA256"].lower() for fields in stanzas(done.stdout)
            if fields.get("Package") == package and fields.get("Version") == version
            and fields.get("Architecture") == architecture and "SHA256" in fields}


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _digest_if_indexed(deb: CachedDeb) -> tuple[str, bool]:
    """The ``.deb``'s SHA256 and whether apt's index gives it; refused if the index has no
    entry for its version."""
    expected = index_sha256(deb.package, deb.version, deb.architecture)
    if not expected:
        raise VerificationError(
            f"{deb.path}: apt's package index lists no {deb.package} {deb.version} "
            f"({deb.architecture}), so its SHA256 cannot be checked; the package lists changed "
            "since it was downloaded, or it did not come from apt: remove it to download the "
            "current version")
    digest = _sha256(deb.path)
    return digest, digest in expected


def _one_line(text: str) -> str:
    """A tool's messages on one line, the last 300 characters (where its error is)."""
    return " ".join(text.split())[-300:]


def _download(cache: Path, spec: str) -> None:
    done = _run(["apt-get", "download", spec], cwd=cache)
    if done.returncode:
        raise ExternalToolError(f"apt-get download {spec} failed: {_one_line(done.stderr)}")


def verified_deb(cache: Path, package: str, version: str | None = None) -> tuple[Path, str]:
    """The cached ``.deb`` of ``package`` (of ``version``, else the newest cached, else the one
    apt downloads) and its SHA256, checked against apt's package index."""
    debs = [deb for deb in cached_debs(cache, package) if version in (None, deb.version)]
    if debs:
        digest, indexed = _digest_if_indexed(debs[-1])
        if indexed:
            return debs[-1].path, digest
        debs[-1].path.unlink(missing_ok=True)  # damaged or planted: fetched and checked again
        version = debs[-1].version
    spec = package if version is None else f"{package}={version}"
    _download(cache, spec)
    debs = [deb for deb in cached_debs(cache, package) if version in (None, deb.version)]
    if not debs:
        raise ExternalToolError(f"apt-get download {spec} gave no {package}_*.deb")
    digest, indexed = _digest_if_indexed(debs[-1])
    if not indexed:
        raise IntegrityError(f"{debs[-1].path}: SHA256 {digest} is not the one apt's package "
                             f"index gives for {package} {debs[-1].version}, even when "
                             "downloaded again")
    return debs[-1].path, digest


def md5sums(deb: Path) -> dict[str, str]:
    """The ``.deb``'s own ``md5sums`` (path without the leading ``/`` to MD5); empty when it
    has none."""
    done = _run(["dpkg-deb", "--info", str(deb), "md5sums"])
    if done.returncode:
        return {}
    return {line[MD5_HEX_SIZE + 2:]: line[:MD5_HEX_SIZE].lower()
            for line in done.stdout.splitlines() if line[MD5_HEX_SIZE:MD5_HEX_SIZE + 2] == "  "}


def tree_matches(root: Path, sums: dict[str, str]) -> bool:
    """Whether ``root`` (not a link) holds exactly the files ``sums`` lists, with those
    digests, besides folders and the marker."""
    if root.is_symlink() or not root.is_dir():
        return False
    seen = 0
    try:
        for folder, folders, files in os.walk(root, onerror=_raise):
            for name in folders + files:
                path = Path(folder, name)
                mode = path.lstat().st_mode
                relative = path.relative_to(root).as_posix()
                if stat.S_ISDIR(mode) or relative == MARKER:
                    continue
                if not stat.S_ISREG(mode) or relative not in sums:
                    return False
                with path.open("rb") as file:
                    if hashlib.file_digest(file, "md5").hexdigest() != sums[relative]:
                        return False
                seen += 1
    except OSError:  # a folder that cannot be listed may hide anything
        return False
    return seen == len(sums)


def _raise(error: OSError) -> None:
    raise error


def _marker(extracted: Path) -> str:
    try:
        return (extracted / MARKER).read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def fetch(cache: Path, package: str, version: str | None = None) -> Path:
    """The extracted files of ``package`` (``version`` if given), from a ``.deb`` checked
    against apt's package index; downloaded and extracted only when the cache has no good
    copy."""
    cache.mkdir(parents=True, exist_ok=True)
    deb, digest = verified_deb(cache, package, version)
    record = f"{digest}  {deb.name}\n"
    extracted = cache / f"x-{package}"
    if _marker(extracted) == record and tree_matches(extracted, md5sums(deb)):
        return extracted
    staging = cache / f".x-{package}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    done = _run(["dpkg-deb", "-x", str(deb), str(staging)])
    if done.returncode:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExternalToolError(f"dpkg-deb -x {deb.name}: {_one_line(done.stderr)}")
    (staging / MARKER).write_text(record)  # last, inside the folder not yet in place
    _remove(extracted)
    try:
        staging.rename(extracted)
    except OSError:  # a parallel fetch put its copy in place first
        shutil.rmtree(staging, ignore_errors=True)
        if _marker(extracted) != record:
            raise ExternalToolError(f"{extracted}: replaced while {deb.name} was extracted; "
                                    "fetch again") from None
    return extracted


def _version_key(name: str) -> list[tuple[int, str]]:
    """Numbers compare as numbers: 6.1.0-56 sorts after 6.1.0-9."""
    return [(int(part), "") if part.isdigit() else (-1, part)
            for part in re.split(r"(\d+)", name)]


def kernel_package(cache: Path) -> str:
    """The kernel package: one already extracted in the cache, else the one
    ``linux-image-amd64`` depends on."""
    present = sorted((p.name[2:] for p in cache.glob("x-linux-image-*-amd64")
                      if (p / MARKER).exists()), key=_version_key)
    if present:
        return present[-1]
    done = _run(["apt-cache", "depends", KERNEL_META])
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
        return boot_inputs(cache, with_stub)


def boot_inputs(cache: Path, with_stub: bool) -> BootInputs:
    """The boot inputs from the cache's checked packages (fetched as needed)."""
    kernel_root = fetch(cache, kernel_package(cache))
    kernels = sorted((kernel_root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise FormatError(f"{kernel_root.name}: the package holds no boot/vmlinuz-*")
    return BootInputs(
        member(fetch(cache, SHIM[0]), SHIM[1]), member(fetch(cache, GRUB[0]), GRUB[1]),
        kernels[-1].read_bytes(), kernel_root / "lib" / "modules",
        member(fetch(cache, BUSYBOX[0]), BUSYBOX[1]),
        member(fetch(cache, STUB[0]), STUB[1]) if with_stub else None,
    )
