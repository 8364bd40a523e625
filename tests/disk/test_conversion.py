"""Whole images into LUKS2 and back (``cvm.disk.conversion``): what reaches the output, the
chunks, the progress, the errors; cryptsetup's view of the same images is in
``tests/interop/test_cryptsetup.py``."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.disk import conversion
from cvm.disk.conversion import copy_into, decrypt_image, encrypt_image
from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import DEFAULT_DATA_OFFSET, Luks2Volume
from cvm.errors import UsageError
from cvm.formats.luks2.metadata import Segment

SECTOR = 512
KEY = bytes(range(64))


def _device(storage: Any, sectors: int) -> CryptDevice:
    return CryptDevice(storage, Segment(0, sectors * SECTOR, sector_size=SECTOR), KEY)


class FailingStorage:
    """A storage whose ``fail_at``-th write (0-based) raises OSError."""

    def __init__(self, size: int, fail_at: int) -> None:
        self.data = bytearray(size)
        self.fail_at = fail_at
        self.writes = 0

    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.writes - 1 == self.fail_at:
            raise OSError("no space left on the device")
        self.data[offset : offset + len(data)] = data

    def flush(self) -> None:
        return None


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Chunks of three sectors, so that a few kilobytes take several."""
    monkeypatch.setattr(conversion, "CHUNK_SIZE", 3 * SECTOR)
    return 3 * SECTOR


def test_copy_into_writes_size_bytes_padded_and_nothing_after(small_chunks: int) -> None:
    storage = FailingStorage(16 * SECTOR, fail_at=-1)
    source = io.BytesIO(bytes([7]) * (7 * SECTOR + 5) + b"not to be copied" * 200)
    done: list[int] = []
    copy_into(source, _device(storage, 16), 7 * SECTOR + 5, done.append)
    assert done == [small_chunks, small_chunks, 2 * SECTOR]  # the last one padded
    assert storage.writes == 3
    plain = _device(storage, 16).read(0, 16 * SECTOR)
    assert plain[: 7 * SECTOR + 5] == bytes([7]) * (7 * SECTOR + 5)
    assert plain[7 * SECTOR + 5 : 8 * SECTOR] == bytes(SECTOR - 5)  # zero padding
    assert storage.data[8 * SECTOR :] == bytes(8 * SECTOR)  # never written


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_a_failed_write_of_any_chunk_is_raised(small_chunks: int, fail_at: int) -> None:
    """Also the last chunk's, written in the background after the loop ends."""
    storage = FailingStorage(16 * SECTOR, fail_at)
    with pytest.raises(OSError, match="no space left"):
        copy_into(io.BytesIO(bytes(8 * SECTOR)), _device(storage, 16), 8 * SECTOR)


@pytest.mark.parametrize("length", [0, 4 * SECTOR, 4 * SECTOR + 5, 8 * SECTOR - 1])
def test_a_short_input_is_refused_with_what_was_read(small_chunks: int, length: int) -> None:
    """The count is of the input's bytes (no padding counted), wherever it ends."""
    storage = FailingStorage(16 * SECTOR, fail_at=-1)
    with pytest.raises(UsageError) as refused:
        copy_into(io.BytesIO(bytes(length)), _device(storage, 16), 8 * SECTOR)
    assert str(refused.value) == f"the input ended after {length} of {8 * SECTOR} bytes"


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.bin"
    path.write_bytes(os.urandom(5 * 4096 + 100))
    return path


FAST = KdfSpec("pbkdf2", iterations=1000)


def test_encrypt_image_defaults(tmp_path: Path, plain: Path) -> None:
    """4096-byte sectors, no label, a fresh random volume key, the data after 16 MiB."""
    out = tmp_path / "enc.img"
    volume = encrypt_image(plain, out, b"pw", FAST)
    assert (volume.segment.sector_size, volume.label) == (4096, "")
    assert out.stat().st_size == DEFAULT_DATA_OFFSET + 6 * 4096
    with FileStorage(out, read_only=True) as storage:
        key = Luks2Volume.open(storage).unlock(b"pw")
    assert key not in (bytes(64), KEY) and len(key) == 64
    back = tmp_path / "back.bin"
    assert decrypt_image(out, back, key) == 6 * 4096
    assert back.read_bytes() == plain.read_bytes() + bytes(6 * 4096 - 5 * 4096 - 100)


def test_encrypt_image_takes_the_key_label_sector_and_reports_progress(
        tmp_path: Path, plain: Path, small_chunks: int) -> None:
    out = tmp_path / "enc.img"
    out.write_bytes(b"old bytes of another image" * 100_000)  # replaced, not kept
    done: list[int] = []
    volume = encrypt_image(plain, out, b"pw", FAST, sector_size=SECTOR, volume_key=KEY,
                           label="root", progress=done.append)
    assert sum(done) == 41 * SECTOR and set(done) == {small_chunks, 2 * SECTOR}
    with FileStorage(out, read_only=True) as storage:
        reopened = Luks2Volume.open(storage)
        assert (reopened.label, reopened.segment.sector_size) == ("root", SECTOR)
        assert reopened.unlock(b"pw") == KEY
        assert reopened.uuid == volume.uuid
    assert out.stat().st_size == DEFAULT_DATA_OFFSET + 41 * SECTOR
    assert plain.read_bytes()[:SECTOR] not in out.read_bytes()


def test_encrypt_image_draws_everything_from_the_random_given(tmp_path: Path,
                                                              plain: Path) -> None:
    """The volume key, the UUID, the salts and the keyslot's stripes all come from ``random``:
    the same seeded stream writes the same image, byte for byte; the default stream does not."""
    images = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.img"
        encrypt_image(plain, out, b"pw", FAST, random=SeededRandom(b"7", b"test"))
        images.append(out.read_bytes())
    assert images[0] == images[1]
    other = tmp_path / "other.img"
    encrypt_image(plain, other, b"pw", FAST, random=SeededRandom(b"8", b"test"))
    assert other.read_bytes()[:4096] != images[0][:4096]
    fresh = encrypt_image(plain, tmp_path / "fresh.img", b"pw", FAST)
    with FileStorage(tmp_path / "a.img", read_only=True) as storage:
        assert Luks2Volume.open(storage).uuid != fresh.uuid


def test_encrypt_image_refuses_to_overwrite_its_input(tmp_path: Path, plain: Path) -> None:
    before = plain.read_bytes()
    with pytest.raises(UsageError) as refused:
        encrypt_image(plain, tmp_path / "." / plain.name, b"pw", FAST)
    assert str(refused.value) == "the output must not be the plaintext input"
    assert plain.read_bytes() == before


def test_decrypt_image_in_chunks_reports_progress_and_opens_read_only(
        tmp_path: Path, plain: Path, small_chunks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "enc.img"
    encrypt_image(plain, out, b"pw", FAST, sector_size=SECTOR, volume_key=KEY)
    opened: list[bool] = []

    class Recording(FileStorage):
        def __init__(self, path: str | Path, read_only: bool = False,
                     create: bool = False) -> None:
            opened.append(read_only)
            super().__init__(path, read_only, create)

    monkeypatch.setattr(conversion, "FileStorage", Recording)
    done: list[int] = []
    back = tmp_path / "back.bin"
    assert decrypt_image(out, back, KEY, progress=done.append) == 41 * SECTOR
    assert opened == [True]  # an image on read-only media decrypts
    assert done == [small_chunks] * 13 + [2 * SECTOR]
    assert back.read_bytes() == plain.read_bytes() + bytes(41 * SECTOR - 5 * 4096 - 100)


def _stop_after_first_chunk(count: int) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_image_that_cannot_be_encrypted_whole_leaves_the_previous_output(
        tmp_path: Path, plain: Path, small_chunks: int,
        full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    out = tmp_path / "enc.img"
    out.write_bytes(b"the previous image")
    with pytest.raises(OSError) as caught:  # a chunk written, then the disk is full
        encrypt_image(plain, out, b"pw", FAST, sector_size=SECTOR, volume_key=KEY,
                      progress=_stop_after_first_chunk)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(out))
    assert out.read_bytes() == b"the previous image"
    with full_disk(DEFAULT_DATA_OFFSET), pytest.raises(OSError) as caught:
        encrypt_image(plain, out, b"pw", FAST, sector_size=SECTOR, volume_key=KEY)
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(out))
    assert out.read_bytes() == b"the previous image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.img", "plain.bin"]


def test_a_plaintext_that_cannot_be_written_whole_leaves_the_previous_output(
        tmp_path: Path, plain: Path, small_chunks: int,
        full_disk: Callable[[int], AbstractContextManager[None]], umask: None) -> None:
    image = tmp_path / "enc.img"
    encrypt_image(plain, image, b"pw", FAST, sector_size=SECTOR, volume_key=KEY)
    assert image.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "back.bin"
    out.write_bytes(b"the previous plaintext")
    with pytest.raises(OSError) as caught:
        decrypt_image(image, out, KEY, progress=_stop_after_first_chunk)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(out))
    assert out.read_bytes() == b"the previous plaintext"
    with full_disk(3 * SECTOR), pytest.raises(OSError) as caught:
        decrypt_image(image, out, KEY)
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(out))
    assert out.read_bytes() == b"the previous plaintext"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "enc.img", "plain.bin"]
    out.chmod(0o644)
    decrypt_image(image, out, KEY)  # the volume's plaintext: private, whatever was there
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_bytes()[:plain.stat().st_size] == plain.read_bytes()


def test_encrypt_image_says_what_its_key_derivation_spends(tmp_path: Path, plain: Path) -> None:
    said: list[str] = []
    encrypt_image(plain, tmp_path / "enc.img", b"pw", FAST, announce=said.append)
    assert said and all(isinstance(line, str) and line for line in said)
    assert any("pbkdf2" in line for line in said), said
