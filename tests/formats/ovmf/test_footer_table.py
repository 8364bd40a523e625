"""The OVMF GUIDed footer table, the SEV metadata and the image probe, on real builds."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.ovmf.footer_table import (
    FOOTER_GUID,
    SEV_METADATA_GUID,
    FooterEntry,
    FooterTable,
)
from cvm.formats.ovmf.image import OvmfImage, build_image
from cvm.formats.ovmf.reset_block import SevEsResetBlock
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType, SevMetadata
from cvm.wire import Guid

DEBIAN_OVMF = Path("/usr/share/OVMF/OVMF_CODE.fd")
guids = st.uuids().map(Guid).filter(lambda g: g != FOOTER_GUID)
entries = st.builds(FooterEntry, guid=guids, data=st.binary(max_size=64))
sections = st.builds(
    MetadataSection,
    gpa=st.integers(0, 0xFFFFF).map(lambda p: p << 12),
    size=st.integers(0, 0xFFFF).map(lambda p: p << 12),
    type=st.sampled_from(SectionType),
)


def _fixture(vectors: Path, name: str) -> bytes:
    return (vectors / "snp" / "sev-snp-measure" / "tests" / "fixtures" / name).read_bytes()


@given(st.lists(entries, max_size=8, unique_by=lambda e: e.guid))
def test_table_round_trip(items: list[FooterEntry]) -> None:
    table = FooterTable(tuple(items))
    data = table.to_bytes()
    assert len(data) == table.size
    assert FooterTable.from_bytes(data) == table


@given(st.lists(sections, max_size=10))
def test_metadata_round_trip(items: list[MetadataSection]) -> None:
    metadata = SevMetadata(tuple(items))
    assert SevMetadata.from_bytes(metadata.to_bytes()) == metadata


@given(st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1))
def test_small_entries_round_trip(a: int, b: int) -> None:
    assert SevEsResetBlock.from_bytes(SevEsResetBlock(a).to_bytes()).eip == a
    assert SevArea.from_bytes(SevArea(a, b).to_bytes()) == SevArea(a, b)


def test_amdsev_fixture(vectors: Path) -> None:
    image = OvmfImage.parse(_fixture(vectors, "ovmf_AmdSev_suffix.bin"))
    assert image.gpa == 0xFFFFF000
    assert image.reset_block == SevEsResetBlock(0x0080B004)
    assert image.sev_hash_table == SevArea(0x810C00, 0x400)
    assert image.sev_secret_area == SevArea(0x810000, 0xC00)
    assert [(s.gpa, s.size, s.type) for s in image.sections] == [
        (0x800000, 0x9000, SectionType.SNP_SEC_MEM),
        (0x80A000, 0x3000, SectionType.SNP_SEC_MEM),
        (0x80D000, 0x1000, SectionType.SNP_SECRETS),
        (0x80E000, 0x1000, SectionType.CPUID),
        (0x80F000, 0x1000, SectionType.SVSM_CAA),
        (0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES),
        (0x811000, 0xF000, SectionType.SNP_SEC_MEM),
    ]
    assert image.footer is not None
    # Re-serialising the parsed table gives the bytes that sit in the image.
    table = image.footer.to_bytes()
    assert image.data[-32 - len(table) : -32] == table


def test_ovmfx64_fixture_has_no_hash_table(vectors: Path) -> None:
    image = OvmfImage.parse(_fixture(vectors, "ovmf_OvmfX64_suffix.bin"))
    assert image.sev_hash_table is None
    assert not image.has_section(SectionType.SNP_KERNEL_HASHES)
    assert len(image.sections) == 6


def test_debian_ovmf() -> None:
    if not DEBIAN_OVMF.exists():
        pytest.skip("Debian's ovmf package is not installed")
    image = OvmfImage.parse(DEBIAN_OVMF.read_bytes())
    assert image.metadata is not None
    assert [s.type for s in image.sections] == [
        SectionType.SNP_SEC_MEM,
        SectionType.SNP_SEC_MEM,
        SectionType.SNP_SECRETS,
        SectionType.CPUID,
        SectionType.SNP_SEC_MEM,
    ]
    assert image.sev_hash_table is None


def test_image_without_footer() -> None:
    image = OvmfImage.parse(bytes(0x2000))
    assert image.footer is None and image.sections == () and image.reset_block is None


def test_build_image_round_trip() -> None:
    layout = (
        MetadataSection(0x800000, 0x2000, SectionType.SNP_SEC_MEM),
        MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
        MetadataSection(0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES),
    )
    data = build_image(
        0x10000, sections=layout, sev_hash_table=SevArea(0x810C00, 0x400), payload=b"cvm"
    )
    image = OvmfImage.parse(data)
    assert image.sections == layout
    assert image.sev_hash_table == SevArea(0x810C00, 0x400)
    assert image.reset_block == SevEsResetBlock(0x0080B004)
    assert data.startswith(b"cvm") and len(data) == 0x10000


def test_corrupt_images_raise_format_error() -> None:
    data = build_image(
        0x4000, sections=(MetadataSection(0x800000, 0x1000, SectionType.SNP_SEC_MEM),)
    )
    image = OvmfImage.parse(data)
    assert image.footer is not None
    entry = image.footer.get(SEV_METADATA_GUID)
    assert entry is not None
    start = len(data) - int.from_bytes(entry, "little")
    broken = bytearray(data)
    broken[start] ^= 0xFF  # 'ASEV' -> garbage
    with pytest.raises(FormatError):
        OvmfImage.parse(bytes(broken))
    broken = bytearray(data)
    broken[-32 - 18] ^= 0x01  # footer size no longer matches
    with pytest.raises(FormatError):
        OvmfImage.parse(bytes(broken))


@given(st.binary(max_size=0x100), st.integers(0, 0x120))
def test_random_tables_parse_or_raise_format_error(table: bytes, size: int) -> None:
    header = size.to_bytes(2, "little") + FOOTER_GUID.to_bytes()
    tail = table + header + bytes(32)
    data = bytes(0x1000 - len(tail)) + tail
    with contextlib.suppress(FormatError):
        OvmfImage.parse(data)
