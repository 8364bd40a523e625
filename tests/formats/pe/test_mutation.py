"""Mutated PE files give only the project's FormatError, never another exception."""

from __future__ import annotations

import contextlib
import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.pe.authenticode import digest_of
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.certificate_table import WinCertificate, certificate_table_bytes
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.sbat import SbatSection


@functools.cache
def _signed_like_image() -> bytes:
    """A small image with a certificate table appended (contents need not verify)."""
    body = bytearray(build_pe([SectionSpec(".text", b"\x90" * 512, CODE),
                               SectionSpec(".sbat", b"sbat,1,a,b,c,d\n")]))
    table = certificate_table_bytes([WinCertificate(b"\x30\x03\x02\x01\x01"),
                                     WinCertificate(b"\x30" * 11)])
    directory = PeImage.parse(bytes(body)).certificate_directory_offset
    assert directory is not None
    body[directory : directory + 8] = (len(body).to_bytes(4, "little")
                                       + len(table).to_bytes(4, "little"))
    return bytes(body) + table


def _exercise(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        image = PeImage.parse(data)
        for alg in ("sha256", "sha1"):
            digest_of(image, alg)
            digest_of(image, alg, "shim")
        if image.sbat:
            SbatSection.parse(image.sbat)
        for entry in image.certificates:
            _ = entry.pkcs7


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_flipped_bytes(data: st.DataObject) -> None:
    original = _signed_like_image()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, min(len(mutated) - 1, 0x400)))
        mutated[position] = data.draw(st.integers(0, 255))
    _exercise(bytes(mutated))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutations_anywhere(data: st.DataObject) -> None:
    original = _signed_like_image()
    mutated = bytearray(original)
    position = data.draw(st.integers(0, len(mutated) - 1))
    mutated[position : position + 4] = data.draw(st.binary(min_size=4, max_size=4))
    cut = data.draw(st.integers(0, len(mutated)))
    _exercise(bytes(mutated[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes(blob: bytes) -> None:
    _exercise(b"MZ" + blob)
