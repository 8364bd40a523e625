"""PAGE_INFO: which pages' contents are measured, each refusal's message, the folded digest.

The launch digest every verifier compares is a chain of SHA-384s of these records; the
firmware and the measurement prediction build them with :func:`measure_record`, which must
give the bytes :meth:`PageInfo.to_bytes` gives.
"""

from __future__ import annotations

import hashlib

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.page_info import (
    MEASURED_TYPES,
    PAGE_INFO_SIZE,
    ZERO_DIGEST,
    PageInfo,
    PageType,
    contents_digest,
    extend,
    measure_record,
)

PAGE = bytes(range(256)) * 16
DIGEST = bytes(range(48))


def test_only_normal_and_vmsa_pages_are_measured() -> None:
    assert {PageType.NORMAL, PageType.VMSA} == MEASURED_TYPES
    for kind in PageType:
        measured = kind in (PageType.NORMAL, PageType.VMSA)
        assert kind.measures_contents is measured
        expected = hashlib.sha384(PAGE).digest() if measured else ZERO_DIGEST
        assert contents_digest(kind, PAGE) == expected


def test_page_types_are_table_66() -> None:
    assert [(kind.name, int(kind)) for kind in PageType] == [
        ("NORMAL", 1), ("VMSA", 2), ("ZERO", 3), ("UNMEASURED", 4), ("SECRETS", 5), ("CPUID", 6),
    ]


@pytest.mark.parametrize("kind", list(PageType))
def test_extend_folds_the_record_of_each_type(kind: PageType) -> None:
    contents = hashlib.sha384(PAGE).digest() if kind in MEASURED_TYPES else ZERO_DIGEST
    record = PageInfo(DIGEST, contents, kind, 0x7000).to_bytes()
    assert extend(DIGEST, kind, 0x7000, PAGE) == hashlib.sha384(record).digest()


def test_a_measured_page_needs_its_contents() -> None:
    for kind in (PageType.NORMAL, PageType.VMSA):
        with pytest.raises(UsageError) as caught:
            extend(ZERO_DIGEST, kind, 0)
        assert str(caught.value) == f"a {kind.name} page needs its contents to be measured"
    assert extend(ZERO_DIGEST, PageType.ZERO, 0) == extend(ZERO_DIGEST, PageType.ZERO, 0, PAGE)


def test_contents_are_one_page() -> None:
    for size in (0xFFF, 0x1001):
        with pytest.raises(UsageError) as caught:
            contents_digest(PageType.NORMAL, bytes(size))
        assert str(caught.value) == f"a launch page is 0x1000 bytes, got {size:#x}"
    with pytest.raises(UsageError):
        contents_digest(PageType.ZERO, bytes(0xFFF))


def test_measure_record_is_page_info_with_imi_page() -> None:
    for imi in (False, True):
        info = PageInfo(DIGEST, DIGEST[::-1], PageType.CPUID, 0xFFFF_FFFF_F000, imi)
        folded = measure_record(DIGEST, DIGEST[::-1], PageType.CPUID, 0xFFFF_FFFF_F000, imi)
        assert folded == info.measure() == hashlib.sha384(info.to_bytes()).digest()
    assert measure_record(DIGEST, DIGEST, PageType.NORMAL, (1 << 64) - 0x1000) == (
        PageInfo(DIGEST, DIGEST, PageType.NORMAL, (1 << 64) - 0x1000).measure()
    )


@pytest.mark.parametrize(
    ("digest", "contents", "gpa", "message"),
    [
        (DIGEST[1:], DIGEST, 0, "PAGE_INFO digests must be 48 bytes"),
        (DIGEST, DIGEST + b"\0", 0, "PAGE_INFO digests must be 48 bytes"),
        (DIGEST, DIGEST, 0x800, "PAGE_INFO GPA 0x800 is not page-aligned"),
        (DIGEST, DIGEST, 0x1001, "PAGE_INFO GPA 0x1001 is not page-aligned"),
        (DIGEST, DIGEST, -0x1000, "PAGE_INFO GPA -0x1000 is not page-aligned"),
        (DIGEST, DIGEST, 1 << 64, "PAGE_INFO GPA 0x10000000000000000 is not page-aligned"),
    ],
)
def test_measure_record_refuses_by_name(
    digest: bytes, contents: bytes, gpa: int, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        measure_record(digest, contents, PageType.NORMAL, gpa)
    assert str(caught.value) == message


def test_the_page_info_constructor_refuses_by_name() -> None:
    with pytest.raises(UsageError) as caught:
        PageInfo(DIGEST, DIGEST[:47], PageType.NORMAL, 0)
    assert str(caught.value) == "PAGE_INFO digests must be 48 bytes"
    with pytest.raises(UsageError) as caught:
        PageInfo(DIGEST + b"\0", DIGEST, PageType.NORMAL, 0)
    assert str(caught.value) == "PAGE_INFO digests must be 48 bytes"
    with pytest.raises(UsageError) as caught:
        PageInfo(DIGEST, DIGEST, PageType.NORMAL, 0x10)
    assert str(caught.value) == "PAGE_INFO GPA 0x10 is not page-aligned"


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0x60, 0x71, "PAGE_INFO: LENGTH is 0x71, expected 0x70"),
        (0x61, 0x01, "PAGE_INFO: LENGTH is 0x170, expected 0x70"),
        (0x62, 0, "PAGE_INFO: unknown PAGE_TYPE 0x0"),
        (0x62, 7, "PAGE_INFO: unknown PAGE_TYPE 0x7"),
        (0x63, 2, "PAGE_INFO: reserved bits 7:1 of byte 0x63 are not zero"),
        (0x69, 0x08, "PAGE_INFO: GPA 0x800 is not page-aligned"),
        (0x68, 0x01, "PAGE_INFO: GPA 0x1 is not page-aligned"),
    ],
)
def test_parsing_refuses_each_field_by_name(offset: int, value: int, message: str) -> None:
    data = bytearray(PageInfo(DIGEST, DIGEST, PageType.NORMAL, 0).to_bytes())
    data[offset] = value
    with pytest.raises(FormatError) as caught:
        PageInfo.from_bytes(bytes(data))
    assert str(caught.value) == message


def test_parsing_reads_every_field() -> None:
    info = PageInfo(DIGEST, DIGEST[::-1], PageType.SECRETS, 0x1234_5000, True, 7, 8, 9)
    data = info.to_bytes()
    assert len(data) == PAGE_INFO_SIZE and data[0x63:0x67] == bytes([1, 7, 8, 9])
    assert PageInfo.from_bytes(data) == info
    plain = PageInfo(DIGEST, DIGEST, PageType.VMSA, 0).to_bytes()
    assert PageInfo.from_bytes(plain).imi_page is False
