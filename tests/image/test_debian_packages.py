"""The Debian package cache of the qemu target: every ``.deb`` checked against apt's package
index, every extracted folder against its marker and the ``.deb``'s own md5sums.

apt-get and apt-cache are replaced by small scripts serving a local repository (an index of
``.deb`` files built here with ``dpkg-deb --build``), and dpkg-deb is wrapped to log its calls;
the tests named ``real_apt`` use the machine's apt tools and index.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.errors import ExternalToolError, FormatError, IntegrityError, VerificationError
from cvm.image import debian_packages
from cvm.image.debian_packages import (
    BUSYBOX,
    GRUB,
    MARKER,
    SHIM,
    STUB,
    BootInputs,
    FileDigest,
    VerifiedDeb,
    cached_debs,
    default_cache,
    fetch,
    file_digests,
    index_sha256,
    kernel_package,
    stanzas,
    tree_matches,
    verified_deb,
)
from cvm.image.qemu_initramfs import module_order

from ..formats.elf_builder import elf_object

pytestmark = pytest.mark.interop

APT_CACHE = """
import sys
from pathlib import Path
repo = Path(sys.argv[0]).parent.parent
with (repo / "log").open("a") as log:
    log.write("apt-cache " + " ".join(sys.argv[1:]) + "\\n")
blocks = (repo / "Packages").read_text().split("\\n\\n")
if sys.argv[1] == "depends":
    print(sys.argv[2])
    for block in blocks:
        if block.startswith("Package: linux-image-"):
            print("  Depends: " + block.split("\\n")[0].split(": ")[1])
    sys.exit(0)
package, _, version = sys.argv[2].partition("=")
found = [b for b in blocks if f"Package: {package}\\n" in b and f"Version: {version}\\n" in b]
if not found:
    sys.exit("E: No packages found")
print("\\n\\n".join(found))
"""

APT_GET = """
import shutil, sys
from pathlib import Path
repo = Path(sys.argv[0]).parent.parent
with (repo / "log").open("a") as log:
    log.write("apt-get " + " ".join(sys.argv[1:]) + "\\n")
package, _, version = sys.argv[2].partition("=")
for block in reversed((repo / "Packages").read_text().split("\\n\\n")):
    fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
    if fields.get("Package") == package and version in ("", fields["Version"]):
        name = f"{package}_{fields['Version'].replace(':', '%3a')}_{fields['Architecture']}.deb"
        shutil.copy(repo / fields["Filename"], Path.cwd() / name)
        sys.exit(0)
sys.exit(f"E: Unable to locate package {sys.argv[2]}")
"""


class Repo:
    """A local apt repository: ``publish`` builds a package and lists it in the index."""

    def __init__(self, root: Path, dpkg: str) -> None:
        self.root, self.dpkg = root, dpkg
        self.built = 0
        self.tree = root
        (root / "bin").mkdir(parents=True)
        (root / "pool").mkdir()
        (root / "Packages").write_text("")
        (root / "log").write_text("")
        for tool, script in (("apt-cache", APT_CACHE), ("apt-get", APT_GET)):
            (root / "bin" / tool).write_text(f"#!{sys.executable}\n{script}")
            (root / "bin" / tool).chmod(0o755)
        # Two writers of the cache while a build runs, each at a point after the check:
        # CVM_TEST_SWAP="FROM TO" copies FROM over the cached TO as dpkg-deb starts;
        # CVM_TEST_PLANT=PATH writes "planted" into PATH of each folder ``-x`` extracts.
        # And dpkg-deb failing: CVM_TEST_REFUSE=OPTION fails that call before it starts (a
        # message not in UTF-8), CVM_TEST_FAIL_AFTER=OPTION after its work,
        # CVM_TEST_NOT_TAR=1 has --fsys-tarfile succeed with text that is not a tar.
        (root / "bin" / "dpkg-deb").write_text(
            f'#!/bin/sh\necho "dpkg-deb $*" >> {root / "log"}\n'
            'if [ -n "$CVM_TEST_SWAP" ]; then cp $CVM_TEST_SWAP; fi\n'
            'if [ "$1" = "$CVM_TEST_REFUSE" ]; then\n'
            "  printf 'dpkg-deb: error: refused \\377\\n' >&2; exit 2\nfi\n"
            'if [ "$1" = --fsys-tarfile ] && [ -n "$CVM_TEST_NOT_TAR" ]; then\n'
            '  echo not a tar; exit 0\nfi\n'
            f'{dpkg} "$@" || exit $?\n'
            'if [ "$1" = -x ] && [ -n "$CVM_TEST_PLANT" ]; then\n'
            '  printf planted > "$3/$CVM_TEST_PLANT" || exit 3\nfi\n'
            'if [ "$1" = "$CVM_TEST_FAIL_AFTER" ]; then\n'
            '  echo "dpkg-deb: error: after its output" >&2; exit 2\nfi\n')
        (root / "bin" / "dpkg-deb").chmod(0o755)

    def build(self, name: str, version: str, files: dict[str, bytes], arch: str = "amd64") -> Path:
        self.built += 1
        tree = self.tree = self.root / "trees" / str(self.built)
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
            "Maintainer: cvm <cvm@test>\nDescription: test\n")
        sums = []
        for path, data in files.items():
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_bytes(data)
            sums.append(f"{hashlib.md5(data).hexdigest()}  {path}\n")
        (tree / "DEBIAN" / "md5sums").write_text("".join(sums))
        out = self.root / "pool" / f"{self.built}.deb"
        subprocess.run([self.dpkg, "--build", str(tree), str(out)], check=True,
                       capture_output=True)
        return out

    def publish(self, name: str, version: str, files: dict[str, bytes], arch: str = "amd64",
                listed: bytes | None = None) -> bytes:
        """Serve the package; the index gives the SHA256 of ``listed`` if given (a mirror
        serving a file other than the index's). The package's bytes are returned."""
        deb = self.build(name, version, files, arch)
        data = deb.read_bytes()
        digest = hashlib.sha256(data if listed is None else listed).hexdigest()
        with (self.root / "Packages").open("a") as index:
            index.write(f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
                        f"Filename: pool/{deb.name}\nSHA256: {digest}\n"
                        "Description: test\n more text: not a field\n\n")
        return data

    def log(self, tool: str = "") -> list[str]:
        lines = (self.root / "log").read_text().splitlines()
        (self.root / "log").write_text("")
        return [line for line in lines if line.startswith(tool)]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         require_tool: Callable[[str], str]) -> Repo:
    served = Repo(tmp_path / "repo", require_tool("dpkg-deb"))
    monkeypatch.setenv("PATH", f"{served.root / 'bin'}:{os.environ['PATH']}")
    # each test starts with no file list worked out (one built in the same second by another
    # test may have the same bytes)
    monkeypatch.setattr(debian_packages, "_FILE_LISTS", {})
    return served


FILES = {"usr/share/x/hello": b"hi", "usr/lib/y/boot.efi": b"\x4d\x5a boot", "usr/top": b""}


def _extractions(repo: Repo) -> list[str]:
    return [line for line in repo.log("dpkg-deb") if " -x " in line]


def _private(log: list[str], cache: Path) -> list[str]:
    """The log with each private copy's folder written ``PRIVATE``; each is a new folder
    outside the cache that no longer exists."""
    lines = []
    for line in log:
        words = line.split(" ")
        if line.startswith("dpkg-deb"):
            copy = Path(words[2])
            assert copy.parent.name.startswith("cvm-deb-") and not copy.parent.exists()
            assert not copy.is_relative_to(cache)
            words[2] = f"PRIVATE/{copy.name}"
        lines.append(" ".join(words))
    return lines


def test_a_package_is_downloaded_checked_and_extracted_once(tmp_path: Path, repo: Repo) -> None:
    data = repo.publish("cvm-test-pkg", "1:1.0", FILES)
    cache = tmp_path / "new" / "cache"
    stale = cache / f".x-cvm-test-pkg.{os.getpid()}"  # left by a crashed run of this pid
    stale.mkdir(parents=True)
    (stale / "usr").mkdir()
    (stale / "usr" / "stale").write_bytes(b"")
    package = fetch(cache, "cvm-test-pkg")
    root = package.root
    deb = cache / "cvm-test-pkg_1%3a1.0_amd64.deb"
    assert root == cache / "x-cvm-test-pkg"
    assert package.read("usr/share/x/hello") == b"hi"
    assert package.deb.data == data and package.deb.path == deb
    assert package.files == {name: FileDigest(len(content), hashlib.sha256(content).hexdigest())
                             for name, content in FILES.items()}
    assert package.names() == sorted(FILES)
    assert (root / MARKER).read_text() == f"{hashlib.sha256(data).hexdigest()}  {deb.name}\n"
    assert _private(repo.log(), cache) == [
        "apt-get download cvm-test-pkg", "apt-cache show cvm-test-pkg=1:1.0",
        f"dpkg-deb --fsys-tarfile PRIVATE/{deb.name}",
        f"dpkg-deb -x PRIVATE/{deb.name} {cache}/.x-cvm-test-pkg.{os.getpid()}"]
    assert not list(cache.glob(".x-*")) and not (root / "usr" / "stale").exists()
    assert fetch(cache, "cvm-test-pkg").root == root
    # checked again against the index, not extracted, its file list not worked out again
    assert _private(repo.log(), cache) == ["apt-cache show cvm-test-pkg=1:1.0"]
    with pytest.raises(FormatError, match=r"^x-cvm-test-pkg: the package holds no usr/bin/x$"):
        package.read("usr/bin/x")


def test_the_file_list_kept_is_found_only_by_the_same_bytes(tmp_path: Path, repo: Repo) -> None:
    """A package rebuilt under the same name, version and path (the index changed with it):
    its own files are listed and read, not the list kept for the bytes before."""
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "cache"
    before = fetch(cache, "cvm-test-pkg")
    deb = before.deb.path
    rebuilt = {**FILES, "usr/lib/y/boot.efi": b"\x4d\x5a rebuilt"}
    (repo.root / "Packages").write_text("")
    data = repo.publish("cvm-test-pkg", "1.0", rebuilt)
    deb.write_bytes(data)  # what apt-get download of the new index gives
    repo.log()
    package = fetch(cache, "cvm-test-pkg")
    assert package.deb.path == deb and package.deb.data == data
    assert package.files["usr/lib/y/boot.efi"] == FileDigest(
        len(rebuilt["usr/lib/y/boot.efi"]), hashlib.sha256(rebuilt["usr/lib/y/boot.efi"])
        .hexdigest())
    assert package.read("usr/lib/y/boot.efi") == rebuilt["usr/lib/y/boot.efi"]
    assert [line for line in _private(repo.log("dpkg-deb"), cache) if "--fsys-tarfile" in line] \
        == [f"dpkg-deb --fsys-tarfile PRIVATE/{deb.name}"]
    # the list is kept under the bytes' own digest, not under the record's sha256 field
    lying = VerifiedDeb(deb, before.deb.data, package.deb.sha256)
    assert file_digests(lying) == before.files
    # each caller gets its own copy
    package.files.clear()
    assert fetch(cache, "cvm-test-pkg").files["usr/top"] == FileDigest(0, hashlib.sha256(
        b"").hexdigest())


def test_a_tampered_deb_is_downloaded_again(tmp_path: Path, repo: Repo) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "new" / "cache"  # made with its parents
    root = fetch(cache, "cvm-test-pkg").root
    deb = cache / "cvm-test-pkg_1.0_amd64.deb"
    genuine = deb.read_bytes()
    repo.log()
    planted = repo.build("cvm-test-pkg", "1.0", {**FILES, "usr/lib/y/boot.efi": b"evil"})
    shutil.copy(planted, deb)
    shutil.rmtree(root)  # and the extraction of the planted package with its marker
    shutil.copytree(repo.tree, root,
                    ignore=shutil.ignore_patterns("DEBIAN"))
    (root / MARKER).write_text(f"{hashlib.sha256(deb.read_bytes()).hexdigest()}  {deb.name}\n")
    package = fetch(cache, "cvm-test-pkg")
    assert package.root == root and package.deb.data == genuine
    assert deb.read_bytes() == genuine
    assert package.read("usr/lib/y/boot.efi") == FILES["usr/lib/y/boot.efi"]
    assert "apt-get download cvm-test-pkg=1.0" in repo.log("apt-get")


def test_a_deb_unlike_the_index_even_when_downloaded_again_is_refused(
    tmp_path: Path, repo: Repo,
) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES, listed=b"what the index lists")
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match=r"cvm-test-pkg_1.0_amd64.deb: SHA256 [0-9a-f]{64} "
                       r"is not the one apt's package index gives for cvm-test-pkg 1.0, even "
                       "when downloaded again"):
        fetch(cache, "cvm-test-pkg")
    assert not (cache / "x-cvm-test-pkg").exists()
    repo.log()
    with pytest.raises(IntegrityError):  # the cached copy: removed, downloaded, refused
        fetch(cache, "cvm-test-pkg")
    assert repo.log("apt-get") == ["apt-get download cvm-test-pkg=1.0"]


def test_a_version_the_index_does_not_list_is_refused_and_kept(tmp_path: Path,
                                                              repo: Repo) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    repo.publish("cvm-test-pkg", "2.0", FILES, arch="i386")
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("cvm-test-pkg_2.0_amd64.deb", "cvm-test-pkg_0.9_amd64.deb"):
        shutil.copy(repo.build("cvm-test-pkg", "1.0", FILES), cache / name)
    with pytest.raises(VerificationError, match=(
            "cvm-test-pkg_2.0_amd64.deb: apt's package index lists no cvm-test-pkg 2.0 "
            r"\(amd64\), so its SHA256 cannot be checked; the package lists changed since it "
            "was downloaded, or it did not come from apt: remove it to download the current "
            "version$")):
        fetch(cache, "cvm-test-pkg")
    assert (cache / "cvm-test-pkg_2.0_amd64.deb").exists()
    assert not (cache / "x-cvm-test-pkg").exists()
    assert repo.log("apt-get") == []
    root = fetch(cache, "cvm-test-pkg", "1.0").root  # a version asked for: downloaded, checked
    assert (root / MARKER).read_text().endswith("  cvm-test-pkg_1.0_amd64.deb\n")
    with pytest.raises(VerificationError, match=r"no cvm-test-pkg 0\.9"):
        fetch(cache, "cvm-test-pkg", "0.9")


@pytest.mark.parametrize("damage", ["unmarked", "other deb", "file edited", "file added",
                                    "file removed", "file made a link", "folder made a link",
                                    "folder made a file", "marker not text"])
def test_an_extracted_folder_that_does_not_match_its_deb_is_extracted_again(
    tmp_path: Path, repo: Repo, damage: str,
) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "cache"
    root = fetch(cache, "cvm-test-pkg").root
    marker = (root / MARKER).read_text()
    if damage == "unmarked":
        (root / MARKER).unlink()
    elif damage == "other deb":
        (root / MARKER).write_text("0" * 64 + marker[64:])
    elif damage == "file edited":
        (root / "usr/lib/y/boot.efi").write_bytes(b"\x4d\x5a evil")
    elif damage == "file added":
        (root / "usr/lib/y/vmlinuz-9").write_bytes(b"")
    elif damage == "file removed":
        (root / "usr/share/x/hello").unlink()
    elif damage == "file made a link":
        (tmp_path / "elsewhere").write_bytes(b"\x4d\x5a boot")
        (root / "usr/lib/y/boot.efi").unlink()
        (root / "usr/lib/y/boot.efi").symlink_to(tmp_path / "elsewhere")
    elif damage == "folder made a link":
        root.rename(tmp_path / "copy")
        root.symlink_to(tmp_path / "copy")
    elif damage == "folder made a file":
        shutil.rmtree(root)
        root.write_bytes(b"")
    else:
        (root / MARKER).write_bytes(b"\xff" + marker.encode())
    repo.log()
    package = fetch(cache, "cvm-test-pkg")
    assert package.root == root
    assert len(_extractions(repo)) == 1
    assert not root.is_symlink() and (root / MARKER).read_text() == marker
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        MARKER, "usr/lib/y/boot.efi", "usr/share/x/hello", "usr/top"]
    assert package.read("usr/lib/y/boot.efi") == FILES["usr/lib/y/boot.efi"]
    assert _extractions(repo) == []  # read as extracted by the check


def test_an_extracted_folder_without_its_deb_is_not_reused(tmp_path: Path, repo: Repo) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "cache"
    root = fetch(cache, "cvm-test-pkg").root
    (cache / "cvm-test-pkg_1.0_amd64.deb").unlink()
    repo.log()
    assert fetch(cache, "cvm-test-pkg").root == root
    assert repo.log("apt-get") == ["apt-get download cvm-test-pkg"]


def test_the_tree_check_itself(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"x")
    (tmp_path / MARKER).write_text("anything")
    sums = {"a/b/f": FileDigest(1, hashlib.sha256(b"x").hexdigest())}
    assert tree_matches(tmp_path, sums)
    assert not tree_matches(tmp_path, {**sums, "a/g": sums["a/b/f"]})
    assert not tree_matches(tmp_path, {"a/b/f": FileDigest(1, hashlib.sha256(b"y").hexdigest())})
    assert not tree_matches(tmp_path / "missing", {})
    (tmp_path / "a" / "b" / MARKER).write_text("")  # only the root's marker is left out
    assert not tree_matches(tmp_path, sums)
    (tmp_path / "a" / "b" / MARKER).unlink()


def test_a_folder_that_cannot_be_listed_is_not_reused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()

    def refuse(top: str) -> list[str]:
        raise PermissionError(13, "Permission denied", top)

    monkeypatch.setattr(os, "scandir", refuse)
    assert not tree_matches(tmp_path, {})


def test_the_file_digests_of_a_deb_are_its_regular_files(tmp_path: Path, repo: Repo) -> None:
    repo.build("cvm-test-pkg", "1.0", {"a b/c": b"x", "d": b""})
    tree = repo.tree
    (tree / "DEBIAN" / "md5sums").unlink()  # not needed: the digests come from the files
    (tree / "link").symlink_to("d")
    os.link(tree / "a b" / "c", tree / "hard")
    (tree / "empty").mkdir()
    deb = tmp_path / "cvm-test-pkg_1.0_amd64.deb"
    subprocess.run([repo.dpkg, "--build", str(tree), str(deb)], check=True, capture_output=True)
    data = deb.read_bytes()
    deb.write_bytes(b"changed after the check")  # only the checked bytes are read
    digests = file_digests(VerifiedDeb(deb, data, hashlib.sha256(data).hexdigest()))
    assert digests == {"a b/c": FileDigest(1, hashlib.sha256(b"x").hexdigest()),
                       "d": FileDigest(0, hashlib.sha256(b"").hexdigest())}
    assert [line.split(" ")[1] for line in repo.log("dpkg-deb")] == ["--fsys-tarfile"]


def test_the_newest_cached_version_is_used(tmp_path: Path, repo: Repo) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for version in ("1.9", "1.10", "1.2"):
        data = repo.publish("cvm-test-pkg", version, {"v": version.encode()})
        (cache / f"cvm-test-pkg_{version}_amd64.deb").write_bytes(data)
    (cache / "cvm-test-pkg_nounderscore.deb").write_bytes(b"")
    (cache / "cvm-test-pkg-other_1.0_amd64.deb").write_bytes(b"")
    assert [deb.version for deb in cached_debs(cache, "cvm-test-pkg")] == ["1.2", "1.9", "1.10"]
    assert fetch(cache, "cvm-test-pkg").read("v") == b"1.10"
    assert fetch(cache, "cvm-test-pkg", "1.9").read("v") == b"1.9"
    assert repo.log("apt-get") == []


def test_the_index_entry_must_name_the_package_version_and_architecture(repo: Repo) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES, arch="all")
    text = (repo.root / "Packages").read_text()
    fields = stanzas(text)[0]
    assert fields["Package"] == "cvm-test-pkg" and fields["Description"] == "test"
    assert "more text" not in fields and " more text" not in fields
    digest = fields["SHA256"]
    assert index_sha256("cvm-test-pkg", "1.0", "all") == {digest}
    assert index_sha256("cvm-test-pkg", "1.0", "amd64") == set()
    (repo.root / "Packages").write_text(text.replace(f"SHA256: {digest}\n", ""))
    assert index_sha256("cvm-test-pkg", "1.0", "all") == set()
    (repo.root / "Packages").write_text(text)
    repo.publish("cvm-test-pkg", "1.0", FILES, arch="i386")
    other = stanzas((repo.root / "Packages").read_text())[1]["SHA256"]
    assert other != digest  # each stanza read on its own:
    assert index_sha256("cvm-test-pkg", "1.0", "all") == {digest}
    assert index_sha256("cvm-test-pkg", "1.0", "i386") == {other}
    (repo.root / "Packages").write_text(
        text.replace(f"SHA256: {digest}", f"SHA256: {digest.upper()}"))
    assert index_sha256("cvm-test-pkg", "1.0", "all") == {digest}
    assert stanzas("\n\n\nA: 1\n\n") == [{"A": "1"}]


def test_a_package_that_cannot_be_downloaded_is_named(tmp_path: Path, repo: Repo) -> None:
    (repo.root / "bin" / "apt-get").write_text(
        "#!/bin/sh\necho 'W: a warning' >&2\necho 'E: Unable to locate package' $2 >&2\nexit 100\n")
    with pytest.raises(ExternalToolError, match=r"^apt-get download cvm-missing failed: "
                       r"W: a warning E: Unable to locate package cvm-missing$"):
        fetch(tmp_path, "cvm-missing")
    with pytest.raises(ExternalToolError, match="no kernel package"):
        kernel_package(tmp_path)


def test_a_download_that_leaves_no_deb_is_named(tmp_path: Path, repo: Repo) -> None:
    (repo.root / "bin" / "apt-get").write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(ExternalToolError, match=r"apt-get download cvm-test-pkg=2 gave no "
                       r"cvm-test-pkg_\*.deb"):
        fetch(tmp_path, "cvm-test-pkg", "2")


def test_a_missing_tool_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExternalToolError, match="apt-get is not installed"):
        fetch(tmp_path / "cache", "cvm-test-pkg")


@pytest.mark.parametrize("damage", ["torn", "not a deb"])
def test_a_deb_that_does_not_extract_is_named_in_one_line(tmp_path: Path, repo: Repo,
                                                          damage: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    repo.publish("cvm-test-pkg", "1.0", {**FILES, "usr/z/blob": os.urandom(200_000)})
    deb = verified_deb(cache, "cvm-test-pkg").path
    index = repo.root / "Packages"
    good = deb.read_bytes()
    # listed by the index, so taken as authentic; dpkg-deb stops inside the data (having made
    # the staging folder) or at once
    bad = good[:len(good) * 2 // 3] if damage == "torn" else b"!<arch>\nnot a deb"
    index.write_text(index.read_text().replace(hashlib.sha256(good).hexdigest(),
                                               hashlib.sha256(bad).hexdigest()))
    deb.write_bytes(bad)
    with pytest.raises(ExternalToolError, match=r"^dpkg-deb --fsys-tarfile "
                       r"cvm-test-pkg_1\.0_amd64\.deb: [^\n]*dpkg-deb: error: [^\n]*$"):
        fetch(cache, "cvm-test-pkg")
    assert not list(cache.glob(".x-*")) and not (cache / "x-cvm-test-pkg").exists()


def test_a_parallel_fetch_that_finished_first_is_kept_only_if_it_matches(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "cache"
    root = fetch(cache, "cvm-test-pkg").root
    marker = (root / MARKER).read_text()

    def racing(self: Path, target: Path) -> Path:
        shutil.copytree(self, target)  # another process put the same extraction in place
        raise OSError(39, "Directory not empty")

    (root / MARKER).unlink()
    monkeypatch.setattr(Path, "rename", racing)
    assert fetch(cache, "cvm-test-pkg").root == root
    assert (root / MARKER).read_text() == marker and not list(cache.glob(".x-*"))

    def losing(self: Path, target: Path) -> Path:
        shutil.rmtree(self)
        target.mkdir()
        raise OSError(39, "Directory not empty")

    (root / MARKER).unlink()
    monkeypatch.setattr(Path, "rename", losing)
    with pytest.raises(ExternalToolError, match=r"x-cvm-test-pkg: replaced while "
                       r"cvm-test-pkg_1\.0_amd64\.deb was extracted; fetch again"):
        fetch(cache, "cvm-test-pkg")


KERNEL = "linux-image-6.1.0-9-amd64"
VMLINUZ = "boot/vmlinuz-6.1.0-9-amd64"


def _publish_boot_packages(repo: Repo) -> None:
    repo.publish(KERNEL, "6.1.1-1", {"boot/vmlinuz-0-older": b"older",
                                     "boot/vmlinuz-1-older": b"older", VMLINUZ: b"kernel",
                                     "boot/vmlinuz-z/not-a-kernel": b"",
                                     "lib/modules/6.1.0-9-amd64/m.ko": b"ko"})
    for (name, path), data in zip((SHIM, GRUB, BUSYBOX, STUB),
                                  (b"shim", b"grub", b"busybox", b"stub"), strict=True):
        repo.publish(name, "1.0", {path: data})


def test_the_boot_inputs_come_from_checked_packages(tmp_path: Path, repo: Repo) -> None:
    _publish_boot_packages(repo)
    cache = tmp_path / "cache"
    inputs = BootInputs.fetch(cache, with_stub=True)
    assert inputs == BootInputs(b"shim", b"grub", b"kernel", fetch(cache, KERNEL), b"busybox",
                                b"stub")
    assert inputs.modules.root == cache / f"x-{KERNEL}"
    assert BootInputs.fetch(cache, with_stub=False).stub is None
    assert kernel_package(cache) == KERNEL
    (cache / f"x-{KERNEL}" / VMLINUZ).write_bytes(b"planted")
    assert BootInputs.fetch(cache, with_stub=False).kernel == b"kernel"
    repo.publish("linux-image-6.1.0-10-amd64", "6.1.2-1", {"boot/readme": b"",
                                                          "lib/boot/vmlinuz-1": b""})
    (cache / f"x-{KERNEL}").rename(cache / "x-linux-image-6.1.0-10-amd64")
    with pytest.raises(FormatError, match="x-linux-image-6.1.0-10-amd64: the package holds no "
                       r"boot/vmlinuz-\*"):
        BootInputs.fetch(cache, with_stub=False)


# Someone who can write the cache changes a file after it was checked, before the build reads
# it. The build reads only the bytes it checked, or refuses.

def test_a_deb_changed_after_its_check_is_not_what_is_extracted(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    genuine = repo.publish("cvm-test-pkg", "1.0", FILES)
    planted = repo.build("cvm-test-pkg", "1.0", {**FILES, "usr/lib/y/boot.efi": b"evil"})
    cache = tmp_path / "cache"
    deb = cache / "cvm-test-pkg_1.0_amd64.deb"
    monkeypatch.setenv("CVM_TEST_SWAP", f"{planted} {deb}")  # as each dpkg-deb starts
    package = fetch(cache, "cvm-test-pkg")
    assert deb.read_bytes() == planted.read_bytes()  # the cache was changed after the check
    assert package.deb.data == genuine
    assert package.read("usr/lib/y/boot.efi") == FILES["usr/lib/y/boot.efi"]
    assert (package.root / "usr/lib/y/boot.efi").read_bytes() == FILES["usr/lib/y/boot.efi"]
    monkeypatch.delenv("CVM_TEST_SWAP")
    repo.log()
    assert fetch(cache, "cvm-test-pkg").deb.data == genuine  # the planted .deb: replaced
    assert "apt-get download cvm-test-pkg=1.0" in repo.log("apt-get")


def test_a_file_changed_after_the_check_is_read_as_checked(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _publish_boot_packages(repo)
    cache = tmp_path / "cache"
    BootInputs.fetch(cache, with_stub=False)
    checked = debian_packages.tree_matches

    def then_changed(root: Path, files: Mapping[str, FileDigest]) -> bool:
        matches = checked(root, files)  # the check passes; then the file changes
        for _, path in (SHIM, GRUB, BUSYBOX):
            if (root / path).exists():
                (root / path).write_bytes(b"planted")
        if (root / VMLINUZ).exists():
            (root / VMLINUZ).write_bytes(b"planted")
        return matches

    monkeypatch.setattr(debian_packages, "tree_matches", then_changed)
    repo.log()
    inputs = BootInputs.fetch(cache, with_stub=False)
    assert (inputs.shim, inputs.grub, inputs.kernel, inputs.busybox) == (
        b"shim", b"grub", b"kernel", b"busybox")
    assert len(_extractions(repo)) == 4  # each changed package extracted again, once
    assert (cache / f"x-{SHIM[0]}" / SHIM[1]).read_bytes() == b"shim"


@pytest.mark.parametrize("damage", ["edited", "grown", "shortened", "removed", "made a link",
                                    "made a link to a copy", "made a fifo", "made a folder",
                                    "folder removed"])
def test_a_file_that_changed_since_the_check_is_extracted_again_when_read(
    tmp_path: Path, repo: Repo, damage: str,
) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    package = fetch(tmp_path / "cache", "cvm-test-pkg")
    path = package.root / "usr/lib/y/boot.efi"
    genuine = path.read_bytes()
    if damage == "edited":
        path.write_bytes(b"\x4d\x5a evil")
    elif damage == "grown":
        path.write_bytes(genuine + b"!")
    elif damage == "shortened":
        path.write_bytes(genuine[:-1])
    elif damage == "removed":
        path.unlink()
    elif damage == "made a link":
        (tmp_path / "elsewhere").write_bytes(b"\x4d\x5a evil")
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere")
    elif damage == "made a link to a copy":  # the right bytes, but not the package's file
        (tmp_path / "elsewhere").write_bytes(genuine)
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere")
    elif damage == "made a fifo":
        path.unlink()
        os.mkfifo(path)  # with no writer: opening it must not wait for one
    elif damage == "made a folder":
        path.unlink()
        path.mkdir()
    else:
        shutil.rmtree(package.root)
    repo.log()
    assert package.read("usr/lib/y/boot.efi") == genuine
    assert len(_extractions(repo)) == 1
    assert not path.is_symlink() and path.read_bytes() == genuine
    assert package.read("usr/share/x/hello") == b"hi"
    assert _extractions(repo) == []


def test_the_initramfs_reads_the_checked_kernel_modules(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = elf_object([(".modinfo", b"license=GPL\0depends=\0vermagic=6.1\0")])
    repo.publish(KERNEL, "6.1.1-1", {"lib/modules/6.1.0-9-amd64/kernel/a/virtio_pci.ko": module})
    package = fetch(tmp_path / "cache", KERNEL)
    path = package.root / "lib/modules/6.1.0-9-amd64/kernel/a/virtio_pci.ko"
    path.write_bytes(module.replace(b"depends=", b"depends=evil"))  # after the check
    assert module_order(package, ("virtio_pci",)) == [("virtio_pci", module)]
    path.write_bytes(b"planted")
    monkeypatch.setenv("CVM_TEST_PLANT", "lib/modules/6.1.0-9-amd64/kernel/a/virtio_pci.ko")
    with pytest.raises(IntegrityError, match=f"^{re.escape(str(path))}: not the file "
                       rf"{KERNEL}_6\.1\.1-1_amd64\.deb holds \(SHA256 "
                       rf"{hashlib.sha256(module).hexdigest()}\), even when extracted again; "
                       "something changes the cache while it is used$"):
        module_order(package, ("virtio_pci",))


def test_the_build_refuses_a_file_that_keeps_changing_in_one_line(
    tmp_path: Path, repo: Repo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _publish_boot_packages(repo)
    cache = tmp_path / "cache"
    BootInputs.fetch(cache, with_stub=False)
    (cache / f"x-{KERNEL}" / VMLINUZ).write_bytes(b"planted")
    monkeypatch.setenv("CVM_TEST_PLANT", VMLINUZ)  # into every extraction as well
    repo.log()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = execute(["image", "build", str(tmp_path / "img"), "--target", "qemu",
                        "--cache", str(cache)])
    assert code == IntegrityError.exit_code == 66
    assert f"x-{KERNEL}/{VMLINUZ}: not the file {KERNEL}_6.1.1-1_amd64.deb holds" in (
        err.getvalue())
    assert len(err.getvalue().splitlines()) == 1 and "Traceback" not in err.getvalue()
    assert len(_extractions(repo)) == 2  # at the check, and once more when read
    assert not (tmp_path / "img" / "disk.img").exists()


@pytest.mark.parametrize(("hook", "option", "words"), [
    ("CVM_TEST_REFUSE", "--fsys-tarfile", "dpkg-deb: error: refused \ufffd"),
    ("CVM_TEST_FAIL_AFTER", "--fsys-tarfile", "dpkg-deb: error: after its output"),
    ("CVM_TEST_NOT_TAR", "1", "truncated header"),
    ("CVM_TEST_REFUSE", "-x", "dpkg-deb: error: refused \ufffd"),
])
def test_a_failing_dpkg_deb_is_named_in_one_line(tmp_path: Path, repo: Repo,
                                                 monkeypatch: pytest.MonkeyPatch, hook: str,
                                                 option: str, words: str) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "cache"
    monkeypatch.setenv(hook, option)
    call = "-x" if option == "-x" else "--fsys-tarfile"
    with pytest.raises(ExternalToolError, match=rf"^dpkg-deb {call} "
                       rf"cvm-test-pkg_1\.0_amd64\.deb: [^\n]*{re.escape(words)}[^\n]*$"):
        fetch(cache, "cvm-test-pkg")
    assert not list(cache.glob(".x-*")) and not (cache / "x-cvm-test-pkg").exists()


def test_a_failed_extraction_leaves_nothing(tmp_path: Path, repo: Repo,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    repo.publish("cvm-test-pkg", "1.0", FILES)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CVM_TEST_PLANT", "no/such/folder")  # the wrapper fails after dpkg-deb
    with pytest.raises(ExternalToolError, match=r"^dpkg-deb -x cvm-test-pkg_1\.0_amd64\.deb: "
                       r"[^\n]*no/such/folder[^\n]*$"):
        fetch(cache, "cvm-test-pkg")
    assert not list(cache.glob(".x-*")) and not (cache / "x-cvm-test-pkg").exists()


def test_an_extracted_kernel_in_the_cache_is_used(tmp_path: Path, repo: Repo) -> None:
    for name in ("x-linux-image-6.1.0-9-amd64", "x-linux-image-6.1.0-56-amd64"):
        (tmp_path / name).mkdir()
        (tmp_path / name / MARKER).write_text("")
    (tmp_path / "x-linux-image-6.9.0-1-amd64").mkdir()  # incomplete: ignored
    assert kernel_package(tmp_path) == "linux-image-6.1.0-56-amd64"  # 56 > 9, as numbers


def test_the_default_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache() == tmp_path / "cvm" / "debian"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache() == tmp_path / "home" / ".cache" / "cvm" / "debian"


# The machine's own apt: its index, its tools, the Debian archive.

def _real_busybox(tmp_path: Path, debian_package: Callable[[str, str], Path]
                  ) -> tuple[Path, Path, Path]:
    """Debian's busybox-static, extracted (its tree) and as its ``.deb``, and an empty cache."""
    known = debian_package(BUSYBOX[0], "1:1.35.0-4+deb12u1+b1")
    deb = known.parent / (known / MARKER).read_text().split("  ")[1].strip()
    cache = tmp_path / "cache"
    cache.mkdir()
    return known, deb, cache


def test_real_apt_checks_a_cached_package_and_refuses_an_unknown_version(
    tmp_path: Path, debian_package: Callable[[str, str], Path],
) -> None:
    known, deb, cache = _real_busybox(tmp_path, debian_package)
    shutil.copy(deb, cache / deb.name)
    version = cached_debs(cache, BUSYBOX[0])[0].version
    assert index_sha256(BUSYBOX[0], version, "amd64") == {hashlib.sha256(
        deb.read_bytes()).hexdigest()}
    assert fetch(cache, BUSYBOX[0]).read(BUSYBOX[1]) == (known / BUSYBOX[1]).read_bytes()
    (cache / deb.name).rename(cache / f"{BUSYBOX[0]}_1%3a0.0-cvm_amd64.deb")
    with pytest.raises(VerificationError, match=f"lists no {BUSYBOX[0]} 1:0.0-cvm"):
        fetch(cache, BUSYBOX[0])


def test_real_apt_downloads_a_tampered_package_again(
    tmp_path: Path, debian_package: Callable[[str, str], Path],
) -> None:
    known, deb, cache = _real_busybox(tmp_path, debian_package)
    data = bytearray(deb.read_bytes())
    data[-1] ^= 1
    (cache / deb.name).write_bytes(bytes(data))
    package = fetch(cache, BUSYBOX[0])
    assert (cache / deb.name).read_bytes() == deb.read_bytes()
    assert package.read(BUSYBOX[1]) == (known / BUSYBOX[1]).read_bytes()


@pytest.mark.parametrize(("plant", "words"), [
    ("unlisted", "apt's package index lists no linux-image-6.1.0-9-amd64 6.1.0-0 (amd64)"),
    ("served unlike the index", "is not the one apt's package index gives for "
                                "linux-image-6.1.0-9-amd64 6.1.1-1, even when downloaded again"),
])
def test_the_build_refuses_a_kernel_it_cannot_check_in_one_line(
    tmp_path: Path, repo: Repo, plant: str, words: str,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    kernel = {"boot/vmlinuz-6.1.0-9-amd64": b"kernel"}
    if plant == "unlisted":
        repo.publish("linux-image-6.1.0-9-amd64", "6.1.1-1", kernel)
        shutil.copy(repo.build("linux-image-6.1.0-9-amd64", "6.1.0-0", kernel),
                    cache / "linux-image-6.1.0-9-amd64_6.1.0-0_amd64.deb")
    else:
        repo.publish("linux-image-6.1.0-9-amd64", "6.1.1-1", kernel, listed=b"another")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = execute(["image", "build", str(tmp_path / "img"), "--target", "qemu",
                        "--cache", str(cache)])
    assert code == VerificationError.exit_code == 66
    assert words in err.getvalue() and len(err.getvalue().splitlines()) == 1
    assert "Traceback" not in err.getvalue()
    assert not (cache / "x-linux-image-6.1.0-9-amd64").exists()
