"""The SEV hash table (QEMU target/i386/sev.c) for measured direct boot."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.sev_hashes import PADDED_SIZE, SevHashTable

hashes = st.binary(min_size=32, max_size=32)
tables = st.builds(SevHashTable, cmdline=hashes, initrd=hashes, kernel=hashes)


@given(tables)
def test_round_trip(table: SevHashTable) -> None:
    data = table.to_bytes()
    assert len(data) == PADDED_SIZE
    assert SevHashTable.from_bytes(data) == table


@given(tables, st.integers(0, 0x1000 - PADDED_SIZE))
def test_page_round_trip(table: SevHashTable, offset: int) -> None:
    page = table.to_page(offset)
    assert len(page) == 0x1000
    assert not any(page[:offset]) and not any(page[offset + PADDED_SIZE :])
    assert SevHashTable.from_page(page, offset) == table


def test_layout_and_hash_rules() -> None:
    table = SevHashTable.for_boot(b"kernel", None, "console=ttyS0")
    data = table.to_bytes()
    assert data[:16].hex() == "06d63894224fc94cb479a793d411fd21"  # 9438d606-... mixed-endian
    assert data[0x10:0x12] == b"\xa8\x00"
    assert data[0x22:0x24] == b"\x32\x00"
    assert data[0x24:0x44] == hashlib.sha256(b"console=ttyS0\0").digest()
    assert data[0x56:0x76] == hashlib.sha256(b"").digest()
    assert data[0x88:0xA8] == hashlib.sha256(b"kernel").digest()
    assert data[0xA8:] == bytes(8)
    assert SevHashTable.for_boot(b"k").cmdline == hashlib.sha256(b"\0").digest()
    assert SevHashTable.for_boot(b"k", cmdline="").cmdline == hashlib.sha256(b"\0").digest()


@pytest.mark.parametrize(
    ("offset", "value"), [(0, 0), (0x10, 0xA9), (0x12, 0), (0x22, 0x33), (0xA8, 1)]
)
def test_strict(offset: int, value: int) -> None:
    data = bytearray(SevHashTable.for_boot(b"x").to_bytes())
    data[offset] = value
    with pytest.raises(FormatError):
        SevHashTable.from_bytes(bytes(data))


def test_offset_must_fit() -> None:
    with pytest.raises(UsageError):
        SevHashTable.for_boot(b"x").to_page(0xF60)
