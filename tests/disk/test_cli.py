"""``cvm luks`` and ``cvm gpt``: every command, exit codes, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from cvm.cli.main import execute

FAST = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    (tmp_path / "pass").write_bytes(b"first")
    (tmp_path / "pass2").write_bytes(b"second")
    path = tmp_path / "vol.img"
    path.write_bytes(b"")
    with path.open("r+b") as f:
        f.truncate(17 << 20)
    assert execute(["luks", "format", str(path), "--key-file", str(tmp_path / "pass"),
                    "--label", "cli", *FAST]) == 0
    return path


def test_dump_and_keys(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = image.parent
    assert execute(["luks", "dump", str(image)]) == 0
    assert "Label:         \tcli" in capsys.readouterr().out
    assert execute(["luks", "dump", str(image), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert list(meta["keyslots"]) == ["0"]
    assert execute(["luks", "test-key", str(image), "--key-file", str(d / "pass")]) == 0
    assert execute(["luks", "test-key", str(image), "--key-file", str(d / "pass2")]) == 2
    err = capsys.readouterr().err.splitlines()
    status = "cvm: keyslot 0: deriving its key (pbkdf2-sha256, 1000 iterations)"
    assert err == [status, status, "cvm: error: No key available with this passphrase."]
    assert execute(["luks", "add-key", str(image), "--key-file", str(d / "pass"),
                    "--new-key-file", str(d / "pass2"), *FAST]) == 0
    assert execute(["luks", "test-key", str(image), "--key-file", str(d / "pass2")]) == 0
    assert execute(["luks", "dump-volume-key", str(image), "--key-file", str(d / "pass2"),
                    "-o", str(d / "vk")]) == 0
    assert len((d / "vk").read_bytes()) == 64
    assert execute(["luks", "remove-key", str(image), "--key-file", str(d / "pass")]) == 0
    assert execute(["luks", "test-key", str(image), "--key-file", str(d / "pass")]) == 2
    assert execute(["luks", "remove-key", str(image), "--key-file", str(d / "pass2")]) == 64


def test_tokens(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = image.parent / "token.json"
    token.write_text(json.dumps({"type": "systemd-tpm2", "keyslots": ["0"], "n": 1}))
    assert execute(["luks", "token", "import", str(image), "--json-file", str(token),
                    "--token-id", "3"]) == 0
    capsys.readouterr()
    assert execute(["luks", "token", "export", str(image), "--token-id", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1
    assert execute(["luks", "token", "remove", str(image), "--token-id", "3"]) == 0
    assert execute(["luks", "token", "export", str(image), "--token-id", "3"]) == 64
    token.write_text("[1]")
    assert execute(["luks", "token", "import", str(image), "--json-file", str(token)]) == 65


def test_encrypt_decrypt(tmp_path: Path) -> None:
    (tmp_path / "pass").write_bytes(b"pw")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(bytes(range(256)) * 5000)
    out = tmp_path / "enc.img"
    assert execute(["luks", "encrypt", str(plain), str(out), "--key-file",
                    str(tmp_path / "pass"), "--sector-size", "512", *FAST]) == 0
    assert plain.read_bytes()[:4096] not in out.read_bytes()
    back = tmp_path / "back.bin"
    assert execute(["luks", "decrypt", str(out), str(back), "--key-file",
                    str(tmp_path / "pass")]) == 0
    assert back.read_bytes()[: plain.stat().st_size] == plain.read_bytes()
    assert execute(["luks", "dump-volume-key", str(out), "--key-file", str(tmp_path / "pass"),
                    "-o", str(tmp_path / "vk")]) == 0
    again = tmp_path / "again.bin"
    assert execute(["luks", "decrypt", str(out), str(again), "--volume-key-file",
                    str(tmp_path / "vk")]) == 0
    assert again.read_bytes() == back.read_bytes()
    (tmp_path / "bad-vk").write_bytes(bytes(64))
    assert execute(["luks", "decrypt", str(out), str(again), "--volume-key-file",
                    str(tmp_path / "bad-vk")]) == 2
    assert execute(["luks", "decrypt", str(out), str(again)]) == 64


def test_change_key(image: Path) -> None:
    d = image.parent
    assert execute(["luks", "change-key", str(image), "--key-file", str(d / "pass"),
                    "--new-key-file", str(d / "pass2"), *FAST]) == 0
    assert execute(["luks", "test-key", str(image), "--key-file", str(d / "pass")]) == 2
    assert execute(["luks", "test-key", str(image), "--key-file", str(d / "pass2")]) == 0


def test_bad_input_is_one_line(tmp_path: Path, image: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 70000)
    assert execute(["luks", "dump", str(junk)]) == 65
    assert execute(["gpt", "show", str(junk)]) == 65
    data = bytearray(image.read_bytes()[:0x8000])
    data[300] ^= 1
    data[0x4000 + 300] ^= 1
    junk.write_bytes(bytes(data))
    assert execute(["luks", "dump", str(junk)]) == 65
    assert execute(["luks", "format", str(tmp_path / "missing"), "--key-file",
                    str(tmp_path / "missing")]) == 74
    assert execute(["luks", "format", str(junk), "--key-file", str(junk),
                    "--pbkdf", "md5"]) == 64
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 5 and all(line.startswith("cvm: error:") for line in errors)


def test_recovery_message(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with image.open("r+b") as f:
        f.seek(300)
        f.write(b"\xff")
    assert execute(["luks", "test-key", str(image), "--key-file",
                    str(image.parent / "pass")]) == 0
    assert "recovered from the secondary header" in capsys.readouterr().err


def test_truncated_image(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with image.open("r+b") as f:
        f.truncate(20000)
    assert execute(["luks", "test-key", str(image), "--key-file",
                    str(image.parent / "pass")]) == 65
    err = capsys.readouterr().err.strip().splitlines()
    assert "truncated" in err[-1] and err[-1].startswith("cvm: error:")


def test_an_output_that_cannot_be_written_whole_is_one_line_and_the_previous_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    (tmp_path / "pass").write_bytes(b"pw")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(bytes(range(256)) * 64)
    out, back = tmp_path / "enc.img", tmp_path / "back.bin"
    for path in (out, back):
        path.write_bytes(b"previous")
    key = ["--key-file", str(tmp_path / "pass")]
    with full_disk(4096):
        assert execute(["luks", "encrypt", str(plain), str(out), *key, *FAST]) == 74
    assert capsys.readouterr().err.splitlines()[-1] == f"cvm: error: File too large: {out}"
    assert out.read_bytes() == b"previous"
    assert execute(["luks", "encrypt", str(plain), str(out), *key, *FAST]) == 0
    capsys.readouterr()
    with full_disk(4096):
        assert execute(["luks", "decrypt", str(out), str(back), *key]) == 74
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"cvm: error: File too large: {back}"
    assert err.count("cvm: error:") == 1 and "Traceback" not in err
    assert back.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "enc.img", "pass",
                                                          "plain.bin"]
