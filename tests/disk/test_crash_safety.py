"""A crash at any write of add-key, remove-key and a token update leaves a volume that opens
with the old or the new key set (LUKS2 spec v1.1.4 section 2.2, two header copies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume
from cvm.errors import WrongKeyError

SIZE = 17 << 20


def _opens(storage: Any, secret: bytes) -> bool:
    try:
        Luks2Volume.open(storage).unlock(secret)
    except WrongKeyError:
        return False
    return True


def _key_set(storage: Any) -> tuple[bool, bool, dict[int, Any]]:
    volume = Luks2Volume.open(storage)
    return _opens(storage, b"old"), _opens(storage, b"new"), volume.tokens


def _base(memory_storage: Any, fast_kdf: KdfSpec) -> tuple[bytearray, bytes]:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"old", fast_kdf)
    return storage.data, volume.unlock(b"old")


def _run(base: bytearray, crashing: Callable[..., Any], crash: type[Exception],
         change: Callable[[Luks2Volume], object]) -> list[Any]:
    """Apply ``change`` with a crash at every write (clean and torn); return the outcomes."""
    outcomes = []
    crash_at = 0
    while True:
        for torn in (0.0, 0.5):
            storage = crashing(base, crash_at, torn)
            try:
                change(Luks2Volume.open(storage))
            except crash:
                outcomes.append((crash_at, torn, storage))
                continue
            return [*outcomes, (crash_at, None, storage)]
        crash_at += 1


def test_add_key(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                 fast_kdf: KdfSpec) -> None:
    base, key = _base(memory_storage, fast_kdf)
    results = _run(base, crashing_storage, crash_type,
                   lambda v: v.add_keyslot(key, b"new", fast_kdf))
    assert len(results) >= 4
    for crash_at, torn, storage in results:
        old, new, _ = _key_set(storage)
        assert old, (crash_at, torn)
        if torn is None:
            assert new
    assert any(_key_set(s)[1] for _, t, s in results if t is not None)


def test_remove_key(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                    fast_kdf: KdfSpec) -> None:
    base, key = _base(memory_storage, fast_kdf)
    storage = memory_storage(0)
    storage.data = base
    Luks2Volume.open(storage).add_keyslot(key, b"new", fast_kdf)
    results = _run(storage.data, crashing_storage, crash_type, lambda v: v.remove_key(b"old"))
    for crash_at, torn, after in results:
        old, new, _ = _key_set(after)
        assert new, (crash_at, torn)
        assert old in (True, False)
        if torn is None:
            assert not old
    assert any(_key_set(s)[0] for _, t, s in results if t is not None)


def test_token_update(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                      fast_kdf: KdfSpec) -> None:
    base, _ = _base(memory_storage, fast_kdf)
    token = {"type": "systemd-tpm2", "keyslots": ["0"]}
    results = _run(base, crashing_storage, crash_type, lambda v: v.add_token(token))
    seen = set()
    for crash_at, torn, storage in results:
        old, _, tokens = _key_set(storage)
        assert old, (crash_at, torn)
        assert tokens in ({}, {0: token})
        seen.add(bool(tokens))
    assert seen == {False, True}


@pytest.mark.parametrize("torn", [0.0, 0.5])
def test_crash_during_format_header_copy_leaves_no_half_volume(
    memory_storage: Any, crashing_storage: Any, crash_type: Any, fast_kdf: KdfSpec, torn: float
) -> None:
    storage = crashing_storage(bytearray(SIZE), 1, torn)
    with pytest.raises(crash_type):
        Luks2Volume.format(storage, b"old", fast_kdf)
    assert Luks2Volume.open(storage).metadata.keyslots == {}
