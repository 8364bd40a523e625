"""A crash at every write of format, add-key, remove-key, change-key and the token updates
leaves exactly the key set the write order promises (LUKS2 spec v1.1.4 section 2.2: two header
copies, the primary written and flushed first, so a change takes effect when the primary is
whole; a new keyslot's area is written before any header names it, an old one is wiped only
after no header names it).

Each operation is run once per write it makes and per way of tearing that write (nothing of
it, a tenth, half, all but its last byte): the volume must then open with exactly the expected
passphrases and tokens, repair itself, and open the same way again without warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume
from cvm.errors import FormatError, WrongKeyError

SIZE = 17 << 20
TORN = (0.0, 0.1, 0.5, 0.999)
PASSPHRASES = (b"old", b"new", b"other")
TOKEN = {"type": "systemd-tpm2", "keyslots": ["0"]}
Change = Callable[[Luks2Volume], object]
# what a volume holds: the passphrases that open it and its tokens; None: no LUKS2 volume
State = tuple[frozenset[bytes], dict[int, Any]] | None


def _state(storage: Any) -> State:
    try:
        volume = Luks2Volume.open(storage)
    except FormatError:
        return None
    opens = set()
    for passphrase in PASSPHRASES:
        try:
            volume.unlock(passphrase)
        except WrongKeyError:
            continue
        opens.add(passphrase)
    return frozenset(opens), volume.tokens


def _state_of(*passphrases: bytes, tokens: dict[int, Any] | None = None) -> State:
    return frozenset(passphrases), tokens or {}


def _check(base: bytearray, crashing: Callable[..., Any], crash: type[Exception],
           change: Change, expected: list[State], final: State, fresh: bool = False) -> None:
    """``change`` writes ``len(expected)`` times; a crash at write ``n`` leaves
    ``expected[n]``, or the state after write ``n`` if the torn write happened to leave all
    its bytes (its missing tail already held them); without a crash it ends as ``final``."""
    after = [*expected[1:], final]
    for crash_at in range(len(expected)):
        for torn in TORN:
            storage = crashing(base, crash_at, torn)
            with pytest.raises(crash):
                change(_Fresh(storage) if fresh else Luks2Volume.open(storage))
            state = after[crash_at] if storage.complete else expected[crash_at]
            assert torn or not storage.complete
            assert _state(storage) == state, (crash_at, torn)
            if state is not None:
                repaired = Luks2Volume.open(storage, repair=True).metadata
                again = Luks2Volume.open(storage)
                assert again.warnings == () and again.metadata == repaired, (crash_at, torn)
    storage = crashing(base, len(expected), 0.0)
    change(_Fresh(storage) if fresh else Luks2Volume.open(storage))
    assert storage.writes == len(expected)
    assert _state(storage) == final


class _Fresh:
    """Stands in for the volume when the operation is ``format`` (no volume yet)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage


def _volume(memory_storage: Any, fast_kdf: KdfSpec, *more: bytes) -> tuple[bytearray, bytes]:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"old", fast_kdf)
    key = volume.unlock(b"old")
    for passphrase in more:
        volume.add_keyslot(key, passphrase, fast_kdf)
    return storage.data, key


def test_format(crashing_storage: Any, crash_type: Any, fast_kdf: KdfSpec) -> None:
    """Writes: empty primary, empty secondary, keyslot area, primary, secondary."""
    empty = _state_of()
    _check(bytearray(SIZE), crashing_storage, crash_type,
           lambda fresh: Luks2Volume.format(fresh.storage, b"old", fast_kdf),
           [None, empty, empty, empty, _state_of(b"old")], _state_of(b"old"), fresh=True)


def test_add_key(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                 fast_kdf: KdfSpec) -> None:
    """Writes: new keyslot area, primary, secondary."""
    base, key = _volume(memory_storage, fast_kdf)
    old, both = _state_of(b"old"), _state_of(b"old", b"new")
    _check(base, crashing_storage, crash_type, lambda v: v.add_keyslot(key, b"new", fast_kdf),
           [old, old, both], both)


def test_remove_key(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                    fast_kdf: KdfSpec) -> None:
    """Writes: primary, secondary, wipe of the removed area."""
    base, _ = _volume(memory_storage, fast_kdf, b"new")
    both, new = _state_of(b"old", b"new"), _state_of(b"new")
    _check(base, crashing_storage, crash_type, lambda v: v.remove_key(b"old"),
           [both, new, new], new)


def test_change_key(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                    fast_kdf: KdfSpec) -> None:
    """Writes: new area, primary, secondary (added); primary, secondary, wipe (removed)."""
    base, _ = _volume(memory_storage, fast_kdf, b"other")
    before = _state_of(b"old", b"other")
    during = _state_of(b"old", b"new", b"other")
    after = _state_of(b"new", b"other")
    _check(base, crashing_storage, crash_type,
           lambda v: v.change_key(b"old", b"new", fast_kdf),
           [before, before, during, during, after, after], after)


def test_token_add_and_remove(memory_storage: Any, crashing_storage: Any, crash_type: Any,
                              fast_kdf: KdfSpec) -> None:
    """Writes: primary, secondary, for each token update."""
    base, _ = _volume(memory_storage, fast_kdf)
    without, with_token = _state_of(b"old"), _state_of(b"old", tokens={0: TOKEN})
    _check(base, crashing_storage, crash_type, lambda v: v.add_token(TOKEN),
           [without, with_token], with_token)
    storage = memory_storage(0)
    storage.data = bytearray(base)
    Luks2Volume.open(storage).add_token(TOKEN)
    _check(storage.data, crashing_storage, crash_type, lambda v: v.remove_token(0),
           [with_token, without], without)


def test_no_passphrase_text_in_a_torn_area(memory_storage: Any, crashing_storage: Any,
                                           crash_type: Any, fast_kdf: KdfSpec) -> None:
    """A crash while wiping a removed keyslot leaves no usable key material behind it."""
    base, _ = _volume(memory_storage, fast_kdf, b"new")
    storage = crashing_storage(base, 2, 0.999)
    volume = Luks2Volume.open(storage)
    area = volume.metadata.keyslots[0]
    with pytest.raises(crash_type):
        volume.remove_key(b"old")
    wiped = storage.read(area.area_offset, area.area_size)
    assert wiped[: int(area.area_size * 0.999)] != base[
        area.area_offset : area.area_offset + int(area.area_size * 0.999)]
