"""The OVMF footer table, SEV metadata, reset block and SEV areas, each check at its edge and
each refusal by its message: the host's launch and ``cvm measure`` read all of them from a
firmware file the user hands over."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.ovmf.footer_table import (
    FOOTER_GUID,
    SEV_HASH_TABLE_GUID,
    SEV_METADATA_GUID,
    SEV_SECRET_AREA_GUID,
    FooterEntry,
    FooterTable,
    table_size,
)
from cvm.formats.ovmf.image import FOUR_GIB, OvmfImage, build_image
from cvm.formats.ovmf.reset_block import SevEsResetBlock, published_reset_block
from cvm.formats.ovmf.sev_area import SevArea, published_area
from cvm.formats.ovmf.sev_metadata import (
    MetadataSection,
    SectionType,
    SevMetadata,
    descriptor_size,
)
from cvm.wire import Guid

A = Guid.parse("11111111-2222-3333-4444-555555555555")
B = Guid.parse("66666666-7777-8888-9999-aaaaaaaaaaaa")


def _refusal(call: Callable[[], object], kind: type[Exception] = FormatError) -> str:
    with pytest.raises(kind) as refused:
        call()
    assert type(refused.value) is kind
    return str(refused.value)


def _footer(size: int) -> bytes:
    return size.to_bytes(2, "little") + FOOTER_GUID.to_bytes()


# --- the footer table -----------------------------------------------------------------------

def test_the_table_layout() -> None:
    table = FooterTable((FooterEntry(A, b"ab"), FooterEntry(B, b"")))
    data = table.to_bytes()
    assert data == (b"ab" + (20).to_bytes(2, "little") + A.to_bytes()
                    + (18).to_bytes(2, "little") + B.to_bytes() + _footer(56))
    assert table.size == table_size(table.entries) == 56 == len(data)
    assert FooterTable.from_bytes(data) == table
    assert table.get(A) == b"ab" and table.get(B) == b"" and table.get(FOOTER_GUID) is None


def test_entry_and_table_size_limits() -> None:
    largest = FooterEntry(A, bytes(0xFFFF - 18))
    assert len(largest.to_bytes()) == 0xFFFF
    assert _refusal(lambda: FooterEntry(A, bytes(0xFFFF - 17)), UsageError) == (
        f"footer entry {A}: {0xFFFF - 17} bytes is too large")
    fits = FooterTable((FooterEntry(A, bytes(0xFFFF - 54)), FooterEntry(B, b"")))
    assert fits.size == 0xFFFF
    assert _refusal(lambda: FooterTable((FooterEntry(A, bytes(0xFFFF - 53)),
                                         FooterEntry(B, b""))), UsageError) == (
        "footer table: 65536 bytes is too large")


def test_a_table_names_each_guid_once_and_never_the_footer() -> None:
    assert _refusal(lambda: FooterTable((FooterEntry(A, b""), FooterEntry(A, b"x"))),
                    UsageError) == "footer table: an entry GUID appears twice"
    assert _refusal(lambda: FooterTable((FooterEntry(FOOTER_GUID, b""),)), UsageError) == (
        "footer table: the footer GUID cannot be an entry")
    twice = FooterEntry(A, b"").to_bytes() * 2
    assert _refusal(lambda: FooterTable.from_bytes(twice + _footer(54))) == (
        "OVMF footer table: footer table: an entry GUID appears twice")


def test_the_footer_header_is_checked() -> None:
    assert FooterTable.from_bytes(_footer(18)) == FooterTable(())
    assert _refusal(lambda: FooterTable.from_bytes(_footer(18)[1:])) == (
        "OVMF footer table: shorter than its footer header")
    assert _refusal(lambda: FooterTable.from_bytes((18).to_bytes(2, "little") + A.to_bytes())) == (
        "OVMF footer table: footer GUID not found")
    assert _refusal(lambda: FooterTable.from_bytes(_footer(19))) == (
        "OVMF footer table: footer says 0x13 bytes, got 0x12")


@pytest.mark.parametrize("stray", [1, 17])
def test_stray_bytes_before_an_entry_are_refused(stray: int) -> None:
    data = bytes(stray) + FooterEntry(A, b"").to_bytes() + _footer(36 + stray)
    assert _refusal(lambda: FooterTable.from_bytes(data)) == (
        f"OVMF footer table: {stray} stray bytes before an entry")


@pytest.mark.parametrize("size", [0, 17, 21])
def test_an_entry_size_outside_the_table_is_refused(size: int) -> None:
    data = b"ab" + size.to_bytes(2, "little") + A.to_bytes() + _footer(38)
    assert _refusal(lambda: FooterTable.from_bytes(data)) == (
        f"OVMF footer table: entry {A} has invalid size {size:#x}")


def _image_with_table(table: bytes, size: int = 0x1000) -> bytes:
    image = bytearray(size)
    end = size - 32
    image[end - len(table) : end] = table
    return bytes(image)


def test_locate_finds_the_table_32_bytes_before_the_end() -> None:
    table = FooterTable((FooterEntry(A, b"abc"),))
    assert FooterTable.locate(_image_with_table(table.to_bytes())) == table
    assert FooterTable.locate(bytes(0x1000)) is None
    assert FooterTable.locate(bytes(49)) is None
    exact = _image_with_table(table.to_bytes(), size=table.size + 32)  # the table from byte 0
    assert FooterTable.locate(exact) == table
    assert _refusal(lambda: FooterTable.locate(exact[1:])) == (
        f"OVMF footer table: footer size {table.size:#x} does not fit the image")
    for size, image_size in ((17, 0x1000), (0, 0x1000), (100, 99)):
        image = _image_with_table(_footer(size), image_size)
        assert _refusal(lambda image=image: FooterTable.locate(image)) == (
            f"OVMF footer table: footer size {size:#x} does not fit the image")


# --- the SEV metadata -----------------------------------------------------------------------

def _section(gpa: int, size: int, kind: int) -> bytes:
    return gpa.to_bytes(4, "little") + size.to_bytes(4, "little") + kind.to_bytes(4, "little")


def _descriptor(*sections: bytes, signature: bytes = b"ASEV", version: int = 1,
                size: int | None = None, count: int | None = None) -> bytes:
    total = 16 + 12 * len(sections) if size is None else size
    number = len(sections) if count is None else count
    return (signature + total.to_bytes(4, "little") + version.to_bytes(4, "little")
            + number.to_bytes(4, "little") + b"".join(sections))


def test_a_section_and_its_pages() -> None:
    section = MetadataSection.from_bytes(_section(0x800000, 0x3000, 3))
    assert section == MetadataSection(0x800000, 0x3000, SectionType.CPUID)
    assert list(section.pages) == [0x800000, 0x801000, 0x802000]
    assert section.to_bytes() == _section(0x800000, 0x3000, 3)
    assert [t.value for t in SectionType] == [1, 2, 3, 4, 0x10]


def test_section_refusals() -> None:
    assert _refusal(lambda: MetadataSection.from_bytes(_section(0, 0x1000, 5))) == (
        "SEV metadata: unknown section type 0x5")
    for gpa, size in ((0x800001, 0x1000), (0x800000, 0xFFF), (0x800800, 0x1800)):
        assert _refusal(lambda gpa=gpa, size=size: MetadataSection.from_bytes(
            _section(gpa, size, 1))) == (
            f"SEV metadata: section {gpa:#x}+{size:#x} is not page-aligned")
    assert MetadataSection(0xFFFFFFFF, 0xFFFFFFFF, SectionType.CPUID).gpa == 0xFFFFFFFF
    for gpa, size in ((1 << 32, 0), (-1, 0), (0, 1 << 32), (0, -1)):
        assert _refusal(lambda gpa=gpa, size=size: MetadataSection(
            gpa, size, SectionType.CPUID), UsageError) == (
            "SEV metadata section GPA and size are u32 values")


def test_the_descriptor_is_checked() -> None:
    two = (_section(0x800000, 0x1000, 1), _section(0x801000, 0x1000, 2))
    metadata = SevMetadata.from_bytes(_descriptor(*two))
    assert [s.type for s in metadata.sections] == [SectionType.SNP_SEC_MEM,
                                                   SectionType.SNP_SECRETS]
    assert metadata.size == descriptor_size(2) == 40
    assert metadata.to_bytes() == _descriptor(*two)
    assert metadata.has(SectionType.SNP_SECRETS) and not metadata.has(SectionType.CPUID)
    assert SevMetadata.parse(_descriptor(*two) + b"more") == metadata
    assert _refusal(lambda: SevMetadata.from_bytes(_descriptor(*two) + b"more")) == (
        "SEV metadata: 4 trailing bytes")
    assert _refusal(lambda: SevMetadata.parse(_descriptor(*two, signature=b"ASEW"))) == (
        "SEV metadata: signature is not 'ASEV'")
    assert _refusal(lambda: SevMetadata.parse(_descriptor(*two, version=2))) == (
        "SEV metadata: unsupported version 2")
    assert _refusal(lambda: SevMetadata.parse(_descriptor(*two, size=41))) == (
        "SEV metadata: size 0x29 does not match 2 sections")
    assert _refusal(lambda: SevMetadata.parse(_descriptor(*two, count=3))) == (
        "SEV metadata: size 0x28 does not match 3 sections")
    assert _refusal(lambda: SevMetadata.parse(_descriptor(*two)[:-1])) == (
        "SEV metadata: needs 0x28 bytes, 0x27 available")


def test_locate_reads_the_descriptor_at_its_offset_from_the_end() -> None:
    descriptor = _descriptor(_section(0x800000, 0x1000, 1))
    image = bytes(100) + descriptor + bytes(50)
    offset = len(descriptor) + 50
    assert SevMetadata.locate(image, offset.to_bytes(4, "little")).sections[0].gpa == 0x800000
    whole = descriptor + bytes(50)
    located = SevMetadata.locate(whole, len(whole).to_bytes(4, "little"))
    assert located.sections[0].gpa == 0x800000
    short = _descriptor()
    assert SevMetadata.locate(short, (16).to_bytes(4, "little")) == SevMetadata(())
    for entry in (bytes(3), bytes(5)):
        assert _refusal(lambda entry=entry: SevMetadata.locate(image, entry)) == (
            f"SEV metadata entry: expected 4 bytes, got {len(entry)}")
    for bad in (15, len(whole) + 1):
        assert _refusal(lambda bad=bad: SevMetadata.locate(whole, bad.to_bytes(4, "little"))) == (
            f"SEV metadata offset {bad:#x} is outside the image")


# --- the reset block and the areas ----------------------------------------------------------

def test_the_reset_block() -> None:
    block = SevEsResetBlock.from_bytes((0x0080B004).to_bytes(4, "little"))
    assert (block.eip, block.cs_base, block.ip) == (0x0080B004, 0x00800000, 0xB004)
    assert block.to_bytes() == (0x0080B004).to_bytes(4, "little")
    for data in (bytes(3), bytes(5)):
        assert _refusal(lambda data=data: SevEsResetBlock.from_bytes(data)) == (
            f"SEV-ES reset block: expected 4 bytes, got {len(data)}")
    assert SevEsResetBlock(0xFFFFFFFF).ip == 0xFFFF
    for eip in (1 << 32, -1):
        assert _refusal(lambda eip=eip: SevEsResetBlock(eip), UsageError) == (
            f"AP reset EIP {eip:#x} is not a u32")
    assert published_reset_block(None) is None
    assert published_reset_block(bytes(4)) == SevEsResetBlock(0)


def test_an_area_is_published_when_its_gpa_is_not_zero() -> None:
    area = SevArea.from_bytes((0x80A000).to_bytes(4, "little") + (0x1000).to_bytes(4, "little"))
    assert area == SevArea(0x80A000, 0x1000) and area.present
    assert area.to_bytes() == (0x80A000).to_bytes(4, "little") + (0x1000).to_bytes(4, "little")
    assert published_area(area.to_bytes()) == area
    assert published_area(SevArea(0, 0x1000).to_bytes()) is None
    assert published_area(SevArea(1, 0).to_bytes()) == SevArea(1, 0)
    assert published_area(None) is None
    assert not SevArea(0, 5).present
    assert SevArea(0xFFFFFFFF, 0xFFFFFFFF).size == 0xFFFFFFFF
    for gpa, size in ((1 << 32, 0), (-1, 0), (0, 1 << 32), (0, -1)):
        assert _refusal(lambda gpa=gpa, size=size: SevArea(gpa, size), UsageError) == (
            "SEV area GPA and size are u32 values")


# --- the image ------------------------------------------------------------------------------

def test_the_image_maps_below_4_gib_and_reads_its_entries() -> None:
    sections = [MetadataSection(0x800000, 0x2000, SectionType.SNP_SEC_MEM)]
    data = build_image(0x4000, sections=sections, sev_hash_table=SevArea(0x80A000, 0x400),
                       reset_eip=0x0080B004)
    image = OvmfImage.parse(data)
    assert (image.gpa, image.size) == (FOUR_GIB - 0x4000, 0x4000)
    assert image.sections == tuple(sections) and image.has_section(SectionType.SNP_SEC_MEM)
    assert not image.has_section(SectionType.CPUID)
    assert image.sev_hash_table == SevArea(0x80A000, 0x400)
    assert image.sev_secret_area is None
    assert image.reset_block == SevEsResetBlock(0x0080B004)
    pages = image.pages()
    assert [gpa for gpa, _ in pages] == [FOUR_GIB - 0x4000 + n * 0x1000 for n in range(4)]
    assert b"".join(page for _, page in pages) == data
    assert image.footer is not None and image.footer.get(SEV_METADATA_GUID) is not None
    bare = OvmfImage.parse(build_image(0x1000, reset_eip=None))
    assert (bare.reset_block, bare.sections, bare.metadata) == (None, (), None)
    secret = OvmfImage.parse(build_image(0x1000, sev_secret_area=SevArea(0x80B000, 0x1000)))
    assert secret.sev_secret_area == SevArea(0x80B000, 0x1000)
    assert secret.footer is not None and secret.footer.get(SEV_HASH_TABLE_GUID) == bytes(8)
    assert secret.footer.get(SEV_SECRET_AREA_GUID) == SevArea(0x80B000, 0x1000).to_bytes()


@pytest.mark.parametrize("size", [0, 0x800, 0x1001])
def test_an_image_is_whole_pages(size: int) -> None:
    assert _refusal(lambda: OvmfImage.parse(bytes(size))) == (
        f"OVMF image: size {size:#x} is not a non-zero multiple of 4 KiB below 4 GiB")
    assert _refusal(lambda: build_image(size), UsageError) == (
        f"OVMF image size {size:#x} must be a multiple of 4 KiB below 4 GiB")


def test_a_bad_optional_entry_is_refused_when_the_image_is_parsed() -> None:
    table = FooterTable((FooterEntry(Guid.parse("00f771de-1a7e-4fcb-890e-68c77e2fb44e"),
                                     bytes(3)),)).to_bytes()
    assert _refusal(lambda: OvmfImage.parse(_image_with_table(table))) == (
        "SEV-ES reset block: expected 4 bytes, got 3")
    table = FooterTable((FooterEntry(SEV_HASH_TABLE_GUID, bytes(7)),)).to_bytes()
    with pytest.raises(FormatError):
        OvmfImage.parse(_image_with_table(table))
    table = FooterTable((FooterEntry(SEV_SECRET_AREA_GUID, bytes(9)),)).to_bytes()
    with pytest.raises(FormatError):
        OvmfImage.parse(_image_with_table(table))


# --- what the first mutation run asked for --------------------------------------------------

def test_sizes_of_256_bytes_and_more_use_both_bytes_of_the_size_field() -> None:
    table = FooterTable((FooterEntry(A, bytes(300)), FooterEntry(B, b"b")))
    assert table.size == 18 + 318 + 19
    assert FooterTable.from_bytes(table.to_bytes()) == table


def test_a_table_may_start_at_the_first_byte_of_a_50_byte_image() -> None:
    assert FooterTable.locate(_footer(18) + bytes(32)) == FooterTable(())


def test_the_synthetic_image_layout() -> None:
    import hashlib

    data = build_image(0x1000, reset_eip=None)
    table_start = 0x1000 - 32 - (18 + 26 * 2)
    filler = hashlib.shake_256(b"cvm synthetic OVMF").digest(0x1000)
    assert data[:table_start] == filler[:table_start]  # no payload, no metadata
    image = OvmfImage.parse(data)
    assert image.footer is not None
    assert image.footer.get(SEV_SECRET_AREA_GUID) == bytes(8)
    sections = [MetadataSection(0x800000, 0x1000, SectionType.SNP_SEC_MEM)]
    with_metadata = build_image(0x1000, sections=sections)
    table = FooterTable.locate(with_metadata)
    assert table is not None
    end = 0x1000 - 32 - table.size  # the descriptor ends where the table begins
    assert with_metadata[end - 28 : end] == SevMetadata(tuple(sections)).to_bytes()
    assert table.get(SEV_METADATA_GUID) == (0x1000 - end + 28).to_bytes(4, "little")


def test_the_payload_must_leave_room_for_the_footer() -> None:
    room = 0x1000 - 32 - (18 + 26 * 2 + 22)
    assert build_image(0x1000, payload=b"p" * room)[:room] == b"p" * room
    assert _refusal(lambda: build_image(0x1000, payload=b"p" * (room + 1)), UsageError) == (
        "OVMF image too small for its payload and footer")
