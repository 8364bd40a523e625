"""Luks2Volume: format, unlock, keys, tokens, header recovery (spec v1.1.4 sections 2-3)."""

from __future__ import annotations

from typing import Any

import pytest

from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, UsageError, WrongKeyError

SIZE = 17 << 20


def _volume(memory_storage: Any, kdf: KdfSpec, **kwargs: Any) -> tuple[Any, Luks2Volume]:
    storage = memory_storage(SIZE)
    return storage, Luks2Volume.format(storage, b"first", kdf, **kwargs)


@pytest.mark.parametrize("kind", ["pbkdf2", "argon2id", "argon2i"])
def test_format_and_unlock(memory_storage: Any, kind: str) -> None:
    kdf = KdfSpec(kind, iterations=1000 if kind == "pbkdf2" else 1,  # type: ignore[arg-type]
                  memory_kib=64, parallel=1)
    key = bytes(range(64))
    storage, volume = _volume(memory_storage, kdf, volume_key=key, label="root")
    reopened = Luks2Volume.open(storage)
    assert reopened.unlock(b"first") == key
    assert reopened.label == "root"
    assert reopened.header.binary.seqid == volume.header.binary.seqid
    with pytest.raises(WrongKeyError) as info:
        reopened.unlock(b"second")
    assert info.value.exit_code == 2


def test_add_change_remove(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage, volume = _volume(memory_storage, fast_kdf)
    key = volume.unlock(b"first")
    assert volume.add_keyslot(key, b"second", fast_kdf) == 1
    assert volume.metadata.keyslots[1].area_offset == 290816
    assert volume.change_key(b"first", b"third", fast_kdf) == 2
    assert volume.unlock_slot(b"third") == (2, key)
    with pytest.raises(WrongKeyError):
        volume.unlock(b"first")
    assert volume.remove_key(b"second") == 1
    assert list(Luks2Volume.open(storage).metadata.keyslots) == [2]
    with pytest.raises(WrongKeyError):
        volume.add_keyslot(bytes(64), b"x", fast_kdf)


def test_secret_keyslot_and_tokens(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage, volume = _volume(memory_storage, fast_kdf)
    key = volume.unlock(b"first")
    secret = bytes(range(32))
    slot = volume.add_keyslot_for_secret(secret, key)
    token = {"type": "systemd-tpm2", "keyslots": [str(slot)], "tpm2-blob": "AAAA"}
    number = volume.add_token(token)
    reopened = Luks2Volume.open(storage)
    assert reopened.tokens == {number: token}
    assert reopened.unlock(secret) == key
    with pytest.raises(FormatError, match="reserved"):
        reopened.add_token({"type": "luks2-keyring", "keyslots": []})
    with pytest.raises(FormatError, match="names no keyslot"):
        reopened.add_token({"type": "x", "keyslots": ["9"]})
    reopened.remove_keyslot(slot)
    assert reopened.tokens[number]["keyslots"] == []
    reopened.remove_token(number)
    assert Luks2Volume.open(storage).tokens == {}
    with pytest.raises(UsageError):
        reopened.remove_token(number)


@pytest.mark.parametrize("which", ["primary", "secondary"])
def test_recovery_from_the_other_copy(memory_storage: Any, fast_kdf: KdfSpec, which: str
                                      ) -> None:
    storage, volume = _volume(memory_storage, fast_kdf)
    offset = 200 if which == "primary" else 0x4000 + 200
    storage.data[offset] ^= 0xFF
    damaged = Luks2Volume.open(storage)
    assert any(which in w and "invalid" in w for w in damaged.warnings)
    assert damaged.unlock(b"first") == volume.unlock(b"first")
    Luks2Volume.open(storage, repair=True)
    assert Luks2Volume.open(storage).warnings == ()


def test_stale_copy_loses_to_newer(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage, volume = _volume(memory_storage, fast_kdf)
    old_secondary = bytes(storage.data[0x4000:0x8000])
    volume.add_token({"type": "t", "keyslots": []})
    storage.data[0x4000:0x8000] = old_secondary
    reopened = Luks2Volume.open(storage)
    assert reopened.tokens and "newer" in reopened.warnings[0]


def test_truncated_and_foreign_images(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    storage, _ = _volume(memory_storage, fast_kdf)
    short = memory_storage(0)
    short.data = storage.data[:5000]
    with pytest.raises(FormatError, match="truncated"):
        Luks2Volume.open(short)
    with pytest.raises(FormatError, match="not a valid LUKS2 volume"):
        Luks2Volume.open(memory_storage(1 << 20))
    no_areas = memory_storage(0)
    no_areas.data = storage.data[:0x9000]
    with pytest.raises(FormatError, match="truncated"):
        Luks2Volume.open(no_areas).unlock(b"first")


def test_format_rejects_bad_arguments(memory_storage: Any, fast_kdf: KdfSpec) -> None:
    with pytest.raises(UsageError):
        Luks2Volume.format(memory_storage(SIZE), b"x", fast_kdf, volume_key=b"short")
    with pytest.raises(UsageError):
        Luks2Volume.format(memory_storage(SIZE), b"x", fast_kdf, sector_size=1000)
    with pytest.raises(UsageError):
        KdfSpec("scrypt")  # type: ignore[arg-type]
