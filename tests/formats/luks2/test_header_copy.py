"""A sealed LUKS2 header copy: checksum over binary header + JSON (spec section 2.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import CvmError, FormatError, IntegrityError
from cvm.formats.luks2.binary_header import BinaryHeader
from cvm.formats.luks2.header_copy import HeaderCopy
from cvm.formats.luks2.metadata import Config, Digest, Keyslot, Metadata, Pbkdf2Kdf, Segment


def _copy() -> HeaderCopy:
    meta = Metadata(
        {0: Keyslot(64, 0x8000, 258048, Pbkdf2Kdf("sha256", 1000, bytes(range(32))))},
        {0: Segment(16 << 20, None)},
        {0: Digest((0,), (0,), "sha256", 1000, bytes(32), bytes(32))},
        Config(12288, (16 << 20) - 0x8000),
    )
    binary = BinaryHeader(False, 0x4000, 7, "cvm", "sha256", bytes(range(64)),
                          "12345678-1234-1234-1234-123456789abc", "", 0, bytes(64))
    return HeaderCopy(binary, meta)


def test_seal_and_parse() -> None:
    data = _copy().to_bytes()
    assert len(data) == 0x4000
    parsed = HeaderCopy.parse(data)
    assert parsed.metadata == _copy().metadata
    assert parsed.to_bytes() == data


def test_bad_checksum_is_an_integrity_error() -> None:
    data = bytearray(_copy().to_bytes())
    data[5000] ^= 1
    with pytest.raises(IntegrityError, match="primary header: checksum mismatch"):
        HeaderCopy.parse(bytes(data))


def test_truncated_area() -> None:
    with pytest.raises(FormatError):
        HeaderCopy.parse(_copy().to_bytes()[:-1])


@settings(deadline=None)
@given(st.integers(0, 0x3FFF), st.integers(1, 255))
def test_any_flip_is_rejected(pos: int, bit: int) -> None:
    data = bytearray(_copy().to_bytes())
    data[pos] ^= bit
    with pytest.raises(CvmError):
        HeaderCopy.parse(bytes(data))
