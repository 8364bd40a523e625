"""The SVSM flash image: where QEMU maps it, where its vCPUs start, the save area they start
with and the synthetic image's layout. Each refusal is a UsageError naming the value; each
bound is exact both ways; the entry point is the mapped base plus the SVSM info entry's first
u32 (little-endian)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from cvm.errors import UsageError
from cvm.formats.ovmf.footer_table import (
    FOOTER_GAP,
    SEV_METADATA_GUID,
    SVSM_INFO_GUID,
    FooterEntry,
    FooterTable,
)
from cvm.formats.ovmf.image import RESET_VECTOR_TAIL, OvmfImage, build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType, SevMetadata
from cvm.formats.snp.vmsa import DEFAULT_G_PAT, Vmsa
from cvm.formats.svsm.svsm_image import (
    SvsmImage,
    build_svsm_image,
    svsm_end_gpa,
    svsm_entry_point,
    svsm_initial_vmsa,
)

NO_INFO = f"the SVSM image has no SVSM info entry ({SVSM_INFO_GUID})"


def _footer(*entries: FooterEntry) -> SimpleNamespace:
    return SimpleNamespace(footer=FooterTable(entries))


# ---- the entry point ------------------------------------------------------------------------
def test_the_entry_point_is_the_base_plus_the_info_entrys_first_u32() -> None:
    image = _footer(FooterEntry(SVSM_INFO_GUID, bytes.fromhex("00300000")))
    assert svsm_entry_point(image, 0x7F0000) == 0x7F3000  # type: ignore[arg-type]
    longer = _footer(FooterEntry(SVSM_INFO_GUID, bytes.fromhex("04030201ffff")))
    assert svsm_entry_point(longer, 0x1000) == 0x1000 + 0x01020304  # type: ignore[arg-type]


@pytest.mark.parametrize("image", [
    SimpleNamespace(footer=None),
    _footer(),
    _footer(FooterEntry(SEV_METADATA_GUID, bytes(4))),
    _footer(FooterEntry(SVSM_INFO_GUID, bytes(3))),
])
def test_an_image_without_a_whole_svsm_info_entry_is_refused(image: SimpleNamespace) -> None:
    with pytest.raises(UsageError) as caught:
        svsm_entry_point(image, 0x1000)  # type: ignore[arg-type]
    assert str(caught.value) == NO_INFO


def test_parsing_an_image_without_svsm_info_is_refused_at_once() -> None:
    with pytest.raises(UsageError) as caught:
        SvsmImage.parse(build_image(0x2000, seed=b"no info"), end_gpa=0x100000)
    assert str(caught.value) == NO_INFO


# ---- where the image is mapped --------------------------------------------------------------
def test_the_image_ends_where_it_is_told_and_may_start_at_zero() -> None:
    data = build_svsm_image(0x2000, entry_offset=0x1000)
    svsm = SvsmImage.parse(data, end_gpa=0x2000)
    assert svsm.gpa == 0 and svsm.entry_point == 0x1000
    svsm = SvsmImage.parse(data, end_gpa=0x7000)
    assert svsm.gpa == 0x5000 and svsm.entry_point == 0x6000
    assert svsm.pages() == [(0x5000, data[:0x1000]), (0x6000, data[0x1000:])]


@pytest.mark.parametrize("end", [0x1000, 0x2001, 0x2FFF])
def test_an_image_that_would_start_below_zero_or_off_a_page_is_refused(end: int) -> None:
    with pytest.raises(UsageError) as caught:
        SvsmImage.parse(build_svsm_image(0x2000), end_gpa=end)
    assert str(caught.value) == (
        f"the SVSM image (0x2000 bytes) cannot end at {end:#x}: "
        "it would start below 0 or off a page boundary")


def test_the_svsm_ends_below_ovmf_and_its_variable_store() -> None:
    ovmf = OvmfImage.parse(build_image(0x10000, seed=b"ovmf for svsm"))
    assert svsm_end_gpa(ovmf, 0x4000) == ovmf.gpa - 0x4000
    assert svsm_end_gpa(ovmf, 0) == ovmf.gpa
    assert svsm_end_gpa(ovmf, ovmf.gpa) == 0
    for size in (-0x1000, 0x800, 0x1001):
        with pytest.raises(UsageError) as caught:
            svsm_end_gpa(ovmf, size)
        assert str(caught.value) == (
            f"the OVMF variable store size {size:#x} is not a multiple of 4 KiB")
    with pytest.raises(UsageError) as caught:
        svsm_end_gpa(ovmf, ovmf.gpa + 0x1000)
    assert str(caught.value) == (
        f"the OVMF variable store size {ovmf.gpa + 0x1000:#x} does not fit below OVMF")


# ---- the initial save area ------------------------------------------------------------------
def test_every_vcpu_starts_flat_32_bit_at_the_entry_point() -> None:
    vmsa = Vmsa.from_bytes(svsm_initial_vmsa(0x7F3000, 0x00A00F11).to_bytes())
    expected = {
        "efer": 0x1000, "cr4": 0x40, "cr0": 0x11, "dr7": 0x400, "dr6": 0xFFFF0FF0,
        "rflags": 0x2, "rip": 0x7F3000, "g_pat": DEFAULT_G_PAT, "rdx": 0x00A00F11,
        "sev_features": 0x1, "xcr0": 0x1, "mxcsr": 0x1F80, "x87_fcw": 0,
    }
    for name, value in expected.items():
        assert vmsa.registers[name] == value, name
    segments = {
        "cs": (8, 0xC9B, 0xFFFF_FFFF, 0),
        "es": (16, 0xC93, 0xFFFF_FFFF, 0), "ss": (16, 0xC93, 0xFFFF_FFFF, 0),
        "ds": (16, 0xC93, 0xFFFF_FFFF, 0), "fs": (16, 0xC93, 0xFFFF_FFFF, 0),
        "gs": (0, 0x93, 0xFFFF, 0), "gdtr": (0, 0, 0xFFFF, 0), "ldtr": (0, 0x82, 0xFFFF, 0),
        "idtr": (0, 0, 0xFFFF, 0), "tr": (0, 0x8B, 0xFFFF, 0),
    }
    for name, (selector, attrib, limit, base) in segments.items():
        segment = vmsa.segment(name)
        assert (segment.selector, segment.attrib, segment.limit, segment.base) == (
            selector, attrib, limit, base), name


# ---- the synthetic image --------------------------------------------------------------------
SECTIONS = (MetadataSection(0x1000, 0x1000, SectionType.SNP_SEC_MEM),)


def test_a_bare_image_is_its_seed_then_the_footer_table_and_the_reset_vector() -> None:
    data = build_svsm_image(0x2000, entry_offset=0x123, seed=b"bare")
    table = FooterTable((FooterEntry(SVSM_INFO_GUID, (0x123).to_bytes(4, "little")),)).to_bytes()
    body = hashlib.shake_256(b"bare").digest(0x2000)
    assert data[-FOOTER_GAP:] == RESET_VECTOR_TAIL
    assert data[-FOOTER_GAP - len(table) : -FOOTER_GAP] == table
    assert data[: -FOOTER_GAP - len(table)] == body[: -FOOTER_GAP - len(table)]
    assert build_svsm_image(0x2000, entry_offset=0x123) == build_svsm_image(
        0x2000, entry_offset=0x123, seed=b"cvm synthetic SVSM")


def test_an_image_with_sections_carries_its_metadata_and_its_offset() -> None:
    data = build_svsm_image(0x4000, entry_offset=0x1000, sections=SECTIONS, seed=b"s")
    metadata = SevMetadata(SECTIONS).to_bytes()
    info = FooterEntry(SVSM_INFO_GUID, (0x1000).to_bytes(4, "little"))
    size = FooterTable((FooterEntry(SEV_METADATA_GUID, bytes(4)), info)).size
    start = 0x4000 - FOOTER_GAP - size - len(metadata)
    assert data[start : start + len(metadata)] == metadata
    table = FooterTable((FooterEntry(SEV_METADATA_GUID, (0x4000 - start).to_bytes(4, "little")),
                         info)).to_bytes()
    assert data[-FOOTER_GAP - len(table) : -FOOTER_GAP] == table
    svsm = SvsmImage.parse(data, end_gpa=0x10000)
    assert svsm.sections == SECTIONS and svsm.entry_point == 0xC000 + 0x1000


@pytest.mark.parametrize("size", [0, -0x1000, 0x1800, 0x1001])
def test_an_image_size_off_a_page_multiple_is_refused(size: int) -> None:
    with pytest.raises(UsageError) as caught:
        build_svsm_image(size)
    assert str(caught.value) == f"SVSM image size {size:#x} must be a non-zero multiple of 4 KiB"


@pytest.mark.parametrize("offset", [-1, 0x2000])
def test_an_entry_offset_outside_the_image_is_refused(offset: int) -> None:
    assert build_svsm_image(0x2000, entry_offset=0x1FFF)
    with pytest.raises(UsageError) as caught:
        build_svsm_image(0x2000, entry_offset=offset)
    assert str(caught.value) == f"SVSM entry offset {offset:#x} is outside the image"


def test_an_image_too_small_for_its_metadata_is_refused() -> None:
    many = tuple(MetadataSection(0x1000 * i, 0x1000, SectionType.SNP_SEC_MEM)
                 for i in range(1, 400))
    with pytest.raises(UsageError) as caught:
        build_svsm_image(0x1000, sections=many)
    assert str(caught.value) == "SVSM image too small for its footer"


def test_the_entry_point_defaults_to_the_start_of_the_image() -> None:
    svsm = SvsmImage.parse(build_svsm_image(0x2000), end_gpa=0x9000)
    assert svsm.entry_point == svsm.gpa == 0x7000
