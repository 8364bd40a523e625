"""The LUKS2 binary header and header copy (spec v1.1.4 sections 2.1-2.2): each refusal with
its exact message, and the checksum computed independently of the module under test."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.luks2.binary_header import BinaryHeader
from cvm.formats.luks2.header_copy import HeaderCopy, header_checksum
from cvm.formats.luks2.metadata import Config, Digest, Keyslot, Metadata, Pbkdf2Kdf, Segment

UUID = "12345678-1234-1234-1234-123456789abc"
GOOD = BinaryHeader(False, 0x4000, 1, "label", "sha256", bytes(64), UUID, "sub", 0, bytes(64))


def _message(error: pytest.ExceptionInfo[Exception]) -> str:
    return str(error.value)


@pytest.mark.parametrize(("field", "offset", "size"), [
    ("label", 0x18, 48), ("csum_alg", 0x48, 32), ("uuid", 0xA8, 40), ("subsystem", 0xD0, 48),
])
def test_text_fields_are_named_when_malformed(field: str, offset: int, size: int) -> None:
    data = bytearray(GOOD.to_bytes())
    cases = {
        "is not NUL-terminated": b"a" * size,
        "has bytes after its terminator": b"a\0b".ljust(size, b"\0"),
        "is not ASCII": b"\xe9".ljust(size, b"\0"),
    }
    for problem, value in cases.items():
        data[offset : offset + size] = value
        with pytest.raises(FormatError) as raised:
            BinaryHeader.from_bytes(bytes(data))
        assert _message(raised) == f"LUKS2 binary header: {field} {problem}"


@pytest.mark.parametrize(("field", "size"), [("label", 48), ("uuid", 40), ("subsystem", 48)])
def test_text_fields_that_cannot_be_written_are_usage_errors(field: str, size: int) -> None:
    for text in ("é", "a\0b", "x" * 48 if field != "uuid" else "\0"):
        header = dataclasses.replace(GOOD, **{field: text})
        with pytest.raises(UsageError) as raised:
            header.to_bytes()
        assert _message(raised) == (f"LUKS2 {field} {text!r} must be ASCII and shorter than "
                                    f"{size} bytes")
    longest = "x" * (size - 1) if field != "uuid" else "x" * 36
    written = BinaryHeader.from_bytes(dataclasses.replace(GOOD, **{field: longest}).to_bytes())
    assert getattr(written, field) == longest


def test_binary_header_fields_that_cannot_be_written() -> None:
    with pytest.raises(UsageError) as raised:
        dataclasses.replace(GOOD, csum_alg="md5").to_bytes()
    assert _message(raised) == "unsupported LUKS2 checksum 'md5'"
    for csum in (bytes(63), bytes(65), bytes(32) + b"\1" + bytes(31)):
        with pytest.raises(UsageError) as raised:
            dataclasses.replace(GOOD, csum=csum).to_bytes()
        assert _message(raised) == "LUKS2 checksum field must be 64 bytes, zero past the digest"
    sha512 = dataclasses.replace(GOOD, csum_alg="sha512", csum=b"\1" * 64)
    assert BinaryHeader.from_bytes(sha512.to_bytes()) == sha512
    with pytest.raises(UsageError) as raised:
        dataclasses.replace(GOOD, uuid="x" * 37).to_bytes()
    assert _message(raised) == "LUKS2 uuid must be at most 36 characters"


def _metadata(json_size: int = 12288) -> Metadata:
    return Metadata(
        {0: Keyslot(64, 0x8000, 258048, Pbkdf2Kdf("sha256", 1000, bytes(range(32))))},
        {0: Segment(16 << 20, None)},
        {0: Digest((0,), (0,), "sha256", 1000, bytes(32), bytes(32))},
        Config(json_size, (16 << 20) - 0x8000),
    )


def test_the_checksum_is_the_hash_of_the_area_with_its_field_zeroed() -> None:
    """Computed here from the specification alone: ``csum_alg`` over the whole header area with
    the 64 bytes at 0x1C0 zeroed, the digest left-aligned and zero-padded to 64 bytes."""
    for alg in ("sha256", "sha512", "sha1"):
        binary = dataclasses.replace(GOOD, csum_alg=alg)
        sealed = HeaderCopy(binary, _metadata()).to_bytes()
        zeroed = sealed[:0x1C0] + bytes(64) + sealed[0x200:]
        digest = hashlib.new(alg, zeroed).digest()
        assert sealed[0x1C0 : 0x200] == digest.ljust(64, b"\0")
        assert header_checksum(sealed, alg) == digest.ljust(64, b"\0")
        assert HeaderCopy.parse(sealed).binary.csum == digest.ljust(64, b"\0")


def test_header_copy_sizes_are_named() -> None:
    sealed = HeaderCopy(GOOD, _metadata()).to_bytes()
    with pytest.raises(FormatError) as raised:
        HeaderCopy.parse(sealed[:100])
    assert _message(raised) == "LUKS2 header: 100 bytes, need at least 4096"
    with pytest.raises(FormatError) as raised:
        HeaderCopy.parse(sealed[:4096])
    assert _message(raised) == "LUKS2 header: area of 4096 bytes, binary header says 16384"
    with pytest.raises(FormatError) as raised:
        HeaderCopy(dataclasses.replace(GOOD, hdr_size=0x8000), _metadata()).to_bytes()
    assert _message(raised) == "LUKS2 header: json_size 12288 does not match hdr_size 32768"


def test_a_json_size_that_disagrees_with_the_binary_header_is_refused() -> None:
    """A 32 KiB copy whose JSON still says 12288 bytes (sealed with a valid checksum)."""
    binary = dataclasses.replace(GOOD, hdr_size=0x8000)
    text = json.dumps(_metadata().to_json(), separators=(",", ":")).encode()
    area = binary.to_bytes() + text.ljust(0x8000 - 0x1000, b"\0")
    sealed = area[:0x1C0] + header_checksum(area, "sha256") + area[0x200:]
    with pytest.raises(FormatError) as raised:
        HeaderCopy.parse(sealed)
    assert _message(raised) == ("LUKS2 header: config.json_size 12288 does not match "
                                "hdr_size 32768")


def test_binary_header_refusals_are_named() -> None:
    with pytest.raises(FormatError) as raised:
        BinaryHeader.from_bytes(dataclasses.replace(GOOD, hdr_offset=0x4000).to_bytes())
    assert _message(raised) == ("LUKS2 binary header: hdr_offset 16384 does not match the "
                                "primary copy")
    secondary = dataclasses.replace(GOOD, secondary=True, hdr_offset=0x4000)
    assert BinaryHeader.from_bytes(secondary.to_bytes()) == secondary
    with pytest.raises(FormatError) as raised:
        BinaryHeader.from_bytes(dataclasses.replace(secondary, hdr_offset=0).to_bytes())
    assert _message(raised) == ("LUKS2 binary header: hdr_offset 0 does not match the "
                                "secondary copy")
    data = bytearray(GOOD.to_bytes())
    data[0x48 : 0x48 + 32] = b"md5".ljust(32, b"\0")
    with pytest.raises(FormatError) as raised:
        BinaryHeader.from_bytes(bytes(data))
    assert _message(raised) == "LUKS2 binary header: unsupported checksum 'md5'"
    data = bytearray(GOOD.to_bytes())
    data[0x1C0 + 32] = 1
    with pytest.raises(FormatError) as raised:
        BinaryHeader.from_bytes(bytes(data))
    assert _message(raised) == "LUKS2 binary header: checksum field has bytes past the digest"
    data = bytearray(GOOD.to_bytes())
    data[0xA8 : 0xA8 + 40] = (UUID + "abc").encode().ljust(40, b"\0")
    with pytest.raises(FormatError) as raised:
        BinaryHeader.from_bytes(bytes(data))
    assert _message(raised) == "LUKS2 binary header: uuid longer than 36 characters"
