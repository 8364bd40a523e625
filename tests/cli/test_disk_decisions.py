"""``cvm disk build``, one decision at a time: what reaches the disk builder (the KDF, the
passphrase, the volume key, the ESP's size in bytes, the sector size, the label), the progress
shown, the lines printed. The build itself is ``tests/disk``'s; here a recorder stands in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cvm.cli import disk
from cvm.cli.main import execute
from cvm.disk.disk_image import BuildResult, DiskLayout
from cvm.wire import Guid

RESULT = BuildResult(DiskLayout(1 << 20, 64 << 20, 65 << 20, 100 << 20, 166 << 20),
                     "0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b",
                     Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d"), ("/a", "/b", "/c"))


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def recorder(*args: Any, **kwargs: Any) -> BuildResult:
        kwargs["progress"]("root", 5, 10)
        calls.append((args, kwargs))
        return RESULT
    monkeypatch.setattr(disk, "build_disk", recorder)
    return calls


def test_build_passes_each_option_on(tmp_path: Path, built: list[Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"passphrase\n")
    volume = tmp_path / "volume.key"
    volume.write_bytes(b"\x01" * 64)
    out = tmp_path / "disk.img"
    assert execute(["disk", "build", str(out), "--root", "root", "--boot-dir", "boot",
                    "--key-file", str(key), "--pbkdf", "argon2i", "--pbkdf-force-iterations",
                    "3", "--pbkdf-memory", "65536", "--pbkdf-parallel", "2", "--sector-size",
                    "512", "--volume-key-file", str(volume), "--esp-size-mib", "40", "--label",
                    "mine"]) == 0
    args = built[0][0]
    assert args[:4] == (out, Path("root"), Path("boot"), b"passphrase\n")
    assert args[4] == disk.kdf_spec("argon2i", None, 3, 65536, 2)
    assert args[5:] == (40 << 20, 512, "mine", b"\x01" * 64)
    assert capsys.readouterr().out.splitlines() == disk.built_lines(out, RESULT)


def test_build_makes_the_volume_key_unless_given(tmp_path: Path, built: list[Any]) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"passphrase")
    assert execute(["disk", "build", str(tmp_path / "d"), "--root", "r", "--boot-dir", "b",
                    "--key-file", str(key)]) == 0
    args = built[0][0]
    assert args[5:] == (64 << 20, 4096, "cvm-root", None)
    assert args[4] == disk.kdf_spec("argon2id", None, None, 262144, 4)


def test_the_progress_shows_the_encryption_and_each_stage() -> None:
    updates: list[tuple[Any, dict[str, Any]]] = []

    class Bar:
        def update(self, task: Any, **fields: Any) -> None:
            updates.append((task, fields))
    report = disk.progress_report(Bar(), 7)  # type: ignore[arg-type]
    report("root", 5, 10)
    report("ESP /EFI", 0, 0)
    assert updates == [(7, {"description": "encrypting root", "completed": 5, "total": 10}),
                       (7, {"description": "ESP /EFI"})]


def test_build_says_what_it_wrote() -> None:
    assert disk.built_lines(Path("d.img"), RESULT) == [
        f"wrote d.img: {166 << 20} bytes, disk GUID 7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d",
        f"  1 ESP  at {1 << 20}, {64 << 20} bytes, 3 files",
        f"  2 root at {65 << 20}, {100 << 20} bytes, "
        "LUKS2 UUID 0e0f0a0b-1c1d-4e4f-8a8b-9c9d0e0f1a1b"]
