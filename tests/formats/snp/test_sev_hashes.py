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
    ("offset", "value", "message"),
    [
        (0, 0, "^SEV hash table: header GUID is wrong$"),
        (0x10, 0xA9, "^SEV hash table: length 169, expected 0xa8$"),
        (0x12, 0, "^SEV hash table: the cmdline entry GUID is wrong$"),
        (0x44, 0, "^SEV hash table: the initrd entry GUID is wrong$"),
        (0x76, 0, "^SEV hash table: the kernel entry GUID is wrong$"),
        (0x22, 0x33, "^SEV hash table: the cmdline entry length is not 0x32$"),
        (0x54, 0x31, "^SEV hash table: the initrd entry length is not 0x32$"),
        (0x86, 0, "^SEV hash table: the kernel entry length is not 0x32$"),
        (0xA8, 1, "reserved"),
    ],
)
def test_strict(offset: int, value: int, message: str) -> None:
    data = bytearray(SevHashTable.for_boot(b"x").to_bytes())
    data[offset] = value
    with pytest.raises(FormatError, match=message):
        SevHashTable.from_bytes(bytes(data))


@pytest.mark.parametrize("name", ["cmdline", "initrd", "kernel"])
def test_every_hash_is_32_bytes(name: str) -> None:
    fields = {"cmdline": bytes(32), "initrd": bytes(32), "kernel": bytes(32), name: bytes(31)}
    with pytest.raises(UsageError, match=f"^SEV hash table: the {name} hash must be 32 bytes$"):
        SevHashTable(**fields)


def test_offset_must_fit() -> None:
    table = SevHashTable.for_boot(b"x")
    with pytest.raises(UsageError, match=r"^SEV hash table offset 0xf51 does not fit in a page$"):
        table.to_page(0xF51)
    with pytest.raises(UsageError, match=r"^SEV hash table offset -0x1 does not fit in a page$"):
        table.to_page(-1)
    assert table.to_page(0xF50)[0xF50:] == table.to_bytes()
    assert SevHashTable.from_page(table.to_page(0xF50), 0xF50) == table  # the last offset


@pytest.mark.parametrize(
    ("size", "offset"), [(0x1001, 0), (0xFFF, 0), (0x1000, 0xF51), (0x1000, -1)]
)
def test_a_page_of_the_wrong_size_or_offset_is_refused(size: int, offset: int) -> None:
    page = (SevHashTable.for_boot(b"x").to_page(0) + bytes(1))[:size]  # a valid table at 0
    with pytest.raises(FormatError, match=r"^SEV hash table page: wrong page size or offset$"):
        SevHashTable.from_page(bytes(page), offset)
