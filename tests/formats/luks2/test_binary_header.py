"""LUKS2 binary header (spec v1.1.4 section 2.1): round trips, strictness, random bytes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.binary_header import (
    BINARY_HEADER_SIZE,
    HEADER_SIZES,
    PRIMARY_MAGIC,
    BinaryHeader,
)

_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=47)


@st.composite
def headers(draw: st.DrawFn) -> BinaryHeader:
    secondary = draw(st.booleans())
    size = draw(st.sampled_from(HEADER_SIZES))
    alg = draw(st.sampled_from(["sha256", "sha512", "sha1"]))
    digest_len = {"sha256": 32, "sha512": 64, "sha1": 20}[alg]
    return BinaryHeader(
        secondary=secondary, hdr_size=size, seqid=draw(st.integers(0, 2**64 - 1)),
        label=draw(_text), csum_alg=alg, salt=draw(st.binary(min_size=64, max_size=64)),
        uuid=draw(st.uuids()).__str__(), subsystem=draw(_text),
        hdr_offset=size if secondary else 0,
        csum=draw(st.binary(min_size=digest_len, max_size=digest_len)).ljust(64, b"\0"),
    )


@settings(deadline=None)
@given(headers())
def test_round_trip(header: BinaryHeader) -> None:
    data = header.to_bytes()
    assert len(data) == BINARY_HEADER_SIZE
    assert BinaryHeader.from_bytes(data) == header
    assert BinaryHeader.from_bytes(data).to_bytes() == data


@settings(deadline=None)
@given(st.sampled_from([b"", PRIMARY_MAGIC, b"SKUL\xba\xbe\x00\x02"]), st.binary(max_size=600))
def test_random_bytes_raise_only_format_error(prefix: bytes, body: bytes) -> None:
    data = (prefix + body).ljust(BINARY_HEADER_SIZE, b"\0")[:BINARY_HEADER_SIZE]
    try:
        header = BinaryHeader.from_bytes(data)
    except FormatError:
        return
    assert header.to_bytes() == data


@settings(deadline=None)
@given(headers(), st.integers(0, 511), st.integers(1, 255))
def test_mutations_give_format_error_or_a_header(header: BinaryHeader, pos: int, bit: int) -> None:
    data = bytearray(header.to_bytes())
    data[pos] ^= bit
    try:
        parsed = BinaryHeader.from_bytes(bytes(data))
    except FormatError:
        return
    assert parsed.to_bytes() == bytes(data)


def test_rejects_bad_magic_version_size_and_offset() -> None:
    good = BinaryHeader(False, 0x4000, 1, "l", "sha256", bytes(64), "u", "", 0, bytes(64))
    data = good.to_bytes()
    with pytest.raises(FormatError, match="magic"):
        BinaryHeader.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(FormatError, match="version"):
        BinaryHeader.from_bytes(data[:6] + b"\0\1" + data[8:])
    with pytest.raises(FormatError, match="hdr_size"):
        BinaryHeader.from_bytes(dataclasses.replace(good, hdr_size=0x5000).to_bytes())
    with pytest.raises(FormatError, match="hdr_offset"):
        BinaryHeader.from_bytes(dataclasses.replace(good, hdr_offset=0x4000).to_bytes())
    with pytest.raises(FormatError):
        BinaryHeader.from_bytes(data[:-1])
    assert data.startswith(PRIMARY_MAGIC)


def test_label_too_long_is_a_usage_error() -> None:
    header = BinaryHeader(False, 0x4000, 1, "x" * 48, "sha256", bytes(64), "u", "", 0, bytes(64))
    with pytest.raises(UsageError):
        header.to_bytes()
