"""PAGE_INFO (56860 Table 67): layout, strict parsing and the launch-digest fold."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.page_info import (
    PAGE_INFO_SIZE,
    VMSA_GPA,
    ZERO_DIGEST,
    PageInfo,
    PageType,
    contents_digest,
    extend,
    measure_record,
)

digests = st.binary(min_size=48, max_size=48)
page_infos = st.builds(
    PageInfo,
    digest_cur=digests,
    contents=digests,
    page_type=st.sampled_from(PageType),
    gpa=st.integers(0, (1 << 52) - 1).map(lambda g: g & ~0xFFF),
    imi_page=st.booleans(),
    vmpl3_perms=st.integers(0, 255),
    vmpl2_perms=st.integers(0, 255),
    vmpl1_perms=st.integers(0, 255),
)


@given(page_infos)
def test_round_trip(info: PageInfo) -> None:
    data = info.to_bytes()
    assert len(data) == PAGE_INFO_SIZE
    assert PageInfo.from_bytes(data) == info
    assert PageInfo.from_bytes(data).to_bytes() == data


@given(st.binary(min_size=PAGE_INFO_SIZE, max_size=PAGE_INFO_SIZE))
def test_random_bytes_parse_or_raise_format_error(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        assert PageInfo.from_bytes(data).to_bytes() == data


def test_field_offsets() -> None:
    info = PageInfo(bytes(range(48)), bytes(range(48, 96)), PageType.CPUID, 0x80E000, True, 1, 2, 3)
    data = info.to_bytes()
    assert data[:0x30] == bytes(range(48))
    assert data[0x30:0x60] == bytes(range(48, 96))
    assert data[0x60:0x62] == b"\x70\x00"
    assert data[0x62] == 6
    assert data[0x63] == 1
    assert data[0x64:0x68] == b"\x01\x02\x03\x00"
    assert int.from_bytes(data[0x68:], "little") == 0x80E000


@pytest.mark.parametrize(
    ("offset", "value"), [(0x60, 0x71), (0x62, 7), (0x62, 0), (0x63, 2), (0x67, 1), (0x68, 1)]
)
def test_strict_parsing(offset: int, value: int) -> None:
    data = bytearray(PageInfo(ZERO_DIGEST, ZERO_DIGEST, PageType.NORMAL, 0).to_bytes())
    data[offset] = value
    with pytest.raises(FormatError):
        PageInfo.from_bytes(bytes(data))


def test_extend_is_sha384_of_the_record() -> None:
    page = bytes(range(256)) * 16
    record = ZERO_DIGEST + hashlib.sha384(page).digest() + b"\x70\x00\x01\x00" + bytes(4)
    record += (0xFFFFF000).to_bytes(8, "little")
    assert extend(ZERO_DIGEST, PageType.NORMAL, 0xFFFFF000, page) == hashlib.sha384(record).digest()


@pytest.mark.parametrize(
    "kind", [PageType.ZERO, PageType.UNMEASURED, PageType.SECRETS, PageType.CPUID]
)
def test_unmeasured_types_ignore_contents(kind: PageType) -> None:
    assert contents_digest(kind, b"\xff" * 0x1000) == ZERO_DIGEST
    assert extend(ZERO_DIGEST, kind, 0x1000) == extend(ZERO_DIGEST, kind, 0x1000, b"\x01" * 0x1000)
    assert extend(ZERO_DIGEST, kind, 0x1000) != extend(ZERO_DIGEST, kind, 0x2000)


def test_vmsa_needs_contents_and_misaligned_gpa_is_refused() -> None:
    with pytest.raises(UsageError):
        extend(ZERO_DIGEST, PageType.VMSA, VMSA_GPA)
    with pytest.raises(UsageError):
        PageInfo(ZERO_DIGEST, ZERO_DIGEST, PageType.NORMAL, 0x123)


@given(page_infos.filter(lambda i: not (i.vmpl1_perms or i.vmpl2_perms or i.vmpl3_perms)))
def test_measure_record_is_the_record_measured(info: PageInfo) -> None:
    folded = measure_record(info.digest_cur, info.contents, info.page_type, info.gpa, info.imi_page)
    assert folded == info.measure() == hashlib.sha384(info.to_bytes()).digest()


@pytest.mark.parametrize(
    ("digest", "contents", "gpa"),
    [(ZERO_DIGEST[1:], ZERO_DIGEST, 0), (ZERO_DIGEST, ZERO_DIGEST + b"\0", 0),
     (ZERO_DIGEST, ZERO_DIGEST, 0x800), (ZERO_DIGEST, ZERO_DIGEST, -0x1000),
     (ZERO_DIGEST, ZERO_DIGEST, 1 << 64)],
)
def test_measure_record_refuses_what_page_info_refuses(
    digest: bytes, contents: bytes, gpa: int
) -> None:
    with pytest.raises(UsageError):
        measure_record(digest, contents, PageType.NORMAL, gpa)
