"""A volume whose metadata has no data segment 0 has no data device: a StateError naming the
segment, never another segment's sectors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cvm.disk.keyslot import KdfSpec
from cvm.disk.volume import Luks2Volume, data_segment
from cvm.errors import StateError

SIZE = 17 << 20
FAST = KdfSpec("pbkdf2", iterations=1000)


def test_segment_0_is_the_data_segment(memory_storage: Any) -> None:
    volume = Luks2Volume.format(memory_storage(SIZE), b"one", FAST)
    assert volume.segment is volume.metadata.segments[0]
    assert data_segment(volume.metadata) is volume.metadata.segments[0]


def test_no_segment_0_is_refused_by_name(memory_storage: Any) -> None:
    storage = memory_storage(SIZE)
    volume = Luks2Volume.format(storage, b"one", FAST)
    key = volume.unlock(b"one")
    renumbered = replace(volume.metadata, segments={1: volume.metadata.segments[0]})
    moved = Luks2Volume(storage, replace(volume.header, metadata=renumbered))
    with pytest.raises(StateError, match=r"^this LUKS2 volume has no data segment 0$"):
        _ = moved.segment
    with pytest.raises(StateError, match="no data segment 0"):
        moved.data_device(key)
