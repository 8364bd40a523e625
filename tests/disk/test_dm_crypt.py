"""The dm-crypt layer: random-access plaintext I/O, each sector one XTS unit whose tweak is
its offset in 512-byte units (LUKS2 spec v1.1.4 section 3.3; dm-crypt plain64)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.crypto.xts import decrypt_one_sector, encrypt_one_sector
from cvm.disk.dm_crypt import CryptDevice
from cvm.errors import UsageError
from cvm.formats.luks2.metadata import Segment

KEY = bytes(range(64))
SEGMENT_OFFSET = 8192


def _device(memory_storage: Any, sector_size: int, iv_tweak: int = 0) -> tuple[Any, Any]:
    storage = memory_storage(SEGMENT_OFFSET + 16 * 4096)
    segment = Segment(SEGMENT_OFFSET, None, sector_size=sector_size, iv_tweak=iv_tweak)
    return storage, CryptDevice(storage, segment, KEY)


@pytest.mark.parametrize(("sector_size", "iv_tweak"), [(512, 0), (4096, 0), (4096, 5)])
def test_sector_tweaks_follow_plain64(memory_storage: Any, sector_size: int, iv_tweak: int
                                      ) -> None:
    storage, device = _device(memory_storage, sector_size, iv_tweak)
    plain = os.urandom(device.size())
    device.write(0, plain)
    for index in range(device.size() // sector_size):
        at = SEGMENT_OFFSET + index * sector_size
        iv = index * sector_size // 512 + iv_tweak
        cipher = bytes(storage.data[at : at + sector_size])
        assert decrypt_one_sector(KEY, iv, cipher) == plain[index * sector_size :][:sector_size]
        assert encrypt_one_sector(KEY, iv, plain[index * sector_size :][:sector_size]) == cipher
    assert device.read(0, device.size()) == plain


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([512, 4096]),
       st.lists(st.tuples(st.integers(0, 16 * 4096 - 1), st.binary(min_size=1, max_size=9000)),
                max_size=6))
def test_random_access_matches_a_plain_model(sector_size: int, writes: list[tuple[int, bytes]]
                                             ) -> None:
    class Memory:
        def __init__(self) -> None:
            self.data = bytearray(SEGMENT_OFFSET + 16 * 4096)

        def size(self) -> int:
            return len(self.data)

        def read(self, offset: int, size: int) -> bytes:
            return bytes(self.data[offset : offset + size])

        def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
            self.data[offset : offset + len(bytes(data))] = bytes(data)

        def flush(self) -> None:
            return None

    device = CryptDevice(Memory(), Segment(SEGMENT_OFFSET, None, sector_size=sector_size), KEY)
    model = bytearray(device.size())
    device.write(0, model)
    for offset, payload in writes:
        data = payload[: device.size() - offset]
        device.write(offset, data)
        model[offset : offset + len(data)] = data
    assert device.read(0, device.size()) == bytes(model)
    for offset, data in writes:
        assert device.read(offset, len(data[: device.size() - offset])) == bytes(
            model[offset : offset + len(data)])


def test_out_of_range(memory_storage: Any) -> None:
    _, device = _device(memory_storage, 4096)
    with pytest.raises(UsageError):
        device.read(device.size() - 1, 2)
    with pytest.raises(UsageError):
        device.write(-1, b"x")
