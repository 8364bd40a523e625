"""ID_BLOCK and ID_AUTH_INFO refusals (56860 Tables 75, 76, 24-26) with their messages: the
ranges of every field, the algorithms and curve, the author-key fields, and the byte offsets."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.id_auth import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    IdAuthInfo,
    SnpPublicKey,
    SnpSignature,
)
from cvm.formats.snp.id_block import IdBlock

TOP = (1 << 384) - 1  # the largest 48-byte scalar


# -- ID_BLOCK -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ld": bytes(47)}, "ID block LD must be 48 bytes"),
        ({"ld": bytes(49)}, "ID block LD must be 48 bytes"),
        ({"family_id": bytes(15)}, "ID block FAMILY_ID and IMAGE_ID must be 16 bytes"),
        ({"image_id": bytes(17)}, "ID block FAMILY_ID and IMAGE_ID must be 16 bytes"),
        ({"guest_svn": -1}, "ID block GUEST_SVN is a u32 and POLICY a u64"),
        ({"guest_svn": 1 << 32}, "ID block GUEST_SVN is a u32 and POLICY a u64"),
        ({"policy": -1}, "ID block GUEST_SVN is a u32 and POLICY a u64"),
        ({"policy": 1 << 64}, "ID block GUEST_SVN is a u32 and POLICY a u64"),
    ],
)
def test_an_id_block_with_a_field_out_of_range_is_refused(
    fields: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"ld": bytes(48), **fields}
    with pytest.raises(UsageError) as refused:
        IdBlock(**values)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_an_id_block_takes_the_largest_values_at_their_offsets() -> None:
    block = IdBlock(b"L" * 48, b"F" * 16, b"I" * 16, (1 << 32) - 1, (1 << 64) - 1)
    data = block.to_bytes()
    assert data == b"L" * 48 + b"F" * 16 + b"I" * 16 + bytes([1, 0, 0, 0]) + b"\xff" * 12
    assert IdBlock.from_bytes(data) == block


@pytest.mark.parametrize("version", [0, 2, 0x100])
def test_an_id_block_of_another_version_is_refused(version: int) -> None:
    data = bytearray(IdBlock(bytes(48)).to_bytes())
    data[0x50:0x54] = version.to_bytes(4, "little")
    with pytest.raises(FormatError) as refused:
        IdBlock.from_bytes(bytes(data))
    assert str(refused.value) == f"ID_BLOCK: VERSION is {version}, expected 1"


# -- keys and signatures ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SnpPublicKey(TOP + 1, 1), "QX does not fit in 48 bytes"),
        (lambda: SnpPublicKey(1, -1), "QY does not fit in 48 bytes"),
        (lambda: SnpSignature(-1, 1), "R does not fit in 48 bytes"),
        (lambda: SnpSignature(1, TOP + 1), "S does not fit in 48 bytes"),
    ],
)
def test_a_component_beyond_48_bytes_is_refused_by_name(build: object, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        build()  # type: ignore[operator]
    assert str(refused.value) == message


def test_keys_and_signatures_take_48_byte_values_little_endian() -> None:
    key = SnpPublicKey(TOP, 0x0102)
    data = key.to_bytes()
    assert data[:4] == bytes([2, 0, 0, 0])  # curve P-384
    assert data[4:0x4C] == b"\xff" * 48 + bytes(24)
    assert data[0x4C:0x4E] == bytes([2, 1]) and not any(data[0x4E:])
    assert SnpPublicKey.from_bytes(data) == key
    signature = SnpSignature(0x0304, TOP)
    raw = signature.to_bytes()
    assert raw[:2] == bytes([4, 3]) and raw[0x48:0x78] == b"\xff" * 48 and not any(raw[0x78:])
    assert SnpSignature.from_bytes(raw) == signature
    assert signature.r_bytes == raw[:0x48] and signature.s_bytes == raw[0x48:0x90]


@pytest.mark.parametrize(
    ("structure", "offset", "message"),
    [
        ("key", 0x4 + 48, "QX: bytes 48..71 of a 72-byte little-endian value are not zero"),
        ("key", 0x4C + 71, "QY: bytes 48..71 of a 72-byte little-endian value are not zero"),
        ("signature", 48, "R: bytes 48..71 of a 72-byte little-endian value are not zero"),
        ("signature", 0x48 + 60, "S: bytes 48..71 of a 72-byte little-endian value are not zero"),
    ],
)
def test_a_component_with_high_bytes_set_is_refused_by_name(
    structure: str, offset: int, message: str
) -> None:
    data = bytearray(SnpPublicKey(1, 2).to_bytes() if structure == "key"
                     else SnpSignature(1, 2).to_bytes())
    data[offset] = 1
    parse = SnpPublicKey.from_bytes if structure == "key" else SnpSignature.from_bytes
    with pytest.raises(FormatError) as refused:
        parse(bytes(data))
    assert str(refused.value) == message


@pytest.mark.parametrize("curve", [0, 1, 3])
def test_a_key_on_another_curve_is_refused(curve: int) -> None:
    data = bytearray(SnpPublicKey(1, 2).to_bytes())
    data[0] = curve
    with pytest.raises(FormatError) as refused:
        SnpPublicKey.from_bytes(bytes(data))
    assert str(refused.value) == f"SNP public key: unsupported curve {curve}"


# -- ID_AUTH_INFO -------------------------------------------------------------------------------
def _auth(author: bool = True) -> bytearray:
    if not author:
        return bytearray(IdAuthInfo(SnpSignature(1, 2), SnpPublicKey(3, 4)).to_bytes())
    return bytearray(
        IdAuthInfo(SnpSignature(1, 2), SnpPublicKey(3, 4), SnpSignature(5, 6),
                   SnpPublicKey(7, 8)).to_bytes()
    )


def test_id_auth_info_lays_out_both_keys_and_signatures() -> None:
    data = _auth()
    assert data[0:8] == bytes([1, 0, 0, 0, 1, 0, 0, 0])  # ID_KEY_ALGO, AUTH_KEY_ALGO
    assert data[0x40] == 1 and data[0x40 + 0x48] == 2  # ID block signature R, S
    assert data[0x240] == 2 and data[0x244] == 3 and data[0x240 + 0x4C] == 4  # ID key
    assert data[0x680] == 5 and data[0x680 + 0x48] == 6  # the author's signature
    assert data[0x880] == 2 and data[0x884] == 7 and data[0x880 + 0x4C] == 8  # author key
    alone = _auth(author=False)
    assert alone[4:8] == bytes(4)
    assert alone[0x680:0x680 + SIGNATURE_SIZE] == bytes(SIGNATURE_SIZE)
    assert alone[0x880:0x880 + PUBLIC_KEY_SIZE] == bytes(PUBLIC_KEY_SIZE)
    parsed = IdAuthInfo.from_bytes(bytes(alone))
    assert parsed.author_key is None and parsed.id_key_sig is None


@pytest.mark.parametrize(
    ("offset", "value", "author", "message"),
    [
        (0x0, 0, True, "ID_AUTH_INFO: unsupported ID_KEY_ALGO 0"),
        (0x0, 2, False, "ID_AUTH_INFO: unsupported ID_KEY_ALGO 2"),
        (0x4, 2, True, "ID_AUTH_INFO: unsupported AUTH_KEY_ALGO 2"),
        (0x680, 1, False, "ID_AUTH_INFO: author key fields set but AUTH_KEY_ALGO is 0"),
        (0x880 + 0x403, 1, False, "ID_AUTH_INFO: author key fields set but AUTH_KEY_ALGO is 0"),
    ],
)
def test_id_auth_info_refusals_name_the_field(
    offset: int, value: int, author: bool, message: str
) -> None:
    data = _auth(author)
    data[offset] = value
    with pytest.raises(FormatError) as refused:
        IdAuthInfo.from_bytes(bytes(data))
    assert str(refused.value) == message


def test_an_author_key_needs_its_signature_and_back() -> None:
    message = "ID auth: an author key needs its signature over the ID key, and back"
    with pytest.raises(UsageError) as refused:
        IdAuthInfo(SnpSignature(1, 2), SnpPublicKey(3, 4), author_key=SnpPublicKey(5, 6))
    assert str(refused.value) == message
    with pytest.raises(UsageError):
        IdAuthInfo(SnpSignature(1, 2), SnpPublicKey(3, 4), id_key_sig=SnpSignature(5, 6))
