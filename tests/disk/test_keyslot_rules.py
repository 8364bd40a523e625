"""The decisions of keyslots and digests, each at its boundary: which keyslot is tried and in
what order (priority), which digest vouches for a volume key, where a new area goes, what a
removed keyslot leaves behind, the ranges of keyslot and token numbers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cvm.disk.keyslot import (
    KdfSpec,
    allocate_area,
    open_keyslot,
    seal_keyslot,
    volume_key_digest,
)
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, UsageError, WrongKeyError
from cvm.formats.luks2.anti_forensic import af_size
from cvm.formats.luks2.metadata import Digest, Pbkdf2Kdf

SIZE = 17 << 20
FAST = KdfSpec("pbkdf2", iterations=1000)


def _three_slots(memory_storage: Any) -> tuple[Any, bytes]:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST)
    key = volume.unlock(b"one")
    volume.add_keyslot(key, b"two", FAST)
    volume.add_keyslot(key, b"two", FAST)
    return storage, key


def _prioritise(storage: Any, **priorities: int | None) -> None:
    volume = Luks2Volume.open(storage)
    meta = volume.metadata
    slots = {n: replace(s, priority=priorities.get(f"slot{n}", s.priority))
             for n, s in meta.keyslots.items()}
    volume._commit(replace(meta, keyslots=slots))


def test_priority_2_first_and_0_never(memory_storage: Any) -> None:
    storage, key = _three_slots(memory_storage)
    _prioritise(storage, slot0=0, slot2=2)
    heard: list[str] = []
    volume = Luks2Volume.open(storage, announce=heard.append)
    assert volume.unlock_slot(b"two") == (2, key)
    assert heard == ["keyslot 2: deriving its key (pbkdf2-sha256, 1000 iterations)"]
    heard.clear()
    with pytest.raises(WrongKeyError):
        volume.unlock(b"one")
    assert [line.split(":")[0] for line in heard] == ["keyslot 2", "keyslot 1"]


def test_priority_1_is_normal(memory_storage: Any) -> None:
    storage, key = _three_slots(memory_storage)
    _prioritise(storage, slot1=1, slot2=None)
    assert Luks2Volume.open(storage).unlock_slot(b"two") == (1, key)
    _prioritise(storage, slot1=1, slot2=2)
    assert Luks2Volume.open(storage).unlock_slot(b"two") == (2, key)


def test_only_a_segment_digest_vouches_for_a_volume_key(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST)
    other = bytes(range(64))
    bound = volume.metadata.digests[0]
    loose = Digest((), (), "sha256", 1000, bound.salt,
                   volume_key_digest("sha256", other, bound.salt, 1000))
    volume._commit(replace(volume.metadata, digests={0: bound, 1: loose}))
    with pytest.raises(WrongKeyError):
        Luks2Volume.open(storage).check_volume_key(other)
    costly = replace(loose, iterations=1 << 30)
    volume._commit(replace(volume.metadata, digests={0: bound, 1: costly}))
    Luks2Volume.open(storage).check_volume_key(volume.unlock(b"one"))


def test_keyslot_numbers(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST)
    key = volume.unlock(b"one")
    with pytest.raises(UsageError, match="keyslot 32 is in use or out of range"):
        volume.add_keyslot(key, b"x", FAST, slot=32)
    with pytest.raises(UsageError, match="keyslot 0 is in use"):
        volume.add_keyslot(key, b"x", FAST, slot=0)
    assert volume.add_keyslot(key, b"x", FAST, slot=31) == 31
    assert volume.add_keyslot(key, b"y", FAST) == 1
    with pytest.raises(UsageError, match="keyslot 5 is not in use"):
        volume.remove_keyslot(5)


def test_new_areas_fill_the_keyslots_area(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST, data_offset=0, keyslots_size=3 * 258048)
    key = volume.unlock(b"one")
    offsets = [volume.metadata.keyslots[0].area_offset]
    for passphrase in (b"two", b"three"):
        number = volume.add_keyslot(key, passphrase, FAST)
        offsets.append(volume.metadata.keyslots[number].area_offset)
    assert offsets == [0x8000, 0x8000 + 258048, 0x8000 + 2 * 258048]
    with pytest.raises(UsageError, match=r"^no free space left in the LUKS2 keyslots area$"):
        volume.add_keyslot(key, b"four", FAST)
    volume.remove_keyslot(1)
    number = volume.add_keyslot(key, b"four", FAST)
    assert volume.metadata.keyslots[number].area_offset == 0x8000 + 258048


def test_allocate_area_boundaries() -> None:
    assert allocate_area([], 0x8000, 0xA000, 0x1000) == 0x8000
    assert allocate_area([(0x8000, 0x1000)], 0x8000, 0xA000, 0x1000) == 0x9000
    assert allocate_area([(0x8000, 0x1000), (0xA000, 0x1000)], 0x8000, 0xC000, 0x1000) == 0x9000
    assert allocate_area([(0x8000, 0x1001)], 0x8000, 0xC000, 0x1000) == 0xA000
    assert allocate_area([(0x9000, 0x1000)], 0x8000, 0xC000, 0x1000) == 0x8000
    assert allocate_area([(0x9000, 0x1000)], 0x8000, 0xC000, 0x1001) == 0xA000
    assert allocate_area([(0x8000, 0x1000)], 0x8000, 0xA000, 0x1000) == 0x9000
    with pytest.raises(UsageError):
        allocate_area([(0x8000, 0x1000)], 0x8000, 0xA000, 0x1001)


def test_removed_keyslot_leaves_no_reference_and_no_material(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST)
    key = volume.unlock(b"one")
    slot = volume.add_keyslot(key, b"two", FAST)
    volume.add_token({"type": "t", "keyslots": ["0", str(slot)]})
    area = volume.metadata.keyslots[slot]
    before = storage.read(area.area_offset, area.area_size)
    volume.remove_keyslot(slot)
    after = storage.read(area.area_offset, area.area_size)
    assert len(after) == len(before) and after != before and any(after)
    assert volume.tokens[0]["keyslots"] == ["0"]
    assert volume.metadata.digests[0].keyslots == (0,)
    assert Luks2Volume.open(storage).unlock_slot(b"one")[0] == 0


def test_token_numbers(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST)
    token = {"type": "t", "keyslots": []}
    for bad in (-1, 32):
        with pytest.raises(UsageError, match=f"token {bad} is in use or out of range"):
            volume.add_token(token, bad)
    assert volume.add_token(token, 31) == 31
    assert volume.add_token(token, 0) == 0
    assert volume.add_token(token) == 1
    with pytest.raises(UsageError, match="token 0 is in use"):
        volume.add_token(token, 0)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"volume_key": bytes(48)}, "32 or 64 bytes"),
    ({"sector_size": 1000},
     r"^sector size must be 512..4096 and the data offset 4 KiB-aligned$"),
    ({"data_offset": (16 << 20) + 512}, "4 KiB-aligned"),
    ({"data_offset": 1 << 20, "keyslots_size": (1 << 20) - 0x8000 + 4096}, "overlaps"),
    ({"data_offset": 0, "keyslots_size": 258048 + 512}, "no room"),
    ({"data_offset": 0, "keyslots_size": 4096}, "no room"),
    ({"data_size": 4096 + 512}, "not a multiple of 4096"),
])
def test_format_arguments(memory_storage: Any, arguments: dict[str, Any], message: str
                          ) -> None:
    with pytest.raises(UsageError, match=message):
        Luks2Volume.format(memory_storage(SIZE), b"one", FAST, **arguments)


def test_format_arguments_at_their_limits(memory_storage: Any) -> None:
    for arguments in ({"volume_key": bytes(32)}, {"sector_size": 512}, {"sector_size": 1024},
                      {"sector_size": 2048},
                      {"data_offset": 1 << 20, "keyslots_size": (1 << 20) - 0x8000},
                      {"data_offset": 0, "keyslots_size": 258048}, {"data_size": 8192}):
        volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST, **arguments)
        assert Luks2Volume.open(volume.storage).unlock_slot(b"one")[0] == 0
        segment = volume.metadata.segments[0]
        assert segment.sector_size == arguments.get("sector_size", 4096)
        assert segment.size == arguments.get("data_size")


def test_format_defaults(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST, data_offset=0)
    assert volume.metadata.config.keyslots_size == (16 << 20) - 2 * 0x4000
    assert (volume.label, volume.header.binary.subsystem) == ("", "")
    labelled = Luks2Volume.format(memory_storage(SIZE), b"one", FAST, label="l",
                                  subsystem="s", volume_uuid="u")
    assert (labelled.label, labelled.header.binary.subsystem, labelled.uuid) == ("l", "s", "u")


def test_keyslot_area_must_hold_the_split_key(memory_storage: Any) -> None:
    key = bytes(range(64))
    needed = af_size(64, 4000)
    kdf = Pbkdf2Kdf("sha256", 1000, bytes(32))
    with pytest.raises(UsageError, match=f"smaller than {needed}"):
        seal_keyslot(key, b"pw", kdf, 0x8000, needed - 1, bytes)
    slot, area = seal_keyslot(key, b"pw", kdf, 0x8000, needed, bytes)
    assert len(area) == needed
    storage = memory_storage(0x8000 + needed)
    storage.write(0x8000, area)
    assert open_keyslot(storage, slot, b"pw") == key
    with pytest.raises(FormatError, match="smaller than its 256000-byte"):
        open_keyslot(storage, replace(slot, area_size=needed - 1), b"pw")


def test_data_device_checks_the_key_and_reads_the_segment(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST, sector_size=512)
    key = volume.unlock(b"one")
    with pytest.raises(WrongKeyError):
        volume.data_device(bytes(64))
    device = volume.data_device(key, threads=2)
    device.write(0, b"plain text" * 100)
    assert b"plain text" not in storage.read(16 << 20, 1000)
    assert volume.data_device(key).read(0, 1000) == b"plain text" * 100
    detached = memory_storage(SIZE)
    volume.data_device(key, data=detached).write(512, b"elsewhere")
    start = 16 << 20
    assert any(detached.read(start + 512, 512)) and not any(detached.read(start, 512))
    assert volume.data_device(key, data=detached).read(512, 9) == b"elsewhere"


def test_open_repairs_only_when_asked(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    Luks2Volume.format(storage, b"one", FAST)
    storage.data[300] ^= 0xFF
    damaged = bytes(storage.data[:0x8000])
    assert Luks2Volume.open(storage).warnings
    assert bytes(storage.data[:0x8000]) == damaged
    Luks2Volume.open(storage, repair=True)
    assert bytes(storage.data[:0x8000]) != damaged
    assert Luks2Volume.open(storage).warnings == ()


def test_secret_keyslot_iterations(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST)
    key = volume.unlock(b"one")
    default = volume.add_keyslot_for_secret(bytes(32), key)
    chosen = volume.add_keyslot_for_secret(bytes(range(32)), key, iterations=1234)
    kdfs = [volume.metadata.keyslots[n].kdf for n in (default, chosen)]
    assert kdfs[0] == replace(kdfs[0], hash="sha256", iterations=1000)
    assert kdfs[1] == replace(kdfs[1], hash="sha256", iterations=1234)


def test_every_token_number_can_be_used(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST)
    token = {"type": "t", "keyslots": []}
    for number in range(31):
        volume.add_token(token, number)
    assert volume.add_token(token) == 31
    with pytest.raises(UsageError, match="token 32 is in use or out of range"):
        volume.add_token(token)
    with pytest.raises(FormatError, match=r"^LUKS2 metadata: token: token type 'luks2-x'"):
        volume.add_token({"type": "luks2-x", "keyslots": []})
    volume.remove_token(5)
    with pytest.raises(UsageError, match=r"^token 5 is not in use$"):
        volume.remove_token(5)


def test_every_keyslot_number_can_be_used(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST, data_offset=0,
                                keyslots_size=32 * 258048)
    key = volume.unlock(b"one")
    for _ in range(30):
        volume.add_keyslot(key, b"x", FAST)
    assert volume.add_keyslot(key, b"y", FAST) == 31
    with pytest.raises(UsageError, match="keyslot 32 is in use or out of range"):
        volume.add_keyslot(key, b"z", FAST)


def test_repair_writes_only_a_damaged_header(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    Luks2Volume.format(storage, b"one", FAST)
    healthy = bytes(storage.data[:0x8000])
    assert Luks2Volume.open(storage, repair=True).warnings == ()
    assert bytes(storage.data[:0x8000]) == healthy


def test_digest_and_change_key_keep_their_parameters(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST)
    digest = volume.metadata.digests[0]
    assert (len(digest.digest), len(digest.salt), digest.hash, digest.iterations) == (
        32, 32, "sha256", 1000)
    slot = volume.change_key(b"one", b"two", KdfSpec("pbkdf2", iterations=1001))
    assert volume.metadata.keyslots[slot].kdf == replace(volume.metadata.keyslots[slot].kdf,
                                                         iterations=1001)


@pytest.mark.parametrize("kind", ["argon2i", "argon2id"])
def test_keyslot_key_is_the_named_argon2(kind: str) -> None:
    """The keyslot key is the Argon2 variant the header names (known answer from the
    primitive itself, so a swapped variant cannot pass as a self-consistent round trip)."""
    from cvm.crypto import kdf as kdfs
    from cvm.disk.keyslot import _derive
    from cvm.formats.luks2.metadata import Argon2Kdf

    salt = bytes(range(32))
    derived = _derive(Argon2Kdf(kind, 1, 64, 1, salt), b"pw", 32)
    assert derived == kdfs.argon2(kind, b"pw", salt, 1, 64, 1, 32)  # type: ignore[arg-type]
    other = "argon2id" if kind == "argon2i" else "argon2i"
    assert derived != kdfs.argon2(other, b"pw", salt, 1, 64, 1, 32)  # type: ignore[arg-type]


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
def test_a_keyslot_splits_its_key_with_its_hash_option(memory_storage: Any,
                                                       hash_name: str) -> None:
    """cryptsetup's rule: a keyslot's AF splitter uses the keyslot's hash option (PBKDF2-SHA512,
    as systemd-cryptenroll enrolls a TPM2 token, gives an AF hash of SHA-512)."""
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST, data_offset=0)
    key = volume.unlock(b"one")
    number = volume.add_keyslot(key, b"two", KdfSpec("pbkdf2", iterations=1000,
                                                      hash=hash_name))
    slot = volume.metadata.keyslots[number]
    assert (slot.af_hash, slot.kdf) == (hash_name, replace(slot.kdf, hash=hash_name))
    assert volume.unlock(b"two") == key
    other = "sha1" if hash_name != "sha1" else "sha256"
    with pytest.raises(WrongKeyError):  # the same area merged with another hash is no key
        volume.check_volume_key(open_keyslot(volume.storage, replace(slot, af_hash=other),
                                             b"two"))


def test_a_new_volume_is_at_epoch_3_as_cryptsetup_formats_it(memory_storage: Any) -> None:
    """cryptsetup's luksFormat: a header at seqid 1, written (2), then keyslot 0 added (3)."""
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST)
    assert volume.header.binary.seqid == 3
    volume.add_keyslot(volume.unlock(b"one"), b"two", FAST)
    assert volume.header.binary.seqid == 4
