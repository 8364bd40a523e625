"""cvm and the real cryptsetup 2.6 agree on LUKS2, both ways (PBKDF2 and Argon2id, 512- and
4096-byte sectors). Data paths use ``cryptsetup reencrypt`` with a detached header (no
device-mapper needed): it encrypts or decrypts a data file in place with data offset 0."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.disk.test_dump import HEADERS, VECTORS, header_image

from cvm.crypto.xts import decrypt_one_sector
from cvm.disk.conversion import encrypt_image
from cvm.disk.dump import dump_json, dump_text
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.formats.luks2.header_copy import HeaderCopy

pytestmark = pytest.mark.interop

COSTS = {
    "pbkdf2": ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
    "argon2id": ["--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory",
                 "32768", "--pbkdf-parallel", "1"],
    "argon2i": ["--pbkdf", "argon2i", "--pbkdf-force-iterations", "4", "--pbkdf-memory",
                "32768", "--pbkdf-parallel", "2"],
}
SPECS = {
    "pbkdf2": KdfSpec("pbkdf2", iterations=1000),
    "argon2id": KdfSpec("argon2id", iterations=4, memory_kib=32768, parallel=1),
}
CASES = [(k, s) for k in ("pbkdf2", "argon2id") for s in (512, 4096)]
DATA_SIZE = 1 << 20


@pytest.fixture
def cryptsetup(require_tool: Callable[[str], str]
               ) -> Callable[..., subprocess.CompletedProcess[str]]:
    tool = require_tool("cryptsetup")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"cryptsetup {args}: {result.returncode} {result.stderr}")
        return result

    return run


def _files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "pass").write_bytes(b"interop passphrase")
    (tmp_path / "wrong").write_bytes(b"not it")
    (tmp_path / "pass2").write_bytes(b"second passphrase")
    return tmp_path / "pass", tmp_path / "plain"


@pytest.mark.parametrize(("kdf", "sector"), [*CASES, ("argon2i", 4096)])
def test_cryptsetup_formats_cvm_opens(tmp_path: Path, cryptsetup: Callable[..., object],
                                      kdf: str, sector: int) -> None:
    pw, _ = _files(tmp_path)
    data = os.urandom(DATA_SIZE)
    target, header = tmp_path / "data.img", tmp_path / "hdr.img"
    target.write_bytes(data)
    cryptsetup("reencrypt", "--encrypt", "--type", "luks2", "--batch-mode", "--header",
               str(header), "--sector-size", str(sector), *COSTS[kdf], "--key-file", str(pw),
               str(target))
    assert target.read_bytes() != data
    cryptsetup("luksDump", "--dump-volume-key", "--batch-mode", "--header", str(header),
               "--key-file", str(pw), "--volume-key-file", str(tmp_path / "vk"), str(header))
    raw = header.read_bytes()
    assert HeaderCopy.parse(raw[:0x4000]).to_bytes() == raw[:0x4000]
    with FileStorage(header, read_only=True) as hdr, FileStorage(target, read_only=True) as dev:
        volume = Luks2Volume.open(hdr)
        assert volume.segment.sector_size == sector
        key = volume.unlock(pw.read_bytes())
        assert key == (tmp_path / "vk").read_bytes()
        assert volume.data_device(key, data=dev).read(0, DATA_SIZE) == data
        assert volume.data_device(key, data=dev).read(12345, 999) == data[12345 : 12345 + 999]


@pytest.mark.parametrize(("kdf", "sector"), CASES)
def test_cvm_formats_cryptsetup_opens(tmp_path: Path, cryptsetup: Callable[..., object],
                                      kdf: str, sector: int) -> None:
    pw, _ = _files(tmp_path)
    image = tmp_path / "vol.img"
    image.write_bytes(b"")
    os.truncate(image, (16 << 20) + DATA_SIZE)
    with FileStorage(image) as storage:
        volume = Luks2Volume.format(storage, pw.read_bytes(), SPECS[kdf], sector_size=sector,
                                    label="cvm")
        key = volume.unlock(pw.read_bytes())
    run = cryptsetup
    assert run("open", "--test-passphrase", "--key-file", str(pw), str(image)).returncode == 0
    wrong = run("open", "--test-passphrase", "--key-file", str(tmp_path / "wrong"), str(image),
                check=False)
    assert wrong.returncode == 2
    run("luksDump", "--dump-volume-key", "--batch-mode", "--key-file", str(pw),
        "--volume-key-file", str(tmp_path / "vk"), str(image))
    assert (tmp_path / "vk").read_bytes() == key
    meta = json.loads(run("luksDump", "--dump-json-metadata", str(image)).stdout)
    assert meta["segments"]["0"]["sector_size"] == sector
    run("luksAddKey", "--batch-mode", *COSTS["pbkdf2"], "--key-file", str(pw), str(image),
        str(tmp_path / "pass2"))
    token = tmp_path / "token.json"
    token.write_text(json.dumps({"type": "cvm-interop", "keyslots": ["1"], "x": [1, 2]}))
    run("token", "import", "--json-file", str(token), "--token-id", "5", str(image))
    with FileStorage(image) as storage:
        reopened = Luks2Volume.open(storage)
        assert reopened.warnings == ()
        assert reopened.unlock((tmp_path / "pass2").read_bytes()) == key
        assert reopened.unlock(pw.read_bytes()) == key
        assert reopened.tokens[5]["x"] == [1, 2]
        reopened.data_device(key).write(0, b"sealed by cvm" * 400)
        first = storage.read(16 << 20, sector)
        assert decrypt_one_sector((tmp_path / "vk").read_bytes(), 0, first)[:13] == b"sealed by cvm"
        assert dump_text(reopened) + "\n" == run("luksDump", str(image)).stdout
        dumped = json.loads(run("luksDump", "--dump-json-metadata", str(image)).stdout)
        assert reopened.metadata.to_text() == json.dumps(dumped, separators=(",", ":"))


def _format_shape(image: Path, run: Callable[..., subprocess.CompletedProcess[str]]
                  ) -> dict[str, object]:
    """A header as cryptsetup reads it, less what is random: salts, digests, UUID, checksums."""
    meta = json.loads(run("luksDump", "--dump-json-metadata", str(image)).stdout)
    for slot in meta["keyslots"].values():
        del slot["kdf"]["salt"]
    for digest in meta["digests"].values():
        del digest["salt"], digest["digest"]
    with FileStorage(image, read_only=True) as storage:
        binary = Luks2Volume.open(storage).header.binary
    return {"json": meta, "epoch": binary.seqid, "label": binary.label,
            "subsystem": binary.subsystem, "hdr_size": binary.hdr_size,
            "csum_alg": binary.csum_alg}


@pytest.mark.parametrize(("kdf", "sector"), CASES)
def test_cvm_formats_the_header_cryptsetup_formats(tmp_path: Path,
                                                   cryptsetup: Callable[..., object],
                                                   kdf: str, sector: int) -> None:
    """The same volume key, passphrase and options through ``cryptsetup luksFormat`` and
    :meth:`Luks2Volume.format`: the same JSON metadata and binary header, epoch included."""
    pw, _ = _files(tmp_path)
    volume_key = os.urandom(64)
    (tmp_path / "vk").write_bytes(volume_key)
    theirs, ours = tmp_path / "theirs.img", tmp_path / "ours.img"
    for image in (theirs, ours):
        image.write_bytes(b"")
        os.truncate(image, (16 << 20) + DATA_SIZE)
    run = cryptsetup
    run("luksFormat", "--batch-mode", "--type", "luks2", *COSTS[kdf], "--sector-size",
        str(sector), "--label", "cvm", "--volume-key-file", str(tmp_path / "vk"),
        "--key-file", str(pw), str(theirs))
    with FileStorage(ours) as storage:
        Luks2Volume.format(storage, pw.read_bytes(), SPECS[kdf], volume_key=volume_key,
                           sector_size=sector, label="cvm")
    assert _format_shape(ours, run) == _format_shape(theirs, run)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kdf", "sector"), CASES)
def test_cvm_encrypts_cryptsetup_decrypts(tmp_path: Path, cryptsetup: Callable[..., object],
                                          kdf: str, sector: int) -> None:
    pw, _ = _files(tmp_path)
    header, target = tmp_path / "hdr.img", tmp_path / "data.img"
    header.write_bytes(bytes(16 << 20))
    data = os.urandom(DATA_SIZE)
    target.write_bytes(bytes(DATA_SIZE))
    with FileStorage(header) as hdr, FileStorage(target) as dev:
        volume = Luks2Volume.format(hdr, pw.read_bytes(), SPECS[kdf], sector_size=sector,
                                    data_offset=0)
        device = volume.data_device(volume.unlock(pw.read_bytes()), data=dev)
        device.write(0, data[:5000])
        device.write(5000, data[5000:])
    assert target.read_bytes() != data
    cryptsetup("reencrypt", "--decrypt", "--force-offline-reencrypt", "--batch-mode",
               "--header", str(header),
               "--key-file", str(pw), str(target))
    assert target.read_bytes() == data


def _mixed_header(image: Path, pw: Path, pw2: Path,
                  run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The recipe of ``tests/vectors/luks2/cryptsetup-mixed`` (its PROVENANCE.md), fresh."""
    image.write_bytes(b"")
    os.truncate(image, 20 << 20)
    pbkdf2 = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
    run("luksFormat", "--batch-mode", "--type", "luks2", *pbkdf2, "--sector-size", "512",
        "--key-file", str(pw), str(image))
    run("luksAddKey", "--batch-mode", *pbkdf2, "--key-file", str(pw), str(image), str(pw2))
    run("luksKillSlot", "--batch-mode", str(image), "0")
    run("luksAddKey", "--batch-mode", *COSTS["argon2i"], "--key-file", str(pw2),
        "--key-slot", "0", str(image), str(pw))
    run("luksAddKey", "--batch-mode", "--unbound", "--key-size", "256", *COSTS["argon2id"],
        "--key-slot", "7", str(image), str(pw2))
    run("config", "--priority", "prefer", "--key-slot", "1", str(image))
    run("config", "--priority", "ignore", "--key-slot", "7", str(image))
    run("config", "--subsystem", "sub-test", str(image))
    for token_id, token in (("5", {"type": "cvm-x", "keyslots": ["1", "0"]}),
                            ("2", {"type": "cvm-y", "keyslots": []})):
        (image.parent / "token.json").write_text(json.dumps(token))
        run("token", "import", "--json-file", str(image.parent / "token.json"),
            "--token-id", token_id, str(image))


def test_dump_of_a_fresh_cryptsetup_header_is_cryptsetup_s(
        tmp_path: Path, cryptsetup: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Keyslots and tokens out of numeric order, priorities, an unbound keyslot, Argon2i and
    Argon2id, a subsystem without label: ``cvm luks dump`` prints what luksDump prints."""
    pw, _ = _files(tmp_path)
    image = tmp_path / "mixed.img"
    _mixed_header(image, pw, tmp_path / "pass2", cryptsetup)
    with FileStorage(image, read_only=True) as storage:
        volume = Luks2Volume.open(storage)
    assert dump_text(volume) + "\n" == cryptsetup("luksDump", str(image)).stdout
    theirs = cryptsetup("luksDump", "--dump-json-metadata", str(image)).stdout
    assert dump_json(volume) == theirs
    assert dump_json(volume, compact=True) == json.dumps(json.loads(theirs),
                                                         separators=(",", ":"))


@pytest.mark.parametrize("name", HEADERS)
def test_the_recorded_dumps_are_what_cryptsetup_prints(
        tmp_path: Path, cryptsetup: Callable[..., subprocess.CompletedProcess[str]],
        name: str) -> None:
    """The vectors ``tests/disk/test_dump.py`` compares cvm with are still cryptsetup's word."""
    image = header_image(name, tmp_path)
    assert cryptsetup("luksDump", str(image)).stdout == (
        VECTORS / f"{name}.luksdump.txt").read_text()
    assert cryptsetup("luksDump", "--dump-json-metadata", str(image)).stdout == (
        VECTORS / f"{name}.json").read_text()


def test_cryptsetup_reads_what_encrypt_image_wrote(
        tmp_path: Path, cryptsetup: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """``encrypt_image``'s label, sector size, volume key and passphrase, as cryptsetup sees
    them; its data segment, decrypted with the key cryptsetup dumps, is the plaintext."""
    pw, _ = _files(tmp_path)
    plain, image = tmp_path / "plain.bin", tmp_path / "enc.img"
    data = os.urandom(3 * 4096 + 10)
    plain.write_bytes(data)
    volume_key = os.urandom(64)
    encrypt_image(plain, image, pw.read_bytes(), SPECS["pbkdf2"], sector_size=512,
                  volume_key=volume_key, label="root")
    meta = json.loads(cryptsetup("luksDump", "--dump-json-metadata", str(image)).stdout)
    assert meta["segments"]["0"]["sector_size"] == 512
    assert "Label:         \troot\n" in cryptsetup("luksDump", str(image)).stdout
    cryptsetup("open", "--test-passphrase", "--key-file", str(pw), str(image))
    cryptsetup("luksDump", "--dump-volume-key", "--batch-mode", "--key-file", str(pw),
               "--volume-key-file", str(tmp_path / "vk"), str(image))
    assert (tmp_path / "vk").read_bytes() == volume_key
    raw = image.read_bytes()[16 << 20 :]
    sectors = [decrypt_one_sector(volume_key, n, raw[n * 512 : (n + 1) * 512])
               for n in range(len(raw) // 512)]
    assert b"".join(sectors) == data + bytes(len(raw) - len(data))
