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
* The ``.deb`` is read **once**, into memory, and that buffer is what is hashed and what is
  used: dpkg-deb is handed a copy of the checked bytes written into a new private folder
  (``tempfile``, mode 0700, outside the cache), never the cache's file, which may have changed
  since it was read.
* The package's files and their SHA256 digests (regular files only) are read from the checked
  bytes (``dpkg-deb --fsys-tarfile``), never taken from the cache. That list is a function of
  the ``.deb``'s bytes alone, so it is worked out once per process for each ``.deb`` and kept in
  memory under the SHA256 of those very bytes (:func:`file_digests`) — never under a path, a
  name or a time: a later fetch still reads and checks the ``.deb`` against apt's index, and
  finds the list only if its bytes are the same; every file the build reads is still checked
  against it when read.
* ``x-PACKAGE/`` is reused only if its marker ``.complete`` records the SHA256 and the name of
  the checked ``.deb`` it came from, and its files are exactly the package's regular files,
  with those digests (no file more, none less, no symbolic link). The marker is written into a
  staging folder after a complete extraction, and the staging folder is renamed to
  ``x-PACKAGE`` in one step, so a reader sees all of it or none. Otherwise the ``.deb``'s
  checked bytes are extracted again.
* Every file the build takes from ``x-PACKAGE/`` goes through :meth:`CheckedPackage.read`:
  the file is read once (a regular file, not through a last-component link, no more than its
  size and one byte) and those bytes are returned only if their SHA256 is the package's. A file
  that differs — changed by someone who can write the cache after the check — is extracted
  again once from the checked bytes; if it differs again it is refused
  (:class:`~cvm.errors.IntegrityError`, exit 66). Names are looked up in the package's list,
  never by listing the folder, so a planted file is never found.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

from cvm.errors import ExternalToolError, FormatError, IntegrityError, VerificationError

KERNEL_META = "linux-image-amd64"
SHIM = ("shim-signed", "usr/lib/shim/shimx64.efi.signed")
GRUB = ("grub-efi-amd64-signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
BUSYBOX = ("busybox-static", "bin/busybox")
STUB = ("systemd-boot-efi", "usr/lib/systemd/boot/efi/linuxx64.efi.stub")
MARKER = ".complete"
T = TypeVar("T")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cvm" / "debian"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ExternalToolError(f"{name} is not installed (needed to fetch Debian packages)")
    return found


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # errors= opens the pipes as text, a message that is not UTF-8 with replacement characters
    return subprocess.run([_tool(argv[0]), *argv[1:]], cwd=cwd, capture_output=True,
                          errors="replace", check=False)


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


def _read_regular(path: Path, limit: int = -1) -> bytes | None:
    """The bytes of the regular file ``path`` (at most ``limit``), read once; ``None`` when it
    is not a regular file (a link, a FIFO that would block, a folder) or cannot be read."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        with os.fdopen(handle, "rb", closefd=False) as file:
            return file.read(limit)
    except OSError:
        return None
    finally:
        os.close(handle)


@dataclass(frozen=True)
class VerifiedDeb:
    """A cached ``.deb`` read once into ``data``, whose SHA256 apt's package index gives."""

    path: Path
    data: bytes
    sha256: str


def _read_if_indexed(deb: CachedDeb) -> tuple[VerifiedDeb, bool]:
    """The ``.deb``'s bytes and SHA256, and whether apt's index gives that digest; refused if
    the index has no entry for its version."""
    expected = index_sha256(deb.package, deb.version, deb.architecture)
    if not expected:
        raise VerificationError(
            f"{deb.path}: apt's package index lists no {deb.package} {deb.version} "
            f"({deb.architecture}), so its SHA256 cannot be checked; the package lists changed "
            "since it was downloaded, or it did not come from apt: remove it to download the "
            "current version")
    data = _read_regular(deb.path) or b""
    digest = hashlib.sha256(data).hexdigest()
    return VerifiedDeb(deb.path, data, digest), digest in expected


def _one_line(text: str) -> str:
    """A tool's messages on one line, the last 300 characters (where its error is)."""
    return " ".join(text.split())[-300:]


def _download(cache: Path, spec: str) -> None:
    done = _run(["apt-get", "download", spec], cwd=cache)
    if done.returncode:
        raise ExternalToolError(f"apt-get download {spec} failed: {_one_line(done.stderr)}")


def verified_deb(cache: Path, package: str, version: str | None = None) -> VerifiedDeb:
    """The cached ``.deb`` of ``package`` (of ``version``, else the newest cached, else the one
    apt downloads), read once and checked against apt's package index: its ``data`` are the
    checked bytes, and nothing reads the file again."""
    debs = [deb for deb in cached_debs(cache, package) if version in (None, deb.version)]
    if debs:
        verified, indexed = _read_if_indexed(debs[-1])
        if indexed:
            return verified
        _remove(debs[-1].path)  # damaged or planted: fetched and checked again
        version = debs[-1].version
    spec = package if version is None else f"{package}={version}"
    _download(cache, spec)
    debs = [deb for deb in cached_debs(cache, package) if version in (None, deb.version)]
    if not debs:
        raise ExternalToolError(f"apt-get download {spec} gave no {package}_*.deb")
    verified, indexed = _read_if_indexed(debs[-1])
    if not indexed:
        raise IntegrityError(f"{debs[-1].path}: SHA256 {verified.sha256} is not the one apt's "
                             f"package index gives for {package} {debs[-1].version}, even when "
                             "downloaded again")
    return verified


def _in_private_copy(deb: VerifiedDeb, use: Callable[[Path], T]) -> T:
    """``use`` run on a copy of the checked bytes in a new folder only this user can enter
    (never the cache's file, which may have changed since it was read)."""
    with tempfile.TemporaryDirectory(prefix="cvm-deb-") as folder:
        copy = Path(folder) / deb.path.name
        copy.write_bytes(deb.data)
        return use(copy)


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str


_FILE_LISTS: dict[str, dict[str, FileDigest]] = {}
"""This process's :func:`file_digests` of each ``.deb``, under the SHA256 of its bytes."""


def file_digests(deb: VerifiedDeb) -> dict[str, FileDigest]:
    """The regular files of the checked ``.deb`` (path without ``./`` to size and SHA256),
    read from its bytes (``dpkg-deb --fsys-tarfile``); links and devices are left out.

    Worked out once per process for the same bytes: kept under the SHA256 of ``deb.data``,
    computed here (not ``deb.sha256``, not the path), so only the same bytes find it. A copy
    is returned: what a caller does with it never changes what the next one gets."""
    key = hashlib.sha256(deb.data).hexdigest()
    files = _FILE_LISTS.get(key)
    if files is None:
        files = _in_private_copy(deb, _tar_digests)
        _FILE_LISTS[key] = files
    return dict(files)


def _tar_digests(copy: Path) -> dict[str, FileDigest]:
    found = {}
    with tempfile.TemporaryFile() as messages:
        tool = subprocess.Popen([_tool("dpkg-deb"), "--fsys-tarfile", str(copy)],
                                stdout=subprocess.PIPE, stderr=messages)
        assert tool.stdout is not None  # for the type checker: stdout is a pipe
        failure = ""
        try:
            with tarfile.open(fileobj=tool.stdout, mode="r|") as tar:
                for entry in tar:
                    data = tar.extractfile(entry) if entry.isreg() else None
                    if data is not None:
                        found[entry.name.removeprefix("./")] = FileDigest(
                            entry.size, hashlib.sha256(data.read()).hexdigest())
            tool.stdout.read()  # the padding after the archive's end, or dpkg-deb fails
        except tarfile.TarError as error:
            failure = str(error)
        tool.stdout.close()
        code = tool.wait()
        messages.seek(0)
        text = messages.read().decode(errors="replace")
    if code or failure:
        raise ExternalToolError(f"dpkg-deb --fsys-tarfile {copy.name}: "
                                f"{_one_line(text or failure)}")
    return found


def tree_matches(root: Path, files: Mapping[str, FileDigest]) -> bool:
    """Whether ``root`` (not a link) holds exactly the regular ``files``, with those SHA256
    digests, besides folders and the marker."""
    if root.is_symlink() or not root.is_dir():
        return False
    seen = 0
    try:
        for folder, folders, names in os.walk(root, onerror=_raise):
            for name in folders + names:
                path = Path(folder, name)
                mode = path.lstat().st_mode
                relative = path.relative_to(root).as_posix()
                if stat.S_ISDIR(mode) or relative == MARKER:
                    continue
                if not stat.S_ISREG(mode) or relative not in files:
                    return False
                with path.open("rb") as file:
                    if hashlib.file_digest(file, "sha256").hexdigest() != files[relative].sha256:
                        return False
                seen += 1
    except OSError:  # a folder that cannot be listed may hide anything
        return False
    return seen == len(files)


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


@dataclass(frozen=True)
class CheckedPackage:
    """A package extracted into ``root`` whose every read is checked: ``files`` are the
    regular files of the checked ``.deb`` ``deb``, their digests taken from its bytes."""

    root: Path
    deb: VerifiedDeb
    files: dict[str, FileDigest]

    def names(self) -> list[str]:
        return sorted(self.files)

    def read(self, name: str) -> bytes:
        return read_checked(self, name)


def _record(deb: VerifiedDeb) -> str:
    return f"{deb.sha256}  {deb.path.name}\n"


def fetch(cache: Path, package: str, version: str | None = None) -> CheckedPackage:
    """The files of ``package`` (``version`` if given), from a ``.deb`` checked against apt's
    package index; downloaded and extracted only when the cache has no good copy."""
    cache.mkdir(parents=True, exist_ok=True)
    deb = verified_deb(cache, package, version)
    checked = CheckedPackage(cache / f"x-{package}", deb, file_digests(deb))
    if _marker(checked.root) != _record(deb) or not tree_matches(checked.root, checked.files):
        extract(checked)
    return checked


def extract(package: CheckedPackage) -> None:
    """Extract the checked ``.deb``'s bytes into ``package.root`` (``dpkg-deb -x``), in a
    staging folder renamed into place with its marker, so a reader sees all of it or none."""
    root, deb = package.root, package.deb
    staging = root.parent / f".{root.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    done = _in_private_copy(deb, lambda copy: _run(["dpkg-deb", "-x", str(copy), str(staging)]))
    if done.returncode:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExternalToolError(f"dpkg-deb -x {deb.path.name}: {_one_line(done.stderr)}")
    (staging / MARKER).write_text(_record(deb))  # last, inside the folder not yet in place
    _remove(root)
    try:
        staging.rename(root)
    except OSError:  # a parallel fetch put its copy in place first
        shutil.rmtree(staging, ignore_errors=True)
        if _marker(root) != _record(deb):
            raise ExternalToolError(f"{root}: replaced while {deb.path.name} was extracted; "
                                    "fetch again") from None


def _checked_bytes(path: Path, expected: FileDigest) -> bytes | None:
    data = _read_regular(path, expected.size + 1)
    if data is None or hashlib.sha256(data).hexdigest() != expected.sha256:
        return None
    return data


def read_checked(package: CheckedPackage, name: str) -> bytes:
    """The bytes of ``name`` in the package, read once and checked against the ``.deb``'s
    digest; a file changed since the package was checked is extracted again once from the
    checked bytes, and refused if it differs again."""
    expected = package.files.get(name)
    if expected is None:
        raise FormatError(f"{package.root.name}: the package holds no {name}")
    data = _checked_bytes(package.root / name, expected)
    if data is None:
        extract(package)
        data = _checked_bytes(package.root / name, expected)
    if data is None:
        raise IntegrityError(
            f"{package.root / name}: not the file {package.deb.path.name} holds (SHA256 "
            f"{expected.sha256}), even when extracted again; something changes the cache while "
            "it is used")
    return data


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


@dataclass(frozen=True)
class BootInputs:
    """Debian's signed boot binaries, the kernel's package (its ``lib/modules``), busybox and
    the UKI stub, each read once from a checked package."""

    shim: bytes
    grub: bytes
    kernel: bytes
    modules: CheckedPackage  # the kernel's package: the initramfs reads its lib/modules
    busybox: bytes
    stub: bytes | None

    @classmethod
    def fetch(cls, cache: Path, with_stub: bool) -> BootInputs:
        return boot_inputs(cache, with_stub)


def boot_inputs(cache: Path, with_stub: bool) -> BootInputs:
    """The boot inputs from the cache's checked packages (fetched as needed)."""
    kernel = fetch(cache, kernel_package(cache))
    images = [name for name in kernel.names()
              if name.startswith("boot/vmlinuz-") and "/" not in name[len("boot/"):]]
    if not images:
        raise FormatError(f"{kernel.root.name}: the package holds no boot/vmlinuz-*")
    return BootInputs(
        fetch(cache, SHIM[0]).read(SHIM[1]), fetch(cache, GRUB[0]).read(GRUB[1]),
        kernel.read(images[-1]), kernel, fetch(cache, BUSYBOX[0]).read(BUSYBOX[1]),
        fetch(cache, STUB[0]).read(STUB[1]) if with_stub else None,
    )
