"""Appending sections to a PE image (how a UKI is made from systemd's stub)."""

from __future__ import annotations

import pytest

from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate
from cvm.errors import UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.section_append import append_sections
from cvm.image.signing import sign_pe


def _stub() -> bytes:
    return build_pe([SectionSpec(".text", b"\x90" * 300 + b"\xc3", CODE)])


def test_appended_sections_read_back_where_the_loader_expects_them() -> None:
    stub = _stub()
    parts = [(".cmdline", b"quiet"), (".linux", b"K" * 5000), (".initrd", b"I" * 700)]
    uki = PeImage.parse(append_sections(stub, parts))
    assert [s.name for s in uki.sections] == [".text", *(n for n, _ in parts)]
    for name, contents in parts:
        section = uki.section(name)
        assert section is not None and section.loaded_data == contents
    previous_end = 0
    for section in uki.sections:
        assert section.virtual_address >= previous_end
        assert section.virtual_address % uki.optional["section_alignment"] == 0
        assert section.pointer_to_raw_data % uki.optional["file_alignment"] == 0
        previous_end = section.virtual_address + section.virtual_size
    last = uki.sections[-1]
    assert uki.optional["size_of_image"] >= last.virtual_address + last.virtual_size
    assert image_digest(uki.to_bytes()) != image_digest(stub)


def test_a_signed_image_is_refused() -> None:
    key = generate_rsa_key()
    signed = sign_pe(_stub(), key, issue_certificate("cvm test", key))
    with pytest.raises(UsageError, match="signed"):
        append_sections(signed, [(".osrel", b"x")])


def test_no_room_for_more_headers_is_refused() -> None:
    with pytest.raises(UsageError, match="no room"):
        append_sections(_stub(), [(f".s{i}", b"x") for i in range(4)])


@pytest.mark.parametrize("name", ["", ".toolongname"])
def test_bad_section_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="section name"):
        append_sections(_stub(), [(name, b"x")])
