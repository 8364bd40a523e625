"""``cvm luks``, one decision at a time: key files, the KDF options and the sector size refused
as cryptsetup refuses them, a volume opened read-only and repaired only when written, the KDF
ceiling, the size a volume needs, the last keyslot, tokens, the key a decrypt uses, and the
volume key written readable by its owner alone."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from cvm.cli import luks
from cvm.cli.main import execute
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, PolicyError, UsageError, WrongKeyError

FAST = KdfSpec("pbkdf2", iterations=1000)
HEADER_SIZE = 0x4000  # the secondary header's offset (a 16 KiB header area)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "vol.img"
    with path.open("wb") as handle:
        handle.truncate(17 << 20)
    (tmp_path / "pass").write_bytes(b"first")
    with FileStorage(path) as storage:
        Luks2Volume.format(storage, b"first", FAST)
    return path


def test_a_key_file_is_its_bytes_and_never_empty(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"pass\n")
    assert luks.read_key_file(tmp_path / "key") == b"pass\n"
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(UsageError) as refused:
        luks.read_key_file(tmp_path / "empty")
    assert str(refused.value) == f"key file {tmp_path / 'empty'} is empty"


@pytest.mark.parametrize("pbkdf", ["pbkdf2", "argon2id", "argon2i"])
def test_each_pbkdf_is_taken_with_the_costs_given(pbkdf: str) -> None:
    assert luks.kdf_spec(pbkdf, None, 7, 1024, 2) == KdfSpec(
        pbkdf, iterations=7, iter_time_ms=2000, memory_kib=1024, parallel=2)  # type: ignore[arg-type]
    assert luks.kdf_spec(pbkdf, 500, None, 2048, 1) == KdfSpec(
        pbkdf, iterations=None, iter_time_ms=500, memory_kib=2048, parallel=1)  # type: ignore[arg-type]


def test_an_unknown_pbkdf_is_refused() -> None:
    with pytest.raises(UsageError) as refused:
        luks.kdf_spec("scrypt", None, None, 1024, 1)
    assert str(refused.value) == "--pbkdf must be pbkdf2, argon2id or argon2i, not 'scrypt'"


def test_forced_iterations_and_a_target_time_are_not_both_taken() -> None:
    with pytest.raises(UsageError) as refused:
        luks.kdf_spec("pbkdf2", 500, 1000, 1024, 1)
    assert str(refused.value) == "--pbkdf-force-iterations cannot be combined with --iter-time"


@pytest.mark.parametrize("size", [512, 4096])
def test_the_sector_size_is_512_or_4096(size: int) -> None:
    assert luks.sector_size_option(size) == size


@pytest.mark.parametrize("size", [0, 1024, 4095, 8192])
def test_another_sector_size_is_refused(size: int) -> None:
    with pytest.raises(UsageError) as refused:
        luks.sector_size_option(size)
    assert str(refused.value) == f"--sector-size must be 512 or 4096, not {size}"


def test_a_volume_is_opened_read_only_unless_written(volume: Path) -> None:
    with luks.volume_storage(volume, False) as storage:
        assert storage.read_only
        with pytest.raises(UsageError, match="is open read-only"):
            storage.write(0, b"x")
    with luks.volume_storage(volume, True) as storage:
        assert not storage.read_only


def _break_secondary(volume: Path) -> None:
    data = bytearray(volume.read_bytes()[:2 * HEADER_SIZE])
    data[HEADER_SIZE + 4200] ^= 0x01
    with volume.open("r+b") as handle:
        handle.write(data)


def test_a_damaged_header_is_told_and_repaired_only_when_writing(
        volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _break_secondary(volume)
    damaged = volume.read_bytes()
    with luks.open_volume(volume) as opened:
        assert opened.uuid
    assert capsys.readouterr().err == (
        f"cvm: warning: {volume}: secondary header is invalid (LUKS2 secondary header: "
        f"checksum mismatch)\ncvm: warning: {volume}: recovered from the primary header\n")
    assert volume.read_bytes() == damaged
    with luks.open_volume(volume, write=True):
        pass
    assert volume.read_bytes() != damaged
    with luks.open_volume(volume):
        pass
    assert capsys.readouterr().err.count("warning") == 2  # the write repaired it


def test_a_keyslot_is_tried_within_the_ceiling_given_and_announced(
        volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with luks.open_volume(volume, max_kdf_cost=1 << 20) as opened:
        assert opened.unlock(b"first")
    assert capsys.readouterr().err == (
        "cvm: keyslot 0: deriving its key (pbkdf2-sha256, 1000 iterations)\n")
    with luks.open_volume(volume, max_kdf_cost=999) as opened, pytest.raises(PolicyError):
        opened.unlock(b"first")


def test_format_never_creates_its_target(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        luks.target_exists(tmp_path / "none")
    assert missing.value.errno == errno.ENOENT
    assert missing.value.filename == str(tmp_path / "none")
    assert missing.value.strerror == ("No such file or directory (create it first, e.g. "
                                      "truncate -s 64M)")
    luks.target_exists(tmp_path)


@pytest.mark.parametrize("sector", [512, 4096])
def test_a_volume_needs_its_header_area_and_one_sector(tmp_path: Path, sector: int) -> None:
    assert luks.volume_fits(tmp_path, (16 << 20) + sector, sector) == sector
    with pytest.raises(UsageError) as refused:
        luks.volume_fits(tmp_path, (16 << 20) + sector - 1, sector)
    assert str(refused.value) == (f"{tmp_path} is too small: a LUKS2 volume needs more than "
                                  "16 MiB")
    with pytest.raises(UsageError, match="--sector-size"):
        luks.volume_fits(tmp_path, 64 << 20, 1024)


def test_the_volume_key_is_written_readable_by_its_owner_alone(tmp_path: Path) -> None:
    out = tmp_path / "vk"
    out.write_bytes(b"an older, public file")
    out.chmod(0o644)
    luks.write_volume_key(out, b"\x01" * 64)
    assert out.read_bytes() == b"\x01" * 64 and out.stat().st_mode & 0o777 == 0o600


def test_dump_volume_key_over_a_public_file_leaves_it_private(
        volume: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = volume.parent / "vk"
    out.write_bytes(b"")
    out.chmod(0o644)
    assert execute(["luks", "dump-volume-key", str(volume), "--key-file",
                    str(volume.parent / "pass"), "-o", str(out)]) == 0
    assert len(out.read_bytes()) == 64 and out.stat().st_mode & 0o777 == 0o600
    assert capsys.readouterr().out == f"wrote the 512-bit volume key to {out}\n"


def test_the_last_keyslot_is_removed_only_when_forced() -> None:
    with pytest.raises(UsageError) as refused:
        luks.refuse_last_keyslot(1, False)
    assert str(refused.value) == ("this is the last keyslot; add --force to make the volume "
                                  "unopenable without the volume key")
    luks.refuse_last_keyslot(1, True)
    luks.refuse_last_keyslot(2, False)


def test_a_token_to_import_is_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"type": "x", "keyslots": []}')
    assert luks.read_token(path) == {"type": "x", "keyslots": []}
    path.write_text("[1]")
    with pytest.raises(FormatError) as refused:
        luks.read_token(path)
    assert str(refused.value) == f"{path} does not hold a JSON object"
    for data in (b"{", b"\xff\xfe"):
        path.write_bytes(data)
        with pytest.raises(FormatError, match=f"^{path} is not JSON \\("):
            luks.read_token(path)


def test_a_token_exported_is_one_in_use() -> None:
    assert luks.token_in_use({0: {"type": "a"}, 3: {"type": "b"}}, 3) == {"type": "b"}
    with pytest.raises(UsageError) as refused:
        luks.token_in_use({0: {"type": "a"}}, 1)
    assert str(refused.value) == "token 1 is not in use"


def test_decrypt_takes_exactly_one_key(tmp_path: Path) -> None:
    for given in ((None, None), (tmp_path, tmp_path)):
        with pytest.raises(UsageError) as refused:
            luks.one_key_source(*given)
        assert str(refused.value) == "give exactly one of --key-file and --volume-key-file"
    luks.one_key_source(tmp_path, None)
    luks.one_key_source(None, tmp_path)


def test_decrypt_uses_the_volume_key_given_else_the_one_the_passphrase_opens(
        volume: Path) -> None:
    with luks.open_volume(volume) as opened:
        unlocked = opened.unlock(b"first")
        (volume.parent / "vk").write_bytes(unlocked)
        assert luks.volume_key(opened, None, volume.parent / "vk") == unlocked
        assert luks.volume_key(opened, volume.parent / "pass", None) == unlocked
        (volume.parent / "other").write_bytes(b"\x02" * 64)
        with pytest.raises(WrongKeyError) as wrong:  # not this volume's key: named, exit 2
            luks.volume_key(opened, None, volume.parent / "other")
        assert str(wrong.value).startswith(f"--volume-key-file {volume.parent / 'other'}: ")
        (volume.parent / "short").write_bytes(unlocked[:31])
        with pytest.raises(FormatError) as short:
            luks.volume_key(opened, None, volume.parent / "short")
        assert str(short.value) == (f"--volume-key-file {volume.parent / 'short'}: 31 bytes, "
                                    "a volume key has 32 or 64")


def test_encrypt_reads_a_file_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError) as refused:
        luks.plain_input(tmp_path)
    assert refused.value.filename == str(tmp_path) and refused.value.errno == errno.EISDIR
    assert refused.value.strerror == "Is a directory"
    (tmp_path / "plain").write_bytes(b"x" * 1000)
    assert luks.plain_input(tmp_path / "plain") == 1000


def test_the_commands_refuse_in_one_line(volume: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    key = str(volume.parent / "pass")
    assert execute(["luks", "remove-key", str(volume), "--key-file", key]) == 64
    assert capsys.readouterr().err.endswith("cvm: error: this is the last keyslot; add --force "
                                            "to make the volume unopenable without the volume "
                                            "key\n")
    assert execute(["luks", "decrypt", str(volume), str(volume.parent / "out")]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: give exactly one of --key-file and --volume-key-file\n")
    assert execute(["luks", "token", "export", str(volume), "--token-id", "0"]) == 64
    assert capsys.readouterr().err == "cvm: error: token 0 is not in use\n"
    (volume.parent / "t.json").write_text(json.dumps([]))
    assert execute(["luks", "token", "import", str(volume), "--json-file",
                    str(volume.parent / "t.json")]) == 65


def test_the_progress_bar_counts_to_the_size_on_stderr() -> None:
    bar = luks.progress_bar("encrypting", 4096)
    (task,) = bar.tasks
    assert (task.description, task.total, task.completed) == ("encrypting", 4096, 0)
    assert bar.console.stderr and not bar.live.transient
