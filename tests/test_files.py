"""Files written for users (:mod:`cvm.files`): whole or not at all, secrets private."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm import files
from cvm.files import write_output


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_write_that_fails_leaves_the_previous_file(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"previous")

    def full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_output(path, b"new and longer")
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary left


@pytest.mark.parametrize(("secret", "mode"), [(True, 0o600), (False, 0o644)])
def test_a_secret_is_private_whatever_the_file_was(tmp_path: Path, umask: None, secret: bool,
                                                   mode: int) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"earlier")
    path.chmod(0o666 if secret else 0o600)
    write_output(path, b"data", secret=secret)
    assert path.read_bytes() == b"data" and _mode(path) == mode


def test_an_output_is_public_unless_said_secret(tmp_path: Path, umask: None) -> None:
    write_output(tmp_path / "report.json", b"{}")
    assert _mode(tmp_path / "report.json") == 0o644
