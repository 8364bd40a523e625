"""The Authenticode image hash: the exact ranges hashed, per variant, and every refusal.

A digest alone cannot tell two layouts apart when they hash the same bytes in the same order
(sections hashed as "trailing data", an empty range), so these tests state the ranges of
``hashed_layout`` exactly, as edk2 ``HashPeImage`` and shim ``generate_hash`` walk them: the
headers without CheckSum and data directory 4, each section with raw data in file order, then
what lies between the sections and the certificate table. Found by the mutation run of
docs/mutation/crypto.md.
"""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.pe.authenticode import digest_of, hashed_layout, image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.certificate_table import WinCertificate, certificate_table_bytes
from cvm.formats.pe.image import PeImage

TABLE = certificate_table_bytes([WinCertificate(b"signature bytes!")])  # 24 bytes


def _image(trailer: bytes = b"", sections: tuple[SectionSpec, ...] = ()) -> bytes:
    return build_pe(sections or (SectionSpec(".text", b"\x55" * 700, CODE),
                                 SectionSpec(".data", b"d" * 5)), trailer=trailer)


def _with_table(data: bytes, offset: int, table: bytes = TABLE) -> bytes:
    """``data`` with ``table`` written at ``offset`` and data directory 4 pointing at it."""
    out = bytearray(data)
    out[offset : offset + len(table)] = table
    directory = PeImage.parse(data).certificate_directory_offset
    assert directory is not None
    out[directory : directory + 8] = offset.to_bytes(4, "little") + len(table).to_bytes(4, "little")
    return bytes(out)


def _head(image: PeImage) -> list[tuple[int, int]]:
    checksum, directory = image.checksum_offset, image.certificate_directory_offset
    assert directory is not None
    return [(0, checksum), (checksum + 4, directory), (directory + 8, image.size_of_headers)]


def _sections(image: PeImage) -> list[tuple[int, int]]:
    return [(s.pointer_to_raw_data, s.pointer_to_raw_data + s.size_of_raw_data)
            for s in sorted(image.sections, key=lambda s: s.pointer_to_raw_data)
            if s.size_of_raw_data]


def _hashed(image: PeImage) -> int:
    return image.size_of_headers + sum(s.size_of_raw_data for s in image.sections)


@pytest.mark.parametrize("variant", ["edk2", "shim"])
def test_an_unsigned_image_with_trailing_data(variant: str) -> None:
    data = _image(trailer=b"T" * 24)
    image = PeImage.parse(data)
    layout = hashed_layout(image, variant)  # type: ignore[arg-type]
    assert layout.ranges == (*_head(image), *_sections(image), (_hashed(image), len(data)))
    assert layout.padding == 0
    checksum = image.checksum_offset
    assert layout.covers(0) and layout.covers(checksum - 1) and layout.covers(checksum + 4)
    assert not any(layout.covers(checksum + i) for i in range(4))
    assert layout.covers(len(data) - 1) and not layout.covers(len(data))


@pytest.mark.parametrize("variant", ["edk2", "shim"])
@pytest.mark.parametrize("trailer", [b"", b"S" * 16])
def test_a_signed_image_hashes_up_to_its_certificate_table(variant: str, trailer: bytes) -> None:
    unsigned = _image(trailer=trailer)
    data = _with_table(unsigned, len(unsigned))
    image = PeImage.parse(data)
    layout = hashed_layout(image, variant)  # type: ignore[arg-type]
    rest = [(_hashed(image), len(unsigned))] if trailer else []
    assert layout.ranges == (*_head(image), *_sections(image), *rest)
    assert layout.padding == 0
    assert image_digest(data, variant=variant) == image_digest(  # type: ignore[arg-type]
        _with_table(unsigned, len(unsigned), certificate_table_bytes([WinCertificate(b"x" * 16)])),
        variant=variant)  # type: ignore[arg-type]


def test_a_table_inside_the_sections_exceeds_the_file_for_edk2_only() -> None:
    """edk2 compares the hashed size plus the table with the file size; shim, when nothing
    follows the sections, does not look at the table at all."""
    unsigned = _image()
    image = PeImage.parse(unsigned)
    data = _with_table(unsigned, len(unsigned) - len(TABLE))
    hashed = _hashed(image)
    with pytest.raises(FormatError, match=rf"^Authenticode: sections and headers \({hashed:#x} "
                                          rf"bytes\) and certificate table \(0x18\) exceed the "
                                          rf"file \({len(data):#x}\)$"):
        hashed_layout(PeImage.parse(data), "edk2")
    layout = hashed_layout(PeImage.parse(data), "shim")
    assert layout.ranges == (*_head(image), *_sections(image)) and layout.padding == 0


def test_a_table_reaching_back_into_the_sections_is_refused_by_both() -> None:
    unsigned = _image(trailer=b"S" * 16)
    hashed = _hashed(PeImage.parse(unsigned))
    data = _with_table(unsigned, hashed - 8)
    assert len(data) == hashed + 16
    with pytest.raises(FormatError, match=r"^Authenticode: sections and headers"):
        hashed_layout(PeImage.parse(data), "edk2")
    with pytest.raises(FormatError, match=r"^Authenticode \(shim\): malformed binary after the "
                                          r"attribute certificate table$"):
        hashed_layout(PeImage.parse(data), "shim")


def test_without_a_directory_4_the_headers_are_hashed_whole_but_the_checksum() -> None:
    data = bytearray(_image(trailer=b"T" * 8))
    image = PeImage.parse(bytes(data))
    count = image.optional_header_offset + 0x6C  # NumberOfRvaAndSizes (PE32+)
    data[count : count + 4] = (4).to_bytes(4, "little")
    image = PeImage.parse(bytes(data))
    assert image.certificate_directory_offset is None
    checksum = image.checksum_offset
    for variant in ("edk2", "shim"):
        layout = hashed_layout(image, variant)  # type: ignore[arg-type]
        assert layout.ranges == ((0, checksum), (checksum + 4, image.size_of_headers),
                                 *_sections(image), (_hashed(image), len(data)))


def test_sections_without_raw_data_are_skipped_not_the_ones_after_them() -> None:
    data = _image(sections=(SectionSpec(".bss", b""), SectionSpec(".text", b"\x55" * 700, CODE),
                            SectionSpec(".data", b"d" * 5)))
    image = PeImage.parse(data)
    assert image.sections[0].size_of_raw_data == 0
    text, data_section = image.sections[1], image.sections[2]
    layout = hashed_layout(image)
    assert layout.ranges == (
        *_head(image),
        (text.pointer_to_raw_data, text.pointer_to_raw_data + text.size_of_raw_data),
        (data_section.pointer_to_raw_data,
         data_section.pointer_to_raw_data + data_section.size_of_raw_data),
    )


def test_shim_pads_only_what_follows_the_sections() -> None:
    """An unsigned image that ends exactly where its sections end is hashed as it is, even when
    its length is not a multiple of 8 (shim pads only trailing data)."""
    data = bytearray(_image())
    image = PeImage.parse(bytes(data))
    last = image.sections[-1]
    field = last.header_offset + 16  # SizeOfRawData
    data[field : field + 4] = (last.size_of_raw_data - 3).to_bytes(4, "little")
    data = data[:-3]
    image = PeImage.parse(bytes(data))
    assert len(data) == _hashed(image) and len(data) % 8 == 5
    layout = hashed_layout(image, "shim")
    assert layout.ranges == (*_head(image), *_sections(image)) and layout.padding == 0


def test_a_parsed_image_is_hashed_as_its_bytes() -> None:
    data = _image(trailer=b"T")
    assert image_digest(PeImage.parse(data)) == image_digest(data)  # type: ignore[arg-type]


def test_unknown_hashes_and_variants_are_usage_errors_naming_the_choices() -> None:
    image = PeImage.parse(_image())
    message = r"^unknown hash algorithm 'md5': use one of sha1, sha256, sha384, sha512$"
    with pytest.raises(UsageError, match=message):
        image_digest(_image(), "md5")
    with pytest.raises(UsageError, match=message):
        digest_of(image, "md5")
    with pytest.raises(UsageError, match=r"^unknown Authenticode variant 'other': use edk2 or "
                                         r"shim$"):
        hashed_layout(image, "other")  # type: ignore[arg-type]


def test_a_one_byte_section_is_hashed_as_a_section() -> None:
    """edk2 walks the section table by SizeOfRawData, not by what lies in the file: a one-byte
    first section is hashed, then the next section, then everything from headers + the raw
    sizes (here inside the gap the section's padding left) to the end."""
    data = bytearray(_image())
    image = PeImage.parse(bytes(data))
    first = image.sections[0]
    field = first.header_offset + 16  # SizeOfRawData
    data[field : field + 4] = (1).to_bytes(4, "little")
    image = PeImage.parse(bytes(data))
    second = image.sections[1]
    hashed = image.size_of_headers + 1 + second.size_of_raw_data
    assert hashed_layout(image).ranges == (
        *_head(image),
        (first.pointer_to_raw_data, first.pointer_to_raw_data + 1),
        (second.pointer_to_raw_data, second.pointer_to_raw_data + second.size_of_raw_data),
        (hashed, len(data)),
    )
