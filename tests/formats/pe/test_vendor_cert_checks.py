"""shim's ``.vendor_cert`` section (rhboot/shim ``cert_table``): four u32 — the sizes, then the
offsets from the section's start — each part inside the section after the header, an empty part
wherever its offset points, and the layout cvm writes."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.pe.vendor_cert import VendorCertSection


def _header(authorized: tuple[int, int], deauthorized: tuple[int, int]) -> bytes:
    """(offset, size) of each part, in the section's field order: both sizes, both offsets."""
    fields = (authorized[1], deauthorized[1], authorized[0], deauthorized[0])
    return b"".join(value.to_bytes(4, "little") for value in fields)


def test_the_layout_cvm_writes() -> None:
    section = VendorCertSection(b"CERT", b"DBX--")
    data = section.to_bytes()
    assert data == _header((16, 4), (20, 5)) + b"CERT" + b"DBX--"
    assert VendorCertSection.parse(data) == section
    assert VendorCertSection(b"", b"").to_bytes() == _header((16, 0), (16, 0))


def test_a_header_alone_is_two_empty_parts() -> None:
    assert VendorCertSection.parse(_header((16, 0), (16, 0))) == VendorCertSection(b"", b"")
    assert VendorCertSection.parse(_header((0, 0), (0xFFFF_FFFF, 0))) == VendorCertSection(
        b"", b"")


def test_parts_are_read_where_the_offsets_say_in_any_order() -> None:
    data = _header((20, 3), (16, 4)) + b"dbx!" + b"crt"
    assert VendorCertSection.parse(data) == VendorCertSection(b"crt", b"dbx!")
    assert VendorCertSection.parse(data + b"padding").authorized == b"crt"


def test_a_section_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        VendorCertSection.parse(bytes(15))
    assert str(caught.value) == ".vendor_cert: 15 bytes, header needs 16"


@pytest.mark.parametrize(("authorized", "deauthorized", "message"), [
    ((15, 2), (16, 0), "vendor_authorized 0xf+0x2 outside the section"),
    ((16, 6), (16, 0), "vendor_authorized 0x10+0x6 outside the section"),
    ((16, 0), (0, 1), "vendor_deauthorized 0x0+0x1 outside the section"),
    ((16, 5), (20, 2), "vendor_deauthorized 0x14+0x2 outside the section"),
])
def test_a_part_outside_the_section_is_refused(authorized: tuple[int, int],
                                               deauthorized: tuple[int, int],
                                               message: str) -> None:
    with pytest.raises(FormatError) as caught:
        VendorCertSection.parse(_header(authorized, deauthorized) + b"12345")
    assert str(caught.value) == f".vendor_cert: {message}"
