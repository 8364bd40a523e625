"""The Debian package cache of the qemu target: download once, extract once, fail by name."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.errors import ExternalToolError, FormatError
from cvm.image.debian_packages import default_cache, fetch, kernel_package, member

pytestmark = pytest.mark.interop


def _deb(cache: Path, name: str, files: dict[str, bytes], dpkg: str) -> None:
    root = cache.parent / f"build-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: cvm <cvm@test>\n"
        "Description: test\n")
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    cache.mkdir(exist_ok=True)
    subprocess.run([dpkg, "--build", str(root), str(cache / f"{name}_1.0_amd64.deb")],
                   check=True, capture_output=True)


@pytest.fixture
def no_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """apt-get and apt-cache that always fail (no registry is asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "apt-cache"):
        (bin_dir / tool).write_text("#!/bin/sh\necho 'E: Unable to locate package' >&2\n"
                                    "exit 100\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_a_cached_package_is_extracted_once(tmp_path: Path, no_apt: None,
                                            require_tool: Callable[[str], str]) -> None:
    cache = tmp_path / "cache"
    _deb(cache, "cvm-test-pkg", {"usr/share/x/hello": b"hi"}, require_tool("dpkg-deb"))
    root = fetch(cache, "cvm-test-pkg")
    assert member(root, "usr/share/x/hello") == b"hi"
    assert (root / ".complete").read_text() == "cvm-test-pkg_1.0_amd64.deb"
    (cache / "cvm-test-pkg_1.0_amd64.deb").unlink()
    assert fetch(cache, "cvm-test-pkg") == root  # no download, no extraction
    with pytest.raises(FormatError, match="holds no usr/bin/x"):
        member(root, "usr/bin/x")


def test_an_interrupted_extraction_is_redone(tmp_path: Path, no_apt: None,
                                             require_tool: Callable[[str], str]) -> None:
    cache = tmp_path / "cache"
    _deb(cache, "cvm-test-pkg", {"a": b"1"}, require_tool("dpkg-deb"))
    (cache / "x-cvm-test-pkg").mkdir()  # no .complete marker
    (cache / "x-cvm-test-pkg" / "stale").write_bytes(b"")
    root = fetch(cache, "cvm-test-pkg")
    assert (root / "a").read_bytes() == b"1" and not (root / "stale").exists()


def test_a_package_that_cannot_be_downloaded_is_named(tmp_path: Path, no_apt: None) -> None:
    with pytest.raises(ExternalToolError, match="apt-get download cvm-missing failed"):
        fetch(tmp_path, "cvm-missing")
    with pytest.raises(ExternalToolError, match="no kernel package"):
        kernel_package(tmp_path)


def test_an_extracted_kernel_in_the_cache_is_used(tmp_path: Path, no_apt: None) -> None:
    for name in ("x-linux-image-6.1.0-9-amd64", "x-linux-image-6.1.0-56-amd64"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".complete").write_text("")
    (tmp_path / "x-linux-image-6.9.0-1-amd64").mkdir()  # incomplete: ignored
    assert kernel_package(tmp_path) == "linux-image-6.1.0-56-amd64"  # 56 > 9, as numbers


def test_the_default_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache() == tmp_path / "cvm" / "debian"
