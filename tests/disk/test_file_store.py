"""cvm-filestore/2 over a memory device and over the dm-crypt layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.file_store import BLOCK_SIZE, MAX_ENTRIES, FileStore, MemoryDevice
from cvm.disk.keyslot import KdfSpec
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, StateError, UsageError


def test_write_read_grow_and_reopen() -> None:
    device = MemoryDevice(64 * BLOCK_SIZE)
    store = FileStore.format(device)
    store.write("/etc/hostname", b"cvm\n")  # block 63: the free run reaches the end
    store.write("/srv/data/log", b"a" * 10)  # block 2: the first block of the first free run
    store.write("/srv/data/log", b"b" * (3 * BLOCK_SIZE + 1))  # fresh blocks: 3 to 6
    store.write("/etc/hostname", b"vm\n")  # the first free block: 2, the log's old one
    reopened = FileStore.open(device)
    assert reopened.names() == ["/etc/hostname", "/srv/data/log"]
    assert reopened.read("/etc/hostname") == b"vm\n"
    assert reopened.read("/srv/data/log") == b"b" * (3 * BLOCK_SIZE + 1)
    assert [(e.first_block, e.capacity) for e in reopened.entries] == [(2, 1), (3, 4)]
    assert reopened.free() == [(7, 57)]
    with pytest.raises(StateError):
        reopened.read("/missing")


def test_limits() -> None:
    store = FileStore.format(MemoryDevice(5 * BLOCK_SIZE))  # 3 blocks for data
    with pytest.raises(StateError, match="no room"):
        store.write("/big", bytes(3 * BLOCK_SIZE + 1))
    with pytest.raises(UsageError):
        store.write("relative", b"")
    with pytest.raises(UsageError):
        store.write("/" + "x" * 40, b"")
    many = FileStore.format(MemoryDevice((MAX_ENTRIES + 3) * BLOCK_SIZE))
    for index in range(MAX_ENTRIES):
        many.write(f"/f{index}", b"")
    with pytest.raises(StateError, match="entries"):
        many.write("/one-more", b"")


@pytest.mark.parametrize(("offset", "value", "says"), [
    (0, b"X", "magic"),
    (0x08, b"\x03", "CRC-32"),
    (0x28, b"\x01", "CRC-32"),
    (0x10, b"\xff", "CRC-32"),
    (0x40 + 0x28, b"\x7f", "CRC-32"),
])
def test_corrupt_headers_are_refused(offset: int, value: bytes, says: str) -> None:
    """Either copy alone is enough (the other is used); both corrupt: refused."""
    device = MemoryDevice(16 * BLOCK_SIZE)
    FileStore.format(device).write("/a", b"data")
    device.data[offset : offset + 1] = value
    assert FileStore.open(device).names() == []  # copy 1, generation 1: the empty store
    device.data[BLOCK_SIZE + offset : BLOCK_SIZE + offset + 1] = value
    with pytest.raises(FormatError, match=says):
        FileStore.open(device)


def test_over_dm_crypt_only_ciphertext_reaches_the_disk(tmp_path: Path) -> None:
    image = tmp_path / "root.img"
    image.write_bytes(bytes(20 << 20))
    with FileStorage(image) as storage:
        volume = Luks2Volume.format(storage, b"pw", KdfSpec("pbkdf2", iterations=1000))
        key = volume.unlock(b"pw")
        store = FileStore.format(CryptDevice(storage, volume.segment, key))
        store.write("/srv/data/secret", b"the workload's secret " * 20)
        again = FileStore.open(CryptDevice(storage, volume.segment, key))
        assert again.read("/srv/data/secret") == b"the workload's secret " * 20
        with pytest.raises(FormatError, match="magic"):
            FileStore.open(CryptDevice(storage, volume.segment, bytes(range(64))))
    raw = image.read_bytes()
    assert b"workload's secret" not in raw and b"CVMFS002" not in raw
