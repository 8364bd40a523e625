"""One rule for every ``luks`` and ``disk`` command: a missing path, a directory or an
unreadable file exits 74; a malformed header 65; an out-of-range argument 64; a keyslot above
the KDF cost ceiling 67. Each failure is one line on stderr."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.formats.luks2.header_copy import header_checksum

FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    (tmp_path / "pass").write_bytes(b"first")
    path = tmp_path / "vol.img"
    path.write_bytes(bytes(17 << 20))
    (tmp_path / "t.json").write_text('{"type": "x", "keyslots": []}')
    assert execute(["luks", "format", str(path), "--key-file", str(tmp_path / "pass"),
                    *FAST]) == 0
    return path


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("cvm: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def _commands(image: Path, target: Path) -> list[list[str]]:
    """Every command, with ``target`` where a path it reads goes."""
    key = str(image.parent / "pass")
    return [
        ["luks", "dump", str(target)],
        ["luks", "test-key", str(target), "--key-file", key],
        ["luks", "test-key", str(image), "--key-file", str(target)],
        ["luks", "dump-volume-key", str(target), "--key-file", key, "-o",
         str(image.parent / "vk")],
        ["luks", "add-key", str(target), "--key-file", key, "--new-key-file", key, *FAST],
        ["luks", "remove-key", str(target), "--key-file", key],
        ["luks", "change-key", str(target), "--key-file", key, "--new-key-file", key, *FAST],
        ["luks", "format", str(target), "--key-file", key, *FAST],
        ["luks", "encrypt", str(target), str(image.parent / "out.img"), "--key-file", key,
         *FAST],
        ["luks", "decrypt", str(target), str(image.parent / "plain"), "--key-file", key],
        ["luks", "decrypt", str(image), str(image.parent / "plain"), "--volume-key-file",
         str(target)],
        ["luks", "token", "import", str(target), "--json-file", str(image.parent / "t.json")],
        ["luks", "token", "import", str(image), "--json-file", str(target)],
        ["luks", "token", "export", str(target), "--token-id", "0"],
        ["luks", "token", "remove", str(target), "--token-id", "0"],
    ]


def _build(image: Path, root: Path) -> list[str]:
    boot = image.parent / "boot"
    (boot / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
    (boot / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ")
    return ["disk", "build", str(image.parent / "disk.img"), "--root", str(root),
            "--boot-dir", str(boot), "--key-file", str(image.parent / "pass"), *FAST]


@pytest.mark.parametrize("kind", ["missing", "directory", "under a file"])
def test_paths_that_cannot_be_read_exit_74(image: Path, kind: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    target = {"missing": image.parent / "missing", "directory": image.parent / "dir",
              "under a file": image / "inside"}[kind]
    (image.parent / "dir").mkdir()
    commands = _commands(image, target)
    if kind != "directory":  # a directory root is turned into ext4
        commands.append(_build(image, target))
    for command in commands:
        assert execute(command) == 74, command
        assert str(target) in _error(capsys), command


def test_disk_build_boot_dir(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["disk", "build", str(image.parent / "disk.img"), "--root", str(image),
            "--key-file", str(image.parent / "pass"), *FAST]
    assert execute([*base, "--boot-dir", str(image.parent / "none")]) == 74
    assert "boot-chain directory" in _error(capsys)
    assert execute([*base, "--boot-dir", str(image)]) == 74
    assert "Not a directory" in _error(capsys)
    assert execute([*base, "--boot-dir", str(image.parent)]) == 74
    assert "BOOTX64.EFI" in _error(capsys)


def test_unreadable_file_exits_74(image: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    real_open = __import__("os").open

    def refuse(path: object, *args: object) -> int:
        if str(path) == str(image):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("cvm.disk.storage.os.open", refuse)
    assert execute(["luks", "dump", str(image)]) == 74
    assert _error(capsys) == f"cvm: error: Permission denied: {image}"


def _rewrite(image: Path, **changes: object) -> None:
    with FileStorage(image) as storage:
        volume = Luks2Volume.open(storage)
        meta = volume.metadata
        slot = replace(meta.keyslots[0], **changes)  # type: ignore[arg-type]
        volume._commit(replace(meta, keyslots={0: slot}))


def test_malformed_headers_exit_65(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ["--key-file", str(image.parent / "pass")]
    _rewrite(image, area_size=4096)
    assert execute(["luks", "test-key", str(image), *key]) == 65
    assert "smaller than its 256000-byte AF-split key" in _error(capsys)
    data = bytearray(image.read_bytes()[:0x8000])
    text = data[0x1000:0x4000].rstrip(b"\0")
    meta = json.loads(text)
    meta["keyslots"]["0"]["area"]["offset"] = "16384"
    for copy in (0, 0x4000):
        body = json.dumps(meta, separators=(",", ":")).encode().ljust(0x3000, b"\0")
        data[copy + 0x1000 : copy + 0x4000] = body
        csum = header_checksum(bytes(data[copy : copy + 0x4000]), "sha256")
        data[copy + 0x1C0 : copy + 0x200] = csum
    with image.open("r+b") as sink:
        sink.write(data)
    for command in (["luks", "dump", str(image)], ["luks", "test-key", str(image), *key]):
        assert execute(command) == 65
        assert "keyslots.0 area [16384, 20480) lies outside the keyslots area" in _error(capsys)


def test_format_costs_out_of_range_exit_64(image: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    key = ["--key-file", str(image.parent / "pass")]
    for option in (["--pbkdf-memory", "99999999999"], ["--pbkdf-memory", "4194305"],
                   ["--pbkdf-force-iterations", "2147483648"], ["--pbkdf-parallel", "17"],
                   ["--iter-time", "0"]):
        assert execute(["luks", "format", str(image), *key, *option]) == 64, option
        assert "must be in" in _error(capsys)
    assert execute(["luks", "test-key", str(image), *key, "--max-kdf-cost", "0"]) == 64
    assert "--max-kdf-cost must be at least 1" in _error(capsys)


def test_max_kdf_cost_option(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ["--key-file", str(image.parent / "pass")]
    assert execute(["luks", "test-key", str(image), *key, "--max-kdf-cost", "1999"]) == 67
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "cvm: keyslot 0: not tried: pbkdf2-sha256, 1000 iterations is a KDF cost of 2000, "
        "above the ceiling of 1999 (--max-kdf-cost)",
        "cvm: error: keyslot 0 asks for a KDF cost of 2000, above the ceiling of 1999 "
        "(--max-kdf-cost); no other keyslot opens with this key",
    ]
    assert execute(["luks", "test-key", str(image), *key, "--max-kdf-cost", "2000"]) == 0


def test_format_and_encrypt_show_key_derivation(image: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    key = ["--key-file", str(image.parent / "pass")]
    assert execute(["luks", "format", str(image), *key, "--pbkdf", "pbkdf2",
                    "--iter-time", "5"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "cvm: keyslot 0: calibrating pbkdf2 for 5 ms"
    assert err[1].startswith("cvm: keyslot 0: deriving its key (pbkdf2-sha256, ")
    plain = image.parent / "plain"
    plain.write_bytes(b"x" * 5000)
    assert execute(["luks", "encrypt", str(plain), str(image.parent / "out.img"), *key,
                    *FAST]) == 0
    err = capsys.readouterr().err
    assert err.count("cvm: keyslot 0: deriving its key (pbkdf2-sha256, 1000 iterations)") == 1


@pytest.mark.parametrize("command", [["luks", "format"], ["luks", "add-key"]])
def test_forced_iterations_and_an_iteration_time_are_refused_together(
        image: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """As cryptsetup: "PBKDF forced iterations cannot be combined with iteration time"."""
    key = ["--key-file", str(image.parent / "pass")]
    extra = ["--new-key-file", str(image.parent / "pass")] if command[1] == "add-key" else []
    before = image.read_bytes()
    assert execute([*command, str(image), *key, *extra, "--pbkdf", "pbkdf2",
                    "--pbkdf-force-iterations", "1000", "--iter-time", "100"]) == 64
    assert _error(capsys) == ("cvm: error: --pbkdf-force-iterations cannot be combined with "
                              "--iter-time")
    assert image.read_bytes() == before
